// The oneDNN CPU backend (engine cpu) against the reference engine over shapes: every direction,
// 1D/2D/3D, groups, depthwise, stride, dilation, asymmetric padding, pointwise (and the matmul
// path), mixed and strided layouts, the shapes oneDNN 2.6 got wrong; each in f32, bf16, f16 and
// f64, channels-last and channels-first. One line per case (tests/support/conv_tester.hpp).
#include <gtest/gtest.h>

#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

class CpuShapes : public ::testing::TestWithParam<std::tuple<DType, Layout>> {
protected:
    DType dt() const { return std::get<0>(GetParam()); }
    Layout layout() const { return std::get<1>(GetParam()); }
    Layout other_layout() const { return layout() == Layout::channels_last ? Layout::channels_first : Layout::channels_last; }
    ConvTester t() const { return cpu_case(dt(), layout()); }
    // Every direction against the reference, each run on oneDNN's matmul (f32/bf16/f16 channels-last).
    void check_all_on_matmul(const ConvTester& c) const {
        c.check_all();
        if (dt() == DType::f64 || layout() != Layout::channels_last) return;
        for (Dir d : kDirections) EXPECT_EQ(impl(c, d).rfind("matmul:", 0), 0u) << c.name(d) << ": " << impl(c, d);
    }
};

TEST_P(CpuShapes, Basic2D) { t().channels(8, 16).spatial(2, 8, 3).padding({1}).check_all(); }
TEST_P(CpuShapes, NoBias) { t().channels(8, 16).input_size({7, 9}).kernel_size({3, 3}).bias(false).check_all(); }
TEST_P(CpuShapes, OneD) { t().channels(8, 8).spatial(1, 17, 3).stride({2}).padding({1}, {0}).check_all(); }
TEST_P(CpuShapes, ThreeD) { t().channels(4, 8).input_size({5, 6, 7}).kernel_size({3, 3, 3}).padding({1}).check_all(); }
TEST_P(CpuShapes, ThreeDStrideDilation) {
    t().mb(1).channels(4, 8).input_size({7, 6, 8}).kernel_size({2, 3, 3}).stride({2, 1, 2}).dilation({1, 2, 2})
        .padding({1, 2, 0}, {0, 1, 2}).check_all();
}
TEST_P(CpuShapes, Groups) { t().channels(8, 12, 2).spatial(2, 9, 3).stride({2}).padding({1}, {2}).check_all(); }
TEST_P(CpuShapes, Groups4) { t().channels(16, 32, 4).spatial(2, 6, 3).padding({1}).check_all(); }
TEST_P(CpuShapes, Depthwise) { t().channels(16, 16, 16).spatial(2, 10, 3).padding({1}).check_all(); }
TEST_P(CpuShapes, DepthwiseMultiplier) {
    t().channels(8, 16, 8).input_size({9, 7}).kernel_size({3, 3}).stride({2}).padding({1}).check_all();
}
TEST_P(CpuShapes, Depthwise1D) { t().channels(16, 16, 16).spatial(1, 20, 5).padding({2}).check_all(); }
TEST_P(CpuShapes, Stride3Dilation3) { t().channels(4, 8).spatial(2, 17, 3).stride({3}).dilation({3}).padding({2}, {1}).check_all(); }
TEST_P(CpuShapes, Dilation2) { t().channels(8, 8).spatial(2, 12, 3).dilation({2}).padding({2}).check_all(); }
TEST_P(CpuShapes, AsymmetricPadding) { t().channels(8, 8).input_size({9, 10}).kernel_size({3, 3}).padding({0, 2}, {3, 1}).check_all(); }
TEST_P(CpuShapes, Pointwise) { t().channels(16, 32).spatial(2, 8, 1).check_all(); }
TEST_P(CpuShapes, PointwiseStride2) { t().channels(16, 32).spatial(2, 8, 1).stride({2}).check_all(); }
// Weight-heavy 1x1 convolutions on channels-last tensors take the matmul path (see
// CpuPlans.MatmulPath); strided ones gather/scatter the used positions.
TEST_P(CpuShapes, PointwiseWeightHeavy) { check_all_on_matmul(t().mb(1).channels(64, 48).spatial(2, 3, 1)); }
TEST_P(CpuShapes, PointwiseWeightHeavyStrided) {
    check_all_on_matmul(t().mb(1).channels(32, 48).input_size({5, 6}).kernel_size({1, 1}).stride({2}));
}
TEST_P(CpuShapes, PointwiseWeightHeavy3D) {
    check_all_on_matmul(t().mb(1).channels(32, 32).input_size({4, 3, 4}).kernel_size({1, 1, 1}).stride({2}));
}
TEST_P(CpuShapes, PointwiseWeightHeavy1D) { check_all_on_matmul(t().mb(2).channels(64, 64).spatial(1, 5, 1).stride({2}).bias(false)); }
TEST_P(CpuShapes, PointwiseWeightHeavyPostOps) {
    for (const char* ops : {"relu", "sum:0.5+add:per_oc+gelu_erf", "mul:full+sub:scalar", "sum+sum:0.5+tanh", "add:spatial"})
        t().mb(1).channels(64, 48).spatial(2, 3, 1).post_ops(ops).check_forward();
    t().mb(1).channels(32, 48).input_size({5, 6}).kernel_size({1, 1}).stride({2}).post_ops("sum+relu").check_forward();
}
// More output channels than output positions: threads split channels rather than rows (f64).
TEST_P(CpuShapes, WeightHeavy3x3) {
    t().mb(1).channels(48, 64).spatial(2, 3, 3).padding({1}).check_all();
    t().mb(1).channels(48, 64).input_size({5, 4}).kernel_size({3, 3}).stride({2}).padding({1}).post_ops("sum+relu").check_forward();
}
TEST_P(CpuShapes, DepthwisePostOps) {
    for (const char* ops : {"elu:0.5+elu", "relu:0.1+linear:2:1+relu:0.3", "swish:0.5+swish:2", "sum+relu", "gelu_tanh"})
        t().channels(16, 16, 16).input_size({9, 7}).kernel_size({3, 3}).padding({1}).post_ops(ops).check_forward();
    t().channels(6, 6, 3).spatial(1, 11, 3).stride({3}).dilation({3}).padding({2}).post_ops("elu:0.5+elu:1").check_forward();
}
// Shapes on which oneDNN 2.6 computed wrong results, crashed, or failed to generate a kernel
// when handed the whole post-op chain or the user's layout (found by the PyTorch oracle); the
// backend must route around each (see fusable_post_ops and preferred_act_layout).
TEST_P(CpuShapes, OneDnnRegressions) {
    // Binary operands fused on depthwise / 1D / 3D / odd-channel shapes: wrong values.
    t().channels(7, 7, 7).spatial(1, 2, 1).padding({1}, {0}).post_ops("sum+max:full+gelu_erf").check_forward();
    t().mb(1).channels(5, 10, 5).input_size({5, 4, 6}).kernel_size({3, 3, 3}).stride({3}).padding({1})
        .post_ops("max:per_oc+hardswish").check_forward();
    t().channels(4, 8, 4).spatial(1, 5, 2).padding({1}, {0}).bias(false).post_ops("div:full+hardswish").check_forward();
    t().channels(3, 3).input_size({4, 7}).kernel_size({2, 3}).padding({1, 0}, {0, 1}).post_ops("swish:2+mul:full+max:per_oc")
        .check_forward();
    // sum + eltwise where an output row sees only padding: brgconv segfaults.
    t().channels(2, 4).input_size({4, 10}).kernel_size({1, 3}).padding({0, 1}, {1, 0}).bias(false)
        .post_ops("gelu_erf+gelu_tanh+sum:-1.5").check_forward();
    t().mb(1).channels(5, 1).input_size({2, 10}).kernel_size({1, 1}).stride({2, 1}).padding({1, 0}, {1, 0})
        .post_ops("hardswish+gelu_tanh+sum:0.5").check_forward();
    // bf16 grouped 1D: the kernel generator fails for this chain (pd accepted, primitive not).
    t().mb(1).channels(12, 12, 3).spatial(1, 13, 3).padding({2}).post_ops("elu:0.5+tanh").check_forward();
    // Grouped 3D backward weights with depth windows running into end padding (jit_bf16).
    t().mb(1).channels(4, 4, 4).input_size({4, 5, 1}).kernel_size({3, 3, 2}).stride({3, 3, 2}).padding({1}, {2, 1, 0})
        .check_backward_weights();
    t().mb(2).channels(16, 16, 16).input_size({4, 5, 3}).kernel_size({3, 3, 2}).stride({3, 3, 2}).padding({1}, {2, 1, 0})
        .check_backward_weights();
}
TEST_P(CpuShapes, Strem7x7) { t().mb(1).channels(3, 16).spatial(2, 20, 7).stride({2}).padding({3}).check_all(); }
TEST_P(CpuShapes, OddChannels) { t().channels(5, 7).input_size({6, 5}).kernel_size({2, 3}).stride({1, 2}).check_all(); }
TEST_P(CpuShapes, BatchOne) { t().mb(1).channels(32, 16).spatial(2, 5, 3).padding({1}).check_all(); }

TEST_P(CpuShapes, MixedLayouts) {
    const Layout o = other_layout();
    t().channels(8, 16).spatial(2, 7, 3).padding({1}).weights_layout(o).check_all();
    t().channels(8, 16).spatial(2, 7, 3).padding({1}).dst_layout(o).check_all();
    t().channels(8, 16).spatial(2, 7, 3).stride({2}).weights_layout(o).dst_layout(o).post_ops("sum+relu").check_forward();
    t().channels(8, 16).spatial(2, 6, 1).dst_layout(o).check_all();
}

// src a view of a wider buffer, dst every other element of a larger one (Core.StridedInputMatchesDense
// checks the reference engine on the same shape).
TEST_P(CpuShapes, StridedInputMatchesDense) {
    t().channels(4, 3).input_size({6, 5}).kernel_size({3, 2}).padding({1, 0}, {1, 1}).bias(false).check_strided_matches_dense();
}

INSTANTIATE_TEST_SUITE_P(Cpu, CpuShapes,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16, DType::f64),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first)),
                         DtypeLayoutName());

}  // namespace
