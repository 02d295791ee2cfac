// The ordered list of plan kinds, as oneDNN's cpu_convolution_list.cpp: each kind says whether it
// applies to the problem and builds itself, the first that builds wins. Above the list, the split
// backward-data where it applies and wins (cuda_api.hpp's set_split_dgrad). Every plan is built for
// the problem with its post-padding normalized (graph_spec.hpp).
#include "convkit/conv.hpp"
#include "cuda/cuda_api.hpp"
#include "cuda/engine_choice.hpp"
#include "cuda/graph_spec.hpp"
#include "cuda/plan.hpp"
#include "cuda/tune_file.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;

// In order of preference (docs/cuda.md, "Plan kinds"). A 16-bit forward with bias or post-ops must round
// dst once, as the reference does, so the variants that do (acc32, then wide) come before the conv
// that rounds twice; asymmetric padding tries the other padding last.
const PlanKind* const kPlainKinds[] = {
    &direct_kind,         // forward of at most direct_max_macs(): convkit's kernel, no cuDNN
    &fused_kind,          // one runtime-fusion graph, bias and post-ops inside
    &acc32_kind,          // 16-bit forward + epilogue: an f32 convolution result, rounded once
    &wide_kind,           // 16-bit on an f32 plan of widened copies, rounded once
    &conv_kind,           // the convolution node, then our epilogue or bias-gradient pass
    &conv_repadded_kind,  // asymmetric padding, the other way (explicit / native)
};

// A problem that no kind runs: the reason, re-thrown on every call.
class NoPlan final : public Plan {
public:
    NoPlan(const ConvProblem& p, std::string error) : Plan(p), error_(std::move(error)) {}
    void run(const ConvArgs&, cudaStream_t) const override { throw Error(ErrorKind::unsupported, "cuda: " + error_); }

private:
    std::string error_;
};

void count(const PlanInfo& i) {
    Counters& c = counters();
    if (i.direct) {
        c.direct++;
        return;
    }
    (i.fused ? c.fused : c.unfused)++;
    if (i.explicit_padding) c.padded++;
    if (i.autotuned) c.tuned++;
    if (i.from_tune_file) c.loaded++;
}

std::shared_ptr<const Plan> or_no_plan(std::shared_ptr<const Plan> plan, const ConvProblem& p, std::string error) {
    if (plan) return plan;
    return std::make_shared<NoPlan>(p, std::move(error));
}

}  // namespace

std::shared_ptr<const Plan> build_plain(const ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* error) {
    std::string why;  // the last kind's reason for not building
    for (const PlanKind* kind : kPlainKinds) {
        if (!kind->applies(p)) continue;
        if (std::shared_ptr<const Plan> plan = kind->build(p, aligned, h, &why)) {
            count(plan->info());
            return plan;
        }
    }
    *error = "no cuDNN engine runs " + p.str() + (why.empty() ? "" : ": " + why);
    return nullptr;
}

namespace {

// cuDNN's way of running `p` (normalized): the extended output, the split backward-data, or the
// first plain kind that builds.
std::shared_ptr<const Plan> build_cudnn_plan(const ConvProblem& p, bool aligned, cudnnHandle_t h, cudaStream_t s) {
    if (extend_applies(p)) return build_extend_plan(p, aligned, h, s);
    std::string error;
    if (!split_applies(p)) return or_no_plan(build_plain(p, aligned, h, &error), p, error);
    const int64_t alignment = aligned ? 16 : static_cast<int64_t>(dtype_size(p.dt));
    const std::string key = tune_key(p, "split", alignment);
    int decision = split_dgrad();  // 1 split, 0 not, -1 still to decide
    bool from_file = false;
    if (decision < 0) {
        TunedChoice tc;
        if (tune_lookup(key, &tc)) {
            decision = tc.engine_index == 1 ? 1 : 0;
            from_file = true;
        } else if (!convkit::autotune()) {
            // Heuristics alone: cuDNN's own plan. Measured (H100, ResNet-50 f32 NCHW mb 32,
            // heuristics-picked sub-plans): the split lost on conv1 (4.5 vs 0.9 ms) and the 1x1/2
            // layers (0.46-0.57 vs 0.28-0.31 ms), and with symmetric padding cuDNN's 3x3/2 picks
            // are PyTorch's (0.29-0.45 ms), which the split's (0.45-0.77 ms) do not beat.
            decision = 0;
        }
    }
    if (decision == 0) return or_no_plan(build_plain(p, aligned, h, &error), p, error);
    std::shared_ptr<const Plan> split = build_split_plan(p, aligned, h, from_file);
    auto use_split = [&] {
        counters().split++;
        return split;
    };
    if (decision == 1) return split ? use_split() : or_no_plan(build_plain(p, aligned, h, &error), p, error);
    // Autotuning: the split against the best single plan, each timed whole as it runs.
    std::shared_ptr<const Plan> plain = build_plain(p, aligned, h, &error);
    if (!split) return or_no_plan(plain, p, error);
    if (!plain) return use_split();
    int pick = -1;
    try {
        pick = time_whole_plans(p, {plain.get(), split.get()}, s);
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::out_of_memory) throw;
    }
    if (pick < 0) return plain;  // could not time: cuDNN's own plan
    TunedChoice out;
    out.engine_index = pick;  // the tune file's record of the decision: 1 split, 0 not
    tune_store(key, out);
    return pick == 1 ? use_split() : plain;
}

// The convolution alone: what autotuning times to choose between the GEMM plan and cuDNN (the
// epilogue and bias-gradient passes after either are the same).
ConvProblem without_extras(ConvProblem p) {
    p.with_bias = false;
    p.n_post_ops = 0;
    for (core::PostOpDesc& d : p.post_ops) d = core::PostOpDesc{};
    return p;
}

std::shared_ptr<const Plan> use_gemm(const ConvProblem& p) {
    counters().gemm++;
    return build_gemm_plan(p);
}

}  // namespace

std::shared_ptr<const Plan> build_plan(const ConvProblem& problem, bool aligned, cudnnHandle_t h, cudaStream_t s) {
    const ConvProblem p = normalized(problem);
    if (!gemm_applies(p)) return build_cudnn_plan(p, aligned, h, s);
    int decision = f64_gemm();  // 1 GEMM, 0 cuDNN, -1 still to decide
    const ConvProblem q = without_extras(p);
    const std::string key = tune_key(q, "f64gemm", aligned ? 16 : 8);
    if (decision < 0) {
        TunedChoice tc;
        if (tune_lookup(key, &tc)) decision = tc.engine_index == 1 ? 1 : 0;
        else if (!convkit::autotune()) decision = gemm_preferred(p) ? 1 : 0;
    }
    if (decision == 1) return use_gemm(p);
    if (decision == 0) return build_cudnn_plan(p, aligned, h, s);
    // Autotuning: the two convolutions timed whole, the faster kept and recorded.
    std::shared_ptr<const Plan> cudnn_q = build_cudnn_plan(q, aligned, h, s);
    std::shared_ptr<const Plan> gemm_q = build_gemm_plan(q);
    int pick = 1;
    if (cudnn_q->info().found) {
        try {
            pick = time_whole_plans(q, {cudnn_q.get(), gemm_q.get()}, s);
        } catch (const Error& e) {
            if (e.kind() != ErrorKind::out_of_memory) throw;
            pick = -1;
        }
    }
    if (pick < 0) pick = gemm_preferred(p) ? 1 : 0;  // could not time: the rule
    else {
        TunedChoice out;
        out.engine_index = pick;  // the tune file's record: 1 GEMM, 0 cuDNN
        tune_store(key, out);
    }
    if (pick == 1) return use_gemm(p);
    return q == p ? cudnn_q : build_cudnn_plan(p, aligned, h, s);
}

}  // namespace convkit::cuda
