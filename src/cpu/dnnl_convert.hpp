// convkit's vocabulary in oneDNN's words and back, for every oneDNN-based part of the CPU backend:
// the one CPU engine, data types, format tags and dims of a problem's tensors, post-op algorithms;
// and oneDNN's answers (layouts, implementation names, status codes) as convkit's. Descriptors
// only: convert.hpp converts data.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>
#include <string>

#include "core/problem.hpp"

namespace convkit::cpu {

// Short names for oneDNN's descriptor types.
using mdesc = dnnl::memory::desc;
using ftag = dnnl::memory::format_tag;
using ddt = dnnl::memory::data_type;

dnnl::engine& dnnl_engine();

// f32 / bf16 / f16; undef for f64 (oneDNN has no f64 convolutions).
dnnl::memory::data_type to_dnnl(DType dt);
// ncw / nchw / ncdhw, or nwc / nhwc / ndhwc when channels-last.
dnnl::memory::format_tag act_tag(int nsp, bool channels_last);
// oi(d)(h)w / o(d)(h)wi, with a leading g when grouped.
dnnl::memory::format_tag wei_tag(int nsp, bool grouped, bool channels_last);
// [mb, C, spatial...] of src (or dst).
dnnl::memory::dims act_dims(const core::ConvProblem& p, bool dst);
// [oc, ic, k...], or [g, oc/g, ic/g, k...] when grouped.
dnnl::memory::dims wei_dims(const core::ConvProblem& p);
dnnl::algorithm eltwise_alg(EltwiseAlg a);

// Whether an implementation name is one of oneDNN's naive `ref` kernels.
bool is_ref(const char* impl);
// oneDNN's tag spelling of a descriptor's layout ("acdb", "ABcd16b16a"), for PlanInfo.
std::string fmt_str(const dnnl::memory::desc& md);
// Throws the convkit::Error for a failed oneDNN C call, naming `what`.
void check_status(dnnl_status_t st, const char* what);

}  // namespace convkit::cpu
