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

// The choice between cuDNN's plan (0) and an alternative (1) recorded or made without timing:
// `mode` when set (0 / 1), else the tune file's record under `key` (*from_file then true), else
// `rule` without autotuning; -1: to be timed.
int untimed_choice(int mode, const std::string& key, bool rule, bool* from_file) {
    if (mode >= 0) return mode;
    TunedChoice tc;
    if (tune_lookup(key, &tc)) {
        *from_file = true;
        return tc.engine_index == 1 ? 1 : 0;
    }
    return convkit::autotune() ? -1 : rule ? 1 : 0;
}

void record_choice(const std::string& key, int pick) {
    TunedChoice out;
    out.engine_index = pick;  // the tune file's record of the decision: 1 the alternative, 0 cuDNN's plan
    tune_store(key, out);
}

// `plain` (0) and `alt` (1) timed whole as they run on `p`; the faster, recorded under `key`.
// -1, recorded nowhere, when timing ran out of memory or neither ran.
int timed_choice(const ConvProblem& p, const Plan* plain, const Plan* alt, const std::string& key, cudaStream_t s) {
    int pick = -1;
    try {
        pick = time_whole_plans(p, {plain, alt}, s);
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::out_of_memory) throw;
    }
    if (pick >= 0) record_choice(key, pick);
    return pick;
}

// cuDNN's way of running `p` (normalized): the extended output, the split backward-data, or the
// first plain kind that builds.
std::shared_ptr<const Plan> build_cudnn_plan(const ConvProblem& p, bool aligned, cudnnHandle_t h, cudaStream_t s) {
    if (extend_applies(p)) return build_extend_plan(p, aligned, h, s);
    std::string error;
    if (!split_applies(p)) return or_no_plan(build_plain(p, aligned, h, &error), p, error);
    const int64_t alignment = aligned ? 16 : static_cast<int64_t>(dtype_size(p.dt));
    const std::string key = tune_key(p, "split", alignment);
    // Heuristics alone: cuDNN's own plan (rule false). Measured (H100, ResNet-50 f32 NCHW mb 32,
    // heuristics-picked sub-plans): the split lost on conv1 (4.5 vs 0.9 ms) and the 1x1/2 layers
    // (0.46-0.57 vs 0.28-0.31 ms), and with symmetric padding cuDNN's 3x3/2 picks are PyTorch's
    // (0.29-0.45 ms), which the split's (0.45-0.77 ms) do not beat.
    bool from_file = false;
    const int decision = untimed_choice(split_dgrad(), key, false, &from_file);  // 1 split, 0 not, -1 to time
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
    // Could not time (-1): cuDNN's own plan.
    return timed_choice(p, plain.get(), split.get(), key, s) == 1 ? use_split() : plain;
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
    const ConvProblem q = without_extras(p);
    const std::string key = tune_key(q, "f64gemm", aligned ? 16 : 8);
    const bool rule = gemm_preferred(p);
    bool from_file = false;
    const int decision = untimed_choice(f64_gemm(), key, rule, &from_file);  // 1 GEMM, 0 cuDNN, -1 to time
    if (decision == 1) return use_gemm(p);
    if (decision == 0) return build_cudnn_plan(p, aligned, h, s);
    // Autotuning: the two convolutions timed whole, the faster kept and recorded.
    std::shared_ptr<const Plan> cudnn_q = build_cudnn_plan(q, aligned, h, s);
    std::shared_ptr<const Plan> gemm_q = build_gemm_plan(q);
    int pick = 1;
    if (cudnn_q->info().found) pick = timed_choice(q, cudnn_q.get(), gemm_q.get(), key, s);
    else record_choice(key, pick);  // nothing of cuDNN's runs it
    if (pick < 0) pick = rule ? 1 : 0;  // could not time: the rule
    if (pick == 1) return use_gemm(p);
    return q == p ? cudnn_q : build_cudnn_plan(p, aligned, h, s);
}

}  // namespace convkit::cuda
