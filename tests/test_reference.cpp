// The reference engine (the oracle every backend is compared with) on cases worked out by hand:
// known forward and backward-data values, an empty batch's zero gradients, bitwise run-to-run
// results, and PackedWeights on the reference engine (a copy the caller's later writes cannot
// reach).
#include <gtest/gtest.h>

#include <vector>

#include "support/conv_tester.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

const ConvOptions kRef{Engine::ref, {}};

TEST(Reference, KnownValues) {
    // 1x1x3x3 input 1..9, 2x2 kernel of ones, no padding: each output is the sum of a 2x2 window.
    float s[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 1, 1, 1}, b[1] = {0.5f}, d[4] = {};
    convolution_forward(TensorView(d, DType::f32, {1, 1, 2, 2}), TensorView(s, DType::f32, {1, 1, 3, 3}),
                        TensorView(w, DType::f32, {1, 1, 2, 2}), TensorView(b, DType::f32, {1}), ConvParams{},
                        parse_post_ops("linear:2:1"), {}, {}, kRef)
        .wait();
    // (1+2+4+5 + 0.5) * 2 + 1 = 26, (2+3+5+6+.5)*2+1 = 34, (4+5+7+8+.5)*2+1 = 50, (5+6+8+9+.5)*2+1 = 58
    EXPECT_EQ(std::vector<float>(d, d + 4), (std::vector<float>{26, 34, 50, 58}));
    // Backward data of a ones kernel: each input counts the outputs it feeds.
    float dd[4] = {1, 1, 1, 1}, ds[9] = {};
    convolution_backward_data(TensorView(ds, DType::f32, {1, 1, 3, 3}), TensorView(dd, DType::f32, {1, 1, 2, 2}),
                              TensorView(w, DType::f32, {1, 1, 2, 2}), ConvParams{}, {}, {}, kRef)
        .wait();
    EXPECT_EQ(std::vector<float>(ds, ds + 9), (std::vector<float>{1, 2, 1, 2, 4, 2, 1, 2, 1}));
}

TEST(Reference, ZeroBatch) {
    Tensor src(DType::f32, {0, 4, 5, 5}), wei(DType::f32, {3, 4, 3, 3}), dst(DType::f32, {0, 3, 3, 3});
    fill(wei, -1, 1, 3);
    convolution_forward(dst, src, wei, {}, ConvParams{}, {}, {}, {}, kRef).wait();
    // The weight gradient of an empty batch is zero, bias gradient too.
    Tensor dw(DType::f32, {3, 4, 3, 3}), db(DType::f32, {3});
    fill(dw, -1, 1, 4);
    fill(db, -1, 1, 5);
    convolution_backward_weights(dw, db, dst, src, ConvParams{}, {}, {}, kRef).wait();
    for (double v : to_host_f64(dw)) ASSERT_EQ(v, 0.0);
    for (double v : to_host_f64(db)) ASSERT_EQ(v, 0.0);
}

TEST(Reference, DeterministicReference) {
    const ConvTester t = ConvTester().engine(Engine::ref).channels(8, 8).spatial(2, 9, 3).padding({1});
    ConvTensors a = t.make_tensors(13), b = ConvTester::copy_tensors(a, Device::cpu());
    t.run(Dir::bwd_w, a, Engine::ref).wait();
    t.run(Dir::bwd_w, b, Engine::ref).wait();
    EXPECT_TRUE(bitwise_equal(a.wei.view(), b.wei.view())) << t.name(Dir::bwd_w);
}

TEST(Reference, PackedWeightsOnReference) {
    const ConvTester t = ConvTester().engine(Engine::ref).channels(3, 4).spatial(2, 6, 3).padding({1});
    ConvTensors a = t.make_tensors(9), b = ConvTester::copy_tensors(a, Device::cpu());
    PackedWeights pw = prepack_weights(a.wei, a.src, t.params(), {}, kRef);
    EXPECT_EQ(pw.engine(), Engine::ref);
    EXPECT_EQ(pw.sizes(), a.wei.sizes());
    t.run(Dir::fwd, a, Engine::ref).wait();
    fill(a.wei, -1, 1, 11);  // the packed copy must not see later changes to the caller's weights
    convolution_forward(b.dst, b.src, pw, {}, t.params()).wait();
    EXPECT_EQ(to_host_f64(a.dst), to_host_f64(b.dst)) << t.name(Dir::fwd);
}

}  // namespace
