// Problems larger than an engine takes run as tiles (src/core/tiling.hpp): groups of whole
// images, or row ranges of one image with their halo rows. This suite lowers the tile size to
// 2000 elements (CONVKIT_TILE_ELEMENTS, set before the first call), so ordinary shapes are cut;
// each case must be tiled (the trace's "+tiles:N") and agree with the reference engine, which
// runs every problem whole. tests/large/large_tensors.cpp runs real 2^31-element tensors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "support/capture.hpp"
#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

const bool kTileSize = [] {
    setenv("CONVKIT_TILE_ELEMENTS", "2000", 1);
    return true;
}();

// The number of tiles the cpu engine's run of `dir` was cut into (0: whole), and whether it
// agreed with the reference.
int tiles_of(const ConvTester& t, Dir dir, ::testing::AssertionResult* ok) {
    const int old = verbose();
    set_verbose(1);
    const std::string out = capture_stderr([&] { *ok = t.agrees(dir); });
    set_verbose(old);
    int tiles = 0;
    std::size_t at = 0;
    while ((at = out.find("+tiles:", at)) != std::string::npos) tiles = std::max(tiles, std::atoi(out.c_str() + (at += 7)));
    return tiles;
}

void check_tiled(const ConvTester& t, Dir dir, int min_tiles = 2) {
    ::testing::AssertionResult ok = ::testing::AssertionSuccess();
    const int n = tiles_of(t, dir, &ok);
    EXPECT_TRUE(ok);
    EXPECT_GE(n, min_tiles) << t.name(dir) << ": expected a tiled run";
}

void check_all_tiled(const ConvTester& t, int min_tiles = 2) {
    for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w}) check_tiled(t, d, min_tiles);
}

const Layout kLayouts[] = {Layout::channels_first, Layout::channels_last};

TEST(CpuTiling, WholeImages) {
    // 400 elements per image: 5 images per tile, the last tile 1.
    for (Layout l : kLayouts) check_all_tiled(cpu_case(DType::f32, l).mb(6).channels(3, 4).spatial(2, 10, 3).padding({1}));
}

TEST(CpuTiling, Rows2D) {
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f32, l).mb(2).channels(3, 4).input_size({40, 30}).kernel_size({3, 3}).padding({1}));
        // Stride, dilation and asymmetric padding: the first and last tiles get their own.
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 5).input_size({61, 23}).kernel_size({5, 3})
                            .stride({2, 1}).dilation({2, 1}).padding({3, 1}, {1, 2}));
        // Stride larger than the window: rows no window reads (their data gradient is zero).
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(4, 6).input_size({51, 20}).kernel_size({1, 1}).stride({2, 2}));
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(4, 6).input_size({50, 20}).kernel_size({2, 3})
                            .stride({3, 1}).padding({1, 0}, {0, 1}));
    }
}

TEST(CpuTiling, Rows1DAnd3D) {
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f32, l).mb(2).channels(4, 3).input_size({1000}).kernel_size({5}).stride({3}).padding({2}));
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(2, 3).input_size({13, 10, 11}).kernel_size({3, 3, 3})
                            .stride({2, 1, 1}).padding({1}));
    }
}

TEST(CpuTiling, Groups) {
    for (Layout l : kLayouts)
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(4, 6, 2).input_size({30, 24}).kernel_size({3, 3}).padding({1}));
}

TEST(CpuTiling, OtherDtypes) {
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f64, l).mb(1).channels(3, 4).input_size({40, 20}).kernel_size({3, 3}).padding({1}));
        for (DType dt : {DType::bf16, DType::f16})
            check_all_tiled(cpu_case(dt, l).mb(1).channels(3, 4).input_size({40, 20}).kernel_size({3, 3}).padding({1}));
    }
}

TEST(CpuTiling, ForwardPostOps) {
    // Binary operands of dst's full shape follow the tile; per-channel and scalar ones do not;
    // sum reads dst's old values through the channels-first copy.
    for (Layout l : kLayouts) {
        check_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 4).input_size({40, 25}).kernel_size({3, 3}).padding({1})
                        .post_ops("relu+sum:0.5+add:full+mul:per_oc+sub:scalar"),
                    Dir::fwd);
        check_tiled(cpu_case(DType::f32, l).mb(4).channels(3, 4).spatial(2, 12, 3).padding({1}).post_ops("add:full+tanh"),
                    Dir::fwd);
    }
}

TEST(CpuTiling, Transposed) {
    // The transposed forward is a backward-data with bias and post-ops on its output.
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 4).input_size({25, 20}).kernel_size({3, 3})
                            .stride({2, 2}).padding({1}).transposed({1, 1}));
        check_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 4).input_size({25, 20}).kernel_size({4, 4})
                        .stride({2, 2}).padding({1}).transposed().post_ops("add:full+relu"),
                    Dir::fwd);
    }
}

TEST(CpuTiling, SmallProblemsRunWhole) {
    ::testing::AssertionResult ok = ::testing::AssertionSuccess();
    EXPECT_EQ(tiles_of(cpu_case(DType::f32, Layout::channels_last).mb(2).channels(3, 4).spatial(2, 8, 3), Dir::fwd, &ok), 0);
    EXPECT_TRUE(ok);
}

TEST(CpuTiling, WeightsTooLargeAreRefused) {
    // 4 x 250 x 3 x 3 weights cannot be cut: the error names them.
    const ConvTester t = cpu_case(DType::f32, Layout::channels_last).mb(1).channels(250, 4).spatial(2, 8, 3).bias(false);
    const ::testing::AssertionResult r = t.agrees(Dir::fwd);
    ASSERT_FALSE(r);
    EXPECT_NE(std::string(r.message()).find("the weights [4, 250, 3, 3] have more than 2000 elements"), std::string::npos)
        << r.message();
}

}  // namespace
