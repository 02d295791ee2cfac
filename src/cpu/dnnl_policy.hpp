// What the oneDNN plans choose and why: which post-op chains oneDNN 2.6 is trusted to fuse, which
// activation layouts are tried in which order (preferred_act_layout(), declared in
// cpu_backend.hpp for the tests), and whether a 16-bit problem runs on native kernels or widened
// to f32 (native_16bit_preferred(), declared in cpu_internal.hpp).
#pragma once
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "cpu/dnnl_program.hpp"

namespace convkit::cpu {

// Appends p's chain to `ops` as oneDNN post-ops, or returns false (the chain then runs in
// convkit's own pass) where oneDNN 2.6 cannot be trusted with it.
bool fusable_post_ops(const core::ConvProblem& p, dnnl::post_ops& ops);
// The activation layouts to try, best first; the first that gets a non-ref implementation wins.
std::vector<ActLayout> mode_order(const core::ConvProblem& p, bool wide);
// The variant `p` runs as at `nthr` threads: native or widened to f32, per wide_policy().
std::unique_ptr<Variant> build_variant(const core::ConvProblem& p, int nthr);

}  // namespace convkit::cpu
