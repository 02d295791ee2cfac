// What the oneDNN-based parts of the CPU backend (dnnl_plan.cpp, split_plan.cpp) share: the one
// CPU engine every primitive runs on, and the plain descriptors of a problem's activations.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

#include "core/problem.hpp"

namespace convkit::cpu {

dnnl::engine& dnnl_engine();
// ncw / nchw / ncdhw, or nwc / nhwc / ndhwc when channels-last.
dnnl::memory::format_tag act_tag(int nsp, bool channels_last);
// [mb, C, spatial...] of src (or dst).
dnnl::memory::dims act_dims(const core::ConvProblem& p, bool dst);

}  // namespace convkit::cpu
