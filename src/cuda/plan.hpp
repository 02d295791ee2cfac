// The plan interface of the CUDA backend: a plan is built once per problem (and pointer
// alignment), cached, and then only run. One class per way of running a problem, each in its own
// file (direct_plan, graph_plan, wide_plan, split_plan); plan_list.cpp tries them in order of
// preference, the first that builds wins. Also what several kinds share: temporaries from the
// allocator, the epilogue's arguments, the bias-gradient pass, the counters. Why each kind exists,
// with the measurements: docs/cuda.md, "Plan kinds".
#pragma once
#include <cuda_runtime.h>
#include <cudnn.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/backend.hpp"
#include "core/problem.hpp"
#include "cuda/cuda_api.hpp"
#include "cuda/kernels.hpp"

namespace convkit::cuda {

class Plan {
public:
    explicit Plan(const core::ConvProblem& p) : problem_(p) {}
    virtual ~Plan() = default;
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;

    // Enqueues the convolution of `a` on `s`; never blocks the host. A built plan does not change,
    // so any number of threads may run one plan at once, each on its own stream.
    virtual void run(const core::ConvArgs& a, cudaStream_t s) const = 0;

    // What was chosen (found = false: no kind runs the problem, and run() throws why).
    const PlanInfo& info() const { return info_; }
    // The problem as built (post-padding normalized; see graph_spec.hpp).
    const core::ConvProblem& problem() const { return problem_; }

protected:
    core::ConvProblem problem_;
    PlanInfo info_;
};

// One way of running problems. applies(): whether the kind is meant for the problem (direction,
// dtypes, settings), not whether cuDNN takes it. build(): the plan, or null with the reason in
// *why. Each kind's file defines its own; plan_list.cpp orders them.
struct PlanKind {
    const char* name;
    bool (*applies)(const core::ConvProblem& p);
    std::shared_ptr<const Plan> (*build)(const core::ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* why);
};
extern const PlanKind direct_kind;        // direct_plan.cpp
extern const PlanKind fused_kind;         // graph_plan.cpp
extern const PlanKind acc32_kind;         // graph_plan.cpp
extern const PlanKind wide_kind;          // wide_plan.cpp
extern const PlanKind conv_kind;          // graph_plan.cpp
extern const PlanKind conv_repadded_kind;  // graph_plan.cpp

// plan_list.cpp: the plan of a problem as the backend caches it, never null (a problem nothing
// runs gets a plan whose run() throws the reason). Autotuning times the split on `s`.
std::shared_ptr<const Plan> build_plan(const core::ConvProblem& problem, bool aligned, cudnnHandle_t h, cudaStream_t s);
// The first of the plain kinds (all but the split) that builds; null with the error message in
// *error ("no cuDNN engine runs <problem>: <reason>") when none does.
std::shared_ptr<const Plan> build_plain(const core::ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* error);

// extend_plan.cpp: negative post-padding (a transposed convolution's output_padding >= stride) as
// the same convolution with more output rows.
bool extend_applies(const core::ConvProblem& p);
std::shared_ptr<const Plan> build_extend_plan(const core::ConvProblem& p, bool aligned, cudnnHandle_t h, cudaStream_t s);

// split_plan.cpp: strided backward-data as stride-1 sub-convolutions (cuda_api.hpp's set_split_dgrad).
bool split_applies(const core::ConvProblem& p);
// Null if a phase's paddings do not make a valid stride-1 convolution or no engine runs a phase.
std::shared_ptr<const Plan> build_split_plan(const core::ConvProblem& p, bool aligned, cudnnHandle_t h, bool from_tune_file);

// gemm_plan.cpp: f64 as im2col + cuBLAS DGEMM (cuda_api.hpp's set_f64_gemm). Chosen above the
// cuDNN kinds: by the mode, the tune file, autotuning, or gemm_preferred (the rule without tuning).
bool gemm_applies(const core::ConvProblem& p);
bool gemm_preferred(const core::ConvProblem& p);
std::shared_ptr<const Plan> build_gemm_plan(const core::ConvProblem& p);

// ---------------------------------------------------------------------------------------------
// Shared by the kinds (plan.cpp).

// A temporary from the device's allocator, ordered on `s`; a user allocator's std::bad_alloc
// becomes Error(out_of_memory) naming `what`.
core::Buffer make_buffer(Device dev, std::size_t bytes, cudaStream_t s, const char* what);

// Bytes of a dense tensor of `sizes` elements of `dt`.
std::size_t dense_bytes(const Dims& sizes, DType dt);

// The epilogue's view of a dense tensor: dtype, rank, layout, logical sizes (1 past the rank).
void set_epilogue_shape(EpilogueArgs* e, DType dt, const Dims& sizes, Layout layout);
// The epilogue of problem `p` (bias and post-op chain over its output: dst, or diff_src of a
// transposed forward; ConvProblem::epilogue_view) without pointers.
void fill_epilogue_template(const core::ConvProblem& p, EpilogueArgs* e);
// `tmpl` with the call's pointers: in, prior and out are `out` (the output the template is of);
// bias; binary operands and strides.
EpilogueArgs epilogue_args(const EpilogueArgs& tmpl, const core::ConvArgs& a, const TensorView& out);
inline EpilogueArgs epilogue_args(const EpilogueArgs& tmpl, const core::ConvArgs& a) { return epilogue_args(tmpl, a, a.dst); }

// diff_bias from diff_dst, or from src in a transposed problem (our deterministic reduction).
// Made (its scratch allocated) before a plan writes any output, so a failed allocation leaves
// the outputs as they were; run() enqueues it on `s`.
class BiasGradPass {
public:
    BiasGradPass(const core::ConvProblem& p, const core::ConvArgs& a, cudaStream_t s);
    void run(cudaStream_t s);

private:
    BiasGradArgs args_;
    core::Buffer partial_;
};

// How plans were obtained since the last clear_cache (cuda_api.hpp's PlanCounters).
struct Counters {
    std::atomic<uint64_t> fused{0}, unfused{0}, direct{0}, padded{0}, tuned{0}, loaded{0}, split{0}, gemm{0};
};
Counters& counters();

}  // namespace convkit::cuda
