// Every validation rule of the convolution entry points: each bad call throws convkit::Error of
// the right kind with a message naming the argument and the values, and leaves outputs untouched.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "convkit/convkit.hpp"

using namespace convkit;

namespace {

void expect_error(const std::function<void()>& f, ErrorKind kind, const std::vector<std::string>& parts) {
    try {
        f();
        ADD_FAILURE() << "no error thrown; expected one containing '" << parts.front() << "'";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), kind) << e.what();
        for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "message: " << e.what() << "\nmissing: " << p;
    }
}

const ConvOptions kRef{Engine::ref, {}};

// A valid 2D problem: src [2,4,8,8], weights [6,4,3,3], pad 1 -> dst [2,6,8,8]; tests break one thing.
struct Fixture {
    Tensor src{DType::f32, {2, 4, 8, 8}};
    Tensor wei{DType::f32, {6, 4, 3, 3}};
    Tensor bias{DType::f32, {6}};
    Tensor dst{DType::f32, {2, 6, 8, 8}};
    ConvParams params;
    Fixture() {
        params.pad({1});
        std::memset(src.data(), 0, src.nbytes());
        std::memset(wei.data(), 0, wei.nbytes());
        std::memset(bias.data(), 0, bias.nbytes());
        for (int64_t i = 0; i < dst.numel(); ++i) dst.ptr<float>()[i] = 7.f;  // sentinel
    }
    bool dst_untouched() const {
        for (int64_t i = 0; i < dst.numel(); ++i)
            if (dst.ptr<float>()[i] != 7.f) return false;
        return true;
    }
};

TEST(Validation, ValidCallRuns) {
    Fixture f;
    convolution_forward(f.dst, f.src, f.wei, f.bias, f.params, {}, {}, {}, kRef).wait();
    EXPECT_FALSE(f.dst_untouched());
}

TEST(Validation, RankOfSrc) {
    Fixture f;
    Tensor s2(DType::f32, {2, 4});
    expect_error([&] { convolution_forward(f.dst, s2, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"convolution_forward", "src must have rank 3, 4 or 5", "[2, 4]"});
    EXPECT_TRUE(f.dst_untouched());
}

TEST(Validation, RankMismatch) {
    Fixture f;
    Tensor w3(DType::f32, {6, 4, 3});
    expect_error([&] { convolution_forward(f.dst, f.src, w3, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"weights has rank 3", "src has rank 4"});
    Tensor d3(DType::f32, {2, 6, 8});
    expect_error([&] { convolution_forward(d3, f.src, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"dst has rank 3"});
}

TEST(Validation, ChannelsAndGroups) {
    Fixture f;
    Tensor w(DType::f32, {6, 3, 3, 3});
    expect_error([&] { convolution_forward(f.dst, f.src, w, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument,
                 {"weights has 3 input channels per group but src has 4 channels and groups=1 (expected 4)"});
    ConvParams g3 = f.params;
    g3.groups = 3;
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, g3, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"src has 4 channels, which groups=3 does not divide"});
    ConvParams g4 = f.params;
    g4.groups = 4;
    Tensor w4(DType::f32, {6, 1, 3, 3});
    expect_error([&] { convolution_forward(f.dst, f.src, w4, {}, g4, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"weights has 6 output channels, which groups=4 does not divide"});
    ConvParams g0 = f.params;
    g0.groups = 0;
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, g0, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"groups must be >= 1, got 0"});
}

TEST(Validation, Params) {
    Fixture f;
    ConvParams p = f.params;
    p.stride = {0};
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, p, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"stride h must be >= 1, got 0"});
    p = f.params;
    p.dilation = {1, 0};
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, p, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"dilation w must be >= 1 (1 = dense), got 0"});
    p = f.params;
    p.padding_l = {-1};
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, p, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"padding_l h must be >= 0, got -1"});
    p = f.params;
    p.padding_r = {1, 2, 3};
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, p, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"padding_r has 3 values [1, 2, 3]", "2 spatial dimension"});
}

TEST(Validation, KernelLargerThanPaddedInput) {
    Tensor src(DType::f32, {1, 1, 4, 4}), wei(DType::f32, {1, 1, 3, 3}), dst(DType::f32, {1, 1, 1, 1});
    ConvParams p;
    p.dilation = {3};
    expect_error([&] { convolution_forward(dst, src, wei, {}, p, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument,
                 {"src size h with padding (4 + 0 + 0 = 4) is smaller than the dilated kernel (3 * (3 - 1) + 1 = 7)"});
}

TEST(Validation, DstShape) {
    Fixture f;
    Tensor d(DType::f32, {2, 6, 7, 8});
    expect_error([&] { convolution_forward(d, f.src, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"dst has sizes [2, 6, 7, 8]", "produces [2, 6, 8, 8]"});
    Tensor d2(DType::f32, {2, 5, 8, 8});
    expect_error([&] { convolution_forward(d2, f.src, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"dst has 5 channels but weights has 6 output channels"});
    // Backward data: diff_dst's shape must match too.
    Tensor dsrc(DType::f32, {2, 4, 8, 8}), ddst(DType::f32, {2, 6, 9, 8});
    expect_error([&] { convolution_backward_data(dsrc, ddst, f.wei, f.params, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"convolution_backward_data", "diff_dst has sizes [2, 6, 9, 8]"});
}

TEST(Validation, Bias) {
    Fixture f;
    Tensor b(DType::f32, {5});
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, b, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"bias has sizes [5] but must be [6]"});
    Tensor b64(DType::f64, {6});
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, b64, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"bias has dtype f64 but src has dtype f32"});
    Tensor db(DType::f32, {7});
    Tensor dw(DType::f32, {6, 4, 3, 3});
    expect_error([&] { convolution_backward_weights(dw, db, f.dst, f.src, f.params, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"convolution_backward_weights", "diff_bias has sizes [7]"});
}

TEST(Validation, Dtypes) {
    Fixture f;
    Tensor w(DType::bf16, {6, 4, 3, 3});
    expect_error([&] { convolution_forward(f.dst, f.src, w, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"weights has dtype bf16 but src has dtype f32"});
    Tensor d(DType::f64, {2, 6, 8, 8});
    expect_error([&] { convolution_forward(d, f.src, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"dst has dtype f64"});
}

TEST(Validation, Devices) {
    Fixture f;
    TensorView w = f.wei.view();
    w.device = Device::cuda(1);
    expect_error([&] { convolution_forward(f.dst, f.src, w, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"weights is on cuda:1 but src is on cpu"});
}

TEST(Validation, BinaryOperand) {
    Fixture f;
    Tensor op(DType::f32, {1, 3, 1, 1});
    PostOps po;
    po.binary(BinaryAlg::add, op);
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, f.params, po, {}, {}, kRef); },
                 ErrorKind::invalid_argument,
                 {"post-op 0 (add) operand has sizes [1, 3, 1, 1] which do not broadcast to dst [2, 6, 8, 8]",
                  "dimension 1 is 3, expected 1 or 6"});
    Tensor op2(DType::f32, {6});
    PostOps po2;
    po2.binary(BinaryAlg::mul, op2);
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, f.params, po2, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"operand", "must have rank 3, 4 or 5"});
    PostOps po3;
    po3.binary(BinaryAlg::add, TensorView());
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, f.params, po3, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"post-op 0 (add) operand is undefined"});
    EXPECT_TRUE(f.dst_untouched());
}

TEST(Validation, Aliasing) {
    Fixture f;
    // dst over src's memory.
    std::vector<float> buf(2 * 6 * 8 * 8);
    TensorView s(buf.data(), DType::f32, {2, 4, 8, 8});
    TensorView d(buf.data(), DType::f32, {2, 6, 8, 8});
    expect_error([&] { convolution_forward(d, s, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"dst overlaps src in memory"});
    // An output whose strides make elements overlap (stride 0 on a size-2 dim).
    TensorView bad(f.dst.data(), DType::f32, {2, 6, 8, 8}, {0, 64, 8, 1});
    expect_error([&] { convolution_forward(bad, f.src, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"dst has strides [0, 64, 8, 1] under which elements overlap"});
    // diff_weights over diff_dst.
    TensorView dw(f.dst.data(), DType::f32, {6, 4, 3, 3});
    expect_error([&] { convolution_backward_weights(dw, {}, f.dst, f.src, f.params, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"diff_weights overlaps diff_dst"});
}

TEST(Validation, NullDataAndOverflow) {
    Fixture f;
    TensorView s(nullptr, DType::f32, {2, 4, 8, 8});
    expect_error([&] { convolution_forward(f.dst, s, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"src has 512 elements but a null data pointer"});
    expect_error([&] { TensorView(f.src.data(), DType::f32, {int64_t(1) << 40, int64_t(1) << 30, 8, 8}); },
                 ErrorKind::invalid_argument, {"tensor size overflows int64"});
    TensorView huge(f.src.data(), DType::f32, {int64_t(1) << 40, int64_t(1) << 30, 8, 8}, {1, 1, 1, 1});
    expect_error([&] { convolution_forward(f.dst, huge, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"overflows int64"});
    TensorView neg(f.src.data(), DType::f32, {2, 4, 8, 8}, {256, 64, -8, 1});
    expect_error([&] { convolution_forward(f.dst, neg, f.wei, {}, f.params, {}, {}, {}, kRef); },
                 ErrorKind::invalid_argument, {"src has a negative stride"});
}

TEST(Validation, PostOpsOnBackward) {
    // Post-ops are forward-only; the backward APIs have no post-op parameter, so check parsing.
    expect_error([] { parse_post_ops("relu+bogus"); }, ErrorKind::invalid_argument, {"unknown post-op 'bogus'"});
    expect_error([] { parse_post_ops("clip:1"); }, ErrorKind::invalid_argument, {"clip needs 2 parameters"});
    expect_error([] { parse_post_ops("clip:2:1"); }, ErrorKind::invalid_argument, {"lower bound 2 is above the upper bound 1"});
    expect_error([] { parse_post_ops("relu:x"); }, ErrorKind::invalid_argument, {"alpha 'x' is not a finite number"});
    expect_error([] { parse_post_ops("sum:1:2"); }, ErrorKind::invalid_argument, {"sum takes one parameter"});
    expect_error([] { parse_post_ops("tanh:1"); }, ErrorKind::invalid_argument, {"tanh takes at most 0 parameter"});
}

TEST(Validation, Engines) {
    expect_error([] { engine_from_string("gpu"); }, ErrorKind::invalid_argument, {"unknown engine 'gpu'"});
    expect_error([] { dtype_from_string("f8"); }, ErrorKind::invalid_argument, {"unknown dtype 'f8'"});
#ifndef CONVKIT_WITH_CUDA
    Fixture f;
    ConvOptions o{Engine::cuda, {}};
    expect_error([&] { convolution_forward(f.dst, f.src, f.wei, {}, f.params, {}, {}, {}, o); },
                 ErrorKind::unsupported, {"engine 'cuda' is not compiled into this build"});
#endif
}

TEST(Validation, OutputShapeErrors) {
    expect_error([] { output_shape({1, 4, 5, 5}, {2, 4, 7, 7}, ConvParams{}); }, ErrorKind::invalid_argument,
                 {"output_shape", "smaller than the dilated kernel"});
    expect_error([] { output_shape({1, 4, 5}, {2, 4}, ConvParams{}); }, ErrorKind::invalid_argument,
                 {"output_shape", "weights has rank 2"});
}

}  // namespace

namespace {

// Found by fuzzing (docs/robustness.md, F7): oneDNN refused a non-finite post-op parameter deep in
// the call (a backend error); every engine now refuses it at validation, naming the value.
TEST(Validation, NonFinitePostOpParameters) {
    Fixture f;
    const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
    for (const PostOps& ops : {PostOps().eltwise(EltwiseAlg::clip, -inf, 1.0), PostOps().eltwise(EltwiseAlg::relu, nan),
                               PostOps().sum(inf)}) {
        expect_error([&] { convolution_forward(f.dst, f.src, f.wei, f.bias, f.params, ops, {}, {}, kRef); },
                     ErrorKind::invalid_argument, {"convolution_forward: post-op 0", "non-finite parameter"});
        EXPECT_TRUE(f.dst_untouched());
    }
}

#ifdef CONVKIT_WITH_CPU
// Found by fuzzing (F8): a 1-tap kernel with a huge dilation is an ordinary convolution, which
// oneDNN refused; the cpu engine now gives the reference's result.
TEST(Validation, HugeDilationOfAOneTapKernelRuns) {
    Tensor x(DType::f32, {1, 2, 4}), w(DType::f32, {3, 2, 1}), y(DType::f32, {1, 3, 4}), r(DType::f32, {1, 3, 4});
    for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] = static_cast<float>(i) - 3.5f;
    for (int64_t i = 0; i < w.numel(); ++i) w.ptr<float>()[i] = 0.25f * static_cast<float>(i + 1);
    ConvParams p;
    p.dilation = {int64_t(1) << 40};
    convolution_forward(y, x, w, TensorView(), p, {}, {}, {}, {Engine::cpu, {}}).wait();
    convolution_forward(r, x, w, TensorView(), p, {}, {}, {}, kRef).wait();
    for (int64_t i = 0; i < y.numel(); ++i) EXPECT_EQ(y.ptr<float>()[i], r.ptr<float>()[i]) << i;
}
#endif


// Sizes and strides at the edge of int64, from the API fuzzer's long run (docs/robustness.md F10):
// each is refused with a message naming the function, where it used to overflow (UBSan).
TEST(Validation, Int64EdgeSizesAreRefusedNotOverflowed) {
    const int64_t big = std::numeric_limits<int64_t>::max();
    ConvTransposeParams tp;
    tp.padding_l = {big};
    tp.padding_r = {big};
    expect_error([&] { conv_transpose_output_shape({1, 1, 4}, {1, 1, 3}, tp); }, ErrorKind::invalid_argument,
                 {"conv_transpose_output_shape: ", "overflows int64"});
    // Strides whose last element lies past int64 (each size alone is fine).
    float x = 0;
    TensorView src(&x, DType::f32, Dims{5, 1, 1}, Dims{3806762936143815496, 1, 1}, Device::cpu());
    Tensor w(DType::f32, {1, 1, 1}), y(DType::f32, {5, 1, 1});
    expect_error([&] { convolution_forward(y, src, w, TensorView(), ConvParams(), PostOps(), Stream(), {}, kRef); },
                 ErrorKind::invalid_argument, {"convolution_forward: src sizes", "offset of the last element overflows int64"});
    // dst's sizes overflow although src's and the weights' do not.
    TensorView s2(nullptr, DType::f32, Dims{int64_t(1) << 30, 1, 1, 1}, Device::cpu());
    TensorView w2(&x, DType::f32, Dims{int64_t(1) << 40, 1, 1, 1}, Device::cpu());
    expect_error([&] { prepack_weights(w2, s2, ConvParams(), PostOps(), kRef); }, ErrorKind::invalid_argument,
                 {"prepack_weights: dst size overflows int64"});
}

}  // namespace
