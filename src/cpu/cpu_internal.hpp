// Shared internals of the CPU backend: the post-op epilogue pass (used by the oneDNN path for
// chains oneDNN cannot fuse and by the f64 path for everything), and the interfaces of the two
// plan kinds (oneDNN f32/bf16, OpenBLAS f64) that cpu_backend.cpp caches and runs.
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/half.hpp"
#include "cpu/cpu_backend.hpp"

namespace convkit::cpu {

// bf16 scalar conversions (round to nearest even, NaN kept): the core's, branch-free.
using core::bf16_load;
using core::bf16_store;

// ---- Epilogue: bias + the whole post-op chain in one pass over dst ----
//
// The pass reads the convolution result `acc` (f32 for f32/bf16 dst, f64 for f64 dst), adds the
// bias if given, applies every post-op in order (sum reads dst's old contents, binary ops read
// their operands with broadcast) and writes dst once. It works on tiles (one image, a channel
// range, a range of flattened spatial positions) so the f64 path can run it on each block while
// the block is still in cache.
struct EpilogueOperand {
    const void* data = nullptr;
    int64_t st_n = 0, st_c = 0, st_sp[3] = {0, 0, 0};  // element strides, 0 where broadcast
    bool flat = true;      // spatial dims all broadcast or all dense: one stride over flattened sp
    int64_t st_flat = 0;   // that stride
};

struct Epilogue {
    const core::ConvProblem* p = nullptr;
    DType dt = DType::f32;  // dst dtype
    bool cl = false;        // dst (and acc) channels-last
    int64_t C = 0, SP = 0;  // channels, flattened spatial size
    int64_t sp_dims[3] = {1, 1, 1};  // spatial sizes, (d, h, w) padded with leading 1s
    void* dst = nullptr;
    const void* bias = nullptr;  // optional, dst dtype
    int n_ops = 0;
    EpilogueOperand ops[PostOps::max_ops];

    // Binds the call's tensors; `post_ops` holds the binary operands (may be null if none).
    void init(const core::ConvProblem& prob, void* dst_data, Layout dst_layout, const void* bias_data,
              const PostOps* post_ops);
    // The tile is image n, channels [c0, c1), flattened spatial positions [s0, s1); acc points at
    // its element (c0, s0), acc(c, s) at acc + (c - c0) * acc_cs + (s - s0) * acc_ss, with stride 1
    // along dst's inner dim (channels for channels-last, positions otherwise).
    void tile_f32(int64_t n, int64_t c0, int64_t c1, int64_t s0, int64_t s1, const float* acc, int64_t acc_cs,
                  int64_t acc_ss) const;
    void tile_f64(int64_t n, int64_t c0, int64_t c1, int64_t s0, int64_t s1, const double* acc, int64_t acc_cs,
                  int64_t acc_ss) const;
    // Whole tensor, acc dense in dst's layout (may alias dst when no sum is in the chain), over
    // OpenMP threads.
    void run_all(const void* acc) const;
};

// ---- Per-call workspace: one allocator block split into the plan's regions ----
struct Workspace {
    core::Buffer buf;
    char* base() const { return static_cast<char*>(buf.data()); }
};

// ---- Plans ----
// A plan holds everything built for one problem. oneDNN primitives depend on the thread count
// they were created under (their work split is fixed at creation), so the oneDNN plan keeps one
// variant per thread count it has been run with.
class DnnlPlan;
class F64Plan;

// oneDNN plans (dnnl_plan.cpp; native_16bit_preferred in dnnl_policy.cpp).
std::shared_ptr<DnnlPlan> make_dnnl_plan(const core::ConvProblem& p);
// Whether bf16/f16 problems take oneDNN's native kernels here (they exist and measured faster
// than the widened f32 path on this CPU, at the current thread count; timed once).
bool native_16bit_preferred(DType dt);
Event run_dnnl_plan(DnnlPlan& plan, const core::ConvProblem& p, const core::ConvArgs& args);
PlanInfo dnnl_plan_info(DnnlPlan& plan);
// Weights (in the layout `p` describes) reordered into the layout the packed plan `plan` reads.
std::shared_ptr<void> dnnl_prepack(DnnlPlan& plan, const core::ConvProblem& p, const TensorView& weights);

// Long f32 backward reductions in pieces (split_plan.cpp): a backward pass whose reduction is
// longer than kMaxF32Terms terms (CONVKIT_CPU_SPLIT overrides; 0 turns it off) runs as shorter
// convolutions whose f32 results are summed in double.
constexpr int64_t kMaxF32Terms = 4096;
class SplitPlan;
bool wants_split(const core::ConvProblem& p);
std::shared_ptr<SplitPlan> make_split_plan(const core::ConvProblem& p);  // null: not splittable
Event run_split_plan(SplitPlan& plan, const core::ConvArgs& args);
PlanInfo split_plan_info(SplitPlan& plan);

// Transposed convolutions (transposed_plan.cpp): the convolution they run as (the base problem,
// run through `run_base` with its own cached plan), plus the epilogue on a transposed forward's
// output or the bias gradient of a transposed backward-weights.
class TransposedPlan;
using RunBase = std::function<void(const core::ConvProblem&, const core::ConvArgs&)>;
std::shared_ptr<TransposedPlan> make_transposed_plan(const core::ConvProblem& p);
const core::ConvProblem& transposed_base(const TransposedPlan& plan);
Event run_transposed_plan(const TransposedPlan& plan, const core::ConvArgs& args, const RunBase& run_base);
PlanInfo transposed_plan_info(const TransposedPlan& plan, const PlanInfo& base);

// Convolutions with post-padding below oneDNN's limit 1 - stride (crop_plan.cpp): the same
// convolution over the input rows its windows reach (the base problem, run through `run_base`).
class CropPlan;
bool wants_crop(const core::ConvProblem& p);
std::shared_ptr<CropPlan> make_crop_plan(const core::ConvProblem& p);
const core::ConvProblem& crop_base(const CropPlan& plan);
Event run_crop_plan(const CropPlan& plan, const core::ConvArgs& args, const RunBase& run_base);

// f64 plans (f64_plan.cpp; run_f64_plan in f64_conv.cpp).
std::shared_ptr<F64Plan> make_f64_plan(const core::ConvProblem& p);
void run_f64_plan(const F64Plan& plan, const core::ConvProblem& p, const core::ConvArgs& args);
PlanInfo f64_plan_info(const F64Plan& plan);

// Threads the backend runs with (0 = OpenMP's default); applied to the calling thread per call.
int requested_threads();
// Applies requested_threads() to the calling thread and returns the thread count in effect.
int apply_threads();

}  // namespace convkit::cpu
