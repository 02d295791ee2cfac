// The cuDNN backend (make_cuda_backend): a ConvProblem's plan comes from the plan cache (one per
// device, built on a miss by plan_list.cpp) and a call only runs it on the caller's stream; it
// never blocks the host. Also the backend's counters and last_plan() (cuda_api.hpp). The design,
// plan kinds and measurements: docs/cuda.md.
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "core/backend.hpp"
#include "core/lru_cache.hpp"
#include "core/trace.hpp"
#include "cuda/cuda_api.hpp"
#include "cuda/cuda_util.hpp"
#include "cuda/handles.hpp"
#include "cuda/plan.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;

// The plans of one problem: alignment is part of a cuDNN tensor's description.
struct Entry {
    std::mutex mu;                        // held to find or build a plan, never while one runs
    std::shared_ptr<const Plan> plan[2];  // [16-byte aligned pointers, less aligned]
};

using PlanCache = core::LruCache<ConvProblem, Entry, core::ConvProblemHash>;

thread_local std::shared_ptr<const Plan> t_last_plan;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

bool all_aligned16(const ConvArgs& a) {
    bool aligned = aligned16(a.src.data) && aligned16(a.weights.data) && aligned16(a.dst.data) &&
                   (!a.bias.defined() || aligned16(a.bias.data));
    if (a.post_ops)
        for (const PostOp& op : *a.post_ops)
            if (op.kind == PostOp::Kind::binary) aligned = aligned && aligned16(op.operand.data);
    return aligned;
}

class CudaBackend final : public core::Backend {
public:
    Engine engine() const override { return Engine::cuda; }
    std::string describe() const override {
        const int n = visible_devices();
        std::string s = "cuDNN " + std::to_string(cudnnGetVersion()) + ", " + std::to_string(n) + " device(s)";
        if (n > 0) {
            const DeviceInfo& d = device_info(0);
            s += ", cuda:0 " + d.name + " (sm_" + std::to_string(d.cc_major) + std::to_string(d.cc_minor) + ")";
        }
        return s;
    }
    DeviceType device_type() const override { return DeviceType::cuda; }
    int64_t max_tensor_elements(const ConvProblem&) const override { return INT32_MAX; }
    int64_t max_indexable_elements() const override { return INT32_MAX; }
    std::string trace_impl(const ConvProblem&) override {
        const PlanInfo i = last_plan();
        if (!i.found) return "cuda";
        std::string s = i.direct ? "convkit:direct"
                        : i.gemm ? "convkit:" + i.engine_name.substr(std::string("convkit ").size())
                                 : "cudnn:" + i.engine_name;
        if (i.fused) s += "+fused";
        if (i.split_dgrad) s += "+split_dgrad:" + std::to_string(i.phases);
        if (i.explicit_padding) s += "+explicit_padding";
        if (i.autotuned) s += "+autotuned";
        if (i.from_tune_file) s += "+tune_file";
        for (char& c : s)
            if (c == ',') c = ';';
        return s;
    }

    std::string check(const ConvProblem& p) const override {
        const int n = visible_devices();
        if (n == 0) return "no CUDA device is visible";
        if (p.device.index < 0 || p.device.index >= n)
            return "device " + p.device.str() + " does not exist (" + std::to_string(n) + " visible)";
        if (p.packed_weights) return "the cuda engine does not prepack weights";
        // cuDNN indexes tensors with 32-bit integers (pytorch#22496): larger activations run as
        // tiles (max_tensor_elements), weights cannot be cut.
        double wn = 1;
        for (int64_t v : p.wei_dims()) wn *= static_cast<double>(v);
        if (wn > 2147483647.0) return "the weights have 2^31 or more elements (cuDNN's limit)";
        return "";
    }

    Event execute(const ConvProblem& p, const ConvArgs& a, const Stream& stream,
                  const std::vector<Event>& deps) override {
        DeviceGuard guard(p.device.index);
        auto s = static_cast<cudaStream_t>(stream.native_handle());
        for (const auto& e : deps) stream.wait(e);
        std::shared_ptr<const Plan> plan = plan_for(p, all_aligned16(a), s);
        t_last_plan = plan;
        plan->run(a, s);
        return stream.record();
    }

    CacheStats cache_stats() const override {
        CacheStats total;
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& c : caches_) {
            if (!c) continue;
            const CacheStats s = c->stats();
            total.hits += s.hits;
            total.misses += s.misses;
            total.evictions += s.evictions;
            total.size += s.size;
            total.capacity += s.capacity;
        }
        return total;
    }

    void clear_cache() override {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& c : caches_)
            if (c) c->clear();
        auto& cnt = counters();
        cnt.fused = cnt.unfused = cnt.direct = cnt.padded = cnt.tuned = cnt.loaded = cnt.split = cnt.gemm = 0;
    }

private:
    // The cached plan of `p` for these pointers' alignment, built on the first call (on the
    // device, which the caller has made current; autotuning times on `s`).
    std::shared_ptr<const Plan> plan_for(const ConvProblem& p, bool aligned, cudaStream_t s) {
        const int dev = p.device.index;
        std::shared_ptr<Entry> entry = cache(dev).get_or_create(p, [] { return std::make_shared<Entry>(); });
        std::lock_guard<std::mutex> lock(entry->mu);
        std::shared_ptr<const Plan>& slot = entry->plan[aligned ? 0 : 1];
        if (!slot) {
            HandleLease h(dev);
            // The cache holds entries; the plan is built here, so the trace times it here.
            const bool traced = core::trace::level() >= 2;
            const double t0 = traced ? core::trace::now_ms() : 0;
            slot = build_plan(p, aligned, h.get(), s);
            if (traced) core::trace::note_miss(core::trace::now_ms() - t0);
        }
        return slot;
    }

    PlanCache& cache(int device) {
        std::lock_guard<std::mutex> lock(mu_);
        if (caches_.size() <= static_cast<std::size_t>(device)) caches_.resize(static_cast<std::size_t>(device) + 1);
        auto& c = caches_[static_cast<std::size_t>(device)];
        if (!c) c = new PlanCache();  // never destroyed: plans hold cuDNN objects (see runtime.cpp)
        return *c;
    }

    mutable std::mutex mu_;
    std::vector<PlanCache*> caches_;
};

}  // namespace

PlanCounters plan_counters() {
    const Counters& c = counters();
    return PlanCounters{c.fused, c.unfused, c.direct, c.padded, c.tuned, c.loaded, c.split, c.gemm};
}

PlanInfo last_plan() {
    const std::shared_ptr<const Plan>& p = t_last_plan;
    return p ? p->info() : PlanInfo();  // info().found is false where no kind runs the problem
}

}  // namespace convkit::cuda

namespace convkit::core {
std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<cuda::CudaBackend>(); }
}  // namespace convkit::core
