// Engine choice and autotuning for cuDNN graphs (see engine_choice.hpp; the measurements behind
// the limits below are in docs/cuda.md, "Engine choice" and "Autotune").
#include "cuda/engine_choice.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "convkit/conv.hpp"
#include "cuda/cuda_util.hpp"
#include "cuda/handles.hpp"
#include "cuda/plan.hpp"
#include "cuda/settings.hpp"
#include "cuda/tune_file.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;

// Bytes spanned by a graph tensor (for autotuning's scratch buffers).
std::size_t span_bytes(const TensorSpec& t, DType dt) {
    int64_t last = 0;
    for (std::size_t i = 0; i < t.dims.size(); ++i) last += (t.dims[i] - 1) * t.strides[i];
    // A tensor may be wider than the problem's dtype (acc32's f32 result of a 16-bit problem).
    const std::size_t es = t.dtype == CUDNN_DATA_FLOAT ? std::max<std::size_t>(4, dtype_size(dt)) : dtype_size(dt);
    return static_cast<std::size_t>(last + 1) * es;
}

// Times each plan on scratch tensors (a private stream, events) and returns the fastest's index.
int time_plans(const std::vector<Desc>& plans, const GraphSpec& g, DType dt, cudnnHandle_t h) {
    std::vector<const TensorSpec*> tensors{&g.x, &g.w, &g.y};
    for (const auto& e : g.epilogue)
        if (e.binary) tensors.push_back(&e.operand);
    int64_t ws_max = 0;
    for (const auto& pl : plans) ws_max = std::max(ws_max, plan_workspace(pl));
    std::vector<void*> bufs;
    struct Free {
        std::vector<void*>* b;
        cudnnHandle_t h;
        cudaStream_t s = nullptr;
        cudaEvent_t e0 = nullptr, e1 = nullptr;
        ~Free() {
            // The handle goes back to the pool: leave it on the legacy stream, not a destroyed one.
            cudnnSetStream(h, nullptr);
            if (s) cudaStreamSynchronize(s);
            for (void* p : *b) cudaFree(p);
            if (e0) cudaEventDestroy(e0);
            if (e1) cudaEventDestroy(e1);
            if (s) cudaStreamDestroy(s);
            (void)cudaGetLastError();
        }
    } guard{&bufs, h};
    for (const TensorSpec* t : tensors) {
        void* p = nullptr;
        std::size_t n = span_bytes(*t, dt);
        check_cuda(cudaMalloc(&p, n), "cudaMalloc (autotune scratch)");
        bufs.push_back(p);
        // Small normal values in every dtype (0x3c bytes): no NaN/denormal timing artefacts.
        check_cuda(cudaMemset(p, 0x3c, n), "cudaMemset");
    }
    void* ws = nullptr;
    if (ws_max > 0) {
        check_cuda(cudaMalloc(&ws, static_cast<std::size_t>(ws_max)), "cudaMalloc (autotune workspace)");
        bufs.push_back(ws);
    }
    check_cuda(cudaStreamCreateWithFlags(&guard.s, cudaStreamNonBlocking), "cudaStreamCreate");
    check_cuda(cudaEventCreate(&guard.e0), "cudaEventCreate");
    check_cuda(cudaEventCreate(&guard.e1), "cudaEventCreate");
    check_cudnn(cudnnSetStream(h, guard.s), "cudnnSetStream");
    const std::vector<int64_t> uids = graph_uids(g);
    Desc vp = make_variant_pack(uids.data(), bufs.data(), static_cast<int64_t>(uids.size()), ws);
    return fastest_of(plans.size(), guard.s, guard.e0, guard.e1, true, [&](std::size_t i) {
        return cudnnBackendExecute(h, plans[i].get(), vp.get()) == CUDNN_STATUS_SUCCESS;
    });
}

// The tune file's choice for `key` into *c, if its plan still loads (from its JSON, else from the
// engine index and knobs).
// With autotuning on, an entry that only saved heuristics' runtime-compiled pick is not a tuned
// choice: the problem is tuned (and the entry replaced).
bool load_tuned(const std::string& key, const Desc& graph, cudnnHandle_t h, bool tuning, Choice* c) {
    TunedChoice tc;
    if (!tune_lookup(key, &tc)) return false;
    if (tuning && !tc.tuned) return false;
    std::string w;
    if (!tc.json.empty()) c->plan = make_plan_from_json(h, tc.json, &w);
    if (!c->plan && tc.engine_index >= 0) c->plan = make_plan_from_engine(h, graph, tc.engine_index, tc.knobs, &w);
    if (!c->plan) {
        tune_warn("the entry for " + key + " no longer builds (" + w + "); choosing again");
        return false;
    }
    c->engine_index = tc.engine_index;
    c->knobs = tc.knobs;
    c->name = "eng" + std::to_string(tc.engine_index) + " (tune file)";
    c->loaded = true;
    return true;
}

// The engine configurations a problem may run, in the order they are tried, and the plans built
// from them.
class Search {
public:
    struct Built {
        Desc plan;
        int64_t engine_index;
        std::vector<std::pair<int64_t, int64_t>> knobs;
        std::string name;
        bool runtime_compiled;
    };

    Search(const ConvProblem& p, cudnnHandle_t h)
        : p_(p), h_(h), tune_(convkit::autotune()), strict_f32_(p.dt == DType::f32 && !p.allow_tf32) {}

    bool tune() const { return tune_; }
    std::vector<Built>& built() { return built_; }
    void clear_list() { listed_.clear(); }

    // Lists the first `cap` configurations of `v` the problem may run and that are not listed yet.
    // Filtered before ranking, so that "heuristics' top picks" are the top picks this problem may
    // run: for strict f32 the head of mode A's list is tensor-core configurations, and taking a
    // fixed head before filtering left few non-tensor-core ones to time.
    void list(std::vector<Candidate> v, std::size_t cap) {
        offered_ += v.size();
        std::size_t n = 0;
        for (auto& cand : v) {
            if (n >= cap) break;
            if (p_.deterministic && cand.nondeterministic) continue;
            // Strict f32: engines that round inputs to TF32 (tensor-core f32 paths) do not qualify.
            if (strict_f32_ && (cand.tensor_core || cand.down_convert)) continue;
            if (cand.workspace > workspace_limit()) continue;
            bool dup = false;
            for (const auto& u : listed_) dup = dup || (u.engine_index == cand.engine_index && u.knobs == cand.knobs);
            if (dup) continue;
            listed_.push_back(std::move(cand));
            ++n;
        }
    }

    // Builds plans of the listed configurations: the first that finalizes, or with autotuning up to
    // kMaxTimed of them.
    void build_listed() {
        for (const auto& cand : listed_) {
            if (!tune_ && !built_.empty()) return;
            if (built_.size() >= kMaxTimed) return;
            // Autotuning: each runtime-compiled candidate costs an NVRTC compile (0.3-2 s), so only
            // the first two of them are timed; pre-compiled ones cost well under a millisecond.
            if (tune_ && cand.runtime_compiled && !built_.empty() && ++nvrtc_ > 2) continue;
            std::string w;
            Desc plan = make_plan(h_, cand, &w);
            if (!plan) {
                last_why_ = cand.name() + ": " + w;
                continue;
            }
            built_.push_back(Built{std::move(plan), cand.engine_index, cand.knobs, cand.name(), cand.runtime_compiled});
        }
    }

    // Why nothing was built.
    std::string failure() const {
        if (!last_why_.empty()) return last_why_;
        if (offered_ == 0) return "heuristics offered no engine configuration";
        return "every engine configuration was filtered out (determinism, TF32 or workspace)";
    }

    // The index of the fastest built plan on scratch tensors (0, heuristics' order, when there is
    // no memory to time in).
    std::size_t fastest(const GraphSpec& g) {
        std::vector<Desc> plans;
        for (auto& b : built_) plans.push_back(std::move(b.plan));
        std::size_t pick = 0;
        try {
            pick = static_cast<std::size_t>(std::max(0, time_plans(plans, g, p_.dt, h_)));
        } catch (const Error&) {
            pick = 0;
        }
        for (std::size_t i = 0; i < built_.size(); ++i) built_[i].plan = std::move(plans[i]);
        return pick;
    }

private:
    // Autotuning times at most this many plans (pre-compiled ones build in well under 1 ms and
    // run 4 times each; the first call of a ResNet-50 layer stays well under a second).
    static constexpr std::size_t kMaxTimed = 32;

    const ConvProblem& p_;
    cudnnHandle_t h_;
    const bool tune_, strict_f32_;
    std::vector<Candidate> listed_;
    std::vector<Built> built_;
    std::size_t offered_ = 0;
    std::string last_why_;
    int nvrtc_ = 0;
};

}  // namespace

std::string tune_key(const ConvProblem& p, const char* variant, int64_t alignment) {
    const DeviceInfo& d = device_info(p.device.index);
    char hash[32];
    std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(p.hash()));
    return "cudnn=" + std::to_string(cudnnGetVersion()) + "|gpu=" + d.name + "|cc=" + std::to_string(d.cc_major) + "." +
           std::to_string(d.cc_minor) + "|" + variant + "|align=" + std::to_string(alignment) + "|" + p.str() + "|" + hash;
}

Choice choose(const ConvProblem& p, const GraphSpec& g, const Desc& graph, const char* variant, cudnnHandle_t h,
              std::string* why) {
    Choice c;
    const std::string key = tune_key(p, variant, g.alignment);
    Search s(p, h);
    if (load_tuned(key, graph, h, s.tune(), &c)) return c;
    if (!s.tune()) {
        // Heuristics only: mode A's first eligible configuration that finalizes; FALLBACK (a
        // second heuristics query, tens of ms) only when mode A had none.
        s.list(heuristics(graph, CUDNN_HEUR_MODE_A), SIZE_MAX);
        s.build_listed();
        if (s.built().empty()) {
            s.clear_list();
            s.list(heuristics(graph, CUDNN_HEUR_MODE_FALLBACK), SIZE_MAX);
            s.build_listed();
        }
    } else {
        // As PyTorch's cudnn.benchmark, every eligible mode-A configuration (it times them all,
        // plus the fallback list); then mode B's top picks with their knobs, FALLBACK, and every
        // other engine with default knobs.
        s.list(heuristics(graph, CUDNN_HEUR_MODE_A), 24);
        s.list(heuristics(graph, CUDNN_HEUR_MODE_B), 8);
        s.list(heuristics(graph, CUDNN_HEUR_MODE_FALLBACK), SIZE_MAX);
        s.list(all_engines(graph), SIZE_MAX);
        s.build_listed();
    }
    std::vector<Search::Built>& built = s.built();
    if (built.empty()) {
        *why = s.failure();
        return c;
    }
    std::size_t pick = 0;
    if (s.tune() && built.size() > 1) {
        pick = s.fastest(g);
        c.tuned = true;
    }
    Search::Built& b = built[pick];
    c.plan = std::move(b.plan);
    c.engine_index = b.engine_index;
    c.knobs = b.knobs;
    c.name = b.name;
    // Tuned choices persist; so do heuristics' runtime-compiled plans, whose NVRTC compile (0.3-2 s)
    // a new process would pay again, while their JSON reloads in ~2 ms (docs/cuda.md).
    if (s.tune() || b.runtime_compiled) {
        TunedChoice out;
        out.engine_index = c.engine_index;
        out.knobs = b.knobs;
        out.json = plan_json(c.plan);
        out.tuned = s.tune();
        tune_store(key, out);
    }
    return c;
}

// Each candidate gets one warm-up run and 3 timed runs. With `drop_slow` the warm-up is timed too:
// a candidate far slower than the best so far (strict-f32 lists hold engines 50x off, at tens of
// ms a run) is dropped after it instead of running 3 more times; the slack covers a first run's
// lazy module load (a few ms).
int fastest_of(std::size_t n, cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, bool drop_slow,
               const std::function<bool(std::size_t)>& run) {
    const int reps = 3;
    auto timed = [&](std::size_t i, int times, float* ms) {
        bool ok = cudaEventRecord(e0, s) == cudaSuccess;
        for (int r = 0; r < times && ok; ++r) ok = run(i);
        ok = cudaEventRecord(e1, s) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess && ok;
        if (!ok) {
            (void)cudaGetLastError();
            return false;
        }
        return cudaEventElapsedTime(ms, e0, e1) == cudaSuccess;
    };
    int best = -1;
    float best_ms = 0;
    for (std::size_t i = 0; i < n; ++i) {
        float warm = 0, ms = 0;
        if (!timed(i, 1, &warm)) continue;
        if (drop_slow && best >= 0 && warm > std::max(3 * best_ms / reps, best_ms / reps + 5.f)) continue;
        if (!timed(i, reps, &ms)) continue;
        if (best < 0 || ms < best_ms) {
            best = static_cast<int>(i);
            best_ms = ms;
        }
    }
    return best;
}

int time_whole_plans(const ConvProblem& p, const std::vector<const Plan*>& plans, cudaStream_t s) {
    core::Buffer x = make_buffer(p.device, dense_bytes(p.src_dims(), p.dt), s, "autotune scratch");
    core::Buffer w = make_buffer(p.device, dense_bytes(p.wei_dims(), p.dt), s, "autotune scratch");
    core::Buffer y = make_buffer(p.device, dense_bytes(p.dst_dims(), p.dt), s, "autotune scratch");
    // Small normal values in every dtype (0x3c bytes), as time_plans: no NaN/denormal artefacts.
    for (const core::Buffer* b : {&x, &w, &y}) check_cuda(cudaMemsetAsync(b->data(), 0x3c, b->size(), s), "cudaMemsetAsync");
    ConvArgs a;
    a.src = TensorView::with_layout(x.data(), p.dt, p.src_dims(), p.src_layout, p.device);
    a.weights = TensorView::with_layout(w.data(), p.dt, p.wei_dims(), p.wei_layout, p.device);
    a.dst = TensorView::with_layout(y.data(), p.dt, p.dst_dims(), p.dst_layout, p.device);
    struct Events {
        cudaEvent_t e0 = nullptr, e1 = nullptr;
        ~Events() {
            if (e0) cudaEventDestroy(e0);
            if (e1) cudaEventDestroy(e1);
        }
    } ev;
    check_cuda(cudaEventCreate(&ev.e0), "cudaEventCreate");
    check_cuda(cudaEventCreate(&ev.e1), "cudaEventCreate");
    return fastest_of(plans.size(), s, ev.e0, ev.e1, false, [&](std::size_t i) {
        try {
            plans[i]->run(a, s);
            return true;
        } catch (const Error&) {
            return false;
        }
    });
}

}  // namespace convkit::cuda
