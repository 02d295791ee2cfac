// Transposed convolution on the cpu engine against the reference engine: shapes (1D/2D/3D, groups
// and depthwise, stride, dilation, asymmetric padding, output_padding including the case past the
// stride that dilation allows), every direction with bias and its gradient, post-ops fused on the
// forward, every dtype in both layouts; and the plan it builds (not oneDNN's `ref`).
#include <gtest/gtest.h>

#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

class CpuTransposed : public ::testing::TestWithParam<std::tuple<DType, Layout>> {
protected:
    ConvTester t() const { return cpu_case(std::get<0>(GetParam()), std::get<1>(GetParam())).transposed(); }
};

TEST_P(CpuTransposed, Plain2D) { t().channels(8, 16).spatial(2, 7, 3).check_all(); }
TEST_P(CpuTransposed, StrideTwoUpsampling) {
    t().channels(16, 8).spatial(2, 6, 4).stride({2}).padding({1}).check_all();  // DCGAN's layer
}
TEST_P(CpuTransposed, TwoByTwoStrideTwo) { t().channels(32, 16).spatial(2, 5, 2).stride({2}).check_all(); }  // U-Net's
TEST_P(CpuTransposed, OutputPadding) {
    t().channels(8, 8).spatial(2, 5, 3).stride({2}).padding({1}).transposed({1}).check_all();
}
TEST_P(CpuTransposed, OutputPaddingPastStride) {
    // output_padding 2 >= stride 1 is allowed with dilation 3: the convolution's post-padding is -2,
    // below what oneDNN takes (1 - stride), so the plan crops the rows no window reaches.
    t().channels(4, 6).spatial(1, 9, 3).dilation({3}).transposed({2}).check_all();
    t().channels(4, 6).input_size({5, 4}).kernel_size({3, 2}).stride({1, 2}).dilation({4, 3}).transposed({3, 2}).check_all();
    t().channels(4, 6).spatial(1, 9, 3).dilation({3}).transposed({2}).post_ops("sum+relu").check_forward();
    // One past the stride is within oneDNN's limit (post-padding 1 - stride).
    t().channels(4, 6).spatial(2, 5, 3).stride({2}).dilation({3}).transposed({2}).check_all();
}
TEST_P(CpuTransposed, Grouped) { t().channels(8, 12, 4).spatial(2, 6, 3).stride({2}).padding({1}).check_all(); }
TEST_P(CpuTransposed, Depthwise) { t().channels(8, 8, 8).spatial(2, 7, 3).stride({2}).padding({1}).transposed({1}).check_all(); }
TEST_P(CpuTransposed, AsymmetricDilated) {
    t().channels(4, 8).input_size({6, 5}).kernel_size({3, 2}).stride({2, 1}).padding({1, 0}, {0, 1}).dilation({2, 1}).check_all();
}
TEST_P(CpuTransposed, OneD) { t().channels(8, 4).spatial(1, 12, 5).stride({3}).padding({2}).transposed({1}).check_all(); }
TEST_P(CpuTransposed, ThreeD) { t().channels(8, 4, 2).spatial(3, 4, 3).stride({2}).padding({1}).transposed({1}).check_all(); }
TEST_P(CpuTransposed, OneByOne) { t().channels(16, 32).spatial(2, 6, 1).check_all(); }
TEST_P(CpuTransposed, FusedEpilogues) {
    for (const char* ops : {"relu", "gelu_erf", "sum", "add:per_oc+relu", "mul:full+sum:0.5+tanh", "sub:full_other_layout"})
        t().channels(8, 16).spatial(2, 6, 4).stride({2}).padding({1}).post_ops(ops).check_forward();
}

INSTANTIATE_TEST_SUITE_P(Cpu, CpuTransposed,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16, DType::f64),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first)),
                         DtypeLayoutName());

// Large enough for oneDNN's blocked kernels: the transposed forward's convolution (a backward
// data) must not land on oneDNN's reference kernels.
TEST(CpuTransposedPlan, RunsOneDnnsFastKernels) {
    core::ConvProblem p;
    p.dir = core::Direction::bwd_d;
    p.transposed = true;
    p.with_bias = true;
    p.mb = 1, p.ic = 64, p.oc = 128, p.nsp = 2;
    for (int i = 0; i < 2; ++i) p.in[i] = 28, p.out[i] = 14, p.k[i] = 2, p.stride[i] = 2;
    p.src_layout = p.dst_layout = p.wei_layout = Layout::channels_last;
    const cpu::PlanInfo info = cpu::plan_info(p);
    EXPECT_EQ(info.impl.find("ref"), std::string::npos) << info.impl;
    EXPECT_TRUE(info.own_epilogue);
}

TEST(CpuOneByOne, StridedBackwardWeights) {
    // oneDNN 2.6's jit_1x1 backward-weights (avx2 and avx512_core) crashed (SIGSEGV) or wrote
    // wrong gradients on this strided 1x1 problem with few channels (found by
    // CpuTiling.RandomGeometries); the cpu engine takes oneDNN's next implementation there. As a convolution and as the
    // transposed convolution whose weight gradient it is.
    for (Layout l : {Layout::channels_last, Layout::channels_first}) {
        cpu_case(DType::f32, l).mb(1).channels(3, 2).input_size({1002, 15}).kernel_size({1, 1}).stride({2, 3})
            .check_backward_weights();
        cpu_case(DType::f32, l).mb(1).channels(2, 3).input_size({501, 5}).kernel_size({1, 1}).stride({2, 3})
            .transposed({1, 2}).check_backward_weights();
    }
}

}  // namespace
