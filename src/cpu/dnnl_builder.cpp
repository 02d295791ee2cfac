// Builds a variant's step program around oneDNN's convolution primitives (see dnnl_builder.hpp).
//
// oneDNN facts this is built around (measured on this machine, oneDNN 2.6.3; the numbers are in
// docs/cpu.md):
//  * weights described with a plain tag (oihw/ohwi) send every direction to `ref:any`, ~1000x
//    slower; convolution weights are therefore always `format_tag::any` and user weights go
//    through a reorder primitive cached beside the convolution (diff_weights come back the same
//    way);
//  * user channels-last src/dst are used in place (brgconv / jit kernels); channels-first ones go
//    in as they are (gemm:jit) or through cached reorders, per preferred_act_layout();
//  * candidates are tried in order and the first that is not `ref` and whose kernel generates
//    wins.
#include "cpu/dnnl_builder.hpp"

#include <algorithm>
#include <cstring>

#include "cpu/dnnl_convert.hpp"
#include "cpu/dnnl_matmul.hpp"
#include "cpu/dnnl_policy.hpp"

namespace convkit::cpu {

using core::ConvProblem;

namespace {

// Takes `pd` as the choice when it is not `ref` and its kernel generates; the first `ref` one is
// kept as the fallback. True when taken.
template <typename Prim, typename PD> bool take(const PD& pd, PD& best, PD& fallback, dnnl::primitive& prim) {
    if (!pd) return false;
    if (is_ref(pd.impl_info_str())) {
        if (!fallback) fallback = pd;
        return false;
    }
    if (!Builder::jit<Prim>(pd, prim)) return false;
    best = pd;
    return true;
}

// No non-ref candidate: the fallback if its kernel generates, else the problem is unsupported.
template <typename Prim, typename PD>
void take_fallback(PD& best, const PD& fallback, dnnl::primitive& prim, const ConvProblem& p, const char* what) {
    if (!best && fallback && Builder::jit<Prim>(fallback, prim)) best = fallback;
    if (!best)
        throw Error(ErrorKind::unsupported, std::string("oneDNN has no ") + what + " convolution for " + p.str());
}

}  // namespace

dnnl::primitive_attr Builder::base_attr() {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
}

Builder::Builder(const ConvProblem& prob, Variant& var, bool wide)
    : p(prob), v(var), dt(to_dnnl(prob.dt)), cdt(wide ? ddt::f32 : dt) {
    // A widened problem's user tensors are seen as f32 (see user_bind()).
    u_src = mdesc(act_dims(p, false), cdt, act_tag(p.nsp, p.src_layout == Layout::channels_last));
    u_dst = mdesc(act_dims(p, true), cdt, act_tag(p.nsp, p.dst_layout == Layout::channels_last));
    u_wei = mdesc(wei_dims(p), cdt, wei_tag(p.nsp, p.g > 1, p.wei_layout == Layout::channels_last));
    if (p.with_bias) u_bias = mdesc({p.oc}, cdt, ftag::x);
    for (int i = 0; i < p.nsp; ++i) {
        stride.push_back(p.stride[i]);
        // oneDNN's dilation is 0-based. A 1-tap kernel has no spacing to dilate, and oneDNN refuses
        // a huge dilation there ("could not create a primitive descriptor") though the problem is
        // an ordinary one: dense instead.
        dilation.push_back(p.k[i] == 1 ? 0 : p.dilation[i] - 1);
        padding_l.push_back(p.padding_l[i]);
        padding_r.push_back(p.padding_r[i]);
    }
    v.temp_size.push_back(0);  // scratchpad
}

mdesc Builder::act_md(bool dst, ActLayout mode, ddt want_dt) const {
    const Layout user_layout = dst ? p.dst_layout : p.src_layout;
    switch (mode) {
        case ActLayout::user:
            return mdesc(act_dims(p, dst), want_dt, act_tag(p.nsp, user_layout == Layout::channels_last));
        case ActLayout::channels_first: return mdesc(act_dims(p, dst), want_dt, act_tag(p.nsp, false));
        case ActLayout::channels_last: return mdesc(act_dims(p, dst), want_dt, act_tag(p.nsp, true));
        case ActLayout::any: break;
    }
    return mdesc(act_dims(p, dst), want_dt, ftag::any);
}

mdesc Builder::wei_any(ddt d) const { return mdesc(wei_dims(p), d, ftag::any); }

std::size_t Builder::note_scratch(const mdesc& md) {
    scratch = std::max(scratch, md.get_size());
    return md.get_size();
}

void Builder::add_scratch(Step& s, const mdesc& sp) {
    if (note_scratch(sp)) s.add(DNNL_ARG_SCRATCHPAD, sp, Bind{Bind::temp, 0});
}

void Builder::add_reorder(const mdesc& from, Bind src, const mdesc& to, Bind dst, bool weights) {
    dnnl::reorder::primitive_desc rpd(dnnl_engine(), from, dnnl_engine(), to, base_attr());
    Step s;
    s.prim = dnnl::reorder(rpd);
    s.add(DNNL_ARG_FROM, from, src);
    s.add(DNNL_ARG_TO, to, dst);
    mdesc sp = rpd.scratchpad_desc();
    if (note_scratch(sp)) s.add(DNNL_ARG_SCRATCHPAD, sp, Bind{Bind::temp, 0});
    s.weights_reorder = weights;
    v.steps.push_back(std::move(s));
    if (!v.info.reorder_impls.empty()) v.info.reorder_impls += ";";
    v.info.reorder_impls += rpd.impl_info_str();
    ++v.info.reorders;
}

Bind Builder::temp_for(const mdesc& md) { return Bind{Bind::temp, v.add_temp(md.get_size())}; }

int Builder::add_map(const mdesc& blocked) {
    v.maps.push_back(blocked_map(blocked.data, u_wei.data.format_desc.blocking.strides));
    return static_cast<int>(v.maps.size()) - 1;
}

// Normally the user's memory. For a widened problem an f32 copy in the user's layout: widened
// from the user's tensor before its first read, narrowed into it (one rounding) after every other
// step when it is written. Layout changes stay with oneDNN's f32 reorders.
Bind Builder::user_bind(Bind::Kind kind, bool read, bool write, bool weights) {
    if (!wide()) return Bind{kind};
    const int i = static_cast<int>(kind);  // src, wei, bias, dst come first in Bind::Kind
    const mdesc& md = i == 0 ? u_src : i == 1 ? u_wei : i == 2 ? u_bias : u_dst;
    if (!have_wide_[i]) wide_[i] = temp_for(md), have_wide_[i] = true;
    if (read && !read_wide_[i]) {
        Step w;
        w.kind = Step::widen;
        w.from = Bind{kind};
        w.to = wide_[i];
        w.count = md.get_size() / sizeof(float);
        w.weights_reorder = weights;
        v.steps.push_back(std::move(w));
        read_wide_[i] = true;
    }
    write_wide_[i] = write_wide_[i] || write;
    return wide_[i];
}

Bind Builder::input(const mdesc& md, const mdesc& user, Bind::Kind kind, bool weights) {
    if (weights && wide() && md != user) {
        // Widened straight into the blocked layout: one pass instead of widen + reorder.
        const Bind b = temp_for(md);
        v.wei_temp = b.index;
        Step w;
        w.kind = Step::widen_blocked;
        w.from = Bind{kind};
        w.to = b;
        w.map = add_map(md);
        w.weights_reorder = true;
        v.steps.push_back(std::move(w));
        return b;
    }
    const Bind from = user_bind(kind, true, false, weights);
    if (md == user) return from;
    const Bind b = temp_for(md);
    if (weights) v.wei_temp = b.index;
    add_reorder(user, from, md, b, weights);
    return b;
}

Step Builder::conv_step(const dnnl::primitive& prim, const std::string& impl, const mdesc& s, const mdesc& w,
                        const mdesc& d) {
    v.info.impl = impl;
    v.info.src_format = fmt_str(s);
    v.info.wei_format = fmt_str(w);
    v.info.dst_format = fmt_str(d);
    Step conv;
    conv.prim = prim;
    return conv;
}

// ---- forward ----

bool Builder::try_fwd(ActLayout mode, bool fuse, ddt dst_dt, ddt bias_dt, FwdChoice& out) {
    mdesc s = act_md(false, mode, cdt);
    mdesc d = act_md(true, mode, dst_dt);
    mdesc b = p.with_bias ? mdesc({p.oc}, bias_dt, ftag::x) : mdesc();
    dnnl::primitive_attr attr = base_attr();
    if (fuse) {
        dnnl::post_ops ops;
        if (!fusable_post_ops(p, ops)) return false;
        attr.set_post_ops(ops);
    }
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, s,
                                         wei_any(cdt), b, d, stride, dilation, padding_l, padding_r);
    dnnl::convolution_forward::primitive_desc pd(desc, attr, dnnl_engine(), true);
    if (!pd) return false;
    out.pd = pd;
    out.fused = fuse;
    out.ok = true;
    return true;
}

void Builder::build_fwd(const std::vector<ActLayout>& modes) {
    const bool has_ops = p.n_post_ops > 0;
    FwdChoice best, fallback;
    ddt bias_dt = cdt;
    auto attempt = [&](ActLayout mode, bool fuse, ddt dst_dt) {
        FwdChoice c;
        for (ddt bdt : {cdt, ddt::f32}) {
            if (try_fwd(mode, fuse, dst_dt, bdt, c)) {
                bias_dt = bdt;
                return c;
            }
            if (!p.with_bias || cdt == ddt::f32) break;
        }
        return c;
    };
    for (ActLayout mode : modes) {
        FwdChoice plain = attempt(mode, false, cdt);
        if (!plain.ok) continue;
        if (is_ref(plain.pd.impl_info_str())) {
            if (!fallback.ok) fallback = plain;
            continue;
        }
        if (has_ops) {
            FwdChoice fused = attempt(mode, true, cdt);
            if (fused.ok && !is_ref(fused.pd.impl_info_str()) && fused.make()) {
                best = fused;
            } else {
                // Own epilogue: the convolution writes f32 (bf16 would round twice).
                FwdChoice own = attempt(mode, false, ddt::f32);
                if (own.make()) best = own;
                else if (plain.make()) best = plain;
            }
        } else if (plain.make()) {
            best = plain;
        }
        if (best.ok) break;
    }
    if (!best.ok && fallback.make()) best = fallback;
    if (!best.prim) throw Error(ErrorKind::unsupported, "oneDNN has no forward convolution for " + p.str());
    if (has_ops && !best.fused) v.own_epilogue = true;

    auto& pd = best.pd;
    const mdesc s = pd.src_desc(), w = pd.weights_desc(), d = pd.dst_desc();
    Step conv = conv_step(best.prim, pd.impl_info_str(), s, w, d);
    v.info.post_ops_fused = has_ops && best.fused;
    v.info.own_epilogue = v.own_epilogue;

    conv.add(DNNL_ARG_SRC, s, input(s, u_src, Bind::src));
    v.wei_md = w;
    Bind wei_b{Bind::packed};
    if (p.packed_weights) v.wei_temp = v.add_temp(w.get_size());
    else wei_b = input(w, u_wei, Bind::wei, true);
    conv.add(DNNL_ARG_WEIGHTS, w, wei_b);
    if (p.with_bias) {
        const mdesc b = pd.bias_desc();
        conv.add(DNNL_ARG_BIAS, b, input(b, u_bias, Bind::bias));
    }
    (void)bias_dt;
    // dst
    if (!v.own_epilogue) {
        const bool reordered = d != u_dst;
        Bind dst_b;
        if (reordered) {
            dst_b = temp_for(d);
            if (p.has_sum()) add_reorder(u_dst, user_bind(Bind::dst, true, false), d, dst_b);
        } else {
            dst_b = user_bind(Bind::dst, p.has_sum(), true);
        }
        conv.add(DNNL_ARG_DST, d, dst_b);
        add_scratch(conv, pd.scratchpad_desc());
        v.steps.push_back(std::move(conv));
        if (reordered) add_reorder(d, dst_b, u_dst, user_bind(Bind::dst, false, true));
    } else {
        // acc: f32 in the user's dst layout; written by the convolution directly when its dst
        // already is that, else through a reorder. The epilogue writes the user's dst (and
        // so does a widened problem's one rounding).
        const mdesc acc_md(act_dims(p, true), ddt::f32, act_tag(p.nsp, p.dst_layout == Layout::channels_last));
        const bool in_place = acc_md == u_dst && !p.has_sum() && !wide();
        v.acc = in_place ? Bind{Bind::dst} : temp_for(acc_md);
        if (d == acc_md) {
            conv.add(DNNL_ARG_DST, d, v.acc);
            add_scratch(conv, pd.scratchpad_desc());
            v.steps.push_back(std::move(conv));
        } else {
            Bind tmp = temp_for(d);
            conv.add(DNNL_ARG_DST, d, tmp);
            add_scratch(conv, pd.scratchpad_desc());
            v.steps.push_back(std::move(conv));
            add_reorder(d, tmp, acc_md, v.acc);
        }
    }
}

dnnl::convolution_forward::primitive_desc Builder::hint(ActLayout mode, const mdesc& w, bool bias, ddt bias_dt) {
    mdesc s = act_md(false, mode, cdt);
    mdesc d = act_md(true, mode, cdt);
    mdesc b = bias ? mdesc({p.oc}, bias_dt, ftag::x) : mdesc();
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, s, w,
                                         b, d, stride, dilation, padding_l, padding_r);
    return dnnl::convolution_forward::primitive_desc(desc, base_attr(), dnnl_engine(), true);
}

// ---- backward data ----

void Builder::build_bwd_d(const std::vector<ActLayout>& modes) {
    dnnl::convolution_backward_data::primitive_desc best, fallback;
    dnnl::primitive prim;
    for (ActLayout mode : modes) {
        auto h = hint(mode, wei_any(cdt), false, cdt);
        if (!h) continue;
        mdesc s = act_md(false, mode, cdt);
        mdesc d = act_md(true, mode, cdt);
        dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, s, wei_any(cdt), d, stride,
                                                   dilation, padding_l, padding_r);
        dnnl::convolution_backward_data::primitive_desc pd(desc, base_attr(), dnnl_engine(), h, true);
        if (take<dnnl::convolution_backward_data>(pd, best, fallback, prim)) break;
    }
    take_fallback<dnnl::convolution_backward_data>(best, fallback, prim, p, "backward-data");
    const mdesc s = best.diff_src_desc(), w = best.weights_desc(), d = best.diff_dst_desc();
    Step conv = conv_step(prim, best.impl_info_str(), s, w, d);
    conv.add(DNNL_ARG_DIFF_DST, d, input(d, u_dst, Bind::dst));
    v.wei_md = w;
    conv.add(DNNL_ARG_WEIGHTS, w, input(w, u_wei, Bind::wei, true));
    const bool reordered = s != u_src;
    const Bind src_b = reordered ? temp_for(s) : user_bind(Bind::src, false, true);
    conv.add(DNNL_ARG_DIFF_SRC, s, src_b);
    add_scratch(conv, best.scratchpad_desc());
    v.steps.push_back(std::move(conv));
    if (reordered) add_reorder(s, src_b, u_src, user_bind(Bind::src, false, true));
}

// ---- backward weights ----

// oneDNN 2.6's 1x1 backward-weights kernels (`jit_1x1:avx2`, `jit_1x1:avx512_core`) crash
// (SIGSEGV / abort in jit code) or write wrong gradients on strided problems with few channels
// and many positions: channels-last mb1ic3ih1002iw15oc2 1x1 stride 2x3 (also 1x3, 2x2, and at
// ih502), found by CpuTiling.RandomGeometries; ic16 oc16 and ResNet's 64 -> 128 ran. Such
// problems take the next implementation oneDNN offers.
static bool avoided_1x1(const char* impl) { return std::strstr(impl, "jit_1x1:") != nullptr; }

void Builder::build_bwd_w(const std::vector<ActLayout>& modes) {
    dnnl::convolution_backward_weights::primitive_desc best, fallback;
    dnnl::primitive prim;
    bool strided = false;
    for (int i = 0; i < p.nsp; ++i) strided = strided || p.stride[i] > 1;
    strided = strided && (p.icg() % 16 != 0 || p.ocg() % 16 != 0);  // the failing kind (above)
    // bf16: oneDNN accumulates in f32 either way; ask for bf16 diff_weights/diff_bias first
    // (no conversion step), f32 if that is refused.
    std::vector<ddt> out_dts{cdt};
    if (cdt != ddt::f32) out_dts.push_back(ddt::f32);
    for (ActLayout mode : modes) {
        bool found = false;
        for (ddt odt : out_dts) {
            auto h = hint(mode, wei_any(cdt), p.with_bias, odt);
            if (!h) continue;
            mdesc s = act_md(false, mode, cdt);
            mdesc d = act_md(true, mode, cdt);
            mdesc b = p.with_bias ? mdesc({p.oc}, odt, ftag::x) : mdesc();
            dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, s, wei_any(odt), b, d,
                                                          stride, dilation, padding_l, padding_r);
            dnnl::convolution_backward_weights::primitive_desc pd(desc, base_attr(), dnnl_engine(), h, true);
            if (pd && strided && avoided_1x1(pd.impl_info_str())) {
                bool moved = false;
                while (!moved && pd.next_impl()) moved = !avoided_1x1(pd.impl_info_str());
                if (!moved) continue;
            }
            found = take<dnnl::convolution_backward_weights>(pd, best, fallback, prim);
            if (found) break;
        }
        if (found) break;
    }
    take_fallback<dnnl::convolution_backward_weights>(best, fallback, prim, p, "backward-weights");
    const mdesc s = best.src_desc(), w = best.diff_weights_desc(), d = best.diff_dst_desc();
    Step conv = conv_step(prim, best.impl_info_str(), s, w, d);
    conv.add(DNNL_ARG_SRC, s, input(s, u_src, Bind::src));
    conv.add(DNNL_ARG_DIFF_DST, d, input(d, u_dst, Bind::dst));
    const bool wei_reordered = w != u_wei;
    const Bind wei_b = wei_reordered ? temp_for(w) : user_bind(Bind::wei, false, true);
    conv.add(DNNL_ARG_DIFF_WEIGHTS, w, wei_b);
    Bind bias_b;
    mdesc b;
    bool bias_reordered = false;
    if (p.with_bias) {
        b = best.diff_bias_desc();
        bias_reordered = b != u_bias;
        bias_b = bias_reordered ? temp_for(b) : user_bind(Bind::bias, false, true);
        conv.add(DNNL_ARG_DIFF_BIAS, b, bias_b);
    }
    add_scratch(conv, best.scratchpad_desc());
    v.steps.push_back(std::move(conv));
    if (wei_reordered && wide()) {
        Step n;
        n.kind = Step::narrow_blocked;
        n.from = wei_b;
        n.to = Bind{Bind::wei};
        n.map = add_map(w);
        v.steps.push_back(std::move(n));
    } else if (wei_reordered) {
        add_reorder(w, wei_b, u_wei, user_bind(Bind::wei, false, true));
    }
    if (bias_reordered) add_reorder(b, bias_b, u_bias, user_bind(Bind::bias, false, true));
}

void Builder::finish() {
    for (int i = 0; i < 4; ++i) {
        if (!write_wide_[i]) continue;
        Step n;
        n.kind = Step::narrow;
        n.from = wide_[i];
        n.to = Bind{static_cast<Bind::Kind>(i)};
        n.count = v.temp_size[static_cast<std::size_t>(wide_[i].index)] / sizeof(float);
        v.steps.push_back(std::move(n));
    }
    v.temp_size[0] = scratch;
    v.temp_off.resize(v.temp_size.size());
    std::size_t off = 0;
    for (std::size_t i = 0; i < v.temp_size.size(); ++i) {
        v.temp_off[i] = off;
        off += (v.temp_size[i] + 63) & ~std::size_t(63);
    }
    v.ws_bytes = off;
    v.info.workspace_bytes = off;
}

std::unique_ptr<Variant> build_variant_as(const ConvProblem& p, int nthr, bool wide) {
    auto v = std::make_unique<Variant>();
    v->nthr = nthr;
    Builder b(p, *v, wide);
    auto modes = mode_order(p, wide);
    const bool mm = matmul_candidate(b);
    switch (p.dir) {
        case core::Direction::fwd:
            if (!mm || !build_matmul_fwd(b)) b.build_fwd(modes);
            break;
        case core::Direction::bwd_d:
            if (!mm || !build_matmul_bwd_d(b)) b.build_bwd_d(modes);
            break;
        case core::Direction::bwd_w:
            if (!mm || !build_matmul_bwd_w(b)) b.build_bwd_w(modes);
            break;
    }
    b.finish();
    v->info.widened = wide;
    return v;
}

}  // namespace convkit::cpu
