// Which implementation the cpu engine's plans pick: oneDNN kernels (never `ref`) with activations
// used in place for every ResNet-50 layer, the matmul path for weight-heavy 1x1 layers, post-ops
// fused or run by convkit's own epilogue; and weights prepacked into the plan's layout, which
// must give the unpacked result bit for bit at any batch size.
#include <gtest/gtest.h>

#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

// A square 2D layer at mb 1, as the ResNet-50 batch file lists them.
ConvTester layer(DType dt, Layout l, int64_t ic, int64_t oc, int64_t hw, int64_t k, int64_t stride = 1, int64_t pad = 0) {
    return ConvTester().dtype(dt).layout(l).mb(1).channels(ic, oc).spatial(2, hw, k).stride({stride}).padding({pad});
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
            for (Dir dir : kDirections)
                for (const auto& r : resnet50_layers()) {
                    const core::ConvProblem p =
                        layer(dt, l, r.ic, r.oc, r.in[2], r.k[2], r.stride[2], r.padding_l[2]).bias().problem(dir);
                    const cpu::PlanInfo info = cpu::plan_info(p);
                    const std::string what = r.name + " " + p.str() + ": conv " + info.impl + " (src " + info.src_format +
                                             ", wei " + info.wei_format + ", dst " + info.dst_format + "), reorders " +
                                             info.reorder_impls;
                    EXPECT_EQ(info.impl.find("ref"), std::string::npos) << what;
                    EXPECT_EQ(info.reorder_impls.find("ref"), std::string::npos) << what;
                    // Channels-last activations are used in place: only weights are reordered
                    // (conv1's f32 backward data, ic 3, runs on nchw on purpose: see preferred_act_layout;
                    // so does a widened 16-bit one, which follows the f32 rules).
                    const bool f32_kernels = dt == DType::f32 || info.widened;
                    if (l == Layout::channels_last && !(dir == Dir::bwd_d && f32_kernels && r.ic < 8)) {
                        EXPECT_LE(info.reorders, 1 + (dir == Dir::bwd_w)) << what;
                    }
                }
}

TEST(CpuPlans, MatmulPath) {
    // res5_1x1c at mb 1: 1M weights against 49 rows of activations.
    // bf16 and f16 too: a widened problem reads widened plain weights (one streaming pass), still
    // cheaper than widening into the convolution's blocked layout and running the convolution.
    for (DType dt : {DType::f32, DType::bf16, DType::f16})
        for (Dir dir : kDirections) {
            const core::ConvProblem p = layer(dt, Layout::channels_last, 2048, 512, 7, 1).bias().problem(dir);
            const cpu::PlanInfo info = cpu::plan_info(p);
            EXPECT_EQ(info.impl.rfind("matmul:", 0), 0u) << p.str() << ": " << info.impl;
            EXPECT_EQ(info.reorders, 0) << p.str() << ": " << info.reorder_impls;
            // Activation-heavy 1x1 (res2_1x1b) stays on the convolution primitive.
            const core::ConvProblem q = layer(dt, Layout::channels_last, 64, 256, 56, 1).problem(dir);
            EXPECT_EQ(cpu::plan_info(q).impl.find("matmul"), std::string::npos) << q.str();
        }
}

TEST(CpuPlans, FusedAndOwnEpilogue) {
    core::ConvProblem p = layer(DType::f32, Layout::channels_last, 16, 16, 8, 3, 1, 1).bias().problem(Dir::fwd);
    p.n_post_ops = 1;
    p.post_ops[0].kind = PostOp::Kind::eltwise;
    p.post_ops[0].alg = static_cast<int>(EltwiseAlg::relu);
    const cpu::PlanInfo fused = cpu::plan_info(p);
    EXPECT_TRUE(fused.post_ops_fused) << fused.impl;
    EXPECT_FALSE(fused.own_epilogue);
    // Two sums in one chain: oneDNN 2.6 takes at most one, so convkit's pass runs the whole chain.
    p.n_post_ops = 2;
    p.post_ops[0].kind = PostOp::Kind::sum;
    p.post_ops[1].kind = PostOp::Kind::sum;
    p.post_ops[1].scale = 0.5f;
    const cpu::PlanInfo own = cpu::plan_info(p);
    EXPECT_FALSE(own.post_ops_fused);
    EXPECT_TRUE(own.own_epilogue);
    EXPECT_EQ(own.impl.find("ref"), std::string::npos) << own.impl;
}

TEST(CpuPrepack, EqualsUnpackedAndAnyBatch) {
    for (DType dt : {DType::f32, DType::bf16})
        for (Layout l : {Layout::channels_last, Layout::channels_first})
            check_prepacked_equals_unpacked(cpu_case(dt, l).mb(2).channels(16, 32).spatial(2, 9, 3).padding({1}), {2, 1, 5});
}

}  // namespace
