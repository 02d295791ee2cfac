// Long f32 backward reductions in pieces. oneDNN sums a reduction in f32 one term after another;
// past a few thousand terms its error exceeds the f32 bound (WaveNet's 84k positions: 2.3e-5
// unsplit). The CPU backend runs such backward passes as shorter convolutions summed in double
// (src/cpu/split_plan.cpp). Each shape below is split (its plan says so) and must match the
// reference within the flat f32 bound of tests/support/tolerance.hpp, covering every piece
// geometry: whole images, rows of a plane (with the channels-first tensors reordered first),
// planes cut into row ranges (input gathered), output-channel ranges.
#include <gtest/gtest.h>

#include <utility>

#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

// The plan of `dir` is a split one (of oneDNN pieces), and it agrees with the reference.
void check_split(const ConvTester& t, Dir dir) {
    const std::string i = impl(t, dir);
    EXPECT_EQ(i.rfind("split(", 0), 0u) << t.name(dir) << ": " << i;
    EXPECT_EQ(i.find("ref"), std::string::npos) << t.name(dir) << ": " << i;
    t.check(dir);
}

TEST(CpuSplit, BackwardWeightsLong1D) {
    // WaveNet's first 2-tap convolution: 84349 output positions in one image.
    for (Layout l : {Layout::channels_last, Layout::channels_first})
        check_split(cpu_case(DType::f32, l).mb(1).channels(32, 32).spatial(1, 84350, 2), Dir::bwd_w);
}

TEST(CpuSplit, BackwardWeightsWholeImages) {
    // 8 images of 1024 positions: groups of 4 images, no copies; groups and bias grad too.
    for (Layout l : {Layout::channels_last, Layout::channels_first})
        check_split(cpu_case(DType::f32, l).mb(8).channels(8, 12, 2).spatial(2, 32, 3).padding({1}), Dir::bwd_w);
}

TEST(CpuSplit, BackwardWeightsRowsOfAPlane) {
    // 75x75 outputs per image: rows of the plane, stride, dilation and asymmetric padding, so
    // the first and last pieces get their own padding.
    for (Layout l : {Layout::channels_last, Layout::channels_first})
        check_split(cpu_case(DType::f32, l).mb(2).channels(3, 16).input_size({151, 149}).kernel_size({7, 5}).stride({2, 2})
                        .dilation({1, 2}).padding({3, 4}, {2, 5}),
                    Dir::bwd_w);
}

TEST(CpuSplit, BackwardWeights3DGathered) {
    // 70x70 planes (4900 positions > 4096): each piece is a range of rows of one output plane,
    // whose input region (three planes deep) is gathered into one block.
    for (Layout l : {Layout::channels_last, Layout::channels_first})
        check_split(cpu_case(DType::f32, l).mb(1).channels(4, 8).input_size({6, 70, 71}).kernel_size({3, 3, 3})
                        .dilation({2, 1, 1}).padding({2, 1, 1}, {1, 1, 0}),
                    Dir::bwd_w);
}

TEST(CpuSplit, BackwardDataOutputChannels) {
    // 512 output channels x 9 taps = 4608 terms: two ranges of 256; 500 channels: 256 + 244;
    // 3D 200 x 27 = 5400: 112 + 88.
    for (Layout l : {Layout::channels_last, Layout::channels_first}) {
        const ConvTester a = cpu_case(DType::f32, l).mb(2).channels(8, 512).input_size({6, 7}).kernel_size({3, 3}).padding({1});
        check_split(a, Dir::bwd_d);
        check_split(cpu_case(DType::f32, l).mb(2).channels(6, 500).spatial(2, 9, 3).stride({2}).dilation({2})
                        .padding({1, 2}, {2, 1}),
                    Dir::bwd_d);
        check_split(cpu_case(DType::f32, l).mb(1).channels(5, 200).input_size({5, 6, 5}).kernel_size({3, 3, 3}).padding({1}),
                    Dir::bwd_d);
        // Weights in the other layout than the activations.
        ConvTester(a).weights_layout(l == Layout::channels_last ? Layout::channels_first : Layout::channels_last)
            .check_backward_data();
    }
}

TEST(CpuSplit, OnlyLongF32Reductions) {
    // bf16 is judged at bf16's precision and stays whole, as do short reductions and grouped
    // backward data.
    const std::pair<ConvTester, Dir> whole[] = {
        {cpu_case(DType::bf16, Layout::channels_last).mb(1).channels(32, 32).spatial(1, 84350, 2), Dir::bwd_w},
        {cpu_case(DType::f32, Layout::channels_last).mb(1).channels(8, 8).spatial(2, 60, 3), Dir::bwd_w},
        {cpu_case(DType::f32, Layout::channels_last).mb(1).channels(512, 512, 2).spatial(2, 6, 3), Dir::bwd_d},
    };
    for (const auto& [t, dir] : whole) EXPECT_EQ(impl(t, dir).find("split"), std::string::npos) << t.name(dir) << ": " << impl(t, dir);
}

TEST(CpuSplit, BitwiseReproducible) {
    const ConvTester t =
        cpu_case(DType::f32, Layout::channels_first).mb(1).channels(4, 8).input_size({6, 70, 71}).kernel_size({3, 3, 3}).padding({1});
    ConvTensors a = t.make_tensors(3);
    t.run(Dir::bwd_w, a, Engine::cpu).wait();
    const Tensor keep = copy_of(a.wei, Device::cpu());
    fill(a.wei, -1, 1, 77);
    t.run(Dir::bwd_w, a, Engine::cpu).wait();
    EXPECT_TRUE(bitwise_equal(a.wei.view(), keep.view())) << t.name(Dir::bwd_w);
}

}  // namespace
