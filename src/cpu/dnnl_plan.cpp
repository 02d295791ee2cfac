// f32/bf16 convolutions on oneDNN 2.6: a ConvProblem becomes a short program of steps
// (reorders in, the convolution or matrix product, reorders out, optionally convkit's own
// post-op pass), built once per problem and thread count and cached; a call then only binds
// pointers and executes.
//
// oneDNN facts this file is built around (measured on this machine, oneDNN 2.6.3; the numbers are
// in docs/cpu.md):
//  * weights described with a plain tag (oihw/ohwi) send every direction to `ref:any`, ~1000x
//    slower; convolution weights are therefore always `format_tag::any` and user weights go
//    through a reorder primitive cached beside the convolution (diff_weights come back the same
//    way);
//  * user channels-last src/dst are used in place (brgconv / jit kernels); channels-first ones go
//    in as they are (gemm:jit) or through cached reorders, per preferred_act_layout();
//  * weight-heavy 1x1 convolutions on channels-last tensors run as oneDNN matmuls, which read the
//    user's plain weights directly (no reorder);
//  * candidates are tried in order and the first that is not `ref` and whose kernel generates
//    wins;
//  * fused post-ops are wrong or crash in several corners (fusable_post_ops lists them): what
//    oneDNN cannot be trusted with runs in convkit's own single pass.
#include <omp.h>

#include <algorithm>
#include <map>
#include <cstdlib>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_debug.h>

#include "core/checked.hpp"
#include "cpu/convert.hpp"
#include "cpu/cpu_internal.hpp"
#include "cpu/dnnl_common.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;
using dnnl::memory;
using mdesc = dnnl::memory::desc;
using ftag = dnnl::memory::format_tag;
using ddt = dnnl::memory::data_type;

dnnl::engine& dnnl_engine() {
    static dnnl::engine e(dnnl::engine::kind::cpu, 0);
    return e;
}

ftag act_tag(int nsp, bool cl) {
    if (nsp == 1) return cl ? ftag::nwc : ftag::ncw;
    if (nsp == 2) return cl ? ftag::nhwc : ftag::nchw;
    return cl ? ftag::ndhwc : ftag::ncdhw;
}

memory::dims act_dims(const ConvProblem& p, bool dst) {
    memory::dims d{p.mb, dst ? p.oc : p.ic};
    for (int i = 0; i < p.nsp; ++i) d.push_back(dst ? p.out[i] : p.in[i]);
    return d;
}

namespace {

ddt to_dnnl(DType dt) {
    switch (dt) {
        case DType::f32: return ddt::f32;
        case DType::bf16: return ddt::bf16;
        case DType::f16: return ddt::f16;
        case DType::f64: break;
    }
    return ddt::undef;
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

memory::dims wei_dims(const ConvProblem& p) {
    memory::dims d;
    if (p.g > 1) d = {p.g, p.ocg(), p.icg()};
    else d = {p.oc, p.ic};
    for (int i = 0; i < p.nsp; ++i) d.push_back(p.k[i]);
    return d;
}

bool is_ref(const char* impl) { return impl && std::strstr(impl, "ref") != nullptr; }

// oneDNN's tag spelling of a blocked descriptor: dims ordered outer to inner by stride
// ("acdb" = nhwc), upper case where a dim is also blocked, then the inner blocks ("ABcd16b16a").
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

// Whether some output position's window has no tap inside the input (it sees only padding).
bool has_padding_only_output(const ConvProblem& p) {
    for (int i = 0; i < p.nsp; ++i)
        for (int64_t o = 0; o < p.out[i]; ++o) {
            bool touches = false;
            for (int64_t k = 0; k < p.k[i] && !touches; ++k) {
                const int64_t x = o * p.stride[i] - p.padding_l[i] + k * p.dilation[i];
                touches = x >= 0 && x < p.in[i];
            }
            if (!touches) return true;
        }
    return false;
}

// Where a primitive argument's memory comes from at execution time.
struct Bind {
    enum Kind : uint8_t { src, wei, bias, dst, packed, temp, operand } kind = temp;
    int index = 0;  // temp region or post-op index
};

struct Step {
    // A oneDNN primitive, or one of convkit's own copies (no oneDNN descriptor describes them).
    // widen / narrow: 16-bit `from` <-> f32 `to` in one layout; widen_blocked / narrow_blocked:
    // 16-bit plain weights <-> f32 weights in the convolution's blocked layout (maps[map]).
    enum Kind : uint8_t { primitive, zero, gather, scatter, widen, narrow, widen_blocked, narrow_blocked } kind = primitive;
    dnnl::primitive prim;
    Bind from, to;               // gather / scatter: src rows <-> dense rows; zero: `to`
    std::size_t zero_bytes = 0;
    std::size_t count = 0;       // widen / narrow: elements; gather / scatter: bytes per element
    int map = -1;                // widen_blocked / narrow_blocked
    std::vector<int> arg_ids;
    std::vector<mdesc> mds;
    std::vector<Bind> binds;
    bool weights_reorder = false;  // skipped when the weights come prepacked
    void add(int id, const mdesc& md, Bind b) {
        arg_ids.push_back(id);
        mds.push_back(md);
        binds.push_back(b);
    }
};

// Per-executor memory objects and argument arrays, reused so a call allocates nothing itself;
// a plan keeps a pool of them so concurrent calls on one plan never share one.
struct ExecCtx {
    dnnl::stream strm;
    std::vector<std::vector<dnnl::memory>> mems;
    std::vector<std::vector<dnnl_exec_arg_t>> cargs;
};

struct PackedWeightsHandle {
    mdesc md;
    core::Buffer data;
};

}  // namespace

struct Variant {
    int nthr = 0;
    std::vector<Step> steps;
    std::vector<std::size_t> temp_off;  // temp 0 is the scratchpad shared by all steps
    std::vector<BlockedMap> maps;       // widened weights: plain <-> blocked
    std::vector<std::size_t> temp_size;
    std::size_t ws_bytes = 0;
    mdesc wei_md;        // weights as the convolution reads them (fwd / bwd_d)
    int wei_temp = -1;   // temp for reordered weights, -1 if the user's are read directly
    bool own_epilogue = false;
    Bind acc;            // own epilogue input: the user dst or a temp (f32, dst's user layout)
    bool own_bias_grad = false;  // matmul path: diff_bias summed by convkit (matmul has none)
    PlanInfo info;

    std::mutex pool_mu;
    std::vector<std::unique_ptr<ExecCtx>> pool;
    std::mutex packed_mu;
    std::vector<std::pair<mdesc, dnnl::reorder>> packed_reorders;

    int add_temp(std::size_t bytes) {
        temp_size.push_back(bytes);
        return static_cast<int>(temp_size.size()) - 1;
    }
};

class DnnlPlan {
public:
    explicit DnnlPlan(const ConvProblem& p) : p_(p) {}
    Variant& get(int nthr);

private:
    ConvProblem p_;
    std::mutex mu_;
    std::vector<std::unique_ptr<Variant>> variants_;  // a handful at most: one per thread count
};

// Executes one variant (binds the call's pointers, runs the steps).
Event run_variant(Variant& v, const ConvProblem& p, const ConvArgs& args);

namespace {

// ---- building ----

struct Builder {
    const ConvProblem& p;
    Variant& v;
    ddt dt;   // the user's tensors
    ddt cdt;  // what the convolution computes in: dt, or f32 for a widened 16-bit problem
    mdesc u_src, u_dst, u_wei, u_bias;
    memory::dims strides, dilation, padding_l, padding_r;
    std::size_t scratch = 0;
    // dnnl::primitive_attr is a reference-counted handle: copying it shares the attributes, so
    // every primitive gets a fresh one.
    static dnnl::primitive_attr base_attr() {
        dnnl::primitive_attr a;
        a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        return a;
    }

    Builder(const ConvProblem& prob, Variant& var, bool wide)
        : p(prob), v(var), dt(to_dnnl(prob.dt)), cdt(wide ? ddt::f32 : dt) {
        // A widened problem's user tensors are seen as f32 (see user_bind()).
        u_src = mdesc(act_dims(p, false), cdt, act_tag(p.nsp, p.src_layout == Layout::channels_last));
        u_dst = mdesc(act_dims(p, true), cdt, act_tag(p.nsp, p.dst_layout == Layout::channels_last));
        u_wei = mdesc(wei_dims(p), cdt, wei_tag(p.nsp, p.g > 1, p.wei_layout == Layout::channels_last));
        if (p.with_bias) u_bias = mdesc({p.oc}, cdt, ftag::x);
        for (int i = 0; i < p.nsp; ++i) {
            strides.push_back(p.stride[i]);
            dilation.push_back(p.dilation[i] - 1);  // oneDNN's dilation is 0-based
            padding_l.push_back(p.padding_l[i]);
            padding_r.push_back(p.padding_r[i]);
        }
        v.temp_size.push_back(0);  // scratchpad
    }

    // The activation descriptor handed to the convolution for a user tensor in a given mode.
    mdesc act_md(bool dst, ActLayout mode, ddt want_dt) const {
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


    mdesc wei_any(ddt d) const { return mdesc(wei_dims(p), d, ftag::any); }
    bool wide() const { return cdt != dt; }

    // The chain as oneDNN post-ops, or false where oneDNN 2.6 cannot be trusted with it. Found
    // by the tests and the PyTorch oracle here, each accepted with a non-ref implementation and
    // computed wrong:
    //  * two sums in one chain (brgconv);
    //  * one eltwise kind twice with different parameters (elu:0.5+elu:1, relu:0.1+...+relu:0.3):
    //    the jit kernels keep one injector per kind and apply the first one's alpha/beta;
    //  * binary operands: spatial-only broadcasts and operands laid out unlike dst, but also
    //    per-channel and same-layout full operands on 1D/3D, grouped, depthwise and odd-channel
    //    shapes (brgconv, jit dw);
    //  * a sum together with an eltwise op where some output's window lies entirely in padding
    //    (brgconv segfaults).
    // So at most one sum, each eltwise kind at most once, no binary op, and no fusion at all
    // where an output sees only padding: such chains run whole in convkit's own pass, one sweep
    // over dst after the convolution.
    bool fusable_post_ops(dnnl::post_ops& ops) const {
        if (has_padding_only_output(p)) return false;
        int sums = 0;
        for (int k = 0; k < p.n_post_ops; ++k) {
            const core::PostOpDesc& pd = p.post_ops[k];
            if (pd.kind == PostOp::Kind::binary) return false;
            if (pd.kind == PostOp::Kind::sum && ++sums > 1) return false;
            if (pd.kind == PostOp::Kind::eltwise)
                for (int j = 0; j < k; ++j)
                    if (p.post_ops[j].kind == PostOp::Kind::eltwise && p.post_ops[j].alg == pd.alg) return false;
        }
        for (int k = 0; k < p.n_post_ops; ++k) {
            const core::PostOpDesc& pd = p.post_ops[k];
            if (pd.kind == PostOp::Kind::sum) {
                ops.append_sum(static_cast<float>(pd.scale));
                continue;
            }
            const auto alg = static_cast<EltwiseAlg>(pd.alg);
            float alpha = static_cast<float>(pd.alpha), beta = static_cast<float>(pd.beta);
            // oneDNN 2.6's hardswish has no parameters (x * relu6(x + 3) / 6); pass the ONNX-style
            // 1/6, 1/2 that later versions read, which mean the same function.
            if (alg == EltwiseAlg::hardswish) alpha = 1.f / 6.f, beta = 0.5f;
            ops.append_eltwise(1.f, eltwise_alg(alg), alpha, beta);
        }
        return true;
    }

    // Creates the primitive; false where oneDNN accepted the descriptor but its kernel generator
    // then fails (seen for bf16 grouped 1D convolutions with some eltwise chains): the caller
    // moves on to its next candidate.
    template <typename Prim, typename PD> static bool jit(const PD& pd, dnnl::primitive& out) {
        try {
            out = Prim(pd);
            return true;
        } catch (const dnnl::error&) {
            return false;
        }
    }

    std::size_t note_scratch(const mdesc& md) {
        scratch = std::max(scratch, md.get_size());
        return md.get_size();
    }

    // A cached reorder step from one descriptor to another.
    void add_reorder(const mdesc& from, Bind src, const mdesc& to, Bind dst, bool weights = false) {
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

    Bind temp_for(const mdesc& md) { return Bind{Bind::temp, v.add_temp(md.get_size())}; }

    int add_map(const mdesc& blocked) {
        v.maps.push_back(blocked_map(blocked.data, u_wei.data.format_desc.blocking.strides));
        return static_cast<int>(v.maps.size()) - 1;
    }

    // Where the steps find user tensor `kind` (src, wei, bias or dst). Normally the user's memory.
    // For a widened problem an f32 copy in the user's layout: widened from the user's tensor
    // before its first read, narrowed into it (one rounding) after every other step when it is
    // written. Layout changes stay with oneDNN's f32 reorders.
    Bind wide_[4];
    bool have_wide_[4] = {}, read_wide_[4] = {}, write_wide_[4] = {};
    Bind user_bind(Bind::Kind kind, bool read, bool write, bool weights = false) {
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

    // An input of the convolution: the user's tensor `kind` as it is, or reordered into a
    // temporary in the layout oneDNN chose (weights: the reorder is cached with the plan).
    Bind input(const mdesc& md, const mdesc& user, Bind::Kind kind, bool weights = false) {
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

    void note_formats(const std::string& impl, const mdesc& s, const mdesc& w, const mdesc& d) {
        v.info.impl = impl;
        v.info.src_format = fmt_str(s);
        v.info.wei_format = fmt_str(w);
        v.info.dst_format = fmt_str(d);
    }

    // ---- forward ----
    struct FwdChoice {
        dnnl::convolution_forward::primitive_desc pd;
        dnnl::primitive prim;
        bool fused = false;
        bool ok = false;
        bool make() { return ok && jit<dnnl::convolution_forward>(pd, prim); }
    };

    bool try_fwd(ActLayout mode, bool fuse, ddt dst_dt, ddt bias_dt, FwdChoice& out) {
        mdesc s = act_md(false, mode, cdt);
        mdesc d = act_md(true, mode, dst_dt);
        mdesc b = p.with_bias ? mdesc({p.oc}, bias_dt, ftag::x) : mdesc();
        dnnl::primitive_attr attr = base_attr();
        if (fuse) {
            dnnl::post_ops ops;
            if (!fusable_post_ops(ops)) return false;
            attr.set_post_ops(ops);
        }
        dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference,
                                             dnnl::algorithm::convolution_direct, s, wei_any(cdt), b, d, strides,
                                             dilation, padding_l, padding_r);
        dnnl::convolution_forward::primitive_desc pd(desc, attr, dnnl_engine(), true);
        if (!pd) return false;
        out.pd = pd;
        out.fused = fuse;
        out.ok = true;
        return true;
    }

    void build_fwd(const std::vector<ActLayout>& modes) {
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
        if (!best.prim)
            throw Error(ErrorKind::unsupported, "oneDNN has no forward convolution for " + p.str());
        if (has_ops && !best.fused) v.own_epilogue = true;

        auto& pd = best.pd;
        const mdesc s = pd.src_desc(), w = pd.weights_desc(), d = pd.dst_desc();
        Step conv;
        conv.prim = best.prim;
        note_formats(pd.impl_info_str(), s, w, d);
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

    void add_scratch(Step& s, const mdesc& sp) {
        if (note_scratch(sp)) s.add(DNNL_ARG_SCRATCHPAD, sp, Bind{Bind::temp, 0});
    }

    dnnl::convolution_forward::primitive_desc hint(ActLayout mode, const mdesc& w, bool bias, ddt bias_dt) {
        mdesc s = act_md(false, mode, cdt);
        mdesc d = act_md(true, mode, cdt);
        mdesc b = bias ? mdesc({p.oc}, bias_dt, ftag::x) : mdesc();
        dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                             s, w, b, d, strides, dilation, padding_l, padding_r);
        return dnnl::convolution_forward::primitive_desc(desc, base_attr(), dnnl_engine(), true);
    }

    // ---- backward data ----
    void build_bwd_d(const std::vector<ActLayout>& modes) {
        dnnl::convolution_backward_data::primitive_desc best, fallback;
        dnnl::primitive prim;
        for (ActLayout mode : modes) {
            auto h = hint(mode, wei_any(cdt), false, cdt);
            if (!h) continue;
            mdesc s = act_md(false, mode, cdt);
            mdesc d = act_md(true, mode, cdt);
            dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, s, wei_any(cdt), d,
                                                       strides, dilation, padding_l, padding_r);
            dnnl::convolution_backward_data::primitive_desc pd(desc, base_attr(), dnnl_engine(), h, true);
            if (!pd) continue;
            if (is_ref(pd.impl_info_str())) {
                if (!fallback) fallback = pd;
                continue;
            }
            if (!jit<dnnl::convolution_backward_data>(pd, prim)) continue;
            best = pd;
            break;
        }
        if (!best && fallback && jit<dnnl::convolution_backward_data>(fallback, prim)) best = fallback;
        if (!best) throw Error(ErrorKind::unsupported, "oneDNN has no backward-data convolution for " + p.str());
        const mdesc s = best.diff_src_desc(), w = best.weights_desc(), d = best.diff_dst_desc();
        Step conv;
        conv.prim = prim;
        note_formats(best.impl_info_str(), s, w, d);
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
    void build_bwd_w(const std::vector<ActLayout>& modes) {
        dnnl::convolution_backward_weights::primitive_desc best, fallback;
        dnnl::primitive prim;
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
                dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, s, wei_any(odt), b,
                                                              d, strides, dilation, padding_l, padding_r);
                dnnl::convolution_backward_weights::primitive_desc pd(desc, base_attr(), dnnl_engine(), h, true);
                if (!pd) continue;
                if (is_ref(pd.impl_info_str())) {
                    if (!fallback) fallback = pd;
                    continue;
                }
                if (!jit<dnnl::convolution_backward_weights>(pd, prim)) continue;
                best = pd;
                found = true;
                break;
            }
            if (found) break;
        }
        if (!best && fallback && jit<dnnl::convolution_backward_weights>(fallback, prim)) best = fallback;
        if (!best) throw Error(ErrorKind::unsupported, "oneDNN has no backward-weights convolution for " + p.str());
        const mdesc s = best.src_desc(), w = best.diff_weights_desc(), d = best.diff_dst_desc();
        Step conv;
        conv.prim = prim;
        note_formats(best.impl_info_str(), s, w, d);
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


    // ---- 1x1 convolutions as matrix products ----
    //
    // A 1x1 convolution without padding on channels-last tensors is a matrix product over the
    // M = mb * output positions rows. oneDNN's matmul reads the weights in the user's own plain
    // layout (its brgemm kernels copy panels of them into cache as they go), whereas a
    // convolution primitive needs a full reorder into a blocked layout first: where the weights
    // outweigh the activations (late ResNet layers at small batch) that reorder costs more than
    // the product itself. Strided 1x1 convolutions gather the used input positions into a dense
    // temporary first (matmul on strided rows falls back to gemm:jit, which is slow).
    // Rows of the matrix view of channels-last activations: mb * output positions.
    int64_t rows() const {
        int64_t m = p.mb;
        for (int i = 0; i < p.nsp; ++i) m *= p.out[i];
        return m;
    }

    bool matmul_candidate() const {
        if (p.g != 1 || p.packed_weights) return false;
        if (p.src_layout != Layout::channels_last || p.dst_layout != Layout::channels_last) return false;
        for (int i = 0; i < p.nsp; ++i)
            if (p.k[i] != 1 || p.padding_l[i] != 0 || p.padding_r[i] != 0) return false;
        static const int forced = [] {
            const char* e = std::getenv("CONVKIT_CPU_MATMUL");
            return e ? std::atoi(e) : -1;
        }();
        if (forced >= 0) return forced > 0;
        // Weights elements over activation elements; thresholds measured on the ResNet-50 1x1
        // layers at mb 1 (docs/cpu.md): matmul wins above them.
        const double M = static_cast<double>(rows());
        const double ratio = static_cast<double>(p.ic) * static_cast<double>(p.oc) /
                             (M * static_cast<double>(p.ic + p.oc));
        // Native bf16 kernels have their own thresholds; a widened problem computes in f32.
        const bool bf16 = p.dt == DType::bf16 && !wide();
        double threshold = 1.0;
        switch (p.dir) {
            case Direction::fwd: threshold = bf16 ? 0.1 : 1.0; break;
            case Direction::bwd_d: threshold = bf16 ? 0.5 : 1.5; break;
            case Direction::bwd_w: threshold = bf16 ? 0.1 : 0.5; break;
        }
        return ratio >= threshold;
    }

    bool strided() const {
        for (int i = 0; i < p.nsp; ++i)
            if (p.stride[i] != 1) return true;
        return false;
    }

    // Strided 1x1: the input rows the outputs read, copied to / from a dense [M, IC] temporary
    // by convkit's own loop (oneDNN's memory descriptors refuse the interleaved strides of such
    // a view when the input size is odd).
    Bind add_gather() {
        const int64_t M = rows();
        Bind t = Bind{Bind::temp, v.add_temp(static_cast<std::size_t>(M * p.ic) * memory::data_type_size(cdt))};
        Step g;
        g.kind = Step::gather;
        g.from = user_bind(Bind::src, true, false);
        g.to = t;
        g.count = memory::data_type_size(cdt);
        v.steps.push_back(std::move(g));
        return t;
    }

    static dnnl::matmul::primitive_desc make_matmul(const mdesc& a, const mdesc& w, const mdesc* b, const mdesc& c,
                                                    const dnnl::primitive_attr& attr) {
        dnnl::matmul::desc d = b ? dnnl::matmul::desc(a, w, *b, c) : dnnl::matmul::desc(a, w, c);
        return dnnl::matmul::primitive_desc(d, attr, dnnl_engine(), true);
    }

    void note_matmul(const dnnl::matmul::primitive_desc& pd, const mdesc& a, const mdesc& w, const mdesc& c) {
        v.info.impl = std::string("matmul:") + pd.impl_info_str();
        v.info.src_format = fmt_str(a);
        v.info.wei_format = fmt_str(w);
        v.info.dst_format = fmt_str(c);
    }

    bool build_matmul_fwd() {
        const int64_t M = rows();
        const mdesc a({M, p.ic}, cdt, memory::dims{p.ic, 1});
        const mdesc w({p.ic, p.oc}, cdt, memory::dims{1, p.ic});  // W^T: oihw and ohwi are one layout at 1x1
        const bool has_ops = p.n_post_ops > 0;
        dnnl::matmul::primitive_desc pd;
        bool fused = false;
        mdesc bias_md;
        for (int attempt = 0; attempt < 2 && !pd; ++attempt) {
            const bool fuse = has_ops && attempt == 0;
            if (attempt == 1 && !has_ops) break;
            dnnl::primitive_attr attr = base_attr();
            if (fuse) {
                dnnl::post_ops ops;
                if (!fusable_post_ops(ops)) continue;
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
        if (!pd || !jit<dnnl::matmul>(pd, prim)) return false;
        v.own_epilogue = has_ops && !fused;
        const mdesc c = pd.dst_desc();
        note_matmul(pd, a, w, c);
        v.info.post_ops_fused = has_ops && fused;
        v.info.own_epilogue = v.own_epilogue;
        v.wei_md = w;

        Step mm;
        mm.prim = prim;
        const Bind src_b = strided() ? add_gather() : user_bind(Bind::src, true, false);
        mm.add(DNNL_ARG_SRC, a, src_b);
        mm.add(DNNL_ARG_WEIGHTS, w, user_bind(Bind::wei, true, false, true));
        if (p.with_bias) {
            Bind bias_b = user_bind(Bind::bias, true, false);
            if (bias_md.data_type() != cdt) {
                const mdesc conv_md({p.oc}, ddt::f32, ftag::x);
                const Bind from = bias_b;
                bias_b = temp_for(conv_md);
                add_reorder(u_bias, from, conv_md, bias_b);
            }
            mm.add(DNNL_ARG_BIAS, bias_md, bias_b);
        }
        if (!v.own_epilogue) {
            mm.add(DNNL_ARG_DST, c, user_bind(Bind::dst, p.has_sum(), true));
        } else {
            // The epilogue writes the user's dst (a widened problem's one rounding too).
            const bool in_place = dt == ddt::f32 && !p.has_sum();
            v.acc = in_place ? Bind{Bind::dst} : temp_for(c);
            mm.add(DNNL_ARG_DST, c, v.acc);
        }
        add_scratch(mm, pd.scratchpad_desc());
        v.steps.push_back(std::move(mm));
        return true;
    }

    bool build_matmul_bwd_d() {
        const int64_t M = rows();
        const mdesc a({M, p.oc}, cdt, memory::dims{p.oc, 1});
        const mdesc w({p.oc, p.ic}, cdt, memory::dims{p.ic, 1});
        const mdesc c({M, p.ic}, cdt, memory::dims{p.ic, 1});
        auto pd = make_matmul(a, w, nullptr, c, base_attr());
        dnnl::primitive prim;
        if (!pd || is_ref(pd.impl_info_str()) || !jit<dnnl::matmul>(pd, prim)) return false;
        note_matmul(pd, a, w, c);
        v.wei_md = w;
        Step mm;
        mm.prim = prim;
        mm.add(DNNL_ARG_SRC, a, user_bind(Bind::dst, true, false));
        mm.add(DNNL_ARG_WEIGHTS, w, user_bind(Bind::wei, true, false, true));
        const Bind out = strided() ? temp_for(c) : user_bind(Bind::src, false, true);
        mm.add(DNNL_ARG_DST, c, out);
        add_scratch(mm, pd.scratchpad_desc());
        v.steps.push_back(std::move(mm));
        if (strided()) {
            // diff_src is zero where no output position reads the input.
            Step zero;
            zero.kind = Step::zero;
            zero.to = user_bind(Bind::src, false, true);
            zero.zero_bytes = u_src.get_size();
            v.steps.push_back(std::move(zero));
            Step sc;
            sc.kind = Step::scatter;
            sc.from = out;
            sc.to = user_bind(Bind::src, false, true);
            sc.count = memory::data_type_size(cdt);
            v.steps.push_back(std::move(sc));
        }
        return true;
    }

    bool build_matmul_bwd_w() {
        const int64_t M = rows();
        const mdesc a({p.oc, M}, cdt, memory::dims{1, p.oc});  // diff_dst^T
        const mdesc w({M, p.ic}, cdt, memory::dims{p.ic, 1});
        const mdesc c({p.oc, p.ic}, cdt, memory::dims{p.ic, 1});
        auto pd = make_matmul(a, w, nullptr, c, base_attr());
        dnnl::primitive prim;
        if (!pd || is_ref(pd.impl_info_str()) || !jit<dnnl::matmul>(pd, prim)) return false;
        note_matmul(pd, a, w, c);
        Step mm;
        mm.prim = prim;
        mm.add(DNNL_ARG_SRC, a, user_bind(Bind::dst, true, false));
        const Bind src_b = strided() ? add_gather() : user_bind(Bind::src, true, false);
        mm.add(DNNL_ARG_WEIGHTS, w, src_b);
        mm.add(DNNL_ARG_DST, c, user_bind(Bind::wei, false, true));
        add_scratch(mm, pd.scratchpad_desc());
        v.steps.push_back(std::move(mm));
        v.own_bias_grad = p.with_bias;
        return true;
    }

    void finish() {
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
};

// The activation layouts to try, best first; the first that gets a non-ref implementation wins.
std::vector<ActLayout> mode_order(const ConvProblem& p, bool wide) {
    // A widened problem runs f32 kernels, so it follows the f32 rules.
    ConvProblem as_run = p;
    if (wide) as_run.dt = DType::f32;
    std::vector<ActLayout> order{preferred_act_layout(as_run)};
    for (ActLayout m : {ActLayout::user, ActLayout::any, ActLayout::channels_last, ActLayout::channels_first})
        if (std::find(order.begin(), order.end(), m) == order.end()) order.push_back(m);
    return order;
}

std::unique_ptr<Variant> build_variant_as(const ConvProblem& p, int nthr, bool wide) {
    auto v = std::make_unique<Variant>();
    v->nthr = nthr;
    Builder b(p, *v, wide);
    auto modes = mode_order(p, wide);
    const bool mm = b.matmul_candidate();
    switch (p.dir) {
        case Direction::fwd:
            if (!mm || !b.build_matmul_fwd()) b.build_fwd(modes);
            break;
        case Direction::bwd_d:
            if (!mm || !b.build_matmul_bwd_d()) b.build_bwd_d(modes);
            break;
        case Direction::bwd_w:
            if (!mm || !b.build_matmul_bwd_w()) b.build_bwd_w(modes);
            break;
    }
    b.finish();
    v->info.widened = wide;
    return v;
}

// 16-bit problems run on oneDNN's native kernels where it has them (avx512_core_bf16, AMX) and
// otherwise as f32 convolutions over widened copies (exact), with one rounding at the end: on an
// AVX2 machine oneDNN 2.6 offers only its `ref` kernels for bf16 and nothing at all for f16.
// Whether oneDNN's native 16-bit kernels beat the widened f32 path on this CPU: timed once per
// process, dtype and thread count on a mid-sized ResNet layer (forward 3x3, 64 channels, 28x28,
// mb 1, channels-last), best of three calls each. Which one wins depends on the machine, not
// only on its ISA flags: on an Intel Xeon with avx512_core_bf16 (no AMX exposed) native bf16 ran
// ResNet-50 at mb 1 1.2-1.6x slower than widened (and slower than f32), while on Zen 5 (earlier
// sessions) native bf16 was 1.4-1.8x faster than f32. Costs two plan builds and eight calls once.
bool native_measures_faster(DType dt, int nthr) {
    static std::mutex mu;
    static std::map<std::pair<int, int>, bool> known;
    const std::pair<int, int> key{static_cast<int>(dt), nthr};
    {
        std::lock_guard<std::mutex> lock(mu);
        auto it = known.find(key);
        if (it != known.end()) return it->second;
    }
    ConvProblem q;
    q.dt = dt;
    q.mb = 1;
    q.ic = q.oc = 64;
    for (int i = 0; i < 2; ++i) q.in[i] = q.out[i] = 28, q.k[i] = 3, q.padding_l[i] = q.padding_r[i] = 1;
    q.src_layout = q.wei_layout = q.dst_layout = Layout::channels_last;
    bool native_wins = false;
    try {
        auto native = build_variant_as(q, nthr, false);
        if (!is_ref(native->info.impl.c_str())) {
            auto wide = build_variant_as(q, nthr, true);
            // 1.0 in the dtype everywhere: finite sums, no denormals on either side.
            const uint16_t one = dt == DType::bf16 ? 0x3f80 : 0x3c00;
            std::vector<uint16_t> src(64 * 28 * 28, one), wei(64 * 64 * 9, one), dst(64 * 28 * 28, one);
            ConvArgs a;
            a.src.data = src.data();
            a.weights.data = wei.data();
            a.dst.data = dst.data();
            auto best = [&](Variant& v) {
                double t = 1e30;
                for (int r = 0; r < 4; ++r) {
                    const double t0 = omp_get_wtime();
                    run_variant(v, q, a);
                    if (r > 0) t = std::min(t, omp_get_wtime() - t0);  // the first call warms up
                }
                return t;
            };
            native_wins = best(*native) < best(*wide);
        }
    } catch (const Error&) {
    } catch (const dnnl::error&) {
    }
    std::lock_guard<std::mutex> lock(mu);
    return known.emplace(key, native_wins).first->second;
}

std::unique_ptr<Variant> build_variant(const ConvProblem& p, int nthr) {
    const bool half = p.dt == DType::bf16 || p.dt == DType::f16;
    if (!half) return build_variant_as(p, nthr, false);
    const WidePolicy policy = wide_policy();
    if (policy == WidePolicy::always) return build_variant_as(p, nthr, true);
    // Where native kernels lose to widening on this CPU (or it has none), no native plan is built.
    if (policy == WidePolicy::automatic && !native_measures_faster(p.dt, nthr)) return build_variant_as(p, nthr, true);
    try {
        auto native = build_variant_as(p, nthr, false);
        if (policy == WidePolicy::never || !is_ref(native->info.impl.c_str())) return native;
    } catch (const Error&) {
        if (policy == WidePolicy::never) throw;
    } catch (const dnnl::error&) {
        if (policy == WidePolicy::never) throw;
    }
    return build_variant_as(p, nthr, true);
}

// ---- execution ----

std::unique_ptr<ExecCtx> make_ctx(const Variant& v) {
    auto c = std::make_unique<ExecCtx>();
    c->strm = dnnl::stream(dnnl_engine());
    c->mems.resize(v.steps.size());
    c->cargs.resize(v.steps.size());
    for (std::size_t i = 0; i < v.steps.size(); ++i) {
        const Step& s = v.steps[i];
        if (s.kind != Step::primitive) continue;
        for (std::size_t a = 0; a < s.arg_ids.size(); ++a) {
            c->mems[i].emplace_back(s.mds[a], dnnl_engine(), static_cast<void*>(nullptr));
            c->cargs[i].push_back(dnnl_exec_arg_t{s.arg_ids[a], c->mems[i].back().get()});
        }
    }
    return c;
}

void check_status(dnnl_status_t st, const char* what) {
    if (st == dnnl_success) return;
    if (st == dnnl_out_of_memory)
        throw Error(ErrorKind::out_of_memory, std::string("cpu backend: ") + what + ": oneDNN ran out of memory");
    throw Error(ErrorKind::backend, std::string("cpu backend: ") + what + " failed: oneDNN status " +
                                        dnnl_status2str(st));
}

struct Pointers {
    void* user[4] = {nullptr, nullptr, nullptr, nullptr};  // src, wei, bias, dst
    void* packed = nullptr;
    char* ws = nullptr;
    const PostOps* post_ops = nullptr;
};

void* resolve(const Variant& v, const Pointers& ptr, Bind b) {
    switch (b.kind) {
        case Bind::src: return ptr.user[0];
        case Bind::wei: return ptr.user[1];
        case Bind::bias: return ptr.user[2];
        case Bind::dst: return ptr.user[3];
        case Bind::packed: return ptr.packed;
        case Bind::temp: return ptr.ws + v.temp_off[static_cast<std::size_t>(b.index)];
        case Bind::operand: return (*ptr.post_ops)[static_cast<std::size_t>(b.index)].operand.data;
    }
    return nullptr;
}

// Reorders prepacked weights whose layout is not the one this plan's primitive reads (the plan
// was built for another batch size, say): correct, at the cost of a reorder per call.
void* repack(Variant& v, const PackedWeightsHandle& h, char* ws) {
    dnnl::reorder r;
    {
        std::lock_guard<std::mutex> lock(v.packed_mu);
        for (auto& e : v.packed_reorders)
            if (e.first == h.md) r = e.second;
        if (!r) {
            r = dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), h.md, dnnl_engine(), v.wei_md));
            v.packed_reorders.emplace_back(h.md, r);
        }
    }
    void* out = ws + v.temp_off[static_cast<std::size_t>(v.wei_temp)];
    dnnl::memory from(h.md, dnnl_engine(), h.data.data()), to(v.wei_md, dnnl_engine(), out);
    dnnl::stream s(dnnl_engine());
    r.execute(s, from, to);
    s.wait();
    return out;
}

// Copies between the input rows a strided 1x1 convolution reads (channels-last src) and a dense
// [M, IC] matrix: gather = src -> rows, else rows -> src.
void strided_rows(const ConvProblem& p, std::size_t elem_bytes, char* src, char* rows, bool gather) {
    const std::size_t row_bytes = static_cast<std::size_t>(p.ic) * elem_bytes;
    int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, st[3] = {1, 1, 1};
    for (int i = 0; i < p.nsp; ++i) {
        in[3 - p.nsp + i] = p.in[i];
        out[3 - p.nsp + i] = p.out[i];
        st[3 - p.nsp + i] = p.stride[i];
    }
    const int64_t rows_per_image = out[0] * out[1] * out[2];
    const int64_t M = p.mb * rows_per_image;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
        const int64_t n = m / rows_per_image, r = m % rows_per_image;
        const int64_t ow = r % out[2], oh = (r / out[2]) % out[1], od = r / (out[2] * out[1]);
        const int64_t pos = ((n * in[0] + od * st[0]) * in[1] + oh * st[1]) * in[2] + ow * st[2];
        char* s = src + static_cast<std::size_t>(pos) * row_bytes;
        char* d = rows + static_cast<std::size_t>(m) * row_bytes;
        if (gather) std::memcpy(d, s, row_bytes);
        else std::memcpy(s, d, row_bytes);
    }
}

// diff_bias[c] = sum of channels-last diff_dst over every image and position. Threads own channel
// ranges and sum rows in order, so the result does not depend on the thread count; f32 sums in
// double, bf16/f16 in f32 (as the reference does).
void bias_grad_channels_last(const ConvProblem& p, const void* ddst, void* dbias) {
    int64_t M = p.mb;
    for (int i = 0; i < p.nsp; ++i) M *= p.out[i];
    const int64_t OC = p.oc;
    constexpr int64_t kChunk = 256;
    const int nthr = omp_get_max_threads();
    const int64_t per = std::min<int64_t>(kChunk, std::max<int64_t>(16, (OC + nthr - 1) / nthr));
    const int64_t chunks = (OC + per - 1) / per;
    const bool half = p.dt == DType::bf16 || p.dt == DType::f16;
    const bool bf16 = p.dt == DType::bf16;
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t c0 = ch * per, n = std::min(per, OC - c0);
        double acc[kChunk];
        float accf[kChunk];
        for (int64_t j = 0; j < n; ++j) acc[j] = 0, accf[j] = 0;
        for (int64_t m = 0; m < M; ++m) {
            if (bf16) {
                const uint16_t* row = static_cast<const uint16_t*>(ddst) + m * OC + c0;
                for (int64_t j = 0; j < n; ++j) accf[j] += bf16_load(row[j]);
            } else if (half) {
                const uint16_t* row = static_cast<const uint16_t*>(ddst) + m * OC + c0;
                for (int64_t j = 0; j < n; ++j) accf[j] += f16_to_f32(row[j]);
            } else {
                const float* row = static_cast<const float*>(ddst) + m * OC + c0;
                for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
            }
        }
        for (int64_t j = 0; j < n; ++j) {
            if (bf16) static_cast<uint16_t*>(dbias)[c0 + j] = bf16_store(accf[j]);
            else if (half) static_cast<uint16_t*>(dbias)[c0 + j] = f32_to_f16(accf[j]);
            else static_cast<float*>(dbias)[c0 + j] = static_cast<float>(acc[j]);
        }
    }
}

}  // namespace

Variant& DnnlPlan::get(int nthr) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& v : variants_)
            if (v->nthr == nthr) return *v;
    }
    auto made = build_variant(p_, nthr);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& v : variants_)
        if (v->nthr == nthr) return *v;
    variants_.push_back(std::move(made));
    return *variants_.back();
}

std::shared_ptr<DnnlPlan> make_dnnl_plan(const ConvProblem& p) {
    auto plan = std::make_shared<DnnlPlan>(p);
    plan->get(omp_get_max_threads());  // build now, so the cache holds a ready plan
    return plan;
}

PlanInfo dnnl_plan_info(DnnlPlan& plan) { return plan.get(omp_get_max_threads()).info; }

Event run_dnnl_plan(DnnlPlan& plan, const ConvProblem& p, const ConvArgs& args) {
    return run_variant(plan.get(omp_get_max_threads()), p, args);
}

bool native_16bit_preferred(DType dt) { return native_measures_faster(dt, omp_get_max_threads()); }

Event run_variant(Variant& v, const ConvProblem& p, const ConvArgs& args) {
    Pointers ptr;
    ptr.user[0] = args.src.data;
    ptr.user[1] = args.weights.data;
    ptr.user[2] = args.bias.data;
    ptr.user[3] = args.dst.data;
    ptr.post_ops = args.post_ops;
    Workspace ws;
    if (v.ws_bytes) ws.buf = core::Buffer(Device::cpu(), v.ws_bytes);
    ptr.ws = ws.base();
    if (p.packed_weights) {
        const auto* h = static_cast<const PackedWeightsHandle*>(args.packed);
        if (!h) throw Error(ErrorKind::invalid_argument, "cpu backend: prepacked weights expected but none given");
        ptr.packed = h->md == v.wei_md ? h->data.data() : repack(v, *h, ptr.ws);
    }

    std::unique_ptr<ExecCtx> ctx;
    {
        std::lock_guard<std::mutex> lock(v.pool_mu);
        if (!v.pool.empty()) {
            ctx = std::move(v.pool.back());
            v.pool.pop_back();
        }
    }
    if (!ctx) ctx = make_ctx(v);
    for (std::size_t i = 0; i < v.steps.size(); ++i) {
        const Step& s = v.steps[i];
        if (p.packed_weights && s.weights_reorder) continue;
        if (s.kind == Step::zero) {
            std::memset(resolve(v, ptr, s.to), 0, s.zero_bytes);
            continue;
        }
        if (s.kind == Step::widen) {
            widen_to_f32(p.dt, resolve(v, ptr, s.from), static_cast<float*>(resolve(v, ptr, s.to)), s.count);
            continue;
        }
        if (s.kind == Step::narrow) {
            narrow_from_f32(p.dt, static_cast<const float*>(resolve(v, ptr, s.from)), resolve(v, ptr, s.to), s.count);
            continue;
        }
        if (s.kind == Step::widen_blocked) {
            widen_to_blocked(p.dt, resolve(v, ptr, s.from), static_cast<float*>(resolve(v, ptr, s.to)),
                             v.maps[static_cast<std::size_t>(s.map)]);
            continue;
        }
        if (s.kind == Step::narrow_blocked) {
            narrow_from_blocked(p.dt, static_cast<const float*>(resolve(v, ptr, s.from)), resolve(v, ptr, s.to),
                                v.maps[static_cast<std::size_t>(s.map)]);
            continue;
        }
        if (s.kind == Step::gather || s.kind == Step::scatter) {
            const bool gather = s.kind == Step::gather;
            strided_rows(p, s.count, static_cast<char*>(resolve(v, ptr, gather ? s.from : s.to)),
                         static_cast<char*>(resolve(v, ptr, gather ? s.to : s.from)), gather);
            continue;
        }
        for (std::size_t a = 0; a < s.binds.size(); ++a) ctx->mems[i][a].set_data_handle(resolve(v, ptr, s.binds[a]));
        check_status(dnnl_primitive_execute(s.prim.get(), ctx->strm.get(), static_cast<int>(ctx->cargs[i].size()),
                                            ctx->cargs[i].data()),
                     "executing a oneDNN primitive");
    }
    check_status(dnnl_stream_wait(ctx->strm.get()), "waiting for the oneDNN stream");
    {
        std::lock_guard<std::mutex> lock(v.pool_mu);
        v.pool.push_back(std::move(ctx));
    }
    if (v.own_bias_grad) bias_grad_channels_last(p, args.dst.data, args.bias.data);
    if (v.own_epilogue) {
        Epilogue e;
        e.init(p, args.dst.data, p.dst_layout, nullptr, args.post_ops);
        e.run_all(resolve(v, ptr, v.acc));
    }
    return Event();
}

std::shared_ptr<void> dnnl_prepack(DnnlPlan& plan, const ConvProblem& p, const TensorView& weights) {
    Variant& v = plan.get(omp_get_max_threads());
    auto h = std::make_shared<PackedWeightsHandle>();
    h->md = v.wei_md;
    h->data = core::Buffer(Device::cpu(), v.wei_md.get_size());
    // A widened plan reads f32 weights: widen first, then let oneDNN's f32 reorder block them.
    const bool wide = v.info.widened;
    const mdesc u_wei(wei_dims(p), wide ? ddt::f32 : to_dnnl(p.dt),
                      wei_tag(p.nsp, p.g > 1, p.wei_layout == Layout::channels_last));
    core::Buffer widened;
    const void* user = weights.data;
    if (wide) {
        widened = core::Buffer(Device::cpu(), u_wei.get_size());
        widen_to_f32(p.dt, weights.data, static_cast<float*>(widened.data()), u_wei.get_size() / sizeof(float));
        user = widened.data();
    }
    if (u_wei == v.wei_md) {
        std::memcpy(h->data.data(), user, v.wei_md.get_size());
    } else {
        dnnl::reorder r(dnnl::reorder::primitive_desc(dnnl_engine(), u_wei, dnnl_engine(), v.wei_md));
        dnnl::memory from(u_wei, dnnl_engine(), const_cast<void*>(user)), to(v.wei_md, dnnl_engine(), h->data.data());
        dnnl::stream s(dnnl_engine());
        r.execute(s, from, to);
        s.wait();
    }
    return h;
}

ActLayout preferred_act_layout(const ConvProblem& p) {
    static const int forced = [] {
        const char* e = std::getenv("CONVKIT_CPU_ACT_LAYOUT");
        if (!e) return -1;
        if (!std::strcmp(e, "user")) return static_cast<int>(ActLayout::user);
        if (!std::strcmp(e, "nchw")) return static_cast<int>(ActLayout::channels_first);
        if (!std::strcmp(e, "nhwc")) return static_cast<int>(ActLayout::channels_last);
        if (!std::strcmp(e, "any")) return static_cast<int>(ActLayout::any);
        return -1;
    }();
    if (forced >= 0) return static_cast<ActLayout>(forced);
    // Rules measured on the ResNet-50 layers (f32, mb 1, 2 threads; docs/cpu.md has the tables).
    int64_t ks = 1, os = 1;
    for (int i = 0; i < p.nsp; ++i) ks *= p.k[i], os *= p.out[i];
    if (p.src_layout == Layout::channels_last && p.dst_layout == Layout::channels_last) {
        // Channels-last tensors are used in place, except f32 backward data with very few input
        // channels (a network's first layer, ic 3): oneDNN's nhwc kernels run that at ~70
        // GFLOP/s, its gemm kernels on nchw ~150 (conv1: 3.4 -> 1.6 ms), which repays two
        // reorders. The price is the first execution's lazy sgemm kernel generation (~48 ms once
        // per process). In bf16 the gemm path gains little (conv1 1.5-2.2 vs 2.0-2.2 ms) for a
        // 70 ms first call, so bf16 stays in place.
        if (p.dir == Direction::bwd_d && p.dt == DType::f32 && ks > 1 && p.ic < 8) return ActLayout::channels_first;
        // oneDNN 2.6's jit_bf16 backward weights computes grouped 3D channels-last problems
        // wrong when the depth windows run into end padding (found by the PyTorch oracle); its
        // blocked-layout kernels get them right.
        if (p.dir == Direction::bwd_w && p.dt == DType::bf16 && p.nsp == 3 && p.g > 1) return ActLayout::any;
        return ActLayout::user;
    }
    // Channels-first: oneDNN's gemm:jit on plain nchw wins wherever reorders to a blocked or
    // nhwc layout cost about as much as the convolution (1x1 kernels, small images); kernels
    // with taps on large images repay the reorders.
    switch (p.dir) {
        case Direction::fwd:
            // Tiny problems (they run on one thread, see kSerialFlops) are dominated by gemm:jit's
            // im2col setup: the 1x16x8x8 3x3 call costs 13.6 us on nchw in place against 7.3 us
            // through reorders to the blocked layout (AVX2 cap: 14.5 vs 8.9 us).
            if (ks > 1 && p.flops() < 1e6) return ActLayout::any;
            return ks > 1 && os >= 196 ? ActLayout::channels_last : ActLayout::user;
        case Direction::bwd_d:
            if (ks > 1) return os >= 196 && p.ic >= 16 ? ActLayout::any : ActLayout::user;
            return os <= 196 ? ActLayout::any : ActLayout::user;
        case Direction::bwd_w:
            return ks > 1 && os >= 784 ? ActLayout::any : ActLayout::user;
    }
    return ActLayout::user;
}

}  // namespace convkit::cpu
