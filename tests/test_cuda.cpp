// The CUDA (cuDNN) engine against the reference backend on the host: every direction, 1D/2D/3D,
// groups and depthwise, stride, dilation, asymmetric padding, bias and bias gradient, post-ops on
// the fused (cuDNN graph) and unfused (our epilogue kernel) paths, both layouts, f32 (strict and
// TF32), f16, bf16, f64; plus streams and events, external streams, out-of-memory, determinism,
// the plan cache and the tune file. Every test skips when no CUDA device is visible (CI).
// Timings and the layer dump for the PyTorch comparison are bench/cuda_layers, not tests.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "convkit/convkit.hpp"
#include "support/cuda_tolerance.hpp"
#ifdef CONVKIT_WITH_CUDA
#include "cuda/cuda_api.hpp"
#include "support/cuda_device.hpp"
#endif

using namespace convkit;
using convkit::test::cuda::rel_err;
using convkit::test::cuda::tolerance;
using convkit::tools::from_host_f64;
using convkit::tools::random_values;
using convkit::tools::to_host_f64;

namespace {

using convkit::test::has_gpu;

#ifdef CONVKIT_WITH_CUDA
// The suite exercises cuDNN, so the direct kernel for tiny forward problems (which would take most
// of these small shapes) is off unless a test turns it on.
class NoDirectKernel : public ::testing::Environment {
public:
    void SetUp() override { cuda::set_direct_max_macs(0); }
};
::testing::Environment* const kNoDirect = ::testing::AddGlobalTestEnvironment(new NoDirectKernel);
#endif

#define SKIP_WITHOUT_GPU() \
    if (!has_gpu()) GTEST_SKIP() << "no CUDA device visible"

enum class Dir { fwd, bwd_d, bwd_w };
const char* name(Dir d) { return d == Dir::fwd ? "fwd" : d == Dir::bwd_d ? "bwd_d" : "bwd_w"; }

// One convolution case, with chained setters so that each test case reads as one line.
struct Case {
    int nsp = 2;
    int64_t mb = 2, ic = 8, oc = 16, g = 1;
    int64_t in[3] = {8, 8, 8}, k[3] = {3, 3, 3};
    Dims stride, padding_l, padding_r, dilation;
    DType dt = DType::f32;
    Layout layout = Layout::channels_first;
    Layout wei_layout = Layout::channels_first;
    bool same_layouts = true;
    bool bias = false;
    bool tf32 = false;
    std::string post_ops;  // benchdnn spelling; binary operands: add:full, add:per_oc, add:scalar
    Dir dir = Dir::fwd;

    Case& spatial(int n, int64_t size, int64_t kernel) {
        nsp = n;
        for (int i = 0; i < 3; ++i) in[i] = size, k[i] = kernel;
        return *this;
    }
    Case& channels(int64_t i, int64_t o, int64_t groups = 1) { ic = i, oc = o, g = groups; return *this; }
    Case& batch(int64_t n) { mb = n; return *this; }
    Case& strides(Dims s) { stride = s; return *this; }
    Case& pad(Dims l, Dims r) { padding_l = l, padding_r = r; return *this; }
    Case& pad(Dims p) { padding_l = p, padding_r = p; return *this; }
    Case& dilate(Dims d) { dilation = d; return *this; }
    Case& dtype(DType d) { dt = d; return *this; }
    Case& nhwc(bool on = true) {
        layout = on ? Layout::channels_last : Layout::channels_first;
        if (same_layouts) wei_layout = layout;
        return *this;
    }
    Case& weights_layout(Layout l) { wei_layout = l, same_layouts = false; return *this; }
    Case& with_bias(bool on = true) { bias = on; return *this; }
    Case& with_tf32(bool on = true) { tf32 = on; return *this; }
    Case& ops(const std::string& s) { post_ops = s; return *this; }
    Case& direction(Dir d) { dir = d; return *this; }

    ConvParams params() const {
        ConvParams p;
        p.stride = stride;
        p.padding_l = padding_l;
        p.padding_r = padding_r;
        p.dilation = dilation;
        p.groups = g;
        return p;
    }
    Dims src_dims() const {
        Dims d{mb, ic};
        for (int i = 0; i < nsp; ++i) d.push_back(in[i]);
        return d;
    }
    Dims wei_dims() const {
        Dims d{oc, ic / g};
        for (int i = 0; i < nsp; ++i) d.push_back(k[i]);
        return d;
    }
    std::string str() const {
        std::string s = std::string(name(dir)) + " " + to_string(dt) + (layout == Layout::channels_last ? " nhwc" : " nchw") +
                         " " + src_dims().str() + " w" + wei_dims().str() + " g" + std::to_string(g);
        if (!stride.empty()) s += " s" + stride.str();
        if (!padding_l.empty()) s += " pl" + padding_l.str() + " pr" + padding_r.str();
        if (!dilation.empty()) s += " d" + dilation.str();
        if (bias) s += " +bias";
        if (!post_ops.empty()) s += " ops=" + post_ops;
        if (tf32) s += " tf32";
        if (!same_layouts) s += std::string(" wei=") + to_string(wei_layout);
        return s;
    }
};

struct Tensors {
    Tensor src, wei, dst, bias;
    std::vector<Tensor> operands;
    PostOps ops;
};

// Tensors of a case on `dev`, filled from the same seeds whatever the device.
Tensors make(const Case& c, Device dev) {
    Tensors t;
    Dims dd = output_shape(c.src_dims(), c.wei_dims(), c.params());
    t.src = Tensor(c.dt, c.src_dims(), c.layout, dev);
    t.wei = Tensor(c.dt, c.wei_dims(), c.wei_layout, dev);
    t.dst = Tensor(c.dt, dd, c.layout, dev);
    from_host_f64(t.src, random_values(t.src.numel(), -1, 1, 11, c.dt));
    from_host_f64(t.wei, random_values(t.wei.numel(), -1, 1, 12, c.dt));
    from_host_f64(t.dst, random_values(t.dst.numel(), -1, 1, 13, c.dt));
    if (c.bias) {
        t.bias = Tensor(c.dt, Dims{c.oc}, Layout::channels_first, dev);
        from_host_f64(t.bias, random_values(c.oc, -1, 1, 14, c.dt));
    }
    std::vector<std::string> args;
    t.ops = parse_post_ops(c.post_ops, &args);
    std::size_t bi = 0;
    for (std::size_t i = 0; i < t.ops.size(); ++i) {
        if (t.ops[i].kind != PostOp::Kind::binary) continue;
        const std::string& kind = args[bi++];
        Dims od = dd;
        if (kind == "per_oc") {
            for (int d = 0; d < od.rank(); ++d)
                if (d != 1) od[d] = 1;
        } else if (kind == "scalar") {
            for (int d = 0; d < od.rank(); ++d) od[d] = 1;
        }
        t.operands.emplace_back(c.dt, od, c.layout, dev);
        // Positive operands keep div and log/sqrt chains well defined.
        from_host_f64(t.operands.back(), random_values(t.operands.back().numel(), 0.5, 1.5, 20 + i, c.dt));
        t.ops[i].operand = t.operands.back();
    }
    return t;
}

Event run(const Case& c, Tensors& t, Engine e, const Stream& s = Stream()) {
    ConvOptions o;
    o.engine = e;
    switch (c.dir) {
        case Dir::fwd: return convolution_forward(t.dst, t.src, t.wei, t.bias.view(), c.params(), t.ops, s, {}, o);
        case Dir::bwd_d: return convolution_backward_data(t.src, t.dst, t.wei, c.params(), s, {}, o);
        case Dir::bwd_w: return convolution_backward_weights(t.wei, t.bias.view(), t.dst, t.src, c.params(), s, {}, o);
    }
    return Event();
}

const TensorView& output(const Case& c, const Tensors& t) {
    return c.dir == Dir::fwd ? t.dst.view() : c.dir == Dir::bwd_d ? t.src.view() : t.wei.view();
}


// Runs the case on cuda and on the reference; returns the error (also checks diff_bias).
void check(const Case& c) {
    SCOPED_TRACE(c.str());
    const bool old_tf32 = allow_tf32();
    set_allow_tf32(c.tf32);
    Tensors ref = make(c, Device::cpu()), gpu = make(c, Device::cuda(0));
    run(c, ref, Engine::ref).wait();
    try {
        run(c, gpu, Engine::cuda).wait();
    } catch (const Error& e) {
        set_allow_tf32(old_tf32);
        FAIL() << c.str() << ": " << e.what();
    }
    set_allow_tf32(old_tf32);
    const double tol = tolerance(c.dt, c.tf32);
    const double err = rel_err(to_host_f64(output(c, gpu)), to_host_f64(output(c, ref)));
    EXPECT_LE(err, tol) << c.str();
    if (c.dir == Dir::bwd_w && c.bias) {
        const double berr = rel_err(to_host_f64(gpu.bias), to_host_f64(ref.bias));
        EXPECT_LE(berr, tol) << c.str() << " (diff_bias)";
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes x directions x dtypes x layouts.

std::vector<Case> shapes() {
    return {
        Case().spatial(2, 8, 3).channels(8, 16).pad({1}),                                  // 2D
        Case().spatial(1, 16, 3).channels(4, 8).strides({2}).pad({1}),                     // 1D
        Case().spatial(3, 6, 3).channels(4, 8).batch(1).pad({1}),                          // 3D
        Case().spatial(2, 8, 3).channels(8, 8, 2).pad({1}),                                // groups
        Case().spatial(2, 9, 3).channels(16, 16, 16).pad({1}),                             // depthwise
        Case().spatial(2, 11, 3).channels(8, 8).strides({2}).dilate({2}).pad({2}),            // stride+dilation
        Case().spatial(2, 7, 3).channels(8, 8).pad({1, 0}, {0, 2}),                        // asymmetric pad
        Case().spatial(2, 8, 1).channels(16, 24).strides({2}),                             // 1x1 stride 2
        Case().spatial(2, 6, 3).channels(8, 16).pad({1}).with_bias(),                      // bias / bias grad
    };
}

struct Combo {
    Dir dir;
    DType dt;
    bool nhwc;
};

class CudaVsRef : public ::testing::TestWithParam<Combo> {};

TEST_P(CudaVsRef, Shapes) {
    SKIP_WITHOUT_GPU();
    const Combo k = GetParam();
    for (Case c : shapes()) {
        c.direction(k.dir).dtype(k.dt).nhwc(k.nhwc);
        check(c);
    }
}

std::vector<Combo> combos() {
    std::vector<Combo> v;
    for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w})
        for (DType t : {DType::f32, DType::f16, DType::bf16, DType::f64})
            for (bool nhwc : {false, true}) v.push_back({d, t, nhwc});
    return v;
}

INSTANTIATE_TEST_SUITE_P(All, CudaVsRef, ::testing::ValuesIn(combos()), [](const auto& info) {
    return std::string(name(info.param.dir)) + "_" + to_string(info.param.dt) + (info.param.nhwc ? "_nhwc" : "_nchw");
});

TEST(Cuda, Tf32LooserCheck) {
    SKIP_WITHOUT_GPU();
    for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w})
        for (bool nhwc : {false, true})
            check(Case().spatial(2, 14, 3).channels(32, 64).pad({1}).direction(d).nhwc(nhwc).with_tf32());
}

// ---------------------------------------------------------------------------------------------
// Post-ops.

#ifdef CONVKIT_WITH_CUDA
bool last_fused() { return cuda::last_plan().fused; }
#else
bool last_fused() { return false; }
#endif

TEST(CudaPostOps, FusedPath) {
    SKIP_WITHOUT_GPU();
    // NHWC, 16-byte aligned channels, ungrouped: cuDNN's runtime fusion should take these.
    const char* chains[] = {"relu", "add:full+relu", "swish:1.5", "gelu_erf", "clip:-0.5:0.5", "mul:per_oc+tanh",
                            "elu:0.7", "gelu_tanh+logistic", "relu:0.1"};
    int fused = 0, total = 0;
    for (DType dt : {DType::bf16, DType::f16, DType::f32})
        for (const char* ops : chains) {
            Case c = Case().spatial(2, 8, 3).channels(16, 32).pad({1}).nhwc().dtype(dt).with_bias().ops(ops).with_tf32();
            check(c);
            ++total;
            fused += last_fused() ? 1 : 0;
            std::printf("[          ] %-40s %s\n", c.str().c_str(), last_fused() ? "fused" : "unfused");
        }
    // bias + residual + relu in bf16 is the pattern cuDNN documents for Hopper: it must fuse.
    Case r = Case().spatial(2, 8, 1).channels(32, 64).nhwc().dtype(DType::bf16).with_bias().ops("add:full+relu");
    check(r);
#ifdef CONVKIT_WITH_CUDA
    EXPECT_TRUE(last_fused()) << r.str();
#endif
    std::printf("[          ] %d of %d post-op cases ran fused\n", fused, total);
}

TEST(CudaPostOps, UnfusedEpilogue) {
    SKIP_WITHOUT_GPU();
    const char* chains[] = {"relu+sum:0.5", "linear:2:-1+mish", "add:full+hardswish", "sub:per_oc+abs+sqrt",
                            "div:scalar+square+linear:1:1+log", "max:per_oc+min:full+exp", "sum+add:per_oc+relu:0.2"};
    for (const char* ops : chains)
        for (bool nhwc : {false, true})
            for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
                // Groups keep even NHWC cases off the fused path.
                check(Case().spatial(2, 7, 3).channels(8, 12, nhwc ? 2 : 1).pad({1}).nhwc(nhwc).dtype(dt).with_bias().ops(ops));
            }
    // 1D and 3D through the epilogue's index arithmetic.
    check(Case().spatial(1, 20, 3).channels(4, 6).pad({1}).with_bias().ops("add:full+relu+sum:2"));
    check(Case().spatial(3, 5, 3).channels(4, 6).pad({1}).batch(1).nhwc().with_bias().ops("mul:per_oc+sum:-1"));
}

// 16-bit problems that need a pass of ours after the convolution (forward with bias and a chain,
// backward-weights) take the convolution's result in f32 and round once: within one ulp of the
// reference's once-rounded f32 accumulation (plus f32 summation-order noise), through an f32
// result from cuDNN or, where its engines refuse one, a widened f32 (TF32) plan. Rounding the
// convolution's 16-bit result again missed by 2 ulps (fwd + bias) and by 6 (bf16 backward-weights
// on a grouped, strided, dilated 3D layer, where the engine's 16-bit partial sums showed).
TEST(CudaPostOps, SixteenBitRoundsOnce) {
    SKIP_WITHOUT_GPU();
#ifdef CONVKIT_WITH_CUDA
    std::vector<Case> cases;
    for (DType dt : {DType::bf16, DType::f16}) {
        cases.push_back(Case().spatial(3, 11, 3).channels(8, 8, 4).strides({3}).dilate({3, 1, 3}).batch(2).nhwc()
                            .dtype(dt).direction(Dir::bwd_w).with_bias());
        cases.push_back(Case().spatial(2, 14, 3).channels(32, 64).pad({1}).dtype(dt).direction(Dir::bwd_w));
        cases.push_back(Case().spatial(2, 14, 3).channels(32, 64).pad({1}).nhwc().dtype(dt).direction(Dir::bwd_w));
        // Bias alone, off the fused path (NCHW; grouped NHWC).
        cases.push_back(Case().spatial(2, 16, 3).channels(16, 32).pad({1}).batch(4).dtype(dt).with_bias());
        cases.push_back(Case().spatial(2, 16, 3).channels(16, 32, 2).pad({1}).batch(4).nhwc().dtype(dt).with_bias());
        cases.push_back(Case().spatial(2, 14, 1).channels(64, 128).strides({2}).batch(4).dtype(dt).with_bias().ops("relu"));
        cases.push_back(Case().spatial(2, 12, 3).channels(16, 32, 2).pad({1}).batch(4).nhwc().dtype(dt).with_bias().ops("linear:2:0.5+tanh"));
    }
    for (const Case& c : cases) {
        SCOPED_TRACE(c.str());
        Tensors ref = make(c, Device::cpu()), gpu = make(c, Device::cuda(0));
        run(c, ref, Engine::ref).wait();
        run(c, gpu, Engine::cuda).wait();
        const cuda::PlanInfo info = cuda::last_plan();
        EXPECT_NE(info.engine_name.find("f32 result"), std::string::npos) << c.str() << ": " << info.engine_name;
        const std::vector<double> got = to_host_f64(output(c, gpu)), want = to_host_f64(output(c, ref));
        double scale = 0;
        for (double w : want) scale = std::max(scale, std::abs(w));
        const double eps = c.dt == DType::bf16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);  // fraction bits
        int64_t bad = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
            // One ulp at |want| (the spacing below the next power of two, i.e. eps * 2^floor(log2)).
            const double ulp = want[i] == 0 ? 0 : eps * std::exp2(std::floor(std::log2(std::abs(want[i]))));
            // Plus the f32 sums' order noise relative to the output's scale (K up to ~3000 here).
            if (std::abs(got[i] - want[i]) > ulp + 1e-5 * scale && bad++ < 3)
                ADD_FAILURE() << c.str() << " element " << i << ": got " << got[i] << ", want " << want[i];
        }
        EXPECT_EQ(bad, 0) << c.str();
    }
#endif
}

// Post-padding that no window reaches is normalized: a 3x3/2 layer on an even input given as pad
// 1/0 (benchdnn's spelling) gets the plan of pad 1/1 (PyTorch's), natively padded.
TEST(Cuda, EquivalentPostPaddingSharesThePlan) {
    SKIP_WITHOUT_GPU();
#ifdef CONVKIT_WITH_CUDA
    for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w}) {
        Case a = Case().spatial(2, 14, 3).channels(16, 16).batch(4).strides({2}).pad({1}, {0}).direction(d);
        check(a);
        const cuda::PlanInfo pa = cuda::last_plan();
        check(Case(a).pad({1}));
        const cuda::PlanInfo pb = cuda::last_plan();
        EXPECT_EQ(pa.engine_name, pb.engine_name) << a.str();
        EXPECT_FALSE(pa.explicit_padding) << a.str();
    }
#endif
}

TEST(Cuda, MixedLayouts) {
    SKIP_WITHOUT_GPU();
    // NHWC activations with OIHW weights (a framework's default weights with channels_last input).
    for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w})
        check(Case().spatial(2, 8, 3).channels(8, 16).pad({1}).nhwc().weights_layout(Layout::channels_first).direction(d));
}

// ---------------------------------------------------------------------------------------------
// Streams, events, memory, determinism, caches.

TEST(CudaStreams, DependencyAcrossStreams) {
    SKIP_WITHOUT_GPU();
    // y = conv(x) on stream A behind a 50 ms spin; z = conv(y) on stream B with A's event as a
    // dependency. If B did not wait, z would be computed from y's stale contents.
    Case c = Case().spatial(2, 16, 3).channels(16, 16).pad({1}).batch(4);
    Tensors a = make(c, Device::cuda(0));
    Tensor y(c.dt, a.dst.sizes(), c.layout, Device::cuda(0)), z(c.dt, a.dst.sizes(), c.layout, Device::cuda(0));
    from_host_f64(y, std::vector<double>(static_cast<std::size_t>(y.numel()), 0.0));
    Stream sa = Stream::cuda(0), sb = Stream::cuda(0);
#ifdef CONVKIT_WITH_CUDA
    cuda::spin(sa.native_handle(), 50);
#endif
    ConvOptions o{Engine::cuda, {}};
    Event ea = convolution_forward(y, a.src, a.wei, {}, c.params(), {}, sa, {}, o);
    Event eb = convolution_forward(z, y, a.wei, {}, c.params(), {}, sb, {ea}, o);
    eb.wait();
    EXPECT_TRUE(ea.completed());
    // Host reference of the two convolutions.
    Tensors h = make(c, Device::cpu());
    Tensor hy(c.dt, h.dst.sizes()), hz(c.dt, h.dst.sizes());
    ConvOptions r{Engine::ref, {}};
    convolution_forward(hy, h.src, h.wei, {}, c.params(), {}, {}, {}, r);
    convolution_forward(hz, hy, h.wei, {}, c.params(), {}, {}, {}, r);
    set_allow_tf32(true);
    EXPECT_LE(rel_err(to_host_f64(z), to_host_f64(hz)), 5e-3);
}

TEST(CudaStreams, ExternalStreamAndDefaultStream) {
    SKIP_WITHOUT_GPU();
#ifdef CONVKIT_WITH_CUDA
    Case c = Case().spatial(2, 8, 3).channels(8, 16).pad({1}).with_bias();
    set_allow_tf32(false);
    Tensors ref = make(c, Device::cpu());
    run(c, ref, Engine::ref);
    void* raw = cuda::create_raw_stream(0);
    {
        Stream s = Stream::cuda_external(0, raw);
        EXPECT_EQ(s.native_handle(), raw);
        Tensors g = make(c, Device::cuda(0));
        run(c, g, Engine::cuda, s).wait();
        EXPECT_LE(rel_err(to_host_f64(g.dst), to_host_f64(ref.dst)), 1e-4);
        // The default CPU stream with CUDA tensors runs on the device's convkit stream.
        Tensors g2 = make(c, Device::cuda(0));
        run(c, g2, Engine::cuda).wait();
        EXPECT_LE(rel_err(to_host_f64(g2.dst), to_host_f64(ref.dst)), 1e-4);
        s.synchronize();
    }
    cuda::destroy_raw_stream(0, raw);  // convkit's wrapper is gone and did not destroy it
    set_allow_tf32(true);
#endif
}

TEST(CudaMemory, AbsurdAllocationIsOutOfMemory) {
    SKIP_WITHOUT_GPU();
    try {
        Tensor t(DType::f32, {int64_t(1) << 22, int64_t(1) << 22, 16, 1}, Layout::channels_first, Device::cuda(0));
        FAIL() << "a 1 PiB allocation succeeded";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << e.what();
    }
    // The device still works afterwards.
    check(Case().spatial(2, 8, 3).channels(8, 8).pad({1}));
}

class ThrowingAllocator final : public Allocator {
public:
    explicit ThrowingAllocator(std::shared_ptr<Allocator> inner) : inner_(std::move(inner)) {}
    void* allocate(std::size_t bytes, Device d, void* stream) override {
        if (stream) throw std::bad_alloc();  // the backend's stream-ordered temporaries
        return inner_->allocate(bytes, d, stream);
    }
    void deallocate(void* p, std::size_t bytes, Device d, void* stream) override { inner_->deallocate(p, bytes, d, stream); }

private:
    std::shared_ptr<Allocator> inner_;
};

TEST(CudaMemory, UserAllocatorFailureIsOutOfMemory) {
    SKIP_WITHOUT_GPU();
    // A sum post-op makes the convolution write a temporary, which comes from the allocator.
    Case c = Case().spatial(2, 8, 3).channels(8, 8).pad({1}).ops("sum");
    Tensors g = make(c, Device::cuda(0));
    auto inner = get_allocator(DeviceType::cuda);
    set_allocator(DeviceType::cuda, std::make_shared<ThrowingAllocator>(inner));
    try {
        run(c, g, Engine::cuda).wait();
        ADD_FAILURE() << "no error from a failing allocator";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << e.what();
    }
    set_allocator(DeviceType::cuda, nullptr);
    check(c);
}

TEST(Cuda, DeterministicBackward) {
    SKIP_WITHOUT_GPU();
    for (DType dt : {DType::f32, DType::bf16})
        for (Dir d : {Dir::bwd_d, Dir::bwd_w}) {
            Case c = Case().spatial(2, 28, 3).channels(64, 64).pad({1}).batch(16).dtype(dt).nhwc().direction(d).with_bias(d == Dir::bwd_w);
            Tensors g = make(c, Device::cuda(0));
            ConvOptions o{Engine::cuda, true};
            std::vector<double> first;
            for (int i = 0; i < 10; ++i) {
                Event e = d == Dir::bwd_d
                              ? convolution_backward_data(g.src, g.dst, g.wei, c.params(), {}, {}, o)
                              : convolution_backward_weights(g.wei, g.bias.view(), g.dst, g.src, c.params(), {}, {}, o);
                e.wait();
                std::vector<double> v = to_host_f64(output(c, g));
                if (d == Dir::bwd_w) {
                    std::vector<double> b = to_host_f64(g.bias);
                    v.insert(v.end(), b.begin(), b.end());
                }
                if (i == 0) first = v;
                else ASSERT_EQ(0, std::memcmp(first.data(), v.data(), v.size() * sizeof(double))) << c.str() << " run " << i;
            }
        }
}

TEST(Cuda, PlanCacheCounters) {
    SKIP_WITHOUT_GPU();
    clear_cache(Engine::cuda);
    Case c = Case().spatial(2, 10, 3).channels(8, 8).pad({1});
    Tensors g = make(c, Device::cuda(0));
    for (int i = 0; i < 3; ++i) run(c, g, Engine::cuda).wait();
    CacheStats s = cache_stats(Engine::cuda);
    EXPECT_EQ(s.misses, 1u);
    EXPECT_EQ(s.hits, 2u);
    EXPECT_EQ(s.size, 1u);
    c.direction(Dir::bwd_d);
    run(c, g, Engine::cuda).wait();
    s = cache_stats(Engine::cuda);
    EXPECT_EQ(s.misses, 2u);
    EXPECT_EQ(s.size, 2u);
    clear_cache(Engine::cuda);
    EXPECT_EQ(cache_stats(Engine::cuda).size, 0u);
}

TEST(Cuda, AutotuneAndTuneFile) {
    SKIP_WITHOUT_GPU();
#ifdef CONVKIT_WITH_CUDA
    const std::string path = ::testing::TempDir() + "convkit_tune_test.txt";
    std::remove(path.c_str());
    convkit::set_tune_file(path);
    convkit::set_autotune(true);
    clear_cache(Engine::cuda);
    Case c = Case().spatial(2, 28, 3).channels(32, 32).pad({1}).batch(4).nhwc().dtype(DType::bf16);
    check(c);
    cuda::PlanInfo first = cuda::last_plan();
    EXPECT_TRUE(first.autotuned) << first.engine_name;
    EXPECT_TRUE(std::ifstream(path).good());
    // A fresh cache without autotuning: the choice comes back from the file.
    convkit::set_autotune(false);
    clear_cache(Engine::cuda);
    check(c);
    cuda::PlanInfo second = cuda::last_plan();
    EXPECT_TRUE(second.from_tune_file) << second.engine_name;
    EXPECT_EQ(second.engine_index, first.engine_index);
    std::printf("[          ] tuned %s, reloaded %s\n", first.engine_name.c_str(), second.engine_name.c_str());
    convkit::set_tune_file("");
    clear_cache(Engine::cuda);
    std::remove(path.c_str());
#endif
}

TEST(Cuda, ZeroBatchAndErrors) {
    SKIP_WITHOUT_GPU();
    Case c = Case().spatial(2, 8, 3).channels(8, 8).pad({1}).batch(0).with_bias();
    for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w}) {
        c.direction(d);
        Tensors g = make(c, Device::cuda(0));
        EXPECT_NO_THROW(run(c, g, Engine::cuda).wait()) << c.str();
    }
    // A host tensor with engine=cuda is an argument error, not a crash.
    Case h = Case().spatial(2, 8, 3).channels(8, 8);
    Tensors t = make(h, Device::cpu());
    EXPECT_THROW(run(h, t, Engine::cuda), Error);
}

// Host cost of a cached tiny convolution (1x16x8x8, 16 filters 3x3, pad 1): enqueue-only time per
// call (host overhead) and per-call time with the GPU in the loop. Informational, no threshold:
// the machines are shared and timings are noisy.
TEST(CudaDirect, SmallForwardProblems) {
    SKIP_WITHOUT_GPU();
#ifdef CONVKIT_WITH_CUDA
    cuda::set_direct_max_macs(int64_t(1) << 20);
    clear_cache(Engine::cuda);
    std::vector<Case> cases = {
        Case().spatial(2, 8, 3).channels(16, 16).batch(1).pad({1}).with_bias(),
        Case().spatial(1, 16, 3).channels(4, 8).strides({2}).pad({1}).with_bias().ops("relu+sum:0.5"),
        Case().spatial(3, 5, 3).channels(4, 6).batch(1).pad({1, 0, 1}, {0, 2, 1}).ops("add:full+gelu_erf"),
        Case().spatial(2, 9, 3).channels(16, 16, 16).pad({1}).with_bias().ops("mul:per_oc+clip:-1:1"),
        Case().spatial(2, 11, 3).channels(8, 8, 2).strides({2}).dilate({2}).pad({2}).ops("linear:0.5:1+mish"),
    };
    for (Case c : cases)
        for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::f64})
            for (bool nhwc : {false, true}) {
                c.dtype(dt).nhwc(nhwc);
                check(c);
                EXPECT_TRUE(cuda::last_plan().direct) << c.str();
            }
    cuda::set_direct_max_macs(0);
    clear_cache(Engine::cuda);
#endif
}

// ---------------------------------------------------------------------------------------------
// Phase-split backward-data (strided layers as stride-1 sub-convolutions per diff_src phase).

// Every kind of phase against the reference: several taps, one tap, none (1x1 stride 2: zero
// fill), strides 2 and 3, stride in one dim only, 1D/2D/3D, groups, depthwise, even kernels,
// asymmetric padding, post-padding > 0, both layouts, f32 (strict) and f64.
TEST(CudaSplitDgrad, MatchesReference) {
    SKIP_WITHOUT_GPU();
#ifdef CONVKIT_WITH_CUDA
    cuda::set_split_dgrad(1);
    cuda::set_f64_gemm(0);  // the split is a cuDNN plan; f64 would take the GEMM plan
    clear_cache(Engine::cuda);
    std::vector<Case> cases = {
        Case().spatial(2, 14, 3).channels(16, 32).strides({2}).pad({1}),              // ResNet 3x3/2
        Case().spatial(2, 15, 7).channels(3, 16).strides({2}).pad({3}),               // conv1-like, odd size
        Case().spatial(2, 8, 1).channels(16, 24).strides({2}),                        // 1x1/2: zero phases
        Case().spatial(1, 20, 5).channels(4, 8).strides({3}).pad({2}),                // 1D, stride 3
        Case().spatial(3, 7, 3).channels(4, 8).batch(1).strides({2}).pad({1}),        // 3D, 8 phases
        Case().spatial(2, 12, 3).channels(8, 16, 2).strides({2, 1}).pad({1}),         // groups, one dim strided
        Case().spatial(2, 9, 4).channels(8, 8).strides({2}).pad({1}, {2}),            // even kernel, asymmetric
        Case().spatial(2, 14, 3).channels(16, 16, 16).strides({2}).pad({1}),          // depthwise
    };
    for (Case c : cases)
        for (DType dt : {DType::f32, DType::f64})
            for (bool nhwc : {false, true}) {
                c.direction(Dir::bwd_d).dtype(dt).nhwc(nhwc);
                check(c);
                const cuda::PlanInfo info = cuda::last_plan();
                EXPECT_TRUE(info.split_dgrad) << c.str() << ": " << info.engine_name;
                if (dt == DType::f32 && !nhwc)
                    std::printf("[          ] %-60s %s\n", c.str().c_str(), info.engine_name.c_str());
            }
    // A phase whose padding is no stride-1 padding (3x3/2 with pad 2: one tap, pre-padding 1):
    // the problem runs unsplit, and still right.
    Case odd = Case().spatial(2, 9, 3).channels(4, 4).strides({2}).pad({2}).direction(Dir::bwd_d);
    check(odd);
    EXPECT_FALSE(cuda::last_plan().split_dgrad);
    // Off: never; TF32 f32 and bf16: never (tensor-core engines have fast strided dgrads).
    cuda::set_split_dgrad(0);
    cuda::set_f64_gemm(-1);
    clear_cache(Engine::cuda);
    Case c = cases[0];
    check(c.direction(Dir::bwd_d).dtype(DType::f32).nhwc(false));
    EXPECT_FALSE(cuda::last_plan().split_dgrad);
    cuda::set_split_dgrad(1);
    cuda::set_f64_gemm(0);  // the split is a cuDNN plan; f64 would take the GEMM plan
    check(c.dtype(DType::bf16).nhwc(true));
    EXPECT_FALSE(cuda::last_plan().split_dgrad);
    cuda::set_split_dgrad(0);
    cuda::set_f64_gemm(-1);
    clear_cache(Engine::cuda);
#endif
}

// In "auto" mode autotuning times the split against the best single plan; the decision and every
// phase's plan come back from the tune file in a cache without autotuning.
TEST(CudaSplitDgrad, AutotuneAndTuneFile) {
    SKIP_WITHOUT_GPU();
#ifdef CONVKIT_WITH_CUDA
    const std::string path = ::testing::TempDir() + "convkit_split_tune_test.txt";
    std::remove(path.c_str());
    convkit::set_tune_file(path);
    convkit::set_autotune(true);
    cuda::set_split_dgrad(-1);
    cuda::set_f64_gemm(0);  // the split is a cuDNN plan; f64 would take the GEMM plan
    clear_cache(Engine::cuda);
    Case c = Case().spatial(2, 28, 3).channels(64, 64).strides({2}).pad({1}).batch(8).direction(Dir::bwd_d);
    check(c);
    const cuda::PlanInfo first = cuda::last_plan();
    EXPECT_TRUE(first.autotuned) << first.engine_name;
    convkit::set_autotune(false);
    clear_cache(Engine::cuda);
    check(c);
    const cuda::PlanInfo second = cuda::last_plan();
    EXPECT_EQ(second.split_dgrad, first.split_dgrad) << first.engine_name << " / " << second.engine_name;
    EXPECT_TRUE(second.from_tune_file) << second.engine_name;
    std::printf("[          ] tuned: %s; reloaded: %s\n", first.engine_name.c_str(), second.engine_name.c_str());
    cuda::set_split_dgrad(0);
    cuda::set_f64_gemm(-1);
    convkit::set_tune_file("");
    clear_cache(Engine::cuda);
    std::remove(path.c_str());
#endif
}

}  // namespace
