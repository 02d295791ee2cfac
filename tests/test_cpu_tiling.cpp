// Problems larger than an engine takes run as tiles (src/core/tiling.hpp): groups of whole
// images, or row ranges of one image with their halo rows. This suite lowers the tile size to
// 2000 elements (CONVKIT_TILE_ELEMENTS, set before the first call), so ordinary shapes are cut;
// each case must be tiled (the trace's "+tiles:N") and agree with the reference engine, which
// runs every problem whole. tests/large/large_tensors.cpp runs real 2^31-element tensors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "support/capture.hpp"
#include "support/cpu_cases.hpp"
#include "support/faulty_allocator.hpp"

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

TEST(CpuTiling, BackwardWeightsOutOfMemoryLeavesOutputs) {
    // A tiled backward-weights writes diff_weights and diff_bias only after its last tile: a
    // refused allocation at any point (the tiler's temporaries, the engine's in any tile) leaves
    // both as they were and returns every block; with none refused it matches the reference.
    for (Layout l : kLayouts) {
        const Dims xs{1, 3, 40, 30}, ws{4, 3, 3, 3}, ys{1, 4, 40, 30};
        Tensor x(DType::f32, xs, l), dy(DType::f32, ys, l);
        fill(x, -1, 1, 1);
        fill(dy, -1, 1, 2);
        ConvParams prm;
        prm.pad(Dims{1});
        ConvOptions ref, cpu;
        ref.engine = Engine::ref;
        cpu.engine = Engine::cpu;
        Tensor want_w(DType::f32, ws), want_b(DType::f32, Dims{4});
        convolution_backward_weights(want_w.view(), want_b.view(), dy.view(), x.view(), prm, Stream(), {}, ref).wait();
        Tensor dw(DType::f32, ws), db(DType::f32, Dims{4});
        Installed alloc(DeviceType::cpu);
        int64_t refused = 0;
        for (int64_t k = 1; k < 1000; ++k) {
            std::memset(dw.data(), 0x5a, dw.nbytes());
            std::memset(db.data(), 0x5a, db.nbytes());
            clear_cache(Engine::cpu);  // plans built inside the call, so their allocations are reached too
            const std::size_t live = alloc->live();
            alloc->arm(k);
            bool threw = false;
            try {
                convolution_backward_weights(dw.view(), db.view(), dy.view(), x.view(), prm, Stream(), {}, cpu).wait();
            } catch (const Error& e) {
                threw = true;
                EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << "allocation " << k << ": " << e.what();
            }
            alloc->arm(0);
            EXPECT_EQ(alloc->live(), live) << "allocation " << k << ": blocks not returned";
            if (!threw) break;
            ++refused;
            const unsigned char* w = static_cast<const unsigned char*>(dw.data());
            const unsigned char* b = static_cast<const unsigned char*>(db.data());
            bool same = true;
            for (std::size_t i = 0; i < dw.nbytes(); ++i) same = same && w[i] == 0x5a;
            for (std::size_t i = 0; i < db.nbytes(); ++i) same = same && b[i] == 0x5a;
            EXPECT_TRUE(same) << "allocation " << k << " refused: the outputs were written";
        }
        EXPECT_EQ(alloc->bad_frees(), 0);
        EXPECT_GE(refused, 3) << "the tiled call made fewer allocations than its temporaries";
        double worst = 0;
        for (int64_t i = 0; i < dw.numel(); ++i)
            worst = std::max(worst, static_cast<double>(std::fabs(dw.ptr<float>()[i] - want_w.ptr<float>()[i])));
        for (int64_t i = 0; i < db.numel(); ++i)
            worst = std::max(worst, static_cast<double>(std::fabs(db.ptr<float>()[i] - want_b.ptr<float>()[i])));
        EXPECT_LT(worst, 1e-3) << "the call with no allocation refused differs from the reference";
    }
}

TEST(CpuTiling, SixteenBitWeightGradientRoundsOnce) {
    // Tiles of a 16-bit backward-weights run in f32 on widened copies and their partial sums add
    // in f64, so the result rounds once: within half a unit in the last place of the f32
    // reference (plus f32 summation noise). Partials rounded per tile would be off by up to
    // about one unit per two tiles (measured 2 ulps over 26 tiles before the widening).
    for (DType dt : {DType::bf16, DType::f16})
        for (Layout l : kLayouts) {
            const Dims xs{2, 3, 90, 50}, ws{4, 3, 3, 3}, ys{2, 4, 90, 50};
            Tensor x(dt, xs, l), dy(dt, ys, l), x32(DType::f32, xs), dy32(DType::f32, ys);
            fill(x, -1, 1, 3);
            fill(dy, -1, 1, 4);
            copy(x32.view(), x.view());
            copy(dy32.view(), dy.view());
            ConvParams prm;
            prm.pad(Dims{1});
            ConvOptions ref, cpu;
            ref.engine = Engine::ref;
            cpu.engine = Engine::cpu;
            Tensor want(DType::f32, ws), got(dt, ws), got32(DType::f32, ws);
            convolution_backward_weights(want.view(), TensorView(), dy32.view(), x32.view(), prm, Stream(), {}, ref).wait();
            const int old = verbose();
            set_verbose(1);
            const std::string trace = capture_stderr([&] {
                convolution_backward_weights(got.view(), TensorView(), dy.view(), x.view(), prm, Stream(), {}, cpu).wait();
            });
            set_verbose(old);
            EXPECT_NE(trace.find("+tiles:"), std::string::npos) << trace;
            copy(got32.view(), got.view());
            double scale = 0;
            for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, static_cast<double>(std::fabs(want.ptr<float>()[i])));
            const double half_ulp = dt == DType::bf16 ? 1.0 / 256 : 1.0 / 2048;
            int bad = 0;
            for (int64_t i = 0; i < want.numel(); ++i) {
                const double w = want.ptr<float>()[i], g = got32.ptr<float>()[i];
                if (std::fabs(g - w) > half_ulp * std::fabs(w) + 1e-5 * scale) ++bad;
            }
            EXPECT_EQ(bad, 0) << to_string(dt) << (l == Layout::channels_last ? " nhwc" : " nchw") << ": " << bad << " of "
                              << want.numel() << " weight gradients beyond half an ulp";
        }
}

TEST(CpuTiling, RandomGeometries) {
    // 150 problems drawn with a fixed seed: 1D to 3D, groups, kernel, stride, dilation and
    // asymmetric padding per dim, both layouts, transposed ones with output padding; each image
    // larger than a tile, so every direction is cut into rows of its outermost dim.
    std::mt19937_64 rng(20261201);
    auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    for (int c = 0; c < 150; ++c) {
        const int nsp = static_cast<int>(pick(1, 3));
        const int64_t g = pick(1, 2), ic = g * pick(1, 3), oc = g * pick(1, 3);
        Dims in, k, st, dil, pl, pr, op;
        int64_t inner = 1;
        for (int i = 0; i < nsp; ++i) {
            const int64_t ki = pick(1, i == 0 ? 5 : 3), si = pick(1, 3), di = ki > 1 ? pick(1, 2) : 1;
            const int64_t ext = (ki - 1) * di + 1;
            k.push_back(ki), st.push_back(si), dil.push_back(di);
            pl.push_back(pick(0, ext - 1)), pr.push_back(pick(0, ext - 1)), op.push_back(pick(0, si - 1));
            if (i > 0) {
                in.push_back(ext + pick(0, 4));
                inner *= in[i];
            } else {
                in.push_back(0);  // set below
            }
        }
        const bool transposed = pick(0, 4) == 0;
        // One row of the outermost dim, on either side (a transposed output is the larger), times
        // the rows a tile holds at the least, must fit a tile: else the call is refused ("one
        // image cannot be cut"), so draw again.
        int64_t other = 1;
        for (int i = 1; i < nsp; ++i) {
            const int64_t ext = (k[i] - 1) * dil[i] + 1;
            other *= transposed ? (in[i] - 1) * st[i] - pl[i] - pr[i] + ext + op[i] : (in[i] + pl[i] + pr[i] - ext) / st[i] + 1;
        }
        const int64_t row = std::max(ic, oc) * std::max(inner, other), ext0 = (k[0] - 1) * dil[0] + 1;
        if (row * (ext0 + 2 * st[0] + 2) > 1500) {
            --c;
            continue;
        }
        // The outermost dim makes one image (its input side) 1.5 to 3 tiles of 2000 elements.
        in[0] = std::max<int64_t>(ext0, (2000 * pick(3, 6) / 2) / (std::min(ic, oc) * inner) + 1);
        ConvTester t = cpu_case(DType::f32, pick(0, 1) ? Layout::channels_last : Layout::channels_first)
                           .mb(pick(1, 2)).channels(ic, oc, g).input_size(in).kernel_size(k).stride(st).dilation(dil)
                           .padding(pl, pr).seed(static_cast<uint64_t>(c));
        if (transposed) t.transposed(op);
        for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w}) {
            ::testing::AssertionResult ok = ::testing::AssertionSuccess();
            const int n = tiles_of(t, d, &ok);
            EXPECT_TRUE(ok) << "case " << c;
            EXPECT_GE(n, 2) << "case " << c << ": " << t.name(d) << ": expected a tiled run";
        }
    }
}

}  // namespace
