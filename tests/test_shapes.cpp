// Shape inference: output_shape() over a table of 1D/2D/3D cases with asymmetric padding,
// dilation and stride, each row checked against the formula worked out by hand.
#include <gtest/gtest.h>

#include "convkit/convkit.hpp"

using namespace convkit;

namespace {

struct ShapeCase {
    const char* name;
    Dims src, wei;
    ConvParams params;
    Dims want;
};

ConvParams P(Dims stride, Dims pl, Dims pr, Dims dilation, int64_t groups = 1) {
    ConvParams p;
    p.stride = stride;
    p.padding_l = pl;
    p.padding_r = pr;
    p.dilation = dilation;
    p.groups = groups;
    return p;
}

const ShapeCase kCases[] = {
    // 1D: (10 + 1 + 2 - (1*(3-1)+1)) / 1 + 1 = 11
    {"1d_asym_pad", {2, 4, 10}, {8, 4, 3}, P({1}, {1}, {2}, {1}), {2, 8, 11}},
    // 1D stride 3, dilation 2: (16 + 0 + 0 - (2*2+1)) / 3 + 1 = 4
    {"1d_stride3_dil2", {1, 2, 16}, {3, 2, 3}, P({3}, {0}, {0}, {2}), {1, 3, 4}},
    // 2D ResNet conv1: (224 + 3 + 3 - 7) / 2 + 1 = 112
    {"2d_conv1", {1, 3, 224, 224}, {64, 3, 7, 7}, P({2}, {3}, {3}, {1}), {1, 64, 112, 112}},
    // 2D per-dim values, floor: h (7+2+1-3)/2+1 = 4, w (6+0+0-(2*1+1))/1+1 = 4
    {"2d_per_dim", {2, 4, 7, 6}, {6, 2, 3, 2}, P({2, 1}, {2, 0}, {1, 0}, {1, 2}, 2), {2, 6, 4, 4}},
    // 2D strided downsample with floor: (56 - 1) / 2 + 1 = 28
    {"2d_1x1_s2", {1, 256, 56, 56}, {512, 256, 1, 1}, P({2}, {0}, {0}, {1}), {1, 512, 28, 28}},
    // 2D dilation 3 with padding 3: (9 + 6 - (3*2+1)) / 1 + 1 = 9
    {"2d_dil3", {1, 1, 9, 9}, {1, 1, 3, 3}, P({1}, {3}, {3}, {3}), {1, 1, 9, 9}},
    // 3D: d (5+1+0-3)/1+1 = 4, h (6+0+1-2)/2+1 = 3, w (7+2+2-(2*2+1))/3+1 = 3
    {"3d_mixed", {1, 2, 5, 6, 7}, {4, 2, 3, 2, 3}, P({1, 2, 3}, {1, 0, 2}, {0, 1, 2}, {1, 1, 2}), {1, 4, 4, 3, 3}},
    // Depthwise: groups = C
    {"2d_depthwise", {3, 32, 12, 12}, {32, 1, 3, 3}, P({1}, {1}, {1}, {1}, 32), {3, 32, 12, 12}},
    // Zero batch is valid
    {"zero_batch", {0, 4, 8, 8}, {4, 4, 3, 3}, P({1}, {1}, {1}, {1}), {0, 4, 8, 8}},
    // Kernel exactly covers the padded input
    {"exact_fit", {1, 1, 3, 3}, {1, 1, 5, 5}, P({1}, {1}, {1}, {1}), {1, 1, 1, 1}},
    // Empty lists take the defaults (stride 1, no padding, dilation 1)
    {"defaults", {1, 1, 5, 4}, {2, 1, 2, 2}, ConvParams{}, {1, 2, 4, 3}},
};

class Shapes : public ::testing::TestWithParam<ShapeCase> {};

TEST_P(Shapes, OutputShape) {
    const ShapeCase& c = GetParam();
    EXPECT_EQ(output_shape(c.src, c.wei, c.params), c.want) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Table, Shapes, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Shapes, LayoutDetection) {
    TensorView cf = TensorView::with_layout(nullptr, DType::f32, {2, 3, 4, 5}, Layout::channels_first);
    TensorView cl = TensorView::with_layout(nullptr, DType::f32, {2, 3, 4, 5}, Layout::channels_last);
    EXPECT_EQ(cf.strides, (Dims{60, 20, 5, 1}));
    EXPECT_EQ(cl.strides, (Dims{60, 1, 15, 3}));
    EXPECT_EQ(cf.layout(), Layout::channels_first);
    EXPECT_EQ(cl.layout(), Layout::channels_last);
    // A transposed view (H and W swapped) is neither.
    TensorView odd(nullptr, DType::f32, {2, 3, 4, 5}, {60, 20, 1, 4});
    EXPECT_EQ(odd.layout(), Layout::strided);
    // C == 1: both layouts describe the same memory; channels_first wins.
    TensorView c1 = TensorView::with_layout(nullptr, DType::f32, {2, 1, 4, 5}, Layout::channels_last);
    EXPECT_EQ(c1.layout(), Layout::channels_first);
    // 3D and 1D channels-last strides.
    EXPECT_EQ(TensorView::with_layout(nullptr, DType::f32, {2, 3, 4, 5, 6}, Layout::channels_last).strides,
              (Dims{360, 1, 90, 18, 3}));
    EXPECT_EQ(TensorView::with_layout(nullptr, DType::f32, {2, 3, 7}, Layout::channels_last).strides,
              (Dims{21, 1, 3}));
}

TEST(Shapes, DtypeConversions) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
    // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7; even mantissa is 1.
    EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
    EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // 1 + 3*2^-8: tie, rounds up to even
    EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
    EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
    EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
    EXPECT_EQ(f32_to_f16(5.9604644775390625e-8f), 0x0001);  // smallest subnormal
    EXPECT_EQ(f16_to_f32(0x0001), 5.9604644775390625e-8f);
    EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
    for (uint32_t h = 0; h < 0x7c00; ++h)  // every finite positive half survives a round trip
        ASSERT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << h;
}

}  // namespace
