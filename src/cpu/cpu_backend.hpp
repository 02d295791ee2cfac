// Internal view of the oneDNN CPU backend for tests and benchmarks: what a cached plan runs
// (implementation names, layouts, whether the post-op chain is fused), so a test can assert that
// no shape of interest lands on oneDNN's naive `ref` kernels. Not part of the public API.
#pragma once
#include <cstddef>
#include <string>

#include "core/problem.hpp"

namespace convkit::cpu {

struct PlanInfo {
    std::string impl;        // oneDNN impl_info_str of the convolution, or "f64:im2col+dgemm" etc.
    std::string src_format;  // layouts the convolution primitive reads/writes (oneDNN tags)
    std::string wei_format;
    std::string dst_format;
    std::string reorder_impls;    // impl names of the reorders on the call path, ';'-separated
    int reorders = 0;             // reorder primitives run per call (weights included)
    bool post_ops_fused = false;  // the whole chain runs inside oneDNN
    bool own_epilogue = false;    // the chain runs in convkit's single fused pass
    bool widened = false;         // a bf16/f16 problem computed by f32 kernels, rounded once
    std::size_t workspace_bytes = 0;  // scratchpad + temporaries taken from the allocator per call
};

// How bf16/f16 problems are run (isa.cpp): `automatic` takes oneDNN's native 16-bit kernels where
// it has non-ref ones and widens to f32 otherwise; `always` / `never` force one way, for tests
// and measurements (CONVKIT_CPU_WIDE=1 / 0 set the starting value). Plans already cached keep
// the way they were built: clear the cache after a change.
enum class WidePolicy { automatic, always, never };
WidePolicy wide_policy();
void set_wide_policy(WidePolicy p);

// What this CPU runs on: oneDNN's version, the instruction set it dispatches to (honouring
// ONEDNN_MAX_CPU_ISA), the thread count, and how 16-bit problems run; for tables and logs.
std::string describe();

// Builds (or finds in the backend's cache) the plan for `p` at the current thread count.
PlanInfo plan_info(const core::ConvProblem& p);
inline std::string impl_name(const core::ConvProblem& p) { return plan_info(p).impl; }

// The layout src/dst are handed to oneDNN in: the user's own (used in place), one of the two
// plain layouts or the blocked one oneDNN prefers (`any`), through cached reorders.
enum class ActLayout { user, channels_first, channels_last, any };
// The layout a problem tries first (dnnl_policy.cpp; rules measured on ResNet-50, see docs/cpu.md);
// CONVKIT_CPU_ACT_LAYOUT=user|nchw|nhwc|any forces one for experiments.
ActLayout preferred_act_layout(const core::ConvProblem& p);

}  // namespace convkit::cpu
