// The reference backend: direct loops for every direction, dtype and post-op. It is the oracle
// the fast backends are tested against, so it favours obviously-right code and extra accuracy
// over speed: f32 and f64 accumulate in double, f16/bf16 in float (as the fast paths do), and it
// reads tensors through their strides, so it needs no dense copies. Loops over independent
// outputs are spread over threads with OpenMP; each output's sum runs in a fixed order, so
// results are bitwise reproducible.
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "convkit/tensor.hpp"
#include "core/backend.hpp"

namespace convkit {
namespace ref {
namespace {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

template <typename T> struct Traits;
template <> struct Traits<float> {
    using acc = double;
    static double load(float v) { return v; }
    static float store(double v) { return static_cast<float>(v); }
};
template <> struct Traits<double> {
    using acc = double;
    static double load(double v) { return v; }
    static double store(double v) { return v; }
};
template <> struct Traits<bf16_t> {
    using acc = float;
    static float load(bf16_t v) { return bf16_to_f32(v.bits); }
    static bf16_t store(float v) { return bf16_t{f32_to_bf16(v)}; }
};
template <> struct Traits<f16_t> {
    using acc = float;
    static float load(f16_t v) { return f16_to_f32(v.bits); }
    static f16_t store(float v) { return f16_t{f32_to_f16(v)}; }
};

// A tensor seen as 5-D (N, C, D, H, W): missing spatial dims have size 1 and stride 0.
template <typename T> struct V5 {
    T* p;
    int64_t s[5];
    V5(const TensorView& t, int nsp) : p(static_cast<T*>(t.data)) {
        int64_t sizes[5];
        core::spatial3_view(t, nsp, sizes, s);
    }
    T& at(int64_t n, int64_t c, int64_t d, int64_t h, int64_t w) const {
        return p[n * s[0] + c * s[1] + d * s[2] + h * s[3] + w * s[4]];
    }
};

template <typename A> A eltwise(EltwiseAlg alg, A x, A alpha, A beta) {
    using std::exp;
    switch (alg) {
        case EltwiseAlg::relu: return x > 0 ? x : alpha * x;
        case EltwiseAlg::linear: return alpha * x + beta;
        case EltwiseAlg::clip: return std::min(std::max(x, alpha), beta);
        case EltwiseAlg::elu: return x > 0 ? x : alpha * std::expm1(x);
        case EltwiseAlg::swish: return x / (A(1) + exp(-alpha * x));
        case EltwiseAlg::gelu_erf: return A(0.5) * x * (A(1) + std::erf(x / std::sqrt(A(2))));
        case EltwiseAlg::gelu_tanh: {
            const A c = std::sqrt(A(2) / A(3.14159265358979323846));
            return A(0.5) * x * (A(1) + std::tanh(c * (x + A(0.044715) * x * x * x)));
        }
        case EltwiseAlg::logistic: return A(1) / (A(1) + exp(-x));
        case EltwiseAlg::tanh: return std::tanh(x);
        case EltwiseAlg::hardswish: return x * std::min(std::max(x + A(3), A(0)), A(6)) / A(6);
        case EltwiseAlg::mish: {
            // softplus without overflow: log1p(exp(x)) == x to working precision for large x
            A sp = x > A(20) ? x : std::log1p(exp(x));
            return x * std::tanh(sp);
        }
        case EltwiseAlg::abs: return std::abs(x);
        case EltwiseAlg::square: return x * x;
        case EltwiseAlg::sqrt: return std::sqrt(x);
        case EltwiseAlg::exp: return exp(x);
        case EltwiseAlg::log: return std::log(x);
    }
    return x;
}

template <typename A> A binary(BinaryAlg alg, A x, A y) {
    switch (alg) {
        case BinaryAlg::add: return x + y;
        case BinaryAlg::mul: return x * y;
        case BinaryAlg::sub: return x - y;
        case BinaryAlg::div: return x / y;
        case BinaryAlg::max: return std::max(x, y);
        case BinaryAlg::min: return std::min(x, y);
    }
    return x;
}

// Calls f(kd, kh, kw, id, ih, iw) for each kernel tap of output position (od, oh, ow) that lands
// inside the input (taps in padding contribute nothing).
template <typename F> inline void for_each_tap(const core::Spatial3& g, int64_t od, int64_t oh, int64_t ow, F&& f) {
    for (int64_t kd = 0; kd < g.k[0]; ++kd) {
        const int64_t id = od * g.stride[0] - g.padding_l[0] + kd * g.dilation[0];
        if (id < 0 || id >= g.in[0]) continue;
        for (int64_t kh = 0; kh < g.k[1]; ++kh) {
            const int64_t ih = oh * g.stride[1] - g.padding_l[1] + kh * g.dilation[1];
            if (ih < 0 || ih >= g.in[1]) continue;
            for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                const int64_t iw = ow * g.stride[2] - g.padding_l[2] + kw * g.dilation[2];
                if (iw < 0 || iw >= g.in[2]) continue;
                f(kd, kh, kw, id, ih, iw);
            }
        }
    }
}

// Bias and the post-op chain on one output element, in double (f32/f64) or float (16-bit), then
// one rounding: the forward convolution's dst, or a transposed convolution's (diff_src here).
template <typename T, typename Tr = Traits<T>, typename A = typename Traits<T>::acc> struct Finish {
    const T* bias = nullptr;
    int64_t bias_st = 0;
    const PostOps* post_ops = nullptr;
    std::vector<V5<T>> operands;  // binary operands, broadcast dims with stride 0

    Finish(const ConvProblem& p, const ConvArgs& a) : post_ops(a.post_ops) {
        if (a.bias.defined()) {
            bias = static_cast<const T*>(a.bias.data);
            bias_st = a.bias.strides[0];
        }
        if (post_ops)
            for (const PostOp& op : *post_ops)
                if (op.kind == PostOp::Kind::binary) {
                    TensorView t = op.operand;
                    for (int d = 0; d < t.rank(); ++d)
                        if (t.sizes[d] == 1) t.strides[d] = 0;
                    operands.emplace_back(t, p.nsp);
                }
    }

    void store(A acc, T& out, int64_t n, int64_t c, int64_t d, int64_t h, int64_t w) const {
        if (bias) acc += Tr::load(bias[c * bias_st]);
        if (post_ops) {
            std::size_t bi = 0;
            for (const PostOp& op : *post_ops) {
                switch (op.kind) {
                    case PostOp::Kind::eltwise: acc = eltwise<A>(op.eltwise, acc, A(op.alpha), A(op.beta)); break;
                    case PostOp::Kind::sum: acc += A(op.scale) * Tr::load(out); break;
                    case PostOp::Kind::binary: acc = binary<A>(op.binary, acc, Tr::load(operands[bi++].at(n, c, d, h, w))); break;
                }
            }
        }
        out = Tr::store(acc);
    }
};

template <typename T, typename Tr = Traits<T>, typename A = typename Traits<T>::acc>
void forward(const ConvProblem& p, const ConvArgs& a) {
    const core::Spatial3 g = p.spatial3();
    const V5<T> src(a.src, p.nsp), wei(a.weights, p.nsp), dst(a.dst, p.nsp);
    const Finish<T> finish(p, a);
    const int64_t OCG = p.ocg(), ICG = p.icg();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < p.mb; ++n)
        for (int64_t oc = 0; oc < p.oc; ++oc) {
            const int64_t gi = oc / OCG;
            for (int64_t od = 0; od < g.out[0]; ++od)
                for (int64_t oh = 0; oh < g.out[1]; ++oh)
                    for (int64_t ow = 0; ow < g.out[2]; ++ow) {
                        // Channels innermost: contiguous for channels-last tensors, and the
                        // bounds checks run once per kernel tap instead of once per channel.
                        A acc = 0;
                        const T* wbase = &wei.at(oc, 0, 0, 0, 0);
                        const T* sbase = &src.at(n, gi * ICG, 0, 0, 0);
                        for_each_tap(g, od, oh, ow, [&](int64_t kd, int64_t kh, int64_t kw, int64_t id, int64_t ih, int64_t iw) {
                            const T* sp = sbase + id * src.s[2] + ih * src.s[3] + iw * src.s[4];
                            const T* wp = wbase + kd * wei.s[2] + kh * wei.s[3] + kw * wei.s[4];
                            for (int64_t icg = 0; icg < ICG; ++icg)
                                acc += Tr::load(sp[icg * src.s[1]]) * Tr::load(wp[icg * wei.s[1]]);
                        });
                        finish.store(acc, dst.at(n, oc, od, oh, ow), n, oc, od, oh, ow);
                    }
        }
}

template <typename T, typename Tr = Traits<T>, typename A = typename Traits<T>::acc>
void backward_data(const ConvProblem& p, const ConvArgs& a) {
    const core::Spatial3 g = p.spatial3();
    const V5<T> dsrc(a.src, p.nsp), wei(a.weights, p.nsp), ddst(a.dst, p.nsp);
    const int64_t OCG = p.ocg(), ICG = p.icg();
    // A transposed convolution's forward: bias and post-ops on diff_src (the core passes none
    // otherwise).
    const Finish<T> finish(p, a);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < p.mb; ++n)
        for (int64_t ic = 0; ic < p.ic; ++ic) {
            const int64_t gi = ic / ICG, icg = ic % ICG;
            for (int64_t id = 0; id < g.in[0]; ++id)
                for (int64_t ih = 0; ih < g.in[1]; ++ih)
                    for (int64_t iw = 0; iw < g.in[2]; ++iw) {
                        // Output channels innermost, as in forward: the tap arithmetic runs once
                        // per kernel position.
                        A acc = 0;
                        const T* dbase = &ddst.at(n, gi * OCG, 0, 0, 0);
                        const T* wbase = &wei.at(gi * OCG, icg, 0, 0, 0);
                        for (int64_t kd = 0; kd < g.k[0]; ++kd) {
                            const int64_t nd = id + g.padding_l[0] - kd * g.dilation[0];
                            if (nd < 0 || nd % g.stride[0]) continue;
                            const int64_t od = nd / g.stride[0];
                            if (od >= g.out[0]) continue;
                            for (int64_t kh = 0; kh < g.k[1]; ++kh) {
                                const int64_t nh = ih + g.padding_l[1] - kh * g.dilation[1];
                                if (nh < 0 || nh % g.stride[1]) continue;
                                const int64_t oh = nh / g.stride[1];
                                if (oh >= g.out[1]) continue;
                                for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                                    const int64_t nw = iw + g.padding_l[2] - kw * g.dilation[2];
                                    if (nw < 0 || nw % g.stride[2]) continue;
                                    const int64_t ow = nw / g.stride[2];
                                    if (ow >= g.out[2]) continue;
                                    const T* dp = dbase + od * ddst.s[2] + oh * ddst.s[3] + ow * ddst.s[4];
                                    const T* wp = wbase + kd * wei.s[2] + kh * wei.s[3] + kw * wei.s[4];
                                    for (int64_t ocg = 0; ocg < OCG; ++ocg)
                                        acc += Tr::load(dp[ocg * ddst.s[1]]) * Tr::load(wp[ocg * wei.s[0]]);
                                }
                            }
                        }
                        finish.store(acc, dsrc.at(n, ic, id, ih, iw), n, ic, id, ih, iw);
                    }
        }
}

template <typename T, typename Tr = Traits<T>, typename A = typename Traits<T>::acc>
void backward_weights(const ConvProblem& p, const ConvArgs& a) {
    const core::Spatial3 g = p.spatial3();
    const V5<T> src(a.src, p.nsp), dwei(a.weights, p.nsp), ddst(a.dst, p.nsp);
    const int64_t OCG = p.ocg(), ICG = p.icg();
    const int64_t KS = g.k[0] * g.k[1] * g.k[2];
    // One output channel per task; its ICG * KS gradients accumulate side by side while the
    // output positions are walked once in a fixed order (n, od, oh, ow), so each sum has the same
    // order on every run and the innermost loop runs over contiguous channels for channels-last.
#pragma omp parallel for schedule(dynamic)
    for (int64_t oc = 0; oc < p.oc; ++oc) {
        std::vector<A> acc(static_cast<std::size_t>(ICG * KS), A(0));
        const int64_t ic0 = (oc / OCG) * ICG;
        for (int64_t n = 0; n < p.mb; ++n)
            for (int64_t od = 0; od < g.out[0]; ++od)
                for (int64_t oh = 0; oh < g.out[1]; ++oh)
                    for (int64_t ow = 0; ow < g.out[2]; ++ow) {
                        const A dd = Tr::load(ddst.at(n, oc, od, oh, ow));
                        for_each_tap(g, od, oh, ow, [&](int64_t kd, int64_t kh, int64_t kw, int64_t id, int64_t ih, int64_t iw) {
                            const T* sp = &src.at(n, ic0, id, ih, iw);
                            A* ap = &acc[static_cast<std::size_t>((kd * g.k[1] + kh) * g.k[2] + kw)];
                            for (int64_t icg = 0; icg < ICG; ++icg)
                                ap[icg * KS] += dd * Tr::load(sp[icg * src.s[1]]);
                        });
                    }
        for (int64_t icg = 0; icg < ICG; ++icg)
            for (int64_t kd = 0; kd < g.k[0]; ++kd)
                for (int64_t kh = 0; kh < g.k[1]; ++kh)
                    for (int64_t kw = 0; kw < g.k[2]; ++kw)
                        dwei.at(oc, icg, kd, kh, kw) =
                            Tr::store(acc[static_cast<std::size_t>(icg * KS + (kd * g.k[1] + kh) * g.k[2] + kw)]);
    }
    if (a.bias.defined()) {
        // Channel sums of diff_dst, or of src for a transposed convolution (its output's gradient).
        T* db = static_cast<T*>(a.bias.data);
        const int64_t bst = a.bias.strides[0];
        const V5<T>& sums = p.transposed ? src : ddst;
        const int64_t C = p.transposed ? p.ic : p.oc;
        const int64_t* sp = p.transposed ? g.in : g.out;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < C; ++c) {
            A acc = 0;
            for (int64_t n = 0; n < p.mb; ++n)
                for (int64_t d = 0; d < sp[0]; ++d)
                    for (int64_t h = 0; h < sp[1]; ++h)
                        for (int64_t w = 0; w < sp[2]; ++w) acc += Tr::load(sums.at(n, c, d, h, w));
            db[c * bst] = Tr::store(acc);
        }
    }
}

template <typename T> void run(const ConvProblem& p, const ConvArgs& a) {
    switch (p.dir) {
        case Direction::fwd: forward<T>(p, a); break;
        case Direction::bwd_d: backward_data<T>(p, a); break;
        case Direction::bwd_w: backward_weights<T>(p, a); break;
    }
}

class ReferenceBackend final : public core::Backend {
public:
    Engine engine() const override { return Engine::ref; }
    std::string describe() const override { return "direct loops, the oracle (not a fast path)"; }
    DeviceType device_type() const override { return DeviceType::cpu; }
    std::string check(const ConvProblem&) const override { return ""; }
    bool needs_dense() const override { return false; }
    bool tiled() const override { return false; }  // the oracle runs every problem whole
    Event execute(const ConvProblem& p, const ConvArgs& a, const Stream&, const std::vector<Event>& deps) override {
        core::wait_all(deps);
        switch (p.dt) {
            case DType::f32: run<float>(p, a); break;
            case DType::f64: run<double>(p, a); break;
            case DType::bf16: run<bf16_t>(p, a); break;
            case DType::f16: run<f16_t>(p, a); break;
        }
        return Event();
    }
};

}  // namespace
}  // namespace ref

namespace core {
std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ref::ReferenceBackend>(); }
}  // namespace core
}  // namespace convkit
