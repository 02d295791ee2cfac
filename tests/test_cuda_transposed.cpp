// Transposed convolution on the cuda engine against the reference engine on the host: the shapes
// of the cpu suite (1D/2D/3D, groups and depthwise, stride, dilation, asymmetric padding,
// output_padding), every direction with bias and its gradient, post-ops on the transposed forward
// (convkit's epilogue after cuDNN's backward data, 16-bit rounded once), f32 without TF32, bf16,
// f16, f64, both layouts. Skips without a CUDA device.
#include <gtest/gtest.h>

#include "support/conv_tester.hpp"
#include "support/cuda_device.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

class CudaTransposed : public ::testing::TestWithParam<std::tuple<DType, Layout>> {
protected:
    void SetUp() override {
        if (!has_gpu()) GTEST_SKIP() << "no CUDA device visible";
    }
    ConvTester t() const {
        return ConvTester().engine(Engine::cuda).dtype(std::get<0>(GetParam())).layout(std::get<1>(GetParam()))
            .bias().tf32(false).transposed();
    }
};

TEST_P(CudaTransposed, Plain2D) { t().channels(8, 16).spatial(2, 7, 3).check_all(); }
TEST_P(CudaTransposed, StrideTwoUpsampling) { t().channels(16, 8).spatial(2, 6, 4).stride({2}).padding({1}).check_all(); }
TEST_P(CudaTransposed, TwoByTwoStrideTwo) { t().channels(32, 16).spatial(2, 5, 2).stride({2}).check_all(); }
TEST_P(CudaTransposed, OutputPadding) { t().channels(8, 8).spatial(2, 5, 3).stride({2}).padding({1}).transposed({1}).check_all(); }
TEST_P(CudaTransposed, Grouped) { t().channels(8, 12, 4).spatial(2, 6, 3).stride({2}).padding({1}).check_all(); }
TEST_P(CudaTransposed, Depthwise) { t().channels(8, 8, 8).spatial(2, 7, 3).stride({2}).padding({1}).transposed({1}).check_all(); }
TEST_P(CudaTransposed, AsymmetricDilated) {
    t().channels(4, 8).input_size({6, 5}).kernel_size({3, 2}).stride({2, 1}).padding({1, 0}, {0, 1}).dilation({2, 1}).check_all();
}
TEST_P(CudaTransposed, OneD) { t().channels(8, 4).spatial(1, 12, 5).stride({3}).padding({2}).transposed({1}).check_all(); }
TEST_P(CudaTransposed, ThreeD) { t().channels(8, 4, 2).spatial(3, 4, 3).stride({2}).padding({1}).transposed({1}).check_all(); }
TEST_P(CudaTransposed, OneByOne) { t().channels(16, 32).spatial(2, 6, 1).check_all(); }
TEST_P(CudaTransposed, FusedEpilogues) {
    for (const char* ops : {"relu", "gelu_erf", "sum", "add:per_oc+relu", "mul:full+sum:0.5+tanh", "sub:full_other_layout"})
        t().channels(16, 32).spatial(2, 6, 4).stride({2}).padding({1}).post_ops(ops).check_forward();
}
TEST_P(CudaTransposed, OutputPaddingPastStride) {
    // output_padding >= stride (allowed with a larger dilation): the convolution's post-padding is
    // negative, so the plan extends its output (extend_plan.cpp).
    t().channels(4, 6).spatial(1, 9, 3).dilation({3}).transposed({2}).check_all();
    t().channels(4, 6).input_size({5, 4}).kernel_size({3, 2}).stride({1, 2}).dilation({4, 3}).transposed({3, 2}).check_all();
    t().channels(8, 8).spatial(1, 9, 3).dilation({3}).transposed({2}).post_ops("sum+relu").check_forward();
}
// Backward weights with asymmetric padding, grouped and strided: an engine with native unequal
// paddings left diff_weights elements unwritten (the oracle's case 518).
TEST_P(CudaTransposed, GroupedStridedAsymmetricBackwardWeights) {
    t().channels(10, 4, 2).input_size({7}).kernel_size({3}).stride({3}).padding({1}, {2}).dilation({2}).check_backward_weights();
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaTransposed,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16, DType::f64),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first)),
                         [](const auto& info) { return param_name(std::get<0>(info.param), std::get<1>(info.param)); });

}  // namespace
