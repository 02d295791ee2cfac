// The oneDNN CPU backend (engine cpu) against the reference backend: every direction, 1D/2D/3D,
// groups, depthwise, stride, dilation, asymmetric padding, both layouts, f32/bf16/f64, every
// post-op and chains; plus prepacked weights, the plan cache counters, eight threads sharing the
// cache, run-to-run determinism, f16's error, and the oneDNN implementations picked for the
// ResNet-50 layers (never `ref`). Each case reads as one line of a chained tester, after
// XNNPACK's convolution-operator-tester.
#include <gtest/gtest.h>

#include "desc.hpp"

#include <cmath>
#include <cstring>
#include <thread>

#include "cli_common.hpp"
#include "convkit/convkit.hpp"
#include "core/lru_cache.hpp"
#include "core/problem.hpp"
#include "cpu/cpu_backend.hpp"

using namespace convkit;
using tools::from_host_f64;
using tools::random_values;
using tools::to_host_f64;

namespace {

const ConvOptions kRef{Engine::ref, {}};
const ConvOptions kCpu{Engine::cpu, {}};

// Tolerances, in one place. Errors are measured as |got - want| / max(|want|, scale), where
// scale = max(1, sqrt(K) / 3) is the typical magnitude of an output that sums K products of
// values uniform in [-1, 1] (each of variance 1/9): near-zero outputs produced by cancellation
// are judged against that magnitude, not against their own.
//  * f32: the reference accumulates in double, oneDNN in f32 in its own order; rounding error
//    grows like sqrt(K) ulps of the partial sums, i.e. ~1e-7 of the scale for the K used here.
//    1e-5 leaves room for oneDNN's fused eltwise approximations (exp, erf, tanh: a few ulps).
//  * bf16: both sides accumulate in f32 and round once to bf16, so they differ by at most one
//    bf16 ulp of the result: 2^-7 relative at the bottom of a binade.
//  * f16: the same with 11 significant bits: one ulp is 2^-10 (9.8e-4) at the bottom of a binade.
//  * f64: the OpenBLAS path and the reference both accumulate in double in different orders:
//    1e-12 of the scale.
double tolerance(DType dt) {
    switch (dt) {
        case DType::f32: return 1e-5;
        case DType::bf16: return 1.0 / 128;
        case DType::f64: return 1e-12;
        case DType::f16: return 1e-3;
    }
    return 0;
}

struct Compare {
    bool ok = true;
    double max_err = 0;
    std::string detail;
};

Compare compare(const std::vector<double>& got, const std::vector<double>& want, DType dt, double scale) {
    Compare c;
    if (got.size() != want.size()) return {false, 0, "size mismatch"};
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = got[i], w = want[i];
        double err;
        if (std::isnan(w) || std::isnan(g)) err = std::isnan(w) && std::isnan(g) ? 0 : INFINITY;
        else if (std::isinf(w) || std::isinf(g)) err = g == w ? 0 : INFINITY;
        else err = std::abs(g - w) / std::max(std::abs(w), scale);
        c.max_err = std::max(c.max_err, err);
        if (!(err <= tolerance(dt)) && c.ok) {
            c.ok = false;
            char buf[200];
            std::snprintf(buf, sizeof buf, "element %zu: got %.10g, want %.10g (err %.3g > %.3g)", i, g, w, err,
                          tolerance(dt));
            c.detail = buf;
        }
    }
    return c;
}

bool bitwise_equal(const TensorView& a, const TensorView& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

void fill(const Tensor& t, double lo, double hi, uint64_t seed) {
    from_host_f64(t.view(), random_values(t.numel(), lo, hi, seed, t.dtype()));
}

// Binary post-op operand shapes.
enum class Bcast { scalar, per_oc, full, full_other_layout, full_strided, spatial };

// One convolution described by chained setters; run_*() runs it on the cpu and the reference
// engines with the same inputs and asserts the results agree.
class ConvTester {
public:
    ConvTester& dt(DType v) { dt_ = v; return *this; }
    ConvTester& layout(Layout v) { layout_ = wei_layout_ = dst_layout_ = v; return *this; }
    // Weights and dst (diff_dst) in a layout of their own; src keeps layout().
    ConvTester& wei_layout(Layout v) { wei_layout_ = v; return *this; }
    ConvTester& dst_layout(Layout v) { dst_layout_ = v; return *this; }
    ConvTester& mb(int64_t v) { mb_ = v; return *this; }
    ConvTester& channels(int64_t ic, int64_t oc) { ic_ = ic; oc_ = oc; return *this; }
    ConvTester& groups(int64_t v) { g_ = v; prm_.groups = v; return *this; }
    ConvTester& input(Dims v) { in_ = v; return *this; }
    ConvTester& kernel(Dims v) { k_ = v; return *this; }
    ConvTester& stride(Dims v) { prm_.stride = v; return *this; }
    ConvTester& dilation(Dims v) { prm_.dilation = v; return *this; }
    ConvTester& pad(Dims l, Dims r) { prm_.padding_l = l; prm_.padding_r = r; return *this; }
    ConvTester& bias(bool v) { bias_ = v; return *this; }
    ConvTester& post_ops(const std::string& text, std::vector<Bcast> operands = {}) {
        ops_text_ = text;
        bcasts_ = std::move(operands);
        return *this;
    }

    std::string name(const char* dir) const {
        std::string s = std::string(dir) + " " + to_string(dt_) + " " + to_string(layout_) + "/" +
                        to_string(wei_layout_) + "/" + to_string(dst_layout_) + " mb" +
                        std::to_string(mb_) + " ic" + std::to_string(ic_) + " oc" + std::to_string(oc_) + " g" +
                        std::to_string(g_) + " in" + in_.str() + " k" + k_.str() + " stride" + prm_.stride.str() +
                        " dilation" + prm_.dilation.str() + " pad" + prm_.padding_l.str() + prm_.padding_r.str() +
                        (bias_ ? " bias" : "");
        if (!ops_text_.empty()) s += " post-ops " + ops_text_;
        return s;
    }

    // The problem as the core describes it (no post-ops), for plan queries.
    core::ConvProblem problem(int dir) const {
        core::ConvProblem p;
        p.dir = static_cast<core::Direction>(dir);
        p.dt = dt_;
        p.nsp = in_.rank();
        p.mb = mb_;
        p.ic = ic_;
        p.oc = oc_;
        p.g = g_;
        auto at = [](const Dims& d, int i, int64_t dflt) { return d.empty() ? dflt : d.rank() == 1 ? d[0] : d[i]; };
        for (int i = 0; i < p.nsp; ++i) {
            p.in[i] = in_[i];
            p.k[i] = k_[i];
            p.stride[i] = at(prm_.stride, i, 1);
            p.padding_l[i] = at(prm_.padding_l, i, 0);
            p.padding_r[i] = at(prm_.padding_r, i, 0);
            p.dilation[i] = at(prm_.dilation, i, 1);
            p.out[i] = (p.in[i] + p.padding_l[i] + p.padding_r[i] - (p.dilation[i] * (p.k[i] - 1) + 1)) / p.stride[i] + 1;
        }
        p.src_layout = layout_;
        p.wei_layout = wei_layout_;
        p.dst_layout = dst_layout_;
        p.with_bias = bias_ && dir != 1;
        p.allow_tf32 = allow_tf32();
        return p;
    }
    std::string impl(int dir) const { return cpu::plan_info(problem(dir)).impl; }
    // Runs every direction and checks each ran on oneDNN's matmul (f32/bf16/f16 channels-last).
    void run_all_expect_matmul() const {
        run_all();
        if (dt_ == DType::f64 || layout_ != Layout::channels_last) return;
        for (int dir = 0; dir < 3; ++dir) EXPECT_EQ(impl(dir).rfind("matmul:", 0), 0u) << name("") << " dir " << dir << ": " << impl(dir);
    }

    void run_fwd() const { run(0); }
    void run_bwd_d() const { run(1); }
    void run_bwd_w() const { run(2); }
    void run_all() const {
        run(0);
        run(1);
        run(2);
    }

    // For the cache / determinism tests: fresh tensors of this shape.
    struct Tensors {
        Tensor src, wei, bias, dst;
        std::vector<Tensor> operands;
        PostOps ops;
    };

    Tensors make(uint64_t seed) const {
        Tensors t;
        Dims s{mb_, ic_}, w{oc_, ic_ / g_};
        for (int64_t v : in_) s.push_back(v);
        for (int64_t v : k_) w.push_back(v);
        Dims o = output_shape(s, w, prm_);
        t.src = Tensor(dt_, s, layout_);
        t.wei = Tensor(dt_, w, wei_layout_);
        t.dst = Tensor(dt_, o, dst_layout_);
        fill(t.src, -1, 1, seed + 1);
        fill(t.wei, -1, 1, seed + 2);
        fill(t.dst, -1, 1, seed + 3);
        if (bias_) {
            t.bias = Tensor(dt_, Dims{oc_});
            fill(t.bias, -1, 1, seed + 4);
        }
        std::vector<std::string> args;
        t.ops = parse_post_ops(ops_text_, &args);
        std::size_t bi = 0;
        for (std::size_t i = 0; i < t.ops.size(); ++i) {
            if (t.ops[i].kind != PostOp::Kind::binary) continue;
            const Bcast b = bi < bcasts_.size() ? bcasts_[bi] : Bcast::per_oc;
            ++bi;
            Dims od = o;
            Layout ol = layout_;
            if (b == Bcast::scalar)
                for (int k = 0; k < od.rank(); ++k) od[k] = 1;
            if (b == Bcast::per_oc)
                for (int k = 0; k < od.rank(); ++k)
                    if (k != 1) od[k] = 1;
            if (b == Bcast::spatial) od[1] = 1, od[0] = 1;  // [1, 1, spatial...]
            if (b == Bcast::full_other_layout)
                ol = layout_ == Layout::channels_last ? Layout::channels_first : Layout::channels_last;
            if (b == Bcast::full_strided) {
                // Every other element of a twice-as-wide buffer along the last dimension.
                Dims wide = od;
                wide[wide.rank() - 1] *= 2;
                Tensor backing(dt_, wide);
                fill(backing, 0.5, 1.5, seed + 10 + i);
                Dims st = dense_strides(wide, Layout::channels_first);
                st[st.rank() - 1] = 2;
                t.operands.push_back(backing);
                t.ops[i].operand = TensorView(backing.data(), dt_, od, st);
                continue;
            }
            t.operands.emplace_back(dt_, od, ol);
            fill(t.operands.back(), 0.5, 1.5, seed + 10 + i);
            t.ops[i].operand = t.operands.back().view();
        }
        return t;
    }

    Tensors clone(const Tensors& a) const {
        Tensors t;
        auto dup = [](const Tensor& x) {
            if (!x.view().defined()) return Tensor();
            Tensor y(x.dtype(), x.sizes(), x.view().layout() == Layout::channels_last ? Layout::channels_last
                                                                                     : Layout::channels_first);
            copy(y.view(), x.view());
            return y;
        };
        t.src = dup(a.src);
        t.wei = dup(a.wei);
        t.bias = dup(a.bias);
        t.dst = dup(a.dst);
        t.operands = a.operands;  // read-only, shared
        t.ops = a.ops;
        return t;
    }

    Event call(int dir, Tensors& t, const ConvOptions& opt) const {
        switch (dir) {
            case 0: return convolution_forward(t.dst, t.src, t.wei, t.bias.view(), prm_, t.ops, Stream(), {}, opt);
            case 1: return convolution_backward_data(t.src, t.dst, t.wei, prm_, Stream(), {}, opt);
            default: return convolution_backward_weights(t.wei, t.bias.view(), t.dst, t.src, prm_, Stream(), {}, opt);
        }
    }

    const Tensor& output(int dir, const Tensors& t) const { return dir == 0 ? t.dst : dir == 1 ? t.src : t.wei; }

    double scale(int dir, const Tensors& t) const {
        double K;
        if (dir == 0) K = static_cast<double>(ic_ / g_);
        else if (dir == 1) K = static_cast<double>(oc_ / g_);
        else K = static_cast<double>(mb_);
        for (int64_t v : k_) K *= dir == 2 ? 1.0 : static_cast<double>(v);
        if (dir == 2)
            for (int i = 2; i < t.dst.sizes().rank(); ++i) K *= static_cast<double>(t.dst.sizes()[i]);
        return std::max(1.0, std::sqrt(K) / 3.0);
    }

    void run(int dir) const {
        static const char* kDir[3] = {"fwd", "bwd_d", "bwd_w"};
        if (dir != 0 && !ops_text_.empty()) return;  // post-ops are forward only
        SCOPED_TRACE(name(kDir[dir]));
        Tensors a = make(1234);
        Tensors b = clone(a);
        call(dir, a, kCpu).wait();
        call(dir, b, kRef).wait();
        Compare c = compare(to_host_f64(output(dir, a).view()), to_host_f64(output(dir, b).view()), dt_,
                            scale(dir, a));
        EXPECT_TRUE(c.ok) << name(kDir[dir]) << ": " << c.detail;
        if (dir == 2 && bias_) {
            Compare cb = compare(to_host_f64(a.bias.view()), to_host_f64(b.bias.view()), dt_, scale(2, a));
            EXPECT_TRUE(cb.ok) << name(kDir[dir]) << " diff_bias: " << cb.detail;
        }
    }

    DType dt_ = DType::f32;
    Layout layout_ = Layout::channels_last, wei_layout_ = Layout::channels_last, dst_layout_ = Layout::channels_last;
    int64_t mb_ = 2, ic_ = 8, oc_ = 16, g_ = 1;
    Dims in_{8, 8}, k_{3, 3};
    ConvParams prm_;
    bool bias_ = true;
    std::string ops_text_;
    std::vector<Bcast> bcasts_;
};

ConvTester tester(DType dt, Layout l) { return ConvTester().dt(dt).layout(l); }

// ---- shapes, every direction ----

class CpuShapes : public ::testing::TestWithParam<std::tuple<DType, Layout>> {
protected:
    ConvTester t() const { return tester(std::get<0>(GetParam()), std::get<1>(GetParam())); }
};

TEST_P(CpuShapes, Basic2D) { t().channels(8, 16).input({8, 8}).kernel({3, 3}).pad({1}, {1}).run_all(); }
TEST_P(CpuShapes, NoBias) { t().channels(8, 16).input({7, 9}).kernel({3, 3}).bias(false).run_all(); }
TEST_P(CpuShapes, OneD) { t().channels(8, 8).input({17}).kernel({3}).stride({2}).pad({1}, {0}).run_all(); }
TEST_P(CpuShapes, ThreeD) { t().channels(4, 8).input({5, 6, 7}).kernel({3, 3, 3}).pad({1}, {1}).run_all(); }
TEST_P(CpuShapes, ThreeDStrideDilation) {
    t().mb(1).channels(4, 8).input({7, 6, 8}).kernel({2, 3, 3}).stride({2, 1, 2}).dilation({1, 2, 2}).pad({1, 2, 0}, {0, 1, 2}).run_all();
}
TEST_P(CpuShapes, Groups) { t().channels(8, 12).groups(2).input({9, 9}).kernel({3, 3}).stride({2}).pad({1}, {2}).run_all(); }
TEST_P(CpuShapes, Groups4) { t().channels(16, 32).groups(4).input({6, 6}).kernel({3, 3}).pad({1}, {1}).run_all(); }
TEST_P(CpuShapes, Depthwise) { t().channels(16, 16).groups(16).input({10, 10}).kernel({3, 3}).pad({1}, {1}).run_all(); }
TEST_P(CpuShapes, DepthwiseMultiplier) { t().channels(8, 16).groups(8).input({9, 7}).kernel({3, 3}).stride({2}).pad({1}, {1}).run_all(); }
TEST_P(CpuShapes, Depthwise1D) { t().channels(16, 16).groups(16).input({20}).kernel({5}).pad({2}, {2}).run_all(); }
TEST_P(CpuShapes, Stride3Dilation3) {
    t().channels(4, 8).input({17, 17}).kernel({3, 3}).stride({3}).dilation({3}).pad({2}, {1}).run_all();
}
TEST_P(CpuShapes, Dilation2) { t().channels(8, 8).input({12, 12}).kernel({3, 3}).dilation({2}).pad({2}, {2}).run_all(); }
TEST_P(CpuShapes, AsymmetricPadding) {
    t().channels(8, 8).input({9, 10}).kernel({3, 3}).pad({0, 2}, {3, 1}).run_all();
}
TEST_P(CpuShapes, Pointwise) { t().channels(16, 32).input({8, 8}).kernel({1, 1}).run_all(); }
TEST_P(CpuShapes, PointwiseStride2) { t().channels(16, 32).input({8, 8}).kernel({1, 1}).stride({2}).run_all(); }
// Weight-heavy 1x1 convolutions on channels-last tensors take the matmul path (see
// CpuPlans.MatmulPath); strided ones gather/scatter the used positions.
TEST_P(CpuShapes, PointwiseWeightHeavy) { t().mb(1).channels(64, 48).input({3, 3}).kernel({1, 1}).run_all_expect_matmul(); }
TEST_P(CpuShapes, PointwiseWeightHeavyStrided) {
    t().mb(1).channels(32, 48).input({5, 6}).kernel({1, 1}).stride({2}).run_all_expect_matmul();
}
TEST_P(CpuShapes, PointwiseWeightHeavy3D) {
    t().mb(1).channels(32, 32).input({4, 3, 4}).kernel({1, 1, 1}).stride({2}).run_all_expect_matmul();
}
TEST_P(CpuShapes, PointwiseWeightHeavy1D) {
    t().mb(2).channels(64, 64).input({5}).kernel({1}).stride({2}).bias(false).run_all_expect_matmul();
}
TEST_P(CpuShapes, PointwiseWeightHeavyPostOps) {
    auto x = t().mb(1).channels(64, 48).input({3, 3}).kernel({1, 1});
    x.post_ops("relu").run_fwd();
    x.post_ops("sum:0.5+add+gelu_erf", {Bcast::per_oc}).run_fwd();
    x.post_ops("mul+sub", {Bcast::full, Bcast::scalar}).run_fwd();
    x.post_ops("sum+sum:0.5+tanh").run_fwd();
    x.post_ops("add", {Bcast::spatial}).run_fwd();
    t().mb(1).channels(32, 48).input({5, 6}).kernel({1, 1}).stride({2}).post_ops("sum+relu").run_fwd();
}
// More output channels than output positions: threads split channels rather than rows (f64).
TEST_P(CpuShapes, WeightHeavy3x3) {
    t().mb(1).channels(48, 64).input({3, 3}).kernel({3, 3}).pad({1}, {1}).run_all();
    t().mb(1).channels(48, 64).input({5, 4}).kernel({3, 3}).stride({2}).pad({1}, {1}).post_ops("sum+relu").run_fwd();
}
TEST_P(CpuShapes, DepthwisePostOps) {
    auto x = t().channels(16, 16).groups(16).input({9, 7}).kernel({3, 3}).pad({1}, {1});
    for (const char* ops : {"elu:0.5+elu", "relu:0.1+linear:2:1+relu:0.3", "swish:0.5+swish:2", "sum+relu", "gelu_tanh"})
        x.post_ops(ops).run_fwd();
    t().channels(6, 6).groups(3).input({11}).kernel({3}).stride({3}).dilation({3}).pad({2}, {2}).post_ops("elu:0.5+elu:1").run_fwd();
}
// Shapes on which oneDNN 2.6 computed wrong results, crashed, or failed to generate a kernel
// when handed the whole post-op chain or the user's layout (found by the PyTorch oracle); the
// backend must route around each (see fusable_post_ops and preferred_act_layout).
TEST_P(CpuShapes, OneDnnRegressions) {
    // Binary operands fused on depthwise / 1D / 3D / odd-channel shapes: wrong values.
    t().channels(7, 7).groups(7).input({2}).kernel({1}).pad({1}, {0}).post_ops("sum+max+gelu_erf", {Bcast::full}).run_fwd();
    t().mb(1).channels(5, 10).groups(5).input({5, 4, 6}).kernel({3, 3, 3}).stride({3}).pad({1}, {1})
        .post_ops("max+hardswish", {Bcast::per_oc}).run_fwd();
    t().channels(4, 8).groups(4).input({5}).kernel({2}).pad({1}, {0}).bias(false).post_ops("div+hardswish", {Bcast::full}).run_fwd();
    t().channels(3, 3).input({4, 7}).kernel({2, 3}).pad({1, 0}, {0, 1}).post_ops("swish:2+mul+max", {Bcast::full, Bcast::per_oc}).run_fwd();
    // sum + eltwise where an output row sees only padding: brgconv segfaults.
    t().channels(2, 4).input({4, 10}).kernel({1, 3}).pad({0, 1}, {1, 0}).bias(false).post_ops("gelu_erf+gelu_tanh+sum:-1.5").run_fwd();
    t().mb(1).channels(5, 1).input({2, 10}).kernel({1, 1}).stride({2, 1}).pad({1, 0}, {1, 0}).post_ops("hardswish+gelu_tanh+sum:0.5").run_fwd();
    // bf16 grouped 1D: the kernel generator fails for this chain (pd accepted, primitive not).
    t().mb(1).channels(12, 12).groups(3).input({13}).kernel({3}).pad({2}, {2}).post_ops("elu:0.5+tanh").run_fwd();
    // Grouped 3D backward weights with depth windows running into end padding (jit_bf16).
    t().mb(1).channels(4, 4).groups(4).input({4, 5, 1}).kernel({3, 3, 2}).stride({3, 3, 2}).pad({1}, {2, 1, 0}).run_bwd_w();
    t().mb(2).channels(16, 16).groups(16).input({4, 5, 3}).kernel({3, 3, 2}).stride({3, 3, 2}).pad({1}, {2, 1, 0}).run_bwd_w();
}
TEST_P(CpuShapes, Strem7x7) { t().mb(1).channels(3, 16).input({20, 20}).kernel({7, 7}).stride({2}).pad({3}, {3}).run_all(); }
TEST_P(CpuShapes, OddChannels) { t().channels(5, 7).input({6, 5}).kernel({2, 3}).stride({1, 2}).run_all(); }
TEST_P(CpuShapes, BatchOne) { t().mb(1).channels(32, 16).input({5, 5}).kernel({3, 3}).pad({1}, {1}).run_all(); }

TEST_P(CpuShapes, MixedLayouts) {
    const Layout l = std::get<1>(GetParam());
    const Layout o = l == Layout::channels_last ? Layout::channels_first : Layout::channels_last;
    t().channels(8, 16).input({7, 7}).kernel({3, 3}).pad({1}, {1}).wei_layout(o).run_all();
    t().channels(8, 16).input({7, 7}).kernel({3, 3}).pad({1}, {1}).dst_layout(o).run_all();
    t().channels(8, 16).input({7, 7}).kernel({3, 3}).stride({2}).wei_layout(o).dst_layout(o).post_ops("sum+relu").run_fwd();
    t().channels(8, 16).input({6, 6}).kernel({1, 1}).dst_layout(o).run_all();
}

INSTANTIATE_TEST_SUITE_P(Cpu, CpuShapes,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16, DType::f64),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first)),
                         [](const auto& info) {
                             return std::string(to_string(std::get<0>(info.param))) +
                                    (std::get<1>(info.param) == Layout::channels_last ? "_nhwc" : "_nchw");
                         });

// ---- post-ops (forward) ----

struct PostOpCase {
    const char* text;
    std::vector<Bcast> operands;
};

class CpuPostOps : public ::testing::TestWithParam<std::tuple<DType, Layout, PostOpCase>> {};

TEST_P(CpuPostOps, MatchesReference) {
    const auto& pc = std::get<2>(GetParam());
    tester(std::get<0>(GetParam()), std::get<1>(GetParam()))
        .channels(8, 16)
        .input({6, 7})
        .kernel({3, 3})
        .pad({1}, {1})
        .post_ops(pc.text, pc.operands)
        .run_fwd();
}

const PostOpCase kPostOps[] = {
    {"relu", {}},
    {"relu:0.1", {}},
    {"linear:0.5:-0.25", {}},
    {"clip:-0.5:0.7", {}},
    {"elu:0.8", {}},
    {"swish:1.5", {}},
    {"gelu_erf", {}},
    {"gelu_tanh", {}},
    {"logistic", {}},
    {"tanh", {}},
    {"hardswish", {}},
    {"mish", {}},
    {"abs", {}},
    {"square", {}},
    {"abs+sqrt", {}},
    {"linear:0.2:0+exp", {}},
    {"abs+linear:1:0.1+log", {}},
    {"sum", {}},
    {"sum:0.5", {}},
    {"add", {Bcast::scalar}},
    {"mul", {Bcast::per_oc}},
    {"sub", {Bcast::full}},
    {"div", {Bcast::per_oc}},
    {"max", {Bcast::full}},
    {"min", {Bcast::scalar}},
    {"add", {Bcast::spatial}},
    {"add", {Bcast::full_other_layout}},
    {"mul", {Bcast::full_strided}},
    {"relu+sum:0.5+tanh", {}},
    {"sum+relu", {}},
    {"linear:2:1+add+relu", {Bcast::full}},
    {"mul+sum:0.25+clip:-1:1+sub", {Bcast::per_oc, Bcast::scalar}},
    {"sum+sum:0.5+relu", {}},  // two sums: beyond oneDNN, convkit's own pass
    {"elu:0.5+elu", {}},       // one alg twice with other parameters: oneDNN 2.6 reuses the first's
    {"relu:0.1+linear:2:1+relu:0.3", {}},
    {"clip:-1:1+linear:0.5:0.1+clip:-0.2:0.3", {}},
    {"gelu_erf+add+swish:0.5+mul+hardswish+sum:2", {Bcast::full, Bcast::per_oc}},
};

INSTANTIATE_TEST_SUITE_P(Cpu, CpuPostOps,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16, DType::f64),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first),
                                            ::testing::ValuesIn(kPostOps)),
                         [](const auto& info) {
                             std::string s = std::string(to_string(std::get<0>(info.param))) +
                                             (std::get<1>(info.param) == Layout::channels_last ? "_nhwc_" : "_nchw_");
                             for (const char* c = std::get<2>(info.param).text; *c; ++c)
                                 s += std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_';
                             return s + "_" + std::to_string(info.index);
                         });

// ---- plans: which implementation runs ----

core::ConvProblem problem(core::Direction dir, DType dt, Layout l, int64_t mb, int64_t ic, int64_t oc, int64_t hw,
                          int64_t k, int64_t stride, int64_t pad, bool bias = false) {
    core::ConvProblem p;
    p.dir = dir;
    p.dt = dt;
    p.nsp = 2;
    p.mb = mb;
    p.ic = ic;
    p.oc = oc;
    for (int i = 0; i < 2; ++i) {
        p.in[i] = hw;
        p.k[i] = k;
        p.stride[i] = stride;
        p.padding_l[i] = p.padding_r[i] = pad;
        p.out[i] = (hw + 2 * pad - k) / stride + 1;
    }
    p.src_layout = p.wei_layout = p.dst_layout = l;
    p.with_bias = bias;
    p.allow_tf32 = allow_tf32();
    return p;
}

// The ResNet-50 layers as the batch file lists them (tests/test_desc.cpp checks that file).
std::vector<tools::ConvDesc> resnet50_layers() {
    return tools::read_batch_file(std::string(CONVKIT_SOURCE_DIR) + "/inputs/resnet_50");
}

TEST(CpuPlans, ResNet50NeverRef) {
    // On every ISA: bf16/f16 take native kernels where oneDNN has them and otherwise its f32
    // kernels over widened copies, never `ref` (on an AVX2 machine oneDNN 2.6 has no other bf16
    // kernels and no f16 ones at all).
    for (DType dt : {DType::f32, DType::bf16, DType::f16})
        for (Layout l : {Layout::channels_last, Layout::channels_first})
            for (core::Direction dir : {core::Direction::fwd, core::Direction::bwd_d, core::Direction::bwd_w})
                for (const auto& r : resnet50_layers()) {
                    core::ConvProblem p = problem(dir, dt, l, 1, r.ic, r.oc, r.in[2], r.k[2], r.stride[2], r.padding_l[2],
                                                  dir != core::Direction::bwd_d);
                    cpu::PlanInfo info = cpu::plan_info(p);
                    const std::string what = r.name + " " + p.str() + ": conv " + info.impl +
                                             " (src " + info.src_format + ", wei " + info.wei_format + ", dst " +
                                             info.dst_format + "), reorders " + info.reorder_impls;
                    EXPECT_EQ(info.impl.find("ref"), std::string::npos) << what;
                    EXPECT_EQ(info.reorder_impls.find("ref"), std::string::npos) << what;
                    // Channels-last activations are used in place: only weights are reordered
                    // (conv1's f32 backward data, ic 3, runs on nchw on purpose: see preferred_act_layout;
                    // so does a widened 16-bit one, which follows the f32 rules).
                    const bool f32_kernels = dt == DType::f32 || info.widened;
                    if (l == Layout::channels_last && !(dir == core::Direction::bwd_d && f32_kernels && r.ic < 8)) {
                        EXPECT_LE(info.reorders, 1 + (dir == core::Direction::bwd_w)) << what;
                    }
                }
}

TEST(CpuPlans, MatmulPath) {
    // res5_1x1c at mb 1: 1M weights against 49 rows of activations.
    // bf16 and f16 too: a widened problem reads widened plain weights (one streaming pass), still
    // cheaper than widening into the convolution's blocked layout and running the convolution.
    for (DType dt : {DType::f32, DType::bf16, DType::f16})
        for (core::Direction dir : {core::Direction::fwd, core::Direction::bwd_d, core::Direction::bwd_w}) {
            core::ConvProblem p = problem(dir, dt, Layout::channels_last, 1, 2048, 512, 7, 1, 1, 0, dir != core::Direction::bwd_d);
            cpu::PlanInfo info = cpu::plan_info(p);
            EXPECT_EQ(info.impl.rfind("matmul:", 0), 0u) << p.str() << ": " << info.impl;
            EXPECT_EQ(info.reorders, 0) << p.str() << ": " << info.reorder_impls;
            // Activation-heavy 1x1 (res2_1x1b) stays on the convolution primitive.
            core::ConvProblem q = problem(dir, dt, Layout::channels_last, 1, 64, 256, 56, 1, 1, 0);
            EXPECT_EQ(cpu::plan_info(q).impl.find("matmul"), std::string::npos) << q.str();
        }
}

TEST(CpuPlans, FusedAndOwnEpilogue) {
    core::ConvProblem p = problem(core::Direction::fwd, DType::f32, Layout::channels_last, 1, 16, 16, 8, 3, 1, 1, true);
    p.n_post_ops = 1;
    p.post_ops[0].kind = PostOp::Kind::eltwise;
    p.post_ops[0].alg = static_cast<int>(EltwiseAlg::relu);
    cpu::PlanInfo fused = cpu::plan_info(p);
    EXPECT_TRUE(fused.post_ops_fused) << fused.impl;
    EXPECT_FALSE(fused.own_epilogue);
    // Two sums in one chain: oneDNN 2.6 takes at most one, so convkit's pass runs the whole chain.
    p.n_post_ops = 2;
    p.post_ops[0].kind = PostOp::Kind::sum;
    p.post_ops[1].kind = PostOp::Kind::sum;
    p.post_ops[1].scale = 0.5f;
    cpu::PlanInfo own = cpu::plan_info(p);
    EXPECT_FALSE(own.post_ops_fused);
    EXPECT_TRUE(own.own_epilogue);
    EXPECT_EQ(own.impl.find("ref"), std::string::npos) << own.impl;
}

// ---- long f32 backward reductions in pieces ----
//
// oneDNN sums a reduction in f32 one term after another; past a few thousand terms its error
// exceeds the 1e-5 bound (WaveNet's 84k positions: 2.3e-5 unsplit). The CPU backend runs such
// backward passes as shorter convolutions summed in double (src/cpu/split_plan.cpp). Each shape
// below is split (its plan says so) and must match the reference within the flat f32 bound,
// covering every piece geometry: whole images, rows of a plane (with the channels-first
// tensors reordered first), planes cut into row ranges (input gathered), output-channel ranges.

void expect_split(const ConvTester& t, int dir) {
    const std::string impl = t.impl(dir);
    EXPECT_EQ(impl.rfind("split(", 0), 0u) << t.name(dir == 1 ? "bwd_d" : "bwd_w") << ": " << impl;
    EXPECT_EQ(impl.find("ref"), std::string::npos) << impl;
}

TEST(CpuSplit, BackwardWeightsLong1D) {
    // WaveNet's first 2-tap convolution: 84349 output positions in one image.
    for (Layout l : {Layout::channels_last, Layout::channels_first}) {
        ConvTester t = tester(DType::f32, l).mb(1).channels(32, 32).input({84350}).kernel({2});
        expect_split(t, 2);
        t.run_bwd_w();
    }
}

TEST(CpuSplit, BackwardWeightsWholeImages) {
    // 8 images of 1024 positions: groups of 4 images, no copies; groups and bias grad too.
    for (Layout l : {Layout::channels_last, Layout::channels_first}) {
        ConvTester t = tester(DType::f32, l).mb(8).channels(8, 12).groups(2).input({32, 32}).kernel({3, 3}).pad({1}, {1});
        expect_split(t, 2);
        t.run_bwd_w();
    }
}

TEST(CpuSplit, BackwardWeightsRowsOfAPlane) {
    // 75x75 outputs per image: rows of the plane, stride, dilation and asymmetric padding, so
    // the first and last pieces get their own padding.
    for (Layout l : {Layout::channels_last, Layout::channels_first}) {
        ConvTester t = tester(DType::f32, l).mb(2).channels(3, 16).input({151, 149}).kernel({7, 5}).stride({2, 2})
                           .dilation({1, 2}).pad({3, 4}, {2, 5});
        expect_split(t, 2);
        t.run_bwd_w();
    }
}

TEST(CpuSplit, BackwardWeights3DGathered) {
    // 70x70 planes (4900 positions > 4096): each piece is a range of rows of one output plane,
    // whose input region (three planes deep) is gathered into one block.
    for (Layout l : {Layout::channels_last, Layout::channels_first}) {
        ConvTester t = tester(DType::f32, l).mb(1).channels(4, 8).input({6, 70, 71}).kernel({3, 3, 3})
                           .dilation({2, 1, 1}).pad({2, 1, 1}, {1, 1, 0});
        expect_split(t, 2);
        t.run_bwd_w();
    }
}

TEST(CpuSplit, BackwardDataOutputChannels) {
    // 512 output channels x 9 taps = 4608 terms: two ranges of 256; 500 channels: 256 + 244;
    // 3D 200 x 27 = 5400: 112 + 88.
    for (Layout l : {Layout::channels_last, Layout::channels_first}) {
        ConvTester a = tester(DType::f32, l).mb(2).channels(8, 512).input({6, 7}).kernel({3, 3}).pad({1}, {1});
        ConvTester b = tester(DType::f32, l).mb(2).channels(6, 500).input({9, 9}).kernel({3, 3}).stride({2})
                           .dilation({2}).pad({1, 2}, {2, 1});
        ConvTester c = tester(DType::f32, l).mb(1).channels(5, 200).input({5, 6, 5}).kernel({3, 3, 3}).pad({1}, {1});
        for (ConvTester* t : {&a, &b, &c}) {
            expect_split(*t, 1);
            t->run_bwd_d();
        }
        // Weights in the other layout than the activations.
        ConvTester d = a;
        d.wei_layout(l == Layout::channels_last ? Layout::channels_first : Layout::channels_last);
        d.run_bwd_d();
    }
}

TEST(CpuSplit, OnlyLongF32Reductions) {
    // bf16 is judged at bf16's precision and stays whole, as do short reductions and grouped
    // backward data.
    EXPECT_EQ(tester(DType::bf16, Layout::channels_last).mb(1).channels(32, 32).input({84350}).kernel({2}).impl(2).find("split"),
              std::string::npos);
    EXPECT_EQ(tester(DType::f32, Layout::channels_last).mb(1).channels(8, 8).input({60, 60}).kernel({3, 3}).impl(2).find("split"),
              std::string::npos);
    EXPECT_EQ(tester(DType::f32, Layout::channels_last).mb(1).channels(512, 512).groups(2).input({6, 6}).kernel({3, 3}).impl(1).find("split"),
              std::string::npos);
}

TEST(CpuSplit, BitwiseReproducible) {
    ConvTester t = tester(DType::f32, Layout::channels_first).mb(1).channels(4, 8).input({6, 70, 71}).kernel({3, 3, 3}).pad({1}, {1});
    ConvTester::Tensors a = t.make(3);
    t.call(2, a, kCpu).wait();
    Tensor keep(a.wei.dtype(), a.wei.sizes(), a.wei.view().layout());
    copy(keep.view(), a.wei.view());
    fill(a.wei, -1, 1, 77);
    t.call(2, a, kCpu).wait();
    EXPECT_TRUE(bitwise_equal(a.wei.view(), keep.view()));
}

// ---- prepacked weights ----

TEST(CpuPrepack, EqualsUnpackedAndAnyBatch) {
    for (DType dt : {DType::f32, DType::bf16})
        for (Layout l : {Layout::channels_last, Layout::channels_first}) {
            ConvTester t = tester(dt, l).mb(2).channels(16, 32).input({9, 9}).kernel({3, 3}).pad({1}, {1});
            SCOPED_TRACE(t.name("fwd prepacked"));
            ConvTester::Tensors a = t.make(7);
            PackedWeights pw = prepack_weights(a.wei, a.src, t.prm_, PostOps(), kCpu);
            ASSERT_TRUE(pw.defined());
            EXPECT_EQ(pw.engine(), Engine::cpu);
            for (int64_t mb : {2, 1, 5}) {
                ConvTester tb = t;
                tb.mb(mb);
                ConvTester::Tensors x = tb.make(11 + static_cast<uint64_t>(mb));
                copy(x.wei.view(), a.wei.view());
                ConvTester::Tensors y = tb.clone(x);
                convolution_forward(x.dst, x.src, x.wei, x.bias.view(), t.prm_, PostOps(), Stream(), {}, kCpu).wait();
                convolution_forward(y.dst, y.src, pw, y.bias.view(), t.prm_, PostOps(), Stream(), {}, kCpu).wait();
                EXPECT_TRUE(bitwise_equal(x.dst.view(), y.dst.view())) << "mb " << mb;
            }
        }
}

// ---- cache ----

TEST(CpuCache, CountsHitsAndMisses) {
    ConvTester t = tester(DType::f32, Layout::channels_last).mb(3).channels(24, 40).input({5, 5}).kernel({3, 3});
    ConvTester::Tensors a = t.make(3);
    CacheStats s0 = cache_stats(Engine::cpu);
    t.call(0, a, kCpu).wait();
    CacheStats s1 = cache_stats(Engine::cpu);
    EXPECT_EQ(s1.misses, s0.misses + 1);
    EXPECT_EQ(s1.hits, s0.hits);
    for (int i = 0; i < 3; ++i) t.call(0, a, kCpu).wait();
    CacheStats s2 = cache_stats(Engine::cpu);
    EXPECT_EQ(s2.misses, s1.misses);
    EXPECT_EQ(s2.hits, s1.hits + 3);
    EXPECT_GE(s2.size, 1u);
    EXPECT_GE(s2.capacity, s2.size);
    // Another direction is another problem.
    t.call(1, a, kCpu).wait();
    EXPECT_EQ(cache_stats(Engine::cpu).misses, s2.misses + 1);
    clear_cache(Engine::cpu);
    CacheStats s3 = cache_stats(Engine::cpu);
    EXPECT_EQ(s3.size, 0u);
    EXPECT_EQ(s3.hits, 0u);
    t.call(0, a, kCpu).wait();
    EXPECT_EQ(cache_stats(Engine::cpu).misses, 1u);
}

TEST(CpuCache, EvictsLeastRecentlyUsed) {
    // The backend's cache takes its capacity from CONVKIT_CACHE_CAPACITY once per process, so
    // eviction is checked on an instance of the same LruCache keyed by the same problems.
    core::LruCache<core::ConvProblem, int, core::ConvProblemHash> c(2);
    auto p = [](int64_t oc) { return problem(core::Direction::fwd, DType::f32, Layout::channels_last, 1, 8, oc, 8, 3, 1, 1); };
    int built = 0;
    auto make = [&] { return std::make_shared<int>(++built); };
    c.get_or_create(p(8), make);
    c.get_or_create(p(16), make);
    c.get_or_create(p(8), make);   // hit: p(8) becomes most recent
    c.get_or_create(p(24), make);  // evicts p(16)
    CacheStats s = c.stats();
    EXPECT_EQ(s.misses, 3u);
    EXPECT_EQ(s.hits, 1u);
    EXPECT_EQ(s.evictions, 1u);
    EXPECT_EQ(s.size, 2u);
    EXPECT_EQ(*c.get_or_create(p(8), make), 1);    // still there
    EXPECT_EQ(*c.get_or_create(p(16), make), 4);   // rebuilt
}

// ---- threads ----

TEST(CpuThreads, EightThreadsShareTheCache) {
    std::vector<ConvTester> shapes = {
        tester(DType::f32, Layout::channels_last).channels(8, 16).input({8, 8}).kernel({3, 3}).pad({1}, {1}),
        tester(DType::f32, Layout::channels_first).channels(8, 8).input({9, 9}).kernel({3, 3}).stride({2}),
        tester(DType::bf16, Layout::channels_last).channels(16, 16).groups(16).input({8, 8}).kernel({3, 3}).pad({1}, {1}),
        tester(DType::f32, Layout::channels_last).channels(16, 32).input({6, 6}).kernel({1, 1}).post_ops("relu"),
        tester(DType::f64, Layout::channels_last).channels(8, 8).input({7, 7}).kernel({3, 3}),
        tester(DType::f32, Layout::channels_last).channels(4, 8).input({12}).kernel({3}).dilation({2}),
    };
    struct Job {
        const ConvTester* t;
        int dir;
        ConvTester::Tensors in;
        std::vector<double> want;
    };
    std::vector<Job> jobs;
    for (const auto& s : shapes)
        for (int dir = 0; dir < 3; ++dir) {
            if (dir && !s.ops_text_.empty()) continue;
            Job j{&s, dir, s.make(100 + jobs.size()), {}};
            ConvTester::Tensors r = s.clone(j.in);
            s.call(dir, r, kRef).wait();
            j.want = to_host_f64(s.output(dir, r).view());
            jobs.push_back(std::move(j));
        }
    std::atomic<int> failures{0};
    std::vector<std::string> errors(8);
    std::vector<std::thread> threads;
    for (int th = 0; th < 8; ++th)
        threads.emplace_back([&, th] {
            try {
                for (int rep = 0; rep < 4; ++rep)
                    for (std::size_t k = 0; k < jobs.size(); ++k) {
                        const Job& j = jobs[(k + static_cast<std::size_t>(th)) % jobs.size()];
                        ConvTester::Tensors x = j.t->clone(j.in);
                        j.t->call(j.dir, x, kCpu).wait();
                        Compare c = compare(to_host_f64(j.t->output(j.dir, x).view()), j.want, j.t->dt_,
                                            j.t->scale(j.dir, x));
                        if (!c.ok) {
                            ++failures;
                            errors[static_cast<std::size_t>(th)] = j.t->name("") + ": " + c.detail;
                        }
                    }
            } catch (const std::exception& e) {
                ++failures;
                errors[static_cast<std::size_t>(th)] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(failures.load(), 0);
    for (const auto& e : errors) EXPECT_TRUE(e.empty()) << e;
}

TEST(CpuThreads, SetNumThreadsOverride) {
    ConvTester t = tester(DType::f32, Layout::channels_last).channels(16, 16).input({10, 10}).kernel({3, 3}).pad({1}, {1});
    const int before = num_threads();
    set_num_threads(1);
    EXPECT_EQ(num_threads(), 1);
    t.run_all();
    set_num_threads(before);
    t.run_all();
}

// ---- determinism ----

TEST(CpuDeterminism, BackwardBitwiseReproducible) {
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
        for (Layout l : {Layout::channels_last, Layout::channels_first}) {
            ConvTester t = tester(dt, l).mb(4).channels(32, 32).input({14, 14}).kernel({3, 3}).pad({1}, {1});
            for (int dir : {1, 2}) {
                SCOPED_TRACE(t.name(dir == 1 ? "bwd_d" : "bwd_w"));
                ConvTester::Tensors a = t.make(5);
                t.call(dir, a, kCpu).wait();
                const Tensor& first = t.output(dir, a);
                Tensor keep(first.dtype(), first.sizes(), first.view().layout());
                copy(keep.view(), first.view());
                Tensor keep_bias;
                if (dir == 2) {
                    keep_bias = Tensor(a.bias.dtype(), a.bias.sizes());
                    copy(keep_bias.view(), a.bias.view());
                }
                for (int run = 1; run < 10; ++run) {
                    fill(t.output(dir, a), -1, 1, 99 + static_cast<uint64_t>(run));  // poison
                    t.call(dir, a, kCpu).wait();
                    EXPECT_TRUE(bitwise_equal(t.output(dir, a).view(), keep.view())) << "run " << run;
                    if (dir == 2) {
                        EXPECT_TRUE(bitwise_equal(a.bias.view(), keep_bias.view())) << "diff_bias run " << run;
                    }
                }
            }
        }
}

// ---- dtypes ----

// A 16-bit result is rounded once, after bias and post-ops: with src (1, 2^-8) and weights 1 the
// convolution is 1 + 2^-8, a tie that alone rounds to 1 in bf16; with bias 2^-16 the exact result
// rounds up to 1 + 2^-7. Rounding the convolution before the bias would give 1. f16 likewise
// with (1, 2^-11) and 2^-20.
TEST(CpuDtypes, SixteenBitRoundsOnce) {
    for (DType dt : {DType::bf16, DType::f16})
        for (cpu::WidePolicy policy : {cpu::WidePolicy::automatic, cpu::WidePolicy::always}) {
            cpu::set_wide_policy(policy);
            clear_cache(Engine::cpu);
            const bool bf = dt == DType::bf16;
            const double half_ulp = bf ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
            const double nudge = bf ? std::ldexp(1.0, -16) : std::ldexp(1.0, -20);
            Tensor src(dt, Dims{1, 2, 1, 1}, Layout::channels_last), wei(dt, Dims{1, 2, 1, 1}, Layout::channels_last),
                bias(dt, Dims{1}), dst(dt, Dims{1, 1, 1, 1}, Layout::channels_last);
            from_host_f64(src.view(), {1.0, half_ulp});
            from_host_f64(wei.view(), {1.0, 1.0});
            from_host_f64(bias.view(), {nudge});
            convolution_forward(dst, src, wei, bias, ConvParams(), PostOps(), Stream(), {}, kCpu).wait();
            EXPECT_EQ(to_host_f64(dst.view())[0], 1.0 + 2 * half_ulp) << to_string(dt) << " policy " << static_cast<int>(policy);
            // Backward data sums over three output channels in f32: 1 + half ulp + nudge. Partial
            // sums rounded to 16 bits would lose the nudge and give 1.
            Tensor ddst(dt, Dims{1, 3, 1, 1}, Layout::channels_last), w2(dt, Dims{3, 1, 1, 1}, Layout::channels_last),
                dsrc(dt, Dims{1, 1, 1, 1}, Layout::channels_last);
            from_host_f64(ddst.view(), {1.0, half_ulp, nudge});
            from_host_f64(w2.view(), {1.0, 1.0, 1.0});
            convolution_backward_data(dsrc, ddst, w2, ConvParams(), Stream(), {}, kCpu).wait();
            EXPECT_EQ(to_host_f64(dsrc.view())[0], 1.0 + 2 * half_ulp) << to_string(dt) << " bwd_d";
        }
    cpu::set_wide_policy(cpu::WidePolicy::automatic);
    clear_cache(Engine::cpu);
}

TEST(CpuDtypes, F16RunsOnTheCpuEngine) {
    // f16 runs on the cpu engine on every ISA (oneDNN 2.6 has no f16 convolution kernels: the
    // plans widen to f32), and `auto` picks the cpu engine for it, not the reference loops.
    for (core::Direction dir : {core::Direction::fwd, core::Direction::bwd_d, core::Direction::bwd_w}) {
        core::ConvProblem p = problem(dir, DType::f16, Layout::channels_last, 1, 64, 64, 56, 3, 1, 1, dir != core::Direction::bwd_d);
        cpu::PlanInfo info = cpu::plan_info(p);
        EXPECT_EQ(info.impl.find("ref"), std::string::npos) << p.str() << ": " << info.impl;
    }
    Tensor src(DType::f16, Dims{1, 8, 6, 6}, Layout::channels_last), wei(DType::f16, Dims{8, 8, 3, 3}, Layout::channels_last),
        dst(DType::f16, Dims{1, 8, 4, 4}, Layout::channels_last);
    fill(src, -1, 1, 5);
    fill(wei, -1, 1, 6);
    const CacheStats before = cache_stats(Engine::cpu);
    convolution_forward(dst, src, wei, TensorView(), ConvParams()).wait();
    EXPECT_EQ(cache_stats(Engine::cpu).misses + cache_stats(Engine::cpu).hits, before.misses + before.hits + 1);
}

// ---- bf16/f16 widened to f32 (forced, so the path is tested on CPUs with native kernels too) ----

class CpuWide : public ::testing::TestWithParam<std::tuple<DType, Layout>> {
protected:
    void SetUp() override {
        cpu::set_wide_policy(cpu::WidePolicy::always);
        clear_cache(Engine::cpu);
    }
    void TearDown() override {
        cpu::set_wide_policy(cpu::WidePolicy::automatic);
        clear_cache(Engine::cpu);
    }
    ConvTester t() const { return tester(std::get<0>(GetParam()), std::get<1>(GetParam())); }
    // Runs every direction against the reference and checks each plan was widened.
    void run_all_widened(const ConvTester& c) const {
        c.run_all();
        for (int dir = 0; dir < 3; ++dir) {
            const cpu::PlanInfo info = cpu::plan_info(c.problem(dir));
            EXPECT_TRUE(info.widened) << c.name("") << " dir " << dir << ": " << info.impl;
            EXPECT_EQ(info.impl.find("ref"), std::string::npos) << c.name("") << " dir " << dir << ": " << info.impl;
        }
    }
};

TEST_P(CpuWide, Shapes) {
    run_all_widened(t().channels(8, 16).input({9, 9}).kernel({3, 3}).pad({1}, {1}));
    run_all_widened(t().mb(1).channels(3, 16).input({20, 20}).kernel({7, 7}).stride({2}).pad({3}, {3}));
    run_all_widened(t().channels(12, 24).groups(3).input({7, 8}).kernel({3, 2}).stride({2, 1}).dilation({2, 1}).pad({2, 0}, {1, 1}));
    run_all_widened(t().channels(16, 16).groups(16).input({10, 10}).kernel({3, 3}).stride({2}).pad({1}, {1}));
    run_all_widened(t().channels(32, 64).input({7, 7}).kernel({1, 1}).stride({2}));
    run_all_widened(t().mb(1).channels(2048, 512).input({7, 7}).kernel({1, 1}));  // the matmul path
    run_all_widened(t().mb(1).channels(1024, 2048).input({14, 14}).kernel({1, 1}).stride({2}));  // rows gathered
    run_all_widened(t().channels(6, 8).input({17}).kernel({3}).dilation({3}).pad({2}, {4}));
    run_all_widened(t().mb(1).channels(4, 8).groups(2).input({4, 5, 6}).kernel({3, 2, 3}).stride({2, 1, 2}).pad({1}, {0, 1, 2}));
    run_all_widened(t().channels(8, 16).input({7, 7}).kernel({3, 3}).pad({1}, {1}).wei_layout(Layout::channels_first)
                        .dst_layout(Layout::channels_first));
}

TEST_P(CpuWide, PostOps) {
    for (const char* ops : {"relu", "sum:0.5+relu", "sum+sum:0.5+relu", "elu:0.5+elu", "gelu_erf+tanh"})
        t().channels(8, 16).input({6, 7}).kernel({3, 3}).pad({1}, {1}).post_ops(ops).run_fwd();
    t().channels(8, 16).input({6, 7}).kernel({3, 3}).pad({1}, {1}).post_ops("add+relu", {Bcast::full}).run_fwd();
    t().channels(8, 16).input({6, 7}).kernel({3, 3}).pad({1}, {1}).post_ops("mul+sum", {Bcast::per_oc}).run_fwd();
}

TEST_P(CpuWide, PrepackedEqualsUnpacked) {
    ConvTester c = t().mb(2).channels(16, 32).input({9, 9}).kernel({3, 3}).pad({1}, {1});
    ConvTester::Tensors a = c.make(7);
    PackedWeights pw = prepack_weights(a.wei, a.src, c.prm_, PostOps(), kCpu);
    ASSERT_TRUE(pw.defined());
    ConvTester::Tensors b = c.clone(a);
    convolution_forward(a.dst, a.src, a.wei, a.bias.view(), c.prm_, PostOps(), Stream(), {}, kCpu).wait();
    convolution_forward(b.dst, b.src, pw, b.bias.view(), c.prm_, PostOps(), Stream(), {}, kCpu).wait();
    EXPECT_TRUE(bitwise_equal(a.dst.view(), b.dst.view())) << c.name("fwd prepacked");
}

INSTANTIATE_TEST_SUITE_P(Cpu, CpuWide,
                         ::testing::Combine(::testing::Values(DType::bf16, DType::f16),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first)),
                         [](const auto& info) {
                             return std::string(to_string(std::get<0>(info.param))) +
                                    (std::get<1>(info.param) == Layout::channels_last ? "_nhwc" : "_nchw");
                         });

}  // namespace
