// Problem -> cuDNN graph translation (see graph_spec.hpp).
#include "cuda/graph_spec.hpp"

#include <algorithm>

namespace convkit::cuda {
namespace {

using core::ConvProblem;
using core::Direction;

// Logical (N, C, d, h, w) dims with the spatial ones cuDNN sees: 1D gets a unit H in front.
std::vector<int64_t> cudnn_dims(int64_t a, int64_t b, const int64_t* sp, int nsp) {
    std::vector<int64_t> d{a, b};
    if (nsp == 1) d.push_back(1);
    for (int i = 0; i < nsp; ++i) d.push_back(sp[i]);
    return d;
}

// Dense strides of `dims` in channels-first or channels-last order (size-1 dims get the stride
// they would have in that layout: cuDNN tells layouts apart by strides).
std::vector<int64_t> dense(const std::vector<int64_t>& dims, bool channels_last) {
    const std::size_t r = dims.size();
    std::vector<int64_t> st(r, 1);
    int64_t s = 1;
    if (!channels_last) {
        for (std::size_t i = r; i-- > 0;) {
            st[i] = s;
            s *= std::max<int64_t>(dims[i], 1);
        }
        return st;
    }
    st[1] = 1;
    s = std::max<int64_t>(dims[1], 1);
    for (std::size_t i = r; i-- > 2;) {
        st[i] = s;
        s *= std::max<int64_t>(dims[i], 1);
    }
    st[0] = s;
    return st;
}

TensorSpec spec(int64_t uid, DType dt, std::vector<int64_t> dims, Layout layout) {
    TensorSpec t;
    t.uid = uid;
    t.dtype = to_cudnn(dt);
    t.strides = dense(dims, layout == Layout::channels_last);
    t.dims = std::move(dims);
    return t;
}

// A tensor whose channels or spatial extent is 1 is dense in both layouts, and convkit calls it
// channels-first; cuDNN reads layouts from strides, and its NHWC engines (runtime fusion above all)
// want every tensor of the graph in NHWC. So such tensors follow the problem's real layout.
Layout primary_layout(const ConvProblem& p) {
    auto ambiguous = [&](int64_t c, const int64_t* sp) {
        int64_t s = 1;
        for (int i = 0; i < p.nsp; ++i) s *= sp[i];
        return c == 1 || s == 1;
    };
    if (!ambiguous(p.ic, p.in)) return p.src_layout;
    if (!ambiguous(p.oc, p.out)) return p.dst_layout;
    if (!ambiguous(p.icg(), p.k)) return p.wei_layout;
    return p.src_layout;
}

Layout effective(Layout l, int64_t c, const int64_t* sp, int nsp, Layout primary) {
    int64_t s = 1;
    for (int i = 0; i < nsp; ++i) s *= sp[i];
    return (c == 1 || s == 1) ? primary : l;
}

cudnnPointwiseMode_t binary_mode(BinaryAlg alg) {
    switch (alg) {
        case BinaryAlg::add: return CUDNN_POINTWISE_ADD;
        case BinaryAlg::mul: return CUDNN_POINTWISE_MUL;
        case BinaryAlg::sub: return CUDNN_POINTWISE_SUB;
        case BinaryAlg::div: return CUDNN_POINTWISE_DIV;
        case BinaryAlg::max: return CUDNN_POINTWISE_MAX;
        case BinaryAlg::min: return CUDNN_POINTWISE_MIN;
    }
    return CUDNN_POINTWISE_IDENTITY;
}

// The pointwise node of an eltwise post-op; false for the algorithms left to our epilogue.
bool eltwise_node(const core::PostOpDesc& d, PointwiseSpec* s) {
    const float alpha = static_cast<float>(d.alpha), beta = static_cast<float>(d.beta);
    switch (static_cast<EltwiseAlg>(d.alg)) {
        case EltwiseAlg::relu: s->relu_slope = alpha; s->mode = CUDNN_POINTWISE_RELU_FWD; return true;
        case EltwiseAlg::clip:
            s->relu_lower = alpha;
            s->relu_upper = beta;
            s->has_upper = true;
            s->mode = CUDNN_POINTWISE_RELU_FWD;
            return true;
        case EltwiseAlg::elu: s->elu_alpha = alpha; s->mode = CUDNN_POINTWISE_ELU_FWD; return true;
        case EltwiseAlg::swish: s->swish_beta = alpha; s->mode = CUDNN_POINTWISE_SWISH_FWD; return true;
        case EltwiseAlg::gelu_erf: s->mode = CUDNN_POINTWISE_GELU_FWD; return true;
        case EltwiseAlg::gelu_tanh: s->mode = CUDNN_POINTWISE_GELU_APPROX_TANH_FWD; return true;
        case EltwiseAlg::logistic: s->mode = CUDNN_POINTWISE_SIGMOID_FWD; return true;
        case EltwiseAlg::tanh: s->mode = CUDNN_POINTWISE_TANH_FWD; return true;
        default: return false;  // linear, hardswish, mish, abs, ...: our epilogue
    }
}

}  // namespace

bool asymmetric(const ConvProblem& p) {
    for (int i = 0; i < p.nsp; ++i)
        if (p.padding_l[i] != p.padding_r[i]) return true;
    return false;
}

double macs(const ConvProblem& p) {
    double m = static_cast<double>(p.mb) * static_cast<double>(p.oc) * static_cast<double>(p.icg());
    for (int i = 0; i < p.nsp; ++i) m *= static_cast<double>(p.out[i]) * static_cast<double>(p.k[i]);
    return m;
}

// benchdnn-style descriptors (batch files, `convkit bench`) give a strided layer the post-padding
// that its output size implies: ResNet-50's 3x3/2 layers get 1/0 where PyTorch passes 1/1, conv1
// 3/2 for 3/3. Padding that no window reaches changes nothing, so every post-padding that keeps
// the output size describes the same convolution, and cuDNN's engines want it symmetric: with 1/0,
// mode A's first strict-f32 engine for res5's 3x3/2 backward-data ran 19 ms, with 1/1 0.3 ms
// (H100, cuDNN 9.19, as PyTorch gets). So post-padding becomes the pre-padding where that keeps
// the output size.
ConvProblem normalized(const ConvProblem& p) {
    ConvProblem q = p;
    for (int i = 0; i < p.nsp; ++i) {
        const int64_t span = (p.k[i] - 1) * p.dilation[i] + 1;
        // The least post-padding that still fits `out` windows; up to stride - 1 more keep `out`.
        const int64_t lo = (p.out[i] - 1) * p.stride[i] + span - p.in[i] - p.padding_l[i];
        const int64_t hi = lo + p.stride[i] - 1;
        if (p.padding_l[i] >= std::max<int64_t>(lo, 0) && p.padding_l[i] <= hi) q.padding_r[i] = p.padding_l[i];
    }
    return q;
}

GraphSpec conv_spec(const ConvProblem& p, bool padded, int64_t alignment) {
    GraphSpec g;
    g.dir = p.dir;
    g.compute = p.dt == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    g.double_scalars = p.dt == DType::f64;
    g.alignment = alignment;
    int64_t in[3];
    for (int i = 0; i < p.nsp; ++i) in[i] = padded ? p.in[i] + p.padding_l[i] + p.padding_r[i] : p.in[i];
    const Layout prim = primary_layout(p);
    g.x = spec(1, p.dt, cudnn_dims(p.mb, p.ic, in, p.nsp), effective(p.src_layout, p.ic, p.in, p.nsp, prim));
    g.w = spec(2, p.dt, cudnn_dims(p.oc, p.icg(), p.k, p.nsp), effective(p.wei_layout, p.icg(), p.k, p.nsp, prim));
    g.y = spec(3, p.dt, cudnn_dims(p.mb, p.oc, p.out, p.nsp), effective(p.dst_layout, p.oc, p.out, p.nsp, prim));
    if (p.nsp == 1) {
        g.pre_pad.push_back(0);
        g.post_pad.push_back(0);
        g.stride.push_back(1);
        g.dilation.push_back(1);
    }
    for (int i = 0; i < p.nsp; ++i) {
        g.pre_pad.push_back(padded ? 0 : p.padding_l[i]);
        g.post_pad.push_back(padded ? 0 : p.padding_r[i]);
        g.stride.push_back(p.stride[i]);
        g.dilation.push_back(p.dilation[i]);
    }
    return g;
}

bool fused_spec(const ConvProblem& p, GraphSpec* g, std::vector<int>* slots) {
    if (p.dir != Direction::fwd || (!p.with_bias && p.n_post_ops == 0)) return false;
    if (p.dt == DType::f64) return false;
    if (p.dt == DType::f32 && !p.allow_tf32) return false;  // runtime fusion engines are tensor-core only
    if (p.g != 1) return false;
    // All three NHWC as described to cuDNN (see effective()): the channel stride is 1.
    const bool nhwc = g->x.strides[1] == 1 && g->w.strides[1] == 1 && g->y.strides[1] == 1;
    if (!nhwc) return false;
    const int64_t vec = 16 / static_cast<int64_t>(dtype_size(p.dt));  // 128-bit channel vectors
    if (p.ic % vec || p.oc % vec) return false;
    std::vector<int64_t> ddims = g->y.dims;
    std::vector<int64_t> chan(ddims.size(), 1);
    chan[1] = p.oc;
    *slots = {kSrc, kWei, kDst};
    if (p.with_bias) {
        PointwiseSpec b;
        b.mode = CUDNN_POINTWISE_ADD;
        b.binary = true;
        b.operand = spec(4, p.dt, chan, Layout::channels_last);
        g->epilogue.push_back(b);
        slots->push_back(kBias);
    }
    for (int i = 0; i < p.n_post_ops; ++i) {
        const core::PostOpDesc& d = p.post_ops[i];
        PointwiseSpec s;
        if (d.kind == PostOp::Kind::sum) return false;
        if (d.kind == PostOp::Kind::binary) {
            s.mode = binary_mode(static_cast<BinaryAlg>(d.alg));
            std::vector<int64_t> od = d.operand_sizes.vec();
            if (p.nsp == 1) od.insert(od.begin() + 2, 1);
            const bool full = od == ddims, per_channel = od == chan;
            // The graph describes the operand as dense channels-last (a per-channel operand as K
            // contiguous values), so any other memory order goes to our epilogue instead.
            if (d.operand_layout == Layout::strided) return false;
            if (!(per_channel || (full && d.operand_layout == Layout::channels_last))) return false;
            s.binary = true;
            s.operand = spec(10 + i, p.dt, od, Layout::channels_last);
            slots->push_back(kOperand0 + i);
        } else if (!eltwise_node(d, &s)) {
            return false;
        }
        g->epilogue.push_back(s);
    }
    return true;
}

}  // namespace convkit::cuda
