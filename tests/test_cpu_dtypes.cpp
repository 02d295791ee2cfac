// 16-bit dtypes on the cpu engine: a bf16/f16 result is rounded once (after bias and post-ops),
// f16 runs on oneDNN (widened; never the reference loops), and the widened path (bf16/f16 copied
// to f32, oneDNN's f32 kernels, rounded back) forced on every shape kind, post-op chain and
// prepacked weights, so it is tested on CPUs with native 16-bit kernels too.
#include <gtest/gtest.h>

#include <cmath>

#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

const ConvOptions kCpu{Engine::cpu, {}};

// A 16-bit result is rounded once, after bias and post-ops: with src (1, 2^-8) and weights 1 the
// convolution is 1 + 2^-8, a tie that alone rounds to 1 in bf16; with bias 2^-16 the exact result
// rounds up to 1 + 2^-7. Rounding the convolution before the bias would give 1. f16 likewise
// with (1, 2^-11) and 2^-20.
TEST(CpuDtypes, SixteenBitRoundsOnce) {
    for (DType dt : {DType::bf16, DType::f16})
        for (cpu::WidePolicy policy : {cpu::WidePolicy::automatic, cpu::WidePolicy::always}) {
            cpu::set_wide_policy(policy);
            clear_cache(Engine::cpu);
            const bool bf = dt == DType::bf16;
            const double half_ulp = bf ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
            const double nudge = bf ? std::ldexp(1.0, -16) : std::ldexp(1.0, -20);
            Tensor src(dt, Dims{1, 2, 1, 1}, Layout::channels_last), wei(dt, Dims{1, 2, 1, 1}, Layout::channels_last),
                bias(dt, Dims{1}), dst(dt, Dims{1, 1, 1, 1}, Layout::channels_last);
            tools::from_host_f64(src.view(), {1.0, half_ulp});
            tools::from_host_f64(wei.view(), {1.0, 1.0});
            tools::from_host_f64(bias.view(), {nudge});
            convolution_forward(dst, src, wei, bias, ConvParams(), PostOps(), Stream(), {}, kCpu).wait();
            EXPECT_EQ(to_host_f64(dst.view())[0], 1.0 + 2 * half_ulp) << to_string(dt) << " policy " << static_cast<int>(policy);
            // Backward data sums over three output channels in f32: 1 + half ulp + nudge. Partial
            // sums rounded to 16 bits would lose the nudge and give 1.
            Tensor ddst(dt, Dims{1, 3, 1, 1}, Layout::channels_last), w2(dt, Dims{3, 1, 1, 1}, Layout::channels_last),
                dsrc(dt, Dims{1, 1, 1, 1}, Layout::channels_last);
            tools::from_host_f64(ddst.view(), {1.0, half_ulp, nudge});
            tools::from_host_f64(w2.view(), {1.0, 1.0, 1.0});
            convolution_backward_data(dsrc, ddst, w2, ConvParams(), Stream(), {}, kCpu).wait();
            EXPECT_EQ(to_host_f64(dsrc.view())[0], 1.0 + 2 * half_ulp) << to_string(dt) << " bwd_d";
        }
    cpu::set_wide_policy(cpu::WidePolicy::automatic);
    clear_cache(Engine::cpu);
}

TEST(CpuDtypes, F16RunsOnTheCpuEngine) {
    // f16 runs on the cpu engine on every ISA (oneDNN 2.6 has no f16 convolution kernels: the
    // plans widen to f32), and `auto` picks the cpu engine for it, not the reference loops.
    const ConvTester layer =
        ConvTester().dtype(DType::f16).layout(Layout::channels_last).mb(1).channels(64, 64).spatial(2, 56, 3).padding({1}).bias();
    for (Dir dir : kDirections) EXPECT_EQ(impl(layer, dir).find("ref"), std::string::npos) << layer.name(dir) << ": " << impl(layer, dir);
    Tensor src(DType::f16, Dims{1, 8, 6, 6}, Layout::channels_last), wei(DType::f16, Dims{8, 8, 3, 3}, Layout::channels_last),
        dst(DType::f16, Dims{1, 8, 4, 4}, Layout::channels_last);
    fill(src, -1, 1, 5);
    fill(wei, -1, 1, 6);
    const CacheStats before = cache_stats(Engine::cpu);
    convolution_forward(dst, src, wei, TensorView(), ConvParams()).wait();
    EXPECT_EQ(cache_stats(Engine::cpu).misses + cache_stats(Engine::cpu).hits, before.misses + before.hits + 1);
}

// ---- bf16/f16 widened to f32 (forced, so the path is tested on CPUs with native kernels too) ----

class CpuWide : public ::testing::TestWithParam<std::tuple<DType, Layout>> {
protected:
    ConvTester t() const { return cpu_case(std::get<0>(GetParam()), std::get<1>(GetParam())); }
    ForceWide wide_;
};

TEST_P(CpuWide, Shapes) {
    const ConvTester cases[] = {
        t().channels(8, 16).spatial(2, 9, 3).padding({1}),
        t().mb(1).channels(3, 16).spatial(2, 20, 7).stride({2}).padding({3}),
        t().channels(12, 24, 3).input_size({7, 8}).kernel_size({3, 2}).stride({2, 1}).dilation({2, 1}).padding({2, 0}, {1, 1}),
        t().channels(16, 16, 16).spatial(2, 10, 3).stride({2}).padding({1}),
        t().channels(32, 64).spatial(2, 7, 1).stride({2}),
        t().mb(1).channels(2048, 512).spatial(2, 7, 1),                // the matmul path
        t().mb(1).channels(1024, 2048).spatial(2, 14, 1).stride({2}),  // rows gathered
        t().channels(6, 8).spatial(1, 17, 3).dilation({3}).padding({2}, {4}),
        t().mb(1).channels(4, 8, 2).input_size({4, 5, 6}).kernel_size({3, 2, 3}).stride({2, 1, 2}).padding({1}, {0, 1, 2}),
        t().channels(8, 16).spatial(2, 7, 3).padding({1}).weights_layout(Layout::channels_first).dst_layout(Layout::channels_first),
    };
    // Every direction against the reference, and each plan widened (and not `ref`).
    for (const ConvTester& c : cases) {
        c.check_all();
        for (Dir d : kDirections) {
            const cpu::PlanInfo info = cpu::plan_info(c.problem(d));
            EXPECT_TRUE(info.widened) << c.name(d) << ": " << info.impl;
            EXPECT_EQ(info.impl.find("ref"), std::string::npos) << c.name(d) << ": " << info.impl;
        }
    }
}

TEST_P(CpuWide, PostOps) {
    for (const char* ops : {"relu", "sum:0.5+relu", "sum+sum:0.5+relu", "elu:0.5+elu", "gelu_erf+tanh", "add:full+relu", "mul:per_oc+sum"})
        t().channels(8, 16).input_size({6, 7}).kernel_size({3, 3}).padding({1}).post_ops(ops).check_forward();
}

TEST_P(CpuWide, PrepackedEqualsUnpacked) {
    check_prepacked_equals_unpacked(t().mb(2).channels(16, 32).spatial(2, 9, 3).padding({1}), {2});
}

INSTANTIATE_TEST_SUITE_P(Cpu, CpuWide,
                         ::testing::Combine(::testing::Values(DType::bf16, DType::f16),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first)),
                         DtypeLayoutName());

}  // namespace
