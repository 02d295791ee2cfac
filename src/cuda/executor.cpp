// Lanes of a cuDNN execution plan (see executor.hpp).
#include "cuda/executor.hpp"

#include <algorithm>
#include <thread>

#include "cuda/cuda_util.hpp"

namespace convkit::cuda {
namespace {

// A small number per thread, so that threads start their search for a lane at different lanes
// and, once each has its own, keep finding it first (and its variant packs with it).
unsigned lane_hint() {
    static std::atomic<unsigned> next{0};
    thread_local const unsigned mine = next.fetch_add(1, std::memory_order_relaxed);
    return mine;
}

}  // namespace

bool Binding::operator==(const Binding& o) const {
    return n == o.n && workspace == o.workspace && std::equal(data, data + n, o.data);
}

// One execution plan and the variant packs it executed last (a call owns the lane while busy).
struct Executor::Lane {
    static constexpr int kPacks = 4;  // callers that alternate buffers keep hitting
    explicit Lane(Desc p) : plan(std::move(p)) {}

    // The variant pack of `b`: a cached one, else a new one in place of the oldest.
    const Desc& pack(const std::vector<int64_t>& uids, const Binding& b) {
        for (int i = 0; i < kPacks; ++i)
            if (packs[i] && bound[i] == b) return packs[i];
        Desc vp = make_variant_pack(uids.data(), b.data, b.n, b.workspace);
        const int i = next;
        next = (next + 1) % kPacks;
        packs[i] = std::move(vp);
        bound[i] = b;
        return packs[i];
    }

    std::atomic<bool> busy{false};
    Desc plan;
    Binding bound[kPacks];
    Desc packs[kPacks];
    int next = 0;
};

Executor::Executor(Graph graph, Desc plan, std::vector<int64_t> uids, int64_t engine_index,
                   std::vector<std::pair<int64_t, int64_t>> knobs)
    : graph_(std::move(graph)),
      uids_(std::move(uids)),
      engine_index_(engine_index),
      knobs_(std::move(knobs)),
      can_grow_(engine_index >= 0) {
    lanes_[0].store(new Lane(std::move(plan)));
}

Executor::~Executor() {
    for (auto& l : lanes_) delete l.load();  // the plans go before the graph they were made from
}

const Desc& Executor::plan() const { return lanes_[0].load()->plan; }

void Executor::execute(cudnnHandle_t h, const Binding& b) {
    Lane& lane = claim(h);
    struct Release {
        Lane& l;
        ~Release() { l.busy.store(false, std::memory_order_release); }
    } release{lane};
    check_cudnn(cudnnBackendExecute(h, lane.plan.get(), lane.pack(uids_, b).get()), "cudnnBackendExecute");
}

Executor::Lane& Executor::claim(cudnnHandle_t h) {
    const int start = static_cast<int>(lane_hint() % kMaxLanes);
    for (;;) {
        for (int i = 0; i < kMaxLanes; ++i) {
            Lane* l = lanes_[(start + i) % kMaxLanes].load(std::memory_order_acquire);
            if (l && !l->busy.load(std::memory_order_relaxed) && !l->busy.exchange(true, std::memory_order_acquire))
                return *l;
        }
        if (can_grow_.load(std::memory_order_relaxed))
            if (Lane* l = add_lane(h, start)) return *l;
        std::this_thread::yield();  // every lane busy and no more to add: one frees within an enqueue
    }
}

// A new lane, born busy, in the first empty slot from `start`; null when another call took the
// last slot or the plan cannot be made again (then no later call tries: calls share the lanes
// there are, each waiting for a free one).
Executor::Lane* Executor::add_lane(cudnnHandle_t h, int start) {
    std::lock_guard<std::mutex> lock(grow_mu_);
    std::atomic<Lane*>* slot = nullptr;
    int used = 0;
    for (int i = 0; i < kMaxLanes; ++i) {
        std::atomic<Lane*>& s = lanes_[(start + i) % kMaxLanes];
        if (s.load(std::memory_order_relaxed)) ++used;
        else if (!slot) slot = &s;
    }
    if (!slot) return nullptr;
    Desc copy;
    try {
        std::string why;
        copy = make_plan_from_engine(h, graph_.graph, engine_index_, knobs_, &why);
    } catch (const Error&) {
        copy = Desc();
    }
    if (!copy || used + 1 == kMaxLanes) can_grow_.store(false, std::memory_order_relaxed);
    if (!copy) return nullptr;
    auto* lane = new Lane(std::move(copy));
    lane->busy.store(true, std::memory_order_relaxed);
    slot->store(lane, std::memory_order_release);
    return lane;
}

}  // namespace convkit::cuda
