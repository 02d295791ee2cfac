// f64 convolutions on the cuda engine as im2col + cuBLAS DGEMM (src/cuda/gemm_plan.cpp,
// cuda_api.hpp's set_f64_gemm) against the reference engine on the host: 3x3, 1x1 (the tensor
// itself, no im2col) and 1x1 strided, a 7x7/2 first layer, asymmetric padding with dilation and
// unequal strides, 1D and 3D, groups, transposed (strided, output padding), post-ops on the
// forward, a problem whose im2col buffer takes several chunks, every direction with bias and its
// gradient, both layouts. Each direction is checked on its own, after a clear_cache, so that
// last_plan() and plan_counters() say which plan that direction ran. Mode 0 never takes the path,
// other dtypes never do, and backward weights is bitwise reproducible. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cuda/cuda_api.hpp"
#include "support/conv_tester.hpp"
#include "support/cuda_device.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

// Every direction of `t` that it runs (the forward only with post-ops), each on a fresh cache:
// agrees with the reference, and its plan took the DGEMM path (`gemm`) or did not.
void check_gemm(const ConvTester& t, bool gemm = true) {
    for (Dir d : kDirections) {
        if (d != Dir::fwd && t.has_post_ops()) continue;
        clear_cache(Engine::cuda);
        EXPECT_TRUE(t.agrees(d));
        const cuda::PlanInfo info = cuda::last_plan();
        EXPECT_TRUE(info.found) << t.name(d);
        EXPECT_EQ(info.gemm, gemm) << t.name(d) << ": plan " << info.engine_name;
        // A stale last_plan() cannot pass for this direction's: the plan was built after the clear.
        const uint64_t built = cuda::plan_counters().gemm;
        if (gemm) EXPECT_GE(built, 1u) << t.name(d) << ": no DGEMM plan counted";
        else EXPECT_EQ(built, 0u) << t.name(d) << ": a DGEMM plan counted";
    }
}

// diff_weights and diff_bias of two backward-weights runs of `t` (not transposed) on the cuda
// engine, from fresh device copies of the same host tensors, are the same bytes; each run took the
// DGEMM path. With the global deterministic setting (off by default: the path has no atomics, no
// split-K) and with deterministic = true asked for.
void check_bwd_w_reproducible(const ConvTester& t) {
    const ConvTensors host = t.make_tensors();
    for (std::optional<bool> deterministic : {std::optional<bool>(), std::optional<bool>(true)}) {
        const std::string what = t.name(Dir::bwd_w) + (deterministic ? " deterministic" : "");
        clear_cache(Engine::cuda);
        std::vector<double> first_w, first_b;
        for (int run = 0; run < 2; ++run) {
            ConvTensors g = ConvTester::copy_tensors(host, t.device());
            convolution_backward_weights(g.wei, g.bias.view(), g.dst, g.src, t.params(), Stream(), {},
                                         ConvOptions{Engine::cuda, deterministic})
                .wait();
            const cuda::PlanInfo info = cuda::last_plan();
            EXPECT_TRUE(info.gemm) << what << ": plan " << info.engine_name;
            std::vector<double> w = to_host_f64(g.wei), b = to_host_f64(g.bias);
            if (run == 0) {
                first_w = std::move(w), first_b = std::move(b);
                continue;
            }
            EXPECT_TRUE(bitwise_equal(first_w, w)) << what << ": diff_weights differ between runs";
            EXPECT_TRUE(bitwise_equal(first_b, b)) << what << ": diff_bias differs between runs";
        }
    }
}

class CudaGemm : public ::testing::TestWithParam<Layout> {
protected:
    void SetUp() override {
        if (!has_gpu()) GTEST_SKIP() << "no CUDA device visible";
        // Small forward problems would otherwise run on the direct kernel (ahead of every other kind).
        old_direct_ = cuda::direct_max_macs();
        cuda::set_direct_max_macs(0);
        cuda::set_f64_gemm(1);
        clear_cache(Engine::cuda);
        set_up_ = true;
    }
    void TearDown() override {
        if (!set_up_) return;
        cuda::set_f64_gemm(-1);
        cuda::set_direct_max_macs(old_direct_);
        clear_cache(Engine::cuda);
    }
    ConvTester t() const {
        return ConvTester().engine(Engine::cuda).dtype(DType::f64).layout(GetParam()).bias();
    }
    // The 3x3 problem of several tests.
    ConvTester three_by_three() const { return t().mb(2).channels(16, 32).spatial(2, 9, 3).padding({1}); }

private:
    bool set_up_ = false;
    int64_t old_direct_ = 0;
};

TEST_P(CudaGemm, ThreeByThree) { check_gemm(three_by_three()); }
TEST_P(CudaGemm, ThreeByThreeStrideTwo) { check_gemm(t().channels(16, 24).spatial(2, 10, 3).stride({2}).padding({1})); }
// 1x1, stride 1, no padding: the GEMM runs on the tensors themselves (no im2col).
TEST_P(CudaGemm, OneByOne) { check_gemm(t().channels(16, 32).spatial(2, 7, 1)); }
TEST_P(CudaGemm, OneByOneStrideTwo) { check_gemm(t().channels(16, 32).spatial(2, 9, 1).stride({2})); }
// A first layer: 3 input channels, 7x7 stride 2 pad 3.
TEST_P(CudaGemm, FirstLayerSevenBySeven) { check_gemm(t().channels(3, 16).spatial(2, 17, 7).stride({2}).padding({3})); }
TEST_P(CudaGemm, AsymmetricPaddingDilationUnequalStrides) {
    check_gemm(t().channels(8, 12).input_size({9, 7}).kernel_size({3, 2}).stride({2, 1}).padding({1, 0}, {0, 2}).dilation({2, 1}));
}
TEST_P(CudaGemm, OneD) {
    check_gemm(t().channels(8, 16).spatial(1, 20, 5).stride({2}).padding({2}));
    check_gemm(t().channels(8, 8).spatial(1, 15, 3).dilation({3}).padding({2}, {1}));
}
TEST_P(CudaGemm, ThreeD) {
    check_gemm(t().mb(1).channels(4, 8).spatial(3, 6, 3).padding({1}));
    check_gemm(t().mb(2).channels(8, 4).input_size({5, 6, 7}).kernel_size({3, 1, 2}).stride({2, 1, 2}).padding({1, 0, 0}, {0, 0, 1}));
}
TEST_P(CudaGemm, Groups) {
    check_gemm(t().channels(32, 64, 2).spatial(2, 7, 3).padding({1}));
    check_gemm(t().channels(64, 64, 4).spatial(2, 6, 3).stride({2}).padding({1}));
    check_gemm(t().channels(64, 96, 4).spatial(2, 6, 1));  // 1x1 grouped: no im2col, per-group GEMMs
}
TEST_P(CudaGemm, Transposed) {
    check_gemm(t().transposed().channels(8, 16).spatial(2, 7, 3).padding({1}));
    check_gemm(t().transposed().channels(16, 8).spatial(2, 6, 4).stride({2}).padding({1}));
    check_gemm(t().transposed({1}).channels(8, 8).spatial(2, 5, 3).stride({2}).padding({1}));
    check_gemm(t().transposed({1}).channels(8, 12, 4).spatial(2, 6, 3).stride({2}).padding({1}));
    check_gemm(t().transposed({1}).channels(8, 4).spatial(1, 12, 5).stride({3}).padding({2}));
    check_gemm(t().transposed().channels(16, 32).spatial(2, 6, 1));
}
TEST_P(CudaGemm, PostOps) {
    for (const char* ops : {"relu", "sum", "add:per_oc+relu", "sum:0.5+tanh"}) {
        check_gemm(three_by_three().post_ops(ops));
        check_gemm(t().channels(16, 32).spatial(2, 7, 1).post_ops(ops));  // the no-im2col path
    }
    // On a transposed forward (convkit's epilogue after the data gradient).
    check_gemm(t().transposed({1}).channels(16, 8).spatial(2, 5, 3).stride({2}).padding({1}).post_ops("sum:0.5+tanh"));
}
// An im2col buffer of 576 x 3136 doubles (14.5 MB) per image, 58 MB for the batch: several chunks.
TEST_P(CudaGemm, LargeIm2colInChunks) { check_gemm(t().mb(4).channels(64, 64).spatial(2, 56, 3).padding({1})); }

// A column budget below one image (chunks of output positions that cut rows, backward-data
// summing overlapping chunks), and one of two images (a last chunk with fewer).
TEST_P(CudaGemm, ChunkedWorkspace) {
    const int64_t old = cuda::f64_gemm_workspace();
    for (int64_t bytes : {int64_t(64) << 10, int64_t(400) << 10}) {
        cuda::set_f64_gemm_workspace(bytes);
        check_gemm(t().mb(3).channels(16, 16).spatial(2, 12, 3).padding({1}));
        check_gemm(t().mb(3).channels(16, 24, 2).input_size({13, 11}).kernel_size({3, 4}).stride({2, 1}).padding({1, 2}, {0, 1}));
        check_gemm(t().mb(2).channels(8, 8).input_size({6, 7, 5}).kernel_size({3, 3, 2}).stride({2, 1, 1}).padding({1}));
        check_gemm(t().transposed({1}).mb(3).channels(16, 8).spatial(2, 9, 3).stride({2}).padding({1}).post_ops("sum+relu"));
    }
    cuda::set_f64_gemm_workspace(old);
}

// Backward weights' two channels-first forms: one GEMM per image into partial sums summed in
// order (images of at least oc positions: 3x3 grouped, and 1x1 on the tensors themselves), and
// diff_dst copied [oc][n][m] for one GEMM (smaller images); channels-last runs one GEMM either way.
TEST_P(CudaGemm, BackwardWeightsForms) {
    check_gemm(t().mb(3).channels(32, 64, 2).spatial(2, 9, 3).padding({1}));
    check_gemm(t().mb(3).channels(16, 32).spatial(2, 9, 1));
    check_gemm(t().mb(3).channels(16, 96).spatial(2, 6, 3).padding({1}));
    check_gemm(t().mb(3).channels(16, 8).spatial(1, 700, 5).stride({2}).padding({2}));
}

// Channels-first images of at most 64 output positions: the forward's and backward-data's one
// GEMM over the chunk's images through an [oc][n][m] copy.
TEST_P(CudaGemm, SmallImagesOneGemm) {
    check_gemm(t().mb(4).channels(32, 48).spatial(2, 7, 3).padding({1}));
    check_gemm(t().mb(4).channels(32, 48, 2).spatial(2, 14, 3).stride({2}).padding({1}).post_ops("sum+relu"));
    check_gemm(t().transposed().mb(4).channels(16, 32).spatial(2, 6, 3).padding({1}).post_ops("sum:0.5+tanh"));
}

TEST_P(CudaGemm, ModeZeroNever) {
    cuda::set_f64_gemm(0);
    EXPECT_EQ(cuda::f64_gemm(), 0);
    clear_cache(Engine::cuda);
    check_gemm(three_by_three(), false);
    check_gemm(t().channels(16, 32).spatial(2, 7, 1), false);
    cuda::set_f64_gemm(1);
    EXPECT_EQ(cuda::f64_gemm(), 1);
    check_gemm(three_by_three(), true);
    cuda::set_f64_gemm(-1);
    EXPECT_EQ(cuda::f64_gemm(), -1);
}
// f64 only: other dtypes keep cuDNN's plans with the path forced on.
TEST_P(CudaGemm, OtherDtypesNever) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) check_gemm(three_by_three().dtype(dt).tf32(false), false);
}
TEST_P(CudaGemm, BackwardWeightsReproducible) {
    check_bwd_w_reproducible(three_by_three().mb(4));
    check_bwd_w_reproducible(t().channels(32, 64, 2).spatial(2, 7, 3).padding({1}));
    check_bwd_w_reproducible(t().mb(4).channels(64, 64).spatial(2, 56, 3).padding({1}));  // in chunks
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaGemm, ::testing::Values(Layout::channels_first, Layout::channels_last),
                         [](const auto& info) { return param_name(DType::f64, info.param); });

}  // namespace
