// Post-ops apart from any backend: parsing benchdnn's spelling (parameters, defaults, binary
// operand arguments) and printing it back, and the reference engine's `sum`, which accumulates
// into what dst held before the call. (Every post-op on the cpu engine: test_cpu_post_ops.cpp;
// parse errors: test_validation.cpp.)
#include <gtest/gtest.h>

#include <vector>

#include "support/conv_tester.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

TEST(PostOps, ParseAndPrint) {
    std::vector<std::string> args;
    PostOps ops = parse_post_ops("relu:0.5+linear:2:-1+clip:0:6+sum:0.25+add:f.npy+gelu_erf", &args);
    ASSERT_EQ(ops.size(), 6u);
    EXPECT_EQ(ops[0].eltwise, EltwiseAlg::relu);
    EXPECT_FLOAT_EQ(ops[0].alpha, 0.5f);
    EXPECT_FLOAT_EQ(ops[1].alpha, 2.f);
    EXPECT_FLOAT_EQ(ops[1].beta, -1.f);
    EXPECT_EQ(ops[3].kind, PostOp::Kind::sum);
    EXPECT_FLOAT_EQ(ops[3].scale, 0.25f);
    EXPECT_EQ(ops[4].kind, PostOp::Kind::binary);
    ASSERT_EQ(args.size(), 1u);
    EXPECT_EQ(args[0], "f.npy");
    EXPECT_EQ(ops.str(), "relu:0.5+linear:2:-1+clip:0:6+sum:0.25+add+gelu_erf");
    EXPECT_TRUE(ops.has_sum());
    // Defaults.
    PostOps d = parse_post_ops("relu+linear+elu+swish+sum");
    EXPECT_FLOAT_EQ(d[0].alpha, 0.f);
    EXPECT_FLOAT_EQ(d[1].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[2].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[3].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[4].scale, 1.f);
}

TEST(PostOps, SumPostOpReadsPriorDst) {
    Tensor src(DType::f32, {1, 2, 4, 4}), wei(DType::f32, {2, 2, 1, 1}), dst(DType::f32, {1, 2, 4, 4});
    fill(src, -1, 1, 6);
    fill(wei, -1, 1, 7);
    fill(dst, -1, 1, 8);
    const std::vector<double> prior = to_host_f64(dst);
    Tensor plain(DType::f32, {1, 2, 4, 4});
    const ConvOptions ref{Engine::ref, {}};
    convolution_forward(plain, src, wei, {}, ConvParams{}, {}, {}, {}, ref).wait();
    PostOps po;
    po.sum(0.5f);
    convolution_forward(dst, src, wei, {}, ConvParams{}, po, {}, {}, ref).wait();
    const std::vector<double> got = to_host_f64(dst), conv = to_host_f64(plain);
    for (size_t i = 0; i < got.size(); ++i)
        EXPECT_FLOAT_EQ(static_cast<float>(got[i]), static_cast<float>(conv[i]) + 0.5f * static_cast<float>(prior[i])) << "element " << i;
}

}  // namespace
