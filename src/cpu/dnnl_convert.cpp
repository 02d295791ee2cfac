// convkit's values as oneDNN descriptors and oneDNN's answers as convkit's (see dnnl_convert.hpp).
#include "cpu/dnnl_convert.hpp"

#include <algorithm>
#include <cstring>
#include <oneapi/dnnl/dnnl_debug.h>

#include "convkit/error.hpp"

namespace convkit::cpu {

using core::ConvProblem;
using dnnl::memory;

dnnl::engine& dnnl_engine() {
    static dnnl::engine e(dnnl::engine::kind::cpu, 0);
    return e;
}

ddt to_dnnl(DType dt) {
    switch (dt) {
        case DType::f32: return ddt::f32;
        case DType::bf16: return ddt::bf16;
        case DType::f16: return ddt::f16;
        case DType::f64: break;
    }
    return ddt::undef;
}

ftag act_tag(int nsp, bool cl) {
    if (nsp == 1) return cl ? ftag::nwc : ftag::ncw;
    if (nsp == 2) return cl ? ftag::nhwc : ftag::nchw;
    return cl ? ftag::ndhwc : ftag::ncdhw;
}

ftag wei_tag(int nsp, bool grouped, bool cl) {
    if (grouped) {
        if (nsp == 1) return cl ? ftag::gowi : ftag::goiw;
        if (nsp == 2) return cl ? ftag::gohwi : ftag::goihw;
        return cl ? ftag::godhwi : ftag::goidhw;
    }
    if (nsp == 1) return cl ? ftag::owi : ftag::oiw;
    if (nsp == 2) return cl ? ftag::ohwi : ftag::oihw;
    return cl ? ftag::odhwi : ftag::oidhw;
}

memory::dims act_dims(const ConvProblem& p, bool dst) {
    memory::dims d{p.mb, dst ? p.oc : p.ic};
    for (int i = 0; i < p.nsp; ++i) d.push_back(dst ? p.out[i] : p.in[i]);
    return d;
}

memory::dims wei_dims(const ConvProblem& p) {
    memory::dims d;
    if (p.g > 1) d = {p.g, p.ocg(), p.icg()};
    else d = {p.oc, p.ic};
    for (int i = 0; i < p.nsp; ++i) d.push_back(p.k[i]);
    return d;
}

dnnl::algorithm eltwise_alg(EltwiseAlg a) {
    using A = dnnl::algorithm;
    switch (a) {
        case EltwiseAlg::relu: return A::eltwise_relu;
        case EltwiseAlg::linear: return A::eltwise_linear;
        // clip_v2 and clip give the same forward values (they differ in the backward pass).
        case EltwiseAlg::clip: return A::eltwise_clip_v2;
        case EltwiseAlg::elu: return A::eltwise_elu;
        case EltwiseAlg::swish: return A::eltwise_swish;
        case EltwiseAlg::gelu_erf: return A::eltwise_gelu_erf;
        case EltwiseAlg::gelu_tanh: return A::eltwise_gelu_tanh;
        case EltwiseAlg::logistic: return A::eltwise_logistic;
        case EltwiseAlg::tanh: return A::eltwise_tanh;
        case EltwiseAlg::hardswish: return A::eltwise_hardswish;
        case EltwiseAlg::mish: return A::eltwise_mish;
        case EltwiseAlg::abs: return A::eltwise_abs;
        case EltwiseAlg::square: return A::eltwise_square;
        case EltwiseAlg::sqrt: return A::eltwise_sqrt;
        case EltwiseAlg::exp: return A::eltwise_exp;
        case EltwiseAlg::log: return A::eltwise_log;
    }
    return A::eltwise_relu;
}

bool is_ref(const char* impl) { return impl && std::strstr(impl, "ref") != nullptr; }

// Dims ordered outer to inner by stride ("acdb" = nhwc), upper case where a dim is also blocked,
// then the inner blocks ("ABcd16b16a").
std::string fmt_str(const mdesc& md) {
    const dnnl_memory_desc_t& d = md.data;
    if (d.format_kind != dnnl_blocked) return dnnl_fmt_kind2str(d.format_kind);
    const auto& bd = d.format_desc.blocking;
    int order[DNNL_MAX_NDIMS];
    for (int i = 0; i < d.ndims; ++i) order[i] = i;
    std::stable_sort(order, order + d.ndims, [&](int a, int b) { return bd.strides[a] > bd.strides[b]; });
    bool blocked[DNNL_MAX_NDIMS] = {};
    for (int i = 0; i < bd.inner_nblks; ++i) blocked[bd.inner_idxs[i]] = true;
    std::string s;
    for (int i = 0; i < d.ndims; ++i) s += static_cast<char>((blocked[order[i]] ? 'A' : 'a') + order[i]);
    for (int i = 0; i < bd.inner_nblks; ++i)
        s += std::to_string(bd.inner_blks[i]) + static_cast<char>('a' + bd.inner_idxs[i]);
    return s;
}

void check_status(dnnl_status_t st, const char* what) {
    if (st == dnnl_success) return;
    if (st == dnnl_out_of_memory)
        throw Error(ErrorKind::out_of_memory, std::string("cpu backend: ") + what + ": oneDNN ran out of memory");
    throw Error(ErrorKind::backend, std::string("cpu backend: ") + what + " failed: oneDNN status " +
                                        dnnl_status2str(st));
}

}  // namespace convkit::cpu
