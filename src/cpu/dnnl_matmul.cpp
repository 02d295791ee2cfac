// 1x1 convolutions as matrix products.
//
// A 1x1 convolution without padding on channels-last tensors is a matrix product over the
// M = mb * output positions rows. oneDNN's matmul reads the weights in the user's own plain
// layout (its brgemm kernels copy panels of them into cache as they go), whereas a
// convolution primitive needs a full reorder into a blocked layout first: where the weights
// outweigh the activations (late ResNet layers at small batch) that reorder costs more than
// the product itself. Strided 1x1 convolutions gather the used input positions into a dense
// temporary first (matmul on strided rows falls back to gemm:jit, which is slow).
#include "cpu/dnnl_matmul.hpp"

#include <string>

#include "core/env.hpp"
#include "cpu/dnnl_convert.hpp"
#include "cpu/dnnl_policy.hpp"

namespace convkit::cpu {

using core::ConvProblem;
using core::Direction;
using dnnl::memory;

namespace {

// Rows of the matrix view of channels-last activations: mb * output positions.
int64_t rows(const ConvProblem& p) {
    int64_t m = p.mb;
    for (int i = 0; i < p.nsp; ++i) m *= p.out[i];
    return m;
}

bool strided(const ConvProblem& p) {
    for (int i = 0; i < p.nsp; ++i)
        if (p.stride[i] != 1) return true;
    return false;
}

// Strided 1x1: the input rows the outputs read, copied to / from a dense [M, IC] temporary
// by convkit's own loop (oneDNN's memory descriptors refuse the interleaved strides of such
// a view when the input size is odd).
Bind add_gather(Builder& b) {
    const int64_t M = rows(b.p);
    Bind t = Bind{Bind::temp, b.v.add_temp(static_cast<std::size_t>(M * b.p.ic) * memory::data_type_size(b.cdt))};
    Step g;
    g.kind = Step::gather;
    g.from = b.user_bind(Bind::src, true, false);
    g.to = t;
    g.count = memory::data_type_size(b.cdt);
    b.v.steps.push_back(std::move(g));
    return t;
}

dnnl::matmul::primitive_desc make_matmul(const mdesc& a, const mdesc& w, const mdesc* b, const mdesc& c,
                                         const dnnl::primitive_attr& attr) {
    dnnl::matmul::desc d = b ? dnnl::matmul::desc(a, w, *b, c) : dnnl::matmul::desc(a, w, c);
    return dnnl::matmul::primitive_desc(d, attr, dnnl_engine(), true);
}

void note_matmul(Variant& v, const dnnl::matmul::primitive_desc& pd, const mdesc& a, const mdesc& w, const mdesc& c) {
    v.info.impl = std::string("matmul:") + pd.impl_info_str();
    v.info.src_format = fmt_str(a);
    v.info.wei_format = fmt_str(w);
    v.info.dst_format = fmt_str(c);
}

// A matmul step c = a x w without post-ops, noted as the variant's implementation; a null pd (and
// nothing noted) where oneDNN offers only `ref` or the kernel does not generate.
dnnl::matmul::primitive_desc plain_matmul(Builder& b, const mdesc& a, const mdesc& w, const mdesc& c, Step& mm) {
    auto pd = make_matmul(a, w, nullptr, c, Builder::base_attr());
    if (!pd || is_ref(pd.impl_info_str()) || !Builder::jit<dnnl::matmul>(pd, mm.prim)) return {};
    note_matmul(b.v, pd, a, w, c);
    return pd;
}

}  // namespace

bool matmul_candidate(const Builder& b) {
    const ConvProblem& p = b.p;
    if (p.g != 1 || p.packed_weights) return false;
    if (p.src_layout != Layout::channels_last || p.dst_layout != Layout::channels_last) return false;
    for (int i = 0; i < p.nsp; ++i)
        if (p.k[i] != 1 || p.padding_l[i] != 0 || p.padding_r[i] != 0) return false;
    // -1: not forced (unset or "auto").
    static const int forced = core::env::mode("CONVKIT_CPU_MATMUL", -1);
    if (forced >= 0) return forced > 0;
    // Weights elements over activation elements; thresholds measured on the ResNet-50 1x1
    // layers at mb 1 (docs/cpu.md): matmul wins above them.
    const double M = static_cast<double>(rows(p));
    const double ratio = static_cast<double>(p.ic) * static_cast<double>(p.oc) /
                         (M * static_cast<double>(p.ic + p.oc));
    // Native bf16 kernels have their own thresholds; a widened problem computes in f32.
    const bool bf16 = p.dt == DType::bf16 && !b.wide();
    double threshold = 1.0;
    switch (p.dir) {
        case Direction::fwd: threshold = bf16 ? 0.1 : 1.0; break;
        case Direction::bwd_d: threshold = bf16 ? 0.5 : 1.5; break;
        case Direction::bwd_w: threshold = bf16 ? 0.1 : 0.5; break;
    }
    return ratio >= threshold;
}

bool build_matmul_fwd(Builder& b) {
    const ConvProblem& p = b.p;
    Variant& v = b.v;
    const ddt cdt = b.cdt;
    const int64_t M = rows(p);
    const mdesc a({M, p.ic}, cdt, memory::dims{p.ic, 1});
    const mdesc w({p.ic, p.oc}, cdt, memory::dims{1, p.ic});  // W^T: oihw and ohwi are one layout at 1x1
    const bool has_ops = p.n_post_ops > 0;
    dnnl::matmul::primitive_desc pd;
    bool fused = false;
    mdesc bias_md;
    for (int attempt = 0; attempt < 2 && !pd; ++attempt) {
        const bool fuse = has_ops && attempt == 0;
        if (attempt == 1 && !has_ops) break;
        dnnl::primitive_attr attr = Builder::base_attr();
        if (fuse) {
            dnnl::post_ops ops;
            if (!fusable_post_ops(p, ops)) continue;
            attr.set_post_ops(ops);
        }
        const mdesc c({M, p.oc}, fuse || !has_ops ? cdt : ddt::f32, memory::dims{p.oc, 1});
        for (ddt bdt : {cdt, ddt::f32}) {
            bias_md = mdesc({1, p.oc}, bdt, memory::dims{p.oc, 1});
            pd = make_matmul(a, w, p.with_bias ? &bias_md : nullptr, c, attr);
            if (pd && !is_ref(pd.impl_info_str())) break;
            pd = dnnl::matmul::primitive_desc();
            if (!p.with_bias || cdt == ddt::f32) break;
        }
        fused = fuse && pd;
    }
    dnnl::primitive prim;
    if (!pd || !Builder::jit<dnnl::matmul>(pd, prim)) return false;
    v.own_epilogue = has_ops && !fused;
    const mdesc c = pd.dst_desc();
    note_matmul(v, pd, a, w, c);
    v.info.post_ops_fused = has_ops && fused;
    v.info.own_epilogue = v.own_epilogue;
    v.wei_md = w;

    Step mm;
    mm.prim = prim;
    const Bind src_b = strided(p) ? add_gather(b) : b.user_bind(Bind::src, true, false);
    mm.add(DNNL_ARG_SRC, a, src_b);
    mm.add(DNNL_ARG_WEIGHTS, w, b.user_bind(Bind::wei, true, false, true));
    if (p.with_bias) {
        Bind bias_b = b.user_bind(Bind::bias, true, false);
        if (bias_md.data_type() != cdt) {
            const mdesc conv_md({p.oc}, ddt::f32, ftag::x);
            const Bind from = bias_b;
            bias_b = b.temp_for(conv_md);
            b.add_reorder(b.u_bias, from, conv_md, bias_b);
        }
        mm.add(DNNL_ARG_BIAS, bias_md, bias_b);
    }
    if (!v.own_epilogue) {
        mm.add(DNNL_ARG_DST, c, b.user_bind(Bind::dst, p.has_sum(), true));
    } else {
        // The epilogue writes the user's dst (a widened problem's one rounding too).
        const bool in_place = b.dt == ddt::f32 && !p.has_sum();
        v.acc = in_place ? Bind{Bind::dst} : b.temp_for(c);
        mm.add(DNNL_ARG_DST, c, v.acc);
    }
    b.add_scratch(mm, pd.scratchpad_desc());
    v.steps.push_back(std::move(mm));
    return true;
}

bool build_matmul_bwd_d(Builder& b) {
    const ConvProblem& p = b.p;
    Variant& v = b.v;
    const int64_t M = rows(p);
    const mdesc a({M, p.oc}, b.cdt, memory::dims{p.oc, 1});
    const mdesc w({p.oc, p.ic}, b.cdt, memory::dims{p.ic, 1});
    const mdesc c({M, p.ic}, b.cdt, memory::dims{p.ic, 1});
    Step mm;
    const auto pd = plain_matmul(b, a, w, c, mm);
    if (!pd) return false;
    v.wei_md = w;
    mm.add(DNNL_ARG_SRC, a, b.user_bind(Bind::dst, true, false));
    mm.add(DNNL_ARG_WEIGHTS, w, b.user_bind(Bind::wei, true, false, true));
    const Bind out = strided(p) ? b.temp_for(c) : b.user_bind(Bind::src, false, true);
    mm.add(DNNL_ARG_DST, c, out);
    b.add_scratch(mm, pd.scratchpad_desc());
    v.steps.push_back(std::move(mm));
    if (strided(p)) {
        // diff_src is zero where no output position reads the input.
        Step zero;
        zero.kind = Step::zero;
        zero.to = b.user_bind(Bind::src, false, true);
        zero.zero_bytes = b.u_src.get_size();
        v.steps.push_back(std::move(zero));
        Step sc;
        sc.kind = Step::scatter;
        sc.from = out;
        sc.to = b.user_bind(Bind::src, false, true);
        sc.count = memory::data_type_size(b.cdt);
        v.steps.push_back(std::move(sc));
    }
    return true;
}

bool build_matmul_bwd_w(Builder& b) {
    const ConvProblem& p = b.p;
    const int64_t M = rows(p);
    const mdesc a({p.oc, M}, b.cdt, memory::dims{1, p.oc});  // diff_dst^T
    const mdesc w({M, p.ic}, b.cdt, memory::dims{p.ic, 1});
    const mdesc c({p.oc, p.ic}, b.cdt, memory::dims{p.ic, 1});
    Step mm;
    const auto pd = plain_matmul(b, a, w, c, mm);
    if (!pd) return false;
    mm.add(DNNL_ARG_SRC, a, b.user_bind(Bind::dst, true, false));
    const Bind src_b = strided(p) ? add_gather(b) : b.user_bind(Bind::src, true, false);
    mm.add(DNNL_ARG_WEIGHTS, w, src_b);
    mm.add(DNNL_ARG_DST, c, b.user_bind(Bind::wei, false, true));
    b.add_scratch(mm, pd.scratchpad_desc());
    b.v.steps.push_back(std::move(mm));
    b.v.own_bias_grad = p.with_bias;
    return true;
}

}  // namespace convkit::cpu
