// The f64 path's plan: geometry, formulation and work split (see f64_plan.hpp), and its entry
// points for the backend (cpu_internal.hpp).
#include "cpu/f64_plan.hpp"

#include <algorithm>
#include <climits>

#include "core/checked.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {

using core::ConvProblem;

F64Plan::F64Plan(const ConvProblem& prob) : p(prob), geo(prob.spatial3()) {
    first = core::Spatial3::at(p.nsp, 0);
    for (int j = 0; j < 3; ++j) {
        IS = core::checked_mul(IS, geo.in[j], "f64 input size");
        OS = core::checked_mul(OS, geo.out[j], "f64 output size");
        KS = core::checked_mul(KS, geo.k[j], "f64 kernel size");
    }
    G = p.g;
    ICg = p.icg();
    OCg = p.ocg();
    K = core::checked_mul(ICg, KS, "f64 gemm K");
    O0 = geo.out[first];
    P = OS / O0;
    cl = p.src_layout == Layout::channels_last;
    direct = KS == 1;
    for (int j = 0; j < 3; ++j)
        direct = direct && geo.stride[j] == 1 && geo.padding_l[j] == 0 && geo.padding_r[j] == 0;
    const bool wei_cl = p.wei_layout == Layout::channels_last;
    wei_native = wei_cl == cl || KS == 1 || ICg == 1;
    dst_native = (p.dst_layout == Layout::channels_last) == cl || p.oc == 1 || OS == 1;
    // Neighbouring blocks of R outer rows touch input rows that overlap by
    // (k - 1) * dilation + 1 - stride; blocks two apart must not overlap.
    reach_bwd_d = (geo.k[first] - 1) * geo.dilation[first] + 1 - geo.stride[first];
    min_rows_bwd_d = std::max<int64_t>(1, (reach_bwd_d + geo.stride[first] - 1) / geo.stride[first]);
}

F64Plan::Split F64Plan::split(int nthr, int64_t channels, int64_t col_fixed, int64_t col_per_channel,
                              bool bwd_d) const {
    Split s;
    const int64_t indep = p.mb * G;
    const double w = static_cast<double>(OCg) * static_cast<double>(K);
    const double col = static_cast<double>(OS) * static_cast<double>(K);
    if (w > col && channels >= 32) s.chunks = std::min<int64_t>(nthr, channels / 16);
    s.chunk = (channels + s.chunks - 1) / s.chunks;
    s.chunks = (channels + s.chunk - 1) / s.chunk;
    const int64_t per_pos = col_fixed + s.chunk * col_per_channel;
    int64_t nb = 1;
    if (!direct) {
        const int64_t bytes = OS * per_pos * static_cast<int64_t>(sizeof(double));
        nb = std::max<int64_t>(1, (bytes + static_cast<int64_t>(kColBudget) - 1) / static_cast<int64_t>(kColBudget));
    }
    const bool overlap = bwd_d && !direct && min_rows_bwd_d > 0 && reach_bwd_d > 0;
    // Enough blocks to keep every thread busy (in each phase when there are two), a multiple
    // of the thread count if it can be.
    const int64_t need = (nthr + indep * s.chunks - 1) / (indep * s.chunks);
    nb = std::max(nb, need);
    if (overlap && nb > 1) nb = std::max(nb, 2 * need);
    while ((nb * indep * s.chunks) % nthr != 0 && nb < O0) ++nb;
    nb = std::min(nb, O0);
    s.R = (O0 + nb - 1) / nb;
    if (overlap) s.R = std::max(s.R, min_rows_bwd_d);
    s.nb = (O0 + s.R - 1) / s.R;
    s.phases = overlap && s.nb > 1;
    return s;
}

std::shared_ptr<F64Plan> make_f64_plan(const ConvProblem& p) {
    const int64_t lim = INT32_MAX;  // cblas takes int sizes
    auto f = std::make_shared<F64Plan>(p);
    if (f->K > lim || f->OS * std::max(p.ic, p.oc) > lim || f->IS * std::max(p.ic, p.oc) > lim)
        throw Error(ErrorKind::unsupported, "cpu backend: f64 problem " + p.str() +
                                                " is too large for the BLAS interface (sizes above 2^31)");
    return f;
}

PlanInfo f64_plan_info(const F64Plan& plan) {
    PlanInfo info;
    info.impl = plan.direct ? "f64:gemm(openblas)" : "f64:im2col+gemm(openblas)";
    info.src_format = info.dst_format = plan.cl ? "channels_last" : "channels_first";
    info.wei_format = plan.cl ? "O(D)HWI" : "OI(D)HW";
    info.own_epilogue = plan.p.n_post_ops > 0 || plan.p.with_bias;
    return info;
}

}  // namespace convkit::cpu
