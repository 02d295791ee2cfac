// Transposed convolution on the reference engine against the definition, written here as its own
// loops: every src element scatters its products into dst at o = i * stride - padding_l +
// k * dilation (the reference gathers, as the backward data of a convolution). Also the shape
// rule and every refused argument, with what the message names and that no output is written.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "convkit/convkit.hpp"
#include "support/conv_tester.hpp"

namespace convkit::test {
namespace {

struct Case {
    int64_t mb, ic, oc, g;
    Dims in, k, stride, pad_l, pad_r, dil, out_pad;
};

int64_t at(const Dims& d, int i, int64_t dflt) { return d.empty() ? dflt : d.rank() == 1 ? d[0] : d[i]; }

ConvTransposeParams params_of(const Case& c) {
    ConvTransposeParams p;
    p.stride = c.stride, p.padding_l = c.pad_l, p.padding_r = c.pad_r, p.dilation = c.dil;
    p.output_padding = c.out_pad, p.groups = c.g;
    return p;
}

// Row-major index of a (N, C, spatial...) position in dense channels-first sizes `s`.
int64_t index(const Dims& s, int64_t n, int64_t c, const int64_t* sp) {
    int64_t i = n * s[1] + c;
    for (int d = 2; d < s.rank(); ++d) i = i * s[d] + sp[d - 2];
    return i;
}

// Visits every spatial position of `sizes` (3 at most), calling f(pos).
template <typename F> void each_position(const Dims& sizes, int nsp, F&& f) {
    int64_t pos[3] = {0, 0, 0};
    int64_t total = 1;
    for (int d = 0; d < nsp; ++d) total *= sizes[d];
    for (int64_t flat = 0; flat < total; ++flat) {
        int64_t r = flat;
        for (int d = nsp - 1; d >= 0; --d) pos[d] = r % sizes[d], r /= sizes[d];
        f(pos);
    }
}

// Every (input position, kernel tap, output position) triple of the transposed convolution.
template <typename F> void each_product(const Case& c, const Dims& out, F&& f) {
    const int nsp = c.in.rank();
    each_position(c.in, nsp, [&](const int64_t* i) {
        each_position(c.k, nsp, [&](const int64_t* k) {
            int64_t o[3];
            for (int d = 0; d < nsp; ++d) {
                o[d] = i[d] * at(c.stride, d, 1) - at(c.pad_l, d, 0) + k[d] * at(c.dil, d, 1);
                if (o[d] < 0 || o[d] >= out[2 + d]) return;
            }
            f(i, k, o);
        });
    });
}

struct Expected {
    std::vector<double> dst, diff_src, diff_wei, diff_bias;
};

Expected definition(const Case& c, const std::vector<double>& src, const std::vector<double>& wei,
                    const std::vector<double>& bias, const std::vector<double>& ddst, const Dims& out) {
    const Dims ss = [&] { Dims d{c.mb, c.ic}; for (auto v : c.in) d.push_back(v); return d; }();
    const Dims ws = [&] { Dims d{c.ic, c.oc / c.g}; for (auto v : c.k) d.push_back(v); return d; }();
    int64_t out_n = 1;
    for (auto v : out) out_n *= v;
    Expected e;
    e.dst.assign(static_cast<std::size_t>(out_n), 0.0);
    e.diff_src.assign(src.size(), 0.0);
    e.diff_wei.assign(wei.size(), 0.0);
    e.diff_bias.assign(static_cast<std::size_t>(c.oc), 0.0);
    const int64_t icg = c.ic / c.g, ocg = c.oc / c.g;
    for (int64_t n = 0; n < c.mb; ++n)
        for (int64_t ic = 0; ic < c.ic; ++ic)
            for (int64_t j = 0; j < ocg; ++j) {
                const int64_t oc = (ic / icg) * ocg + j;
                each_product(c, out, [&](const int64_t* i, const int64_t* k, const int64_t* o) {
                    const auto si = static_cast<std::size_t>(index(ss, n, ic, i));
                    const auto wi = static_cast<std::size_t>(index(ws, ic, j, k));
                    const auto oi = static_cast<std::size_t>(index(out, n, oc, o));
                    e.dst[oi] += src[si] * wei[wi];
                    e.diff_src[si] += ddst[oi] * wei[wi];
                    e.diff_wei[wi] += src[si] * ddst[oi];
                });
            }
    const int nsp = c.in.rank();
    const std::vector<int64_t> all = out.vec();
    const Dims out_sp(std::vector<int64_t>(all.begin() + 2, all.end()));
    for (int64_t n = 0; n < c.mb; ++n)
        for (int64_t oc = 0; oc < c.oc; ++oc)
            each_position(out_sp, nsp, [&](const int64_t* o) {
                const auto oi = static_cast<std::size_t>(index(out, n, oc, o));
                if (!bias.empty()) e.dst[oi] += bias[static_cast<std::size_t>(oc)];
                e.diff_bias[static_cast<std::size_t>(oc)] += ddst[oi];
            });
    return e;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    std::size_t bad = 0, first = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
        if (!(std::abs(got[i] - want[i]) <= 1e-12 * (1 + std::abs(want[i])))) {
            if (!bad) first = i;
            ++bad;
        }
    EXPECT_EQ(bad, 0u) << what << ": first at " << first << " got " << got[first] << " want " << want[first];
}

class TransposedDefinition : public ::testing::TestWithParam<Case> {};

TEST_P(TransposedDefinition, ReferenceMatchesTheScatterForm) {
    const Case& c = GetParam();
    const ConvTransposeParams p = params_of(c);
    Dims ss{c.mb, c.ic}, ws{c.ic, c.oc / c.g};
    for (auto v : c.in) ss.push_back(v);
    for (auto v : c.k) ws.push_back(v);
    const Dims out = conv_transpose_output_shape(ss, ws, p);
    Tensor src(DType::f64, ss), wei(DType::f64, ws), bias(DType::f64, Dims{c.oc}), dst(DType::f64, out),
        ddst(DType::f64, out), dsrc(DType::f64, ss), dwei(DType::f64, ws), dbias(DType::f64, Dims{c.oc});
    fill(src, -1, 1, 1);
    fill(wei, -1, 1, 2);
    fill(bias, -1, 1, 3);
    fill(ddst, -1, 1, 4);
    fill(dst, -1, 1, 5);  // stale contents: every element must be overwritten
    const ConvOptions ref{Engine::ref, {}};
    conv_transpose_forward(dst, src, wei, bias, p, {}, {}, {}, ref).wait();
    conv_transpose_backward_data(dsrc, ddst, wei, p, {}, {}, ref).wait();
    conv_transpose_backward_weights(dwei, dbias, ddst, src, p, {}, {}, ref).wait();
    const Expected e = definition(c, to_host_f64(src), to_host_f64(wei), to_host_f64(bias), to_host_f64(ddst), out);
    expect_near(to_host_f64(dst), e.dst, "forward");
    expect_near(to_host_f64(dsrc), e.diff_src, "backward data");
    expect_near(to_host_f64(dwei), e.diff_wei, "backward weights");
    expect_near(to_host_f64(dbias), e.diff_bias, "bias gradient");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TransposedDefinition,
    ::testing::Values(
        Case{2, 3, 4, 1, {5}, {3}, {}, {}, {}, {}, {}},                       // 1D plain
        Case{1, 4, 6, 2, {4, 5}, {3, 2}, {2}, {1}, {1}, {}, {1}},             // groups, stride, output_padding
        Case{2, 4, 4, 4, {5, 4}, {3, 3}, {2, 3}, {1, 0}, {0, 2}, {2}, {1, 2}},  // depthwise, asymmetric, dilation
        Case{1, 2, 3, 1, {6}, {3}, {1}, {2}, {0}, {3}, {2}},                   // output_padding >= stride (< dilation)
        Case{1, 2, 2, 1, {3, 3, 2}, {2, 2, 2}, {2}, {0}, {1}, {}, {1, 0, 1}}, // 3D
        Case{1, 3, 2, 1, {4, 4}, {1, 1}, {3}, {}, {}, {}, {2}}));             // 1x1 stride 3, both extra rows

// --- shapes and errors ---

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(TransposedShape, FollowsPyTorchsRule) {
    ConvTransposeParams p;
    p.stride = {2};
    p.pad({1});
    p.output_padding = {1};
    // (7 - 1) * 2 - 2 + 1 * (3 - 1) + 1 + 1 = 14: PyTorch's ConvTranspose2d(3, stride=2, padding=1, output_padding=1).
    EXPECT_EQ(conv_transpose_output_shape(Dims{1, 8, 7, 7}, Dims{8, 4, 3, 3}, p), (Dims{1, 4, 14, 14}));
    p.groups = 2;
    EXPECT_EQ(conv_transpose_output_shape(Dims{1, 8, 7, 7}, Dims{8, 4, 3, 3}, p), (Dims{1, 8, 14, 14}));
}

TEST(TransposedErrors, NameTheArgumentAndTheValues) {
    ConvTransposeParams p;
    p.stride = {2};
    p.output_padding = {2};
    std::string e = error_of([&] { conv_transpose_output_shape(Dims{1, 8, 7, 7}, Dims{8, 4, 3, 3}, p); });
    EXPECT_NE(e.find("output_padding h (2) must be smaller than either stride (2) or dilation (1)"), std::string::npos) << e;
    p = ConvTransposeParams();
    p.groups = 3;
    e = error_of([&] { conv_transpose_output_shape(Dims{1, 8, 7, 7}, Dims{8, 4, 3, 3}, p); });
    EXPECT_NE(e.find("src has 8 channels, which groups=3 does not divide"), std::string::npos) << e;
    p = ConvTransposeParams();
    e = error_of([&] { conv_transpose_output_shape(Dims{1, 8, 7, 7}, Dims{4, 8, 3, 3}, p); });
    EXPECT_NE(e.find("weights has 4 input channels (dim 0 of [4, 8, 3, 3], the transposed layout [IC, OC/groups, k...])"),
              std::string::npos) << e;
    p.pad({3});
    e = error_of([&] { conv_transpose_output_shape(Dims{1, 8, 2, 2}, Dims{8, 4, 3, 3}, p); });
    EXPECT_NE(e.find("dst size h would be -2"), std::string::npos) << e;
    p = ConvTransposeParams();
    p.output_padding = {1, 2, 3};
    e = error_of([&] { conv_transpose_output_shape(Dims{1, 8, 7, 7}, Dims{8, 4, 3, 3}, p); });
    EXPECT_NE(e.find("output_padding has 3 values"), std::string::npos) << e;
}

TEST(TransposedErrors, NothingIsWrittenOnFailure) {
    Tensor src(DType::f32, Dims{1, 4, 5, 5}), wei(DType::f32, Dims{4, 2, 3, 3});
    fill(src, -1, 1, 1);
    fill(wei, -1, 1, 2);
    ConvTransposeParams p;
    const Dims out = conv_transpose_output_shape(src.sizes(), wei.sizes(), p);
    Tensor dst(DType::f32, out), wrong(DType::f32, Dims{1, 2, 6, 6}), bias(DType::f32, Dims{3});
    fill(dst, -1, 1, 3);
    fill(wrong, -1, 1, 4);
    const std::vector<double> dst_before = to_host_f64(dst), wrong_before = to_host_f64(wrong);
    std::string e = error_of([&] { conv_transpose_forward(wrong, src, wei, TensorView(), p); });
    EXPECT_NE(e.find("conv_transpose_forward: dst has sizes [1, 2, 6, 6] but the transposed convolution of src "
                     "[1, 4, 5, 5] with weights [4, 2, 3, 3] produces [1, 2, 7, 7]"),
              std::string::npos) << e;
    e = error_of([&] { conv_transpose_forward(dst, src, wei, bias, p); });
    EXPECT_NE(e.find("bias has sizes [3] but must be [2]"), std::string::npos) << e;
    PostOps ops;
    ops.binary(BinaryAlg::add, wrong.view());
    e = error_of([&] { conv_transpose_forward(dst, src, wei, TensorView(), p, ops); });
    EXPECT_NE(e.find("which do not broadcast to dst [1, 2, 7, 7]"), std::string::npos) << e;
    Tensor f64w(DType::f64, wei.sizes());
    e = error_of([&] { conv_transpose_forward(dst, src, f64w, TensorView(), p); });
    EXPECT_NE(e.find("weights has dtype f64 but"), std::string::npos) << e;
    e = error_of([&] { conv_transpose_forward(dst, dst, wei, TensorView(), p); });
    EXPECT_FALSE(e.empty());
    EXPECT_TRUE(bitwise_equal(to_host_f64(dst), dst_before));
    EXPECT_TRUE(bitwise_equal(to_host_f64(wrong), wrong_before));
    // An output overlapping an input is refused, in the transposed call's names.
    Tensor big(DType::f32, Dims{2 * src.numel() + 2 * dst.numel()});
    TensorView s1(big.data(), DType::f32, src.sizes()), d1(static_cast<float*>(big.data()) + 10, DType::f32, out);
    e = error_of([&] { conv_transpose_forward(d1, s1, wei, TensorView(), p); });
    EXPECT_NE(e.find("dst overlaps src in memory"), std::string::npos) << e;
    // Post-ops on a backward direction are not offered by the API; bias gradient sizes are [OC].
    Tensor dwei(DType::f32, wei.sizes()), dbias(DType::f32, Dims{4});
    e = error_of([&] { conv_transpose_backward_weights(dwei, dbias, dst, src, p); });
    EXPECT_NE(e.find("diff_bias has sizes [4] but must be [2]"), std::string::npos) << e;
}

}  // namespace
}  // namespace convkit::test
