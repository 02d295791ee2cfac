// Every CONVKIT_CUDA_* environment setting of the CUDA backend, each read once on first use with
// core/env.hpp's parsers. Two of them can also be changed at run time through cuda_api.hpp
// (set_direct_max_macs, set_split_dgrad); autotuning and the tune file are the core's settings
// (convkit::autotune(), core::tune_file()). What each choice buys is in docs/cuda.md, "Plan kinds".
#pragma once
#include <cstdint>

#include "core/problem.hpp"

namespace convkit::cuda {

// CONVKIT_CUDA_ACC32 (default on; "0" off): a 16-bit problem that needs a pass of ours after the
// convolution may have the convolution write an f32 temporary, rounded once by that pass.
bool acc32_enabled();

// CONVKIT_CUDA_WIDE (default on; "0" off): a 16-bit problem whose engines refuse an f32 result may
// run as an f32 (TF32) plan on widened copies of its inputs.
bool wide_enabled();

// CONVKIT_CUDA_WIDE_BWD_W_MAX_MACS (default 2^24): backward-weights takes the widened plan only up
// to this many multiply-adds.
int64_t wide_bwd_w_max_macs();

// CONVKIT_CUDA_EXPLICIT_PADDING: whether asymmetric padding tries the zero-padded temporary before
// native pre/post paddings. "0": never, any other value: every dtype; unset: f64 only.
bool prefer_explicit_padding(const core::ConvProblem& p);

// CONVKIT_CUDA_WORKSPACE_LIMIT_MB (default 2048, as are values <= 0): engine configurations that
// ask for more workspace are not used. In bytes.
int64_t workspace_limit();

// CONVKIT_CUDA_DIRECT_MAX_MACS and CONVKIT_CUDA_SPLIT_DGRAD seed direct_max_macs() and
// split_dgrad() (cuda_api.hpp, defined in settings.cpp).

}  // namespace convkit::cuda
