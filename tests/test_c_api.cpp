// The C API (include/convkit/convkit.h): every call, its results against the reference engine
// run through the same API, and every status with its message. Where a mistake can be made in
// both APIs, the C message must be the C++ Error's text, word for word. Exceptions are made to
// start in each layer under the C API (validation, engine choice, the allocator inside the core,
// inside the cpu backend's run and inside prepacking) and must come back as statuses.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "convkit/convkit.h"
#include "convkit/convkit.hpp"
#include "core/backend.hpp"
#include "support/tolerance.hpp"

namespace {

using namespace convkit;

// ---- Helpers ----

const convkit_device kCpu = {CONVKIT_DEVICE_CPU, 0};

// A host buffer (f32 or f64) and the C tensor over it.
struct Buf {
    std::vector<double> f64;
    std::vector<float> f32;
    convkit_tensor t{};

    Buf() = default;
    Buf(const std::vector<int64_t>& sizes, convkit_layout layout, convkit_dtype dt = CONVKIT_F32,
        uint64_t seed = 1) {
        int64_t n = 1;
        for (int64_t s : sizes) n *= s;
        uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
        auto next = [&x] {  // fixed-seed values in [-1, 1]
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            return static_cast<double>(x >> 11) / static_cast<double>(1ull << 53) * 2 - 1;
        };
        void* data;
        if (dt == CONVKIT_F64) {
            f64.resize(static_cast<std::size_t>(n));
            for (auto& v : f64) v = next();
            data = f64.data();
        } else {
            f32.resize(static_cast<std::size_t>(n));
            for (auto& v : f32) v = static_cast<float>(next());
            data = f32.data();
        }
        EXPECT_EQ(convkit_tensor_init(&t, data, dt, static_cast<int>(sizes.size()), sizes.data(), layout, kCpu),
                  CONVKIT_SUCCESS)
            << convkit_last_error();
    }
    // A buffer of the same shape, layout and dtype, with other values.
    Buf like(uint64_t seed) const {
        return Buf(std::vector<int64_t>(t.sizes, t.sizes + t.rank),
                   t.rank > 2 && t.strides[1] == 1 ? CONVKIT_CHANNELS_LAST : CONVKIT_CHANNELS_FIRST, t.dtype, seed);
    }
    double at(std::size_t i) const { return f64.empty() ? f32[i] : f64[i]; }
    std::size_t size() const { return f64.empty() ? f32.size() : f64.size(); }
};

TensorView view(const convkit_tensor& t) {
    if (t.rank == 0) return TensorView();
    Dims sizes, strides;
    for (int i = 0; i < t.rank; ++i) {
        sizes.push_back(t.sizes[i]);
        strides.push_back(t.strides[i]);
    }
    return TensorView(t.data, static_cast<DType>(t.dtype), sizes, strides);
}

convkit_dims dims(const std::vector<int64_t>& v) {
    convkit_dims d{};
    d.count = static_cast<int>(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) d.values[i] = v[i];
    return d;
}

// The text of the convkit::Error a C++ call throws ("" if it does not throw).
template <typename Fn> std::string cpp_error(Fn&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

convkit_exec exec_on(convkit_engine engine) {
    convkit_exec e{};
    e.options.engine = engine;
    return e;
}

// Largest |got - want| / max(|want|, scale) (support/tolerance.hpp's measure) over two buffers
// holding the same logical tensor in the same layout.
double max_error(const Buf& got, const Buf& want, double K) {
    EXPECT_EQ(got.size(), want.size());
    const double scale = test::output_scale(K);
    double worst = 0;
    for (std::size_t i = 0; i < got.size() && i < want.size(); ++i)
        worst = std::max(worst, std::fabs(got.at(i) - want.at(i)) / std::max(std::fabs(want.at(i)), scale));
    return worst;
}

bool cpu_built() {
    for (Engine e : available_engines())
        if (e == Engine::cpu) return true;
    return false;
}

// The engine under test: cpu when it is built, else the reference (which then checks itself).
convkit_engine engine_under_test() { return cpu_built() ? CONVKIT_ENGINE_CPU : CONVKIT_ENGINE_REF; }

// ---- Versions, statuses, small helpers ----

TEST(CApi, Version) {
    EXPECT_EQ(convkit_version(), CONVKIT_VERSION);
    EXPECT_EQ(CONVKIT_VERSION, CONVKIT_VERSION_MAJOR * 10000 + CONVKIT_VERSION_MINOR * 100 + CONVKIT_VERSION_PATCH);
    EXPECT_STREQ(convkit_version_string(), CONVKIT_VERSION_STRING);
    EXPECT_EQ(std::string(CONVKIT_VERSION_STRING),
              std::to_string(CONVKIT_VERSION_MAJOR) + "." + std::to_string(CONVKIT_VERSION_MINOR) + "." +
                  std::to_string(CONVKIT_VERSION_PATCH));
}

TEST(CApi, StatusStrings) {
    EXPECT_STREQ(convkit_status_string(CONVKIT_SUCCESS), "success");
    EXPECT_STREQ(convkit_status_string(CONVKIT_INVALID_ARGUMENT), to_string(ErrorKind::invalid_argument));
    EXPECT_STREQ(convkit_status_string(CONVKIT_UNSUPPORTED), to_string(ErrorKind::unsupported));
    EXPECT_STREQ(convkit_status_string(CONVKIT_OUT_OF_MEMORY), to_string(ErrorKind::out_of_memory));
    EXPECT_STREQ(convkit_status_string(CONVKIT_BACKEND_ERROR), to_string(ErrorKind::backend));
    EXPECT_STREQ(convkit_status_string(CONVKIT_INTERNAL_ERROR), "internal");
    EXPECT_STREQ(convkit_status_string(static_cast<convkit_status>(42)), "unknown");
}

TEST(CApi, TensorInit) {
    const int64_t sizes[] = {2, 3, 4, 5};
    float data[120];
    convkit_tensor t;
    ASSERT_EQ(convkit_tensor_init(&t, data, CONVKIT_F32, 4, sizes, CONVKIT_CHANNELS_FIRST, kCpu), CONVKIT_SUCCESS);
    EXPECT_EQ(t.data, data);
    EXPECT_EQ(t.rank, 4);
    EXPECT_EQ(std::vector<int64_t>(t.strides, t.strides + 4), (std::vector<int64_t>{60, 20, 5, 1}));
    EXPECT_STREQ(convkit_last_error(), "");
    ASSERT_EQ(convkit_tensor_init(&t, data, CONVKIT_BF16, 4, sizes, CONVKIT_CHANNELS_LAST, kCpu), CONVKIT_SUCCESS);
    EXPECT_EQ(std::vector<int64_t>(t.strides, t.strides + 4), (std::vector<int64_t>{60, 1, 15, 3}));
    EXPECT_EQ(t.dtype, CONVKIT_BF16);
    ASSERT_EQ(convkit_tensor_init(&t, nullptr, CONVKIT_F32, 0, nullptr, CONVKIT_CHANNELS_FIRST, kCpu), CONVKIT_SUCCESS);
    EXPECT_EQ(t.rank, 0);

    EXPECT_EQ(convkit_tensor_init(nullptr, data, CONVKIT_F32, 4, sizes, CONVKIT_CHANNELS_FIRST, kCpu),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_tensor_init: tensor is NULL");
    EXPECT_EQ(convkit_tensor_init(&t, data, CONVKIT_F32, 6, sizes, CONVKIT_CHANNELS_FIRST, kCpu),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_tensor_init: sizes rank is 6 (expected 0 to 5)");
    EXPECT_EQ(convkit_tensor_init(&t, data, CONVKIT_F32, 4, nullptr, CONVKIT_CHANNELS_FIRST, kCpu),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_tensor_init: sizes is NULL but its rank is 4");
    EXPECT_EQ(convkit_tensor_init(&t, data, static_cast<convkit_dtype>(9), 4, sizes, CONVKIT_CHANNELS_FIRST, kCpu),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_tensor_init: dtype is 9 (expected CONVKIT_F32, CONVKIT_F64, CONVKIT_F16 or CONVKIT_BF16)");
    EXPECT_EQ(convkit_tensor_init(&t, data, CONVKIT_F32, 4, sizes, static_cast<convkit_layout>(2), kCpu),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_tensor_init: layout is 2 (expected CONVKIT_CHANNELS_FIRST or CONVKIT_CHANNELS_LAST)");
    convkit_device bad = {static_cast<convkit_device_type>(5), 0};
    EXPECT_EQ(convkit_tensor_init(&t, data, CONVKIT_F32, 4, sizes, CONVKIT_CHANNELS_FIRST, bad),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_tensor_init: device.type is 5 (expected CONVKIT_DEVICE_CPU or CONVKIT_DEVICE_CUDA)");
    convkit_device neg = {CONVKIT_DEVICE_CUDA, -1};
    EXPECT_EQ(convkit_tensor_init(&t, data, CONVKIT_F32, 4, sizes, CONVKIT_CHANNELS_FIRST, neg),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_tensor_init: device.index is -1 (expected >= 0)");
    // A failed call leaves the tensor as it was.
    EXPECT_EQ(t.rank, 0);
}

TEST(CApi, DtypeSize) {
    const std::pair<convkit_dtype, size_t> want[] = {{CONVKIT_F32, 4}, {CONVKIT_F64, 8}, {CONVKIT_F16, 2}, {CONVKIT_BF16, 2}};
    for (auto [dt, bytes] : want) {
        size_t got = 0;
        ASSERT_EQ(convkit_dtype_size(dt, &got), CONVKIT_SUCCESS);
        EXPECT_EQ(got, bytes) << "dtype " << dt;
    }
    size_t got = 0;
    EXPECT_EQ(convkit_dtype_size(static_cast<convkit_dtype>(-1), &got), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_dtype_size: dtype is -1 (expected CONVKIT_F32, CONVKIT_F64, CONVKIT_F16 or CONVKIT_BF16)");
    EXPECT_EQ(convkit_dtype_size(CONVKIT_F32, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_dtype_size: size is NULL");
}

TEST(CApi, ParamsInit) {
    convkit_conv_params p;
    std::memset(&p, 0x7f, sizeof p);
    ASSERT_EQ(convkit_conv_params_init(&p), CONVKIT_SUCCESS);
    EXPECT_EQ(p.groups, 1);
    EXPECT_EQ(p.stride.count + p.padding_l.count + p.padding_r.count + p.dilation.count, 0);
    convkit_conv_transpose_params tp;
    std::memset(&tp, 0x7f, sizeof tp);
    ASSERT_EQ(convkit_conv_transpose_params_init(&tp), CONVKIT_SUCCESS);
    EXPECT_EQ(tp.groups, 1);
    EXPECT_EQ(tp.output_padding.count + tp.stride.count + tp.dilation.count, 0);
    EXPECT_EQ(convkit_conv_params_init(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_conv_params_init: params is NULL");
    EXPECT_EQ(convkit_conv_transpose_params_init(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_conv_transpose_params_init: params is NULL");
}

TEST(CApi, OutputShapes) {
    const int64_t src[] = {2, 8, 15, 11}, wei[] = {16, 4, 3, 2};
    convkit_conv_params p;
    convkit_conv_params_init(&p);
    p.stride = dims({2, 1});
    p.padding_l = dims({1});
    p.padding_r = dims({0, 2});
    p.dilation = dims({1, 3});
    p.groups = 2;
    int64_t out[CONVKIT_MAX_RANK] = {};
    int rank = 0;
    ASSERT_EQ(convkit_output_shape(src, 4, wei, 4, &p, out, &rank), CONVKIT_SUCCESS) << convkit_last_error();
    ConvParams cp;
    cp.stride = {2, 1};
    cp.padding_l = {1};
    cp.padding_r = {0, 2};
    cp.dilation = {1, 3};
    cp.groups = 2;
    EXPECT_EQ(Dims(std::vector<int64_t>(out, out + rank)), output_shape({2, 8, 15, 11}, {16, 4, 3, 2}, cp));

    // NULL params are the defaults.
    ASSERT_EQ(convkit_output_shape(src, 4, wei, 4, nullptr, out, &rank), CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([] { output_shape({2, 8, 15, 11}, {16, 4, 3, 2}, ConvParams()); }));
    const int64_t wei1[] = {16, 8, 3, 2};
    ASSERT_EQ(convkit_output_shape(src, 4, wei1, 4, nullptr, out, &rank), CONVKIT_SUCCESS);
    EXPECT_EQ(std::vector<int64_t>(out, out + rank), (std::vector<int64_t>{2, 16, 13, 10}));

    convkit_conv_transpose_params tp;
    convkit_conv_transpose_params_init(&tp);
    tp.stride = dims({2});
    tp.padding_l = tp.padding_r = dims({1});
    tp.output_padding = dims({1, 0});
    const int64_t tsrc[] = {1, 16, 5, 6}, twei[] = {16, 3, 4, 3};
    ASSERT_EQ(convkit_conv_transpose_output_shape(tsrc, 4, twei, 4, &tp, out, &rank), CONVKIT_SUCCESS);
    ConvTransposeParams ctp;
    ctp.stride = {2};
    ctp.pad({1});
    ctp.output_padding = {1, 0};
    EXPECT_EQ(Dims(std::vector<int64_t>(out, out + rank)), conv_transpose_output_shape({1, 16, 5, 6}, {16, 3, 4, 3}, ctp));

    // Errors: C++'s message for what C++ checks; the C layer's for counts, ranks and NULLs.
    tp.output_padding = dims({2});
    ctp.output_padding = {2};
    EXPECT_EQ(convkit_conv_transpose_output_shape(tsrc, 4, twei, 4, &tp, out, &rank), CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(),
              cpp_error([&] { conv_transpose_output_shape({1, 16, 5, 6}, {16, 3, 4, 3}, ctp); }));
    EXPECT_NE(std::string(convkit_last_error()).find("output_padding"), std::string::npos) << convkit_last_error();
    p.stride.count = 4;
    EXPECT_EQ(convkit_output_shape(src, 4, wei, 4, &p, out, &rank), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_output_shape: params.stride.count is 4 (expected 0 to 3)");
    EXPECT_EQ(convkit_output_shape(src, -1, wei, 4, nullptr, out, &rank), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_output_shape: src_sizes rank is -1 (expected 0 to 5)");
    EXPECT_EQ(convkit_output_shape(src, 4, nullptr, 4, nullptr, out, &rank), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_output_shape: weights_sizes is NULL but its rank is 4");
    EXPECT_EQ(convkit_output_shape(src, 4, wei1, 4, nullptr, nullptr, &rank), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_output_shape: dst_sizes is NULL");
    EXPECT_EQ(convkit_conv_transpose_output_shape(tsrc, 4, twei, 4, nullptr, out, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_conv_transpose_output_shape: dst_rank is NULL");
}

// ---- The six directions against the reference engine ----

struct Shape {
    const char* name;
    std::vector<int64_t> src, wei;  // a convolution's src [N, C, ...] and weights [OC, C/g, k...]
    int64_t groups;
    std::vector<int64_t> stride, padding_l, padding_r, dilation;
    convkit_layout layout;
    convkit_dtype dtype;
};

const Shape kShapes[] = {
    {"conv2d_nchw", {2, 4, 7, 6}, {6, 4, 3, 3}, 1, {1}, {1}, {1}, {1}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32},
    {"conv2d_nhwc_grouped_strided_asymmetric", {1, 6, 9, 8}, {4, 3, 3, 2}, 2, {2, 1}, {1, 0}, {0, 1}, {1, 2},
     CONVKIT_CHANNELS_LAST, CONVKIT_F32},
    {"conv1d_strided", {2, 3, 11}, {5, 3, 4}, 1, {2}, {1}, {2}, {1}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32},
    {"conv3d_depthwise_ndhwc", {1, 4, 4, 5, 5}, {4, 1, 3, 3, 3}, 4, {1}, {1}, {1}, {1}, CONVKIT_CHANNELS_LAST,
     CONVKIT_F32},
    {"conv2d_f64", {1, 3, 6, 6}, {2, 3, 3, 3}, 1, {2}, {1}, {0}, {1}, CONVKIT_CHANNELS_FIRST, CONVKIT_F64},
};

class CApiDirections : public testing::TestWithParam<Shape> {
protected:
    void SetUp() override {
        const Shape& s = GetParam();
        convkit_conv_params_init(&p);
        p.stride = dims(s.stride);
        p.padding_l = dims(s.padding_l);
        p.padding_r = dims(s.padding_r);
        p.dilation = dims(s.dilation);
        p.groups = s.groups;
        int64_t out[CONVKIT_MAX_RANK];
        int rank = 0;
        ASSERT_EQ(convkit_output_shape(s.src.data(), static_cast<int>(s.src.size()), s.wei.data(),
                                       static_cast<int>(s.wei.size()), &p, out, &rank),
                  CONVKIT_SUCCESS)
            << convkit_last_error();
        dst_sizes.assign(out, out + rank);
        k = 1;
        for (std::size_t i = 2; i < s.wei.size(); ++i) k *= static_cast<double>(s.wei[i]);
        out_sp = 1;
        for (std::size_t i = 2; i < dst_sizes.size(); ++i) out_sp *= static_cast<double>(dst_sizes[i]);
        in_sp = 1;
        for (std::size_t i = 2; i < s.src.size(); ++i) in_sp *= static_cast<double>(s.src[i]);
        // The transposed convolution that is this convolution's data gradient: its src is this
        // one's dst, its output has this one's src sizes (output_padding picks them).
        convkit_conv_transpose_params_init(&tp);
        tp.stride = p.stride;
        tp.padding_l = p.padding_l;
        tp.padding_r = p.padding_r;
        tp.dilation = p.dilation;
        tp.groups = p.groups;
        int64_t tout[CONVKIT_MAX_RANK];
        ASSERT_EQ(convkit_conv_transpose_output_shape(dst_sizes.data(), rank, s.wei.data(),
                                                      static_cast<int>(s.wei.size()), &tp, tout, &rank),
                  CONVKIT_SUCCESS);
        tp.output_padding.count = rank - 2;
        for (int i = 2; i < rank; ++i) tp.output_padding.values[i - 2] = s.src[i] - tout[i];
    }
    std::string what(const char* dir) const { return std::string(GetParam().name) + " " + dir; }

    convkit_conv_params p;
    convkit_conv_transpose_params tp;
    std::vector<int64_t> dst_sizes;
    double k = 1, out_sp = 1, in_sp = 1;
};

TEST_P(CApiDirections, ForwardWithBiasAndPostOps) {
    const Shape& s = GetParam();
    Buf src(s.src, s.layout, s.dtype, 1), wei(s.wei, s.layout, s.dtype, 2), bias({s.wei[0]}, s.layout, s.dtype, 3);
    Buf got(dst_sizes, s.layout, s.dtype, 4), want = got.like(4), cpp = got.like(4);
    Buf residual = got.like(5);
    // relu(0.5 * dst_before + conv + bias + residual) with a 0.1 slope: sum, binary and eltwise.
    convkit_post_op ops[3] = {};
    ops[0].kind = CONVKIT_POST_OP_SUM;
    ops[0].scale = 0.5;
    ops[1].kind = CONVKIT_POST_OP_BINARY;
    ops[1].binary = CONVKIT_BINARY_ADD;
    ops[1].operand = residual.t;
    ops[2].kind = CONVKIT_POST_OP_ELTWISE;
    ops[2].eltwise = CONVKIT_ELTWISE_RELU;
    ops[2].alpha = 0.1;
    convkit_post_ops post = {ops, 3};
    convkit_exec e = exec_on(engine_under_test()), r = exec_on(CONVKIT_ENGINE_REF);
    ASSERT_EQ(convkit_convolution_forward(&got.t, &src.t, &wei.t, &bias.t, &p, &post, &e, nullptr), CONVKIT_SUCCESS)
        << what("fwd") << ": " << convkit_last_error();
    ASSERT_EQ(convkit_convolution_forward(&want.t, &src.t, &wei.t, &bias.t, &p, &post, &r, nullptr), CONVKIT_SUCCESS)
        << convkit_last_error();
    EXPECT_LE(max_error(got, want, k * static_cast<double>(s.wei[1])), test::tolerance(static_cast<DType>(s.dtype)))
        << what("fwd");
    // The same call through C++ gives the same bits: the structs were translated faithfully.
    PostOps cpost = PostOps().sum(0.5).binary(BinaryAlg::add, view(residual.t)).eltwise(EltwiseAlg::relu, 0.1);
    ConvParams cp;
    cp.stride = Dims(s.stride);
    cp.padding_l = Dims(s.padding_l);
    cp.padding_r = Dims(s.padding_r);
    cp.dilation = Dims(s.dilation);
    cp.groups = s.groups;
    ConvOptions ref;
    ref.engine = Engine::ref;
    convolution_forward(view(cpp.t), view(src.t), view(wei.t), view(bias.t), cp, cpost, Stream(), {}, ref);
    EXPECT_EQ(cpp.f32, want.f32) << what("fwd vs C++");
    EXPECT_EQ(cpp.f64, want.f64) << what("fwd vs C++");
}

TEST_P(CApiDirections, BackwardData) {
    const Shape& s = GetParam();
    Buf dy(dst_sizes, s.layout, s.dtype, 6), wei(s.wei, s.layout, s.dtype, 7);
    Buf got(s.src, s.layout, s.dtype, 8), want = got.like(8);
    convkit_exec e = exec_on(engine_under_test()), r = exec_on(CONVKIT_ENGINE_REF);
    ASSERT_EQ(convkit_convolution_backward_data(&got.t, &dy.t, &wei.t, &p, &e, nullptr), CONVKIT_SUCCESS)
        << what("bwd_d") << ": " << convkit_last_error();
    ASSERT_EQ(convkit_convolution_backward_data(&want.t, &dy.t, &wei.t, &p, &r, nullptr), CONVKIT_SUCCESS);
    EXPECT_LE(max_error(got, want, k * static_cast<double>(s.wei[0] / s.groups)),
              test::tolerance(static_cast<DType>(s.dtype)))
        << what("bwd_d");
}

TEST_P(CApiDirections, BackwardWeightsAndBias) {
    const Shape& s = GetParam();
    Buf dy(dst_sizes, s.layout, s.dtype, 9), src(s.src, s.layout, s.dtype, 10);
    Buf got(s.wei, s.layout, s.dtype, 11), want = got.like(11);
    Buf gotb({s.wei[0]}, s.layout, s.dtype, 12), wantb = gotb.like(12);
    convkit_exec e = exec_on(engine_under_test()), r = exec_on(CONVKIT_ENGINE_REF);
    ASSERT_EQ(convkit_convolution_backward_weights(&got.t, &gotb.t, &dy.t, &src.t, &p, &e, nullptr), CONVKIT_SUCCESS)
        << what("bwd_w") << ": " << convkit_last_error();
    ASSERT_EQ(convkit_convolution_backward_weights(&want.t, &wantb.t, &dy.t, &src.t, &p, &r, nullptr),
              CONVKIT_SUCCESS);
    const double K = static_cast<double>(s.src[0]) * out_sp;
    EXPECT_LE(max_error(got, want, K), test::tolerance(static_cast<DType>(s.dtype))) << what("bwd_w");
    EXPECT_LE(max_error(gotb, wantb, K), test::tolerance(static_cast<DType>(s.dtype))) << what("bwd_w bias");
    // No bias gradient: NULL.
    Buf only = got.like(13);
    ASSERT_EQ(convkit_convolution_backward_weights(&only.t, nullptr, &dy.t, &src.t, &p, &e, nullptr), CONVKIT_SUCCESS);
    EXPECT_LE(max_error(only, want, K), test::tolerance(static_cast<DType>(s.dtype))) << what("bwd_w, no bias");
}

TEST_P(CApiDirections, TransposedForwardBackwardDataAndWeights) {
    const Shape& s = GetParam();
    // Transposed: src has the convolution's dst sizes, weights [IC = OC_conv, OC/g, k...].
    const DType dt = static_cast<DType>(s.dtype);
    convkit_exec e = exec_on(engine_under_test()), r = exec_on(CONVKIT_ENGINE_REF);
    {
        Buf src(dst_sizes, s.layout, s.dtype, 14), wei(s.wei, s.layout, s.dtype, 15);
        Buf bias({s.wei[1] * s.groups}, s.layout, s.dtype, 16);
        Buf got(s.src, s.layout, s.dtype, 17), want = got.like(17);
        convkit_post_op relu = {};
        relu.kind = CONVKIT_POST_OP_ELTWISE;
        relu.eltwise = CONVKIT_ELTWISE_RELU;
        convkit_post_ops post = {&relu, 1};
        ASSERT_EQ(convkit_conv_transpose_forward(&got.t, &src.t, &wei.t, &bias.t, &tp, &post, &e, nullptr),
                  CONVKIT_SUCCESS)
            << what("deconv fwd") << ": " << convkit_last_error();
        ASSERT_EQ(convkit_conv_transpose_forward(&want.t, &src.t, &wei.t, &bias.t, &tp, &post, &r, nullptr),
                  CONVKIT_SUCCESS);
        EXPECT_LE(max_error(got, want, k * static_cast<double>(s.wei[0] / s.groups)), test::tolerance(dt))
            << what("deconv fwd");
    }
    {
        Buf dy(s.src, s.layout, s.dtype, 18), wei(s.wei, s.layout, s.dtype, 19);
        Buf got(dst_sizes, s.layout, s.dtype, 20), want = got.like(20);
        ASSERT_EQ(convkit_conv_transpose_backward_data(&got.t, &dy.t, &wei.t, &tp, &e, nullptr), CONVKIT_SUCCESS)
            << what("deconv bwd_d") << ": " << convkit_last_error();
        ASSERT_EQ(convkit_conv_transpose_backward_data(&want.t, &dy.t, &wei.t, &tp, &r, nullptr), CONVKIT_SUCCESS);
        EXPECT_LE(max_error(got, want, k * static_cast<double>(s.wei[1])), test::tolerance(dt)) << what("deconv bwd_d");
    }
    {
        Buf dy(s.src, s.layout, s.dtype, 21), src(dst_sizes, s.layout, s.dtype, 22);
        Buf got(s.wei, s.layout, s.dtype, 23), want = got.like(23);
        Buf gotb({s.wei[1] * s.groups}, s.layout, s.dtype, 24), wantb = gotb.like(24);
        ASSERT_EQ(convkit_conv_transpose_backward_weights(&got.t, &gotb.t, &dy.t, &src.t, &tp, &e, nullptr),
                  CONVKIT_SUCCESS)
            << what("deconv bwd_w") << ": " << convkit_last_error();
        ASSERT_EQ(convkit_conv_transpose_backward_weights(&want.t, &wantb.t, &dy.t, &src.t, &tp, &r, nullptr),
                  CONVKIT_SUCCESS);
        const double K = static_cast<double>(s.src[0]) * std::max(in_sp, out_sp);
        EXPECT_LE(max_error(got, want, K), test::tolerance(dt)) << what("deconv bwd_w");
        EXPECT_LE(max_error(gotb, wantb, K), test::tolerance(dt)) << what("deconv bwd_w bias");
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CApiDirections, testing::ValuesIn(kShapes),
                         [](const testing::TestParamInfo<Shape>& i) { return std::string(i.param.name); });

// ---- Prepacked weights ----

TEST(CApi, PackedWeights) {
    Buf src({1, 8, 9, 9}, CONVKIT_CHANNELS_LAST, CONVKIT_F32, 30), wei({16, 8, 3, 3}, CONVKIT_CHANNELS_LAST, CONVKIT_F32, 31);
    Buf bias({16}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 32);
    convkit_conv_params p;
    convkit_conv_params_init(&p);
    p.padding_l = p.padding_r = dims({1});
    convkit_options o = {engine_under_test(), CONVKIT_DETERMINISM_GLOBAL};
    convkit_packed_weights pw = nullptr;
    ASSERT_EQ(convkit_prepack_weights(&wei.t, &src.t, &p, nullptr, &o, &pw), CONVKIT_SUCCESS) << convkit_last_error();
    ASSERT_NE(pw, nullptr);
    int rank = 0;
    int64_t sizes[CONVKIT_MAX_RANK] = {};
    convkit_dtype dt = CONVKIT_F64;
    convkit_engine eng = CONVKIT_ENGINE_AUTO;
    ASSERT_EQ(convkit_packed_weights_describe(pw, &rank, sizes, &dt, &eng), CONVKIT_SUCCESS);
    EXPECT_EQ(std::vector<int64_t>(sizes, sizes + rank), (std::vector<int64_t>{16, 8, 3, 3}));
    EXPECT_EQ(dt, CONVKIT_F32);
    EXPECT_EQ(eng, engine_under_test());
    ASSERT_EQ(convkit_packed_weights_describe(pw, nullptr, nullptr, nullptr, nullptr), CONVKIT_SUCCESS);

    Buf got({1, 16, 9, 9}, CONVKIT_CHANNELS_LAST, CONVKIT_F32, 33), want = got.like(33);
    convkit_exec r = exec_on(CONVKIT_ENGINE_REF);
    ASSERT_EQ(convkit_convolution_forward_packed(&got.t, &src.t, pw, &bias.t, &p, nullptr, nullptr, nullptr),
              CONVKIT_SUCCESS)
        << convkit_last_error();
    ASSERT_EQ(convkit_convolution_forward(&want.t, &src.t, &wei.t, &bias.t, &p, nullptr, &r, nullptr), CONVKIT_SUCCESS);
    EXPECT_LE(max_error(got, want, 8 * 9), test::tolerance(DType::f32));

    // Errors: the packed weights are for one engine (C++'s message); NULL handles.
    if (engine_under_test() != CONVKIT_ENGINE_REF) {
        EXPECT_EQ(convkit_convolution_forward_packed(&got.t, &src.t, pw, &bias.t, &p, nullptr, &r, nullptr),
                  CONVKIT_INVALID_ARGUMENT);
        ConvOptions cr;
        cr.engine = Engine::ref;
        PackedWeights cpw = prepack_weights(view(wei.t), view(src.t), ConvParams().pad({1}), PostOps(),
                                            ConvOptions{static_cast<Engine>(engine_under_test()), std::nullopt});
        EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                      convolution_forward(view(got.t), view(src.t), cpw, view(bias.t), ConvParams().pad({1}),
                                          PostOps(), Stream(), {}, cr);
                  }));
    }
    EXPECT_EQ(convkit_convolution_forward_packed(&got.t, &src.t, nullptr, &bias.t, &p, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward_packed: weights is NULL");
    EXPECT_EQ(convkit_packed_weights_describe(nullptr, &rank, sizes, &dt, &eng), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_packed_weights_describe: packed is NULL");
    EXPECT_EQ(convkit_prepack_weights(&wei.t, &src.t, &p, nullptr, &o, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_prepack_weights: packed is NULL");
    Buf wrong({16, 4, 3, 3}, CONVKIT_CHANNELS_LAST, CONVKIT_F32, 34);
    convkit_packed_weights none = pw;
    EXPECT_EQ(convkit_prepack_weights(&wrong.t, &src.t, &p, nullptr, &o, &none), CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(none, nullptr);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  prepack_weights(view(wrong.t), view(src.t), ConvParams().pad({1}), PostOps(),
                                  ConvOptions{static_cast<Engine>(engine_under_test()), std::nullopt});
              }));
    EXPECT_EQ(convkit_packed_weights_destroy(pw), CONVKIT_SUCCESS);
    EXPECT_EQ(convkit_packed_weights_destroy(nullptr), CONVKIT_SUCCESS);
}

// ---- Streams and events ----

TEST(CApi, CpuStreamAndEvents) {
    convkit_stream s = nullptr;
    ASSERT_EQ(convkit_stream_create_cpu(&s), CONVKIT_SUCCESS);
    convkit_device d = {CONVKIT_DEVICE_CUDA, 3};
    ASSERT_EQ(convkit_stream_device(s, &d), CONVKIT_SUCCESS);
    EXPECT_EQ(d.type, CONVKIT_DEVICE_CPU);
    void* h = &d;
    ASSERT_EQ(convkit_stream_native_handle(s, &h), CONVKIT_SUCCESS);
    EXPECT_EQ(h, nullptr);
    convkit_event before = nullptr;
    ASSERT_EQ(convkit_stream_record(s, &before), CONVKIT_SUCCESS);
    int done = 0;
    ASSERT_EQ(convkit_event_query(before, &done), CONVKIT_SUCCESS);
    EXPECT_EQ(done, 1);
    EXPECT_EQ(convkit_event_wait(before), CONVKIT_SUCCESS);
    EXPECT_EQ(convkit_stream_wait_event(s, before), CONVKIT_SUCCESS);

    // A call on the stream, after an event, handing out its own.
    Buf src({1, 2, 5, 5}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 40), wei({3, 2, 3, 3}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 41);
    Buf dst({1, 3, 3, 3}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 42), want = dst.like(42);
    convkit_exec e{};
    e.stream = s;
    e.deps = &before;
    e.n_deps = 1;
    convkit_event finished = nullptr;
    ASSERT_EQ(convkit_convolution_forward(&dst.t, &src.t, &wei.t, nullptr, nullptr, nullptr, &e, &finished),
              CONVKIT_SUCCESS)
        << convkit_last_error();
    ASSERT_NE(finished, nullptr);
    done = 0;
    ASSERT_EQ(convkit_event_query(finished, &done), CONVKIT_SUCCESS);
    EXPECT_EQ(done, 1);  // the CPU stream is synchronous
    EXPECT_EQ(convkit_stream_synchronize(s), CONVKIT_SUCCESS);
    convkit_exec r = exec_on(CONVKIT_ENGINE_REF);
    ASSERT_EQ(convkit_convolution_forward(&want.t, &src.t, &wei.t, nullptr, nullptr, nullptr, &r, nullptr),
              CONVKIT_SUCCESS);
    EXPECT_LE(max_error(dst, want, 18), test::tolerance(DType::f32));

    // Errors: NULL handles and outputs, bad dependency lists; a failed call hands out no event.
    EXPECT_EQ(convkit_stream_create_cpu(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_create_cpu: stream is NULL");
    EXPECT_EQ(convkit_stream_device(nullptr, &d), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_device: stream is NULL");
    EXPECT_EQ(convkit_stream_device(s, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_device: device is NULL");
    EXPECT_EQ(convkit_stream_native_handle(nullptr, &h), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_native_handle: stream is NULL");
    EXPECT_EQ(convkit_stream_native_handle(s, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_native_handle: handle is NULL");
    EXPECT_EQ(convkit_stream_record(nullptr, &before), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_record: stream is NULL");
    EXPECT_EQ(convkit_stream_record(s, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_record: event is NULL");
    EXPECT_EQ(convkit_stream_wait_event(s, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_wait_event: event is NULL");
    EXPECT_EQ(convkit_stream_wait_event(nullptr, before), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_wait_event: stream is NULL");
    EXPECT_EQ(convkit_stream_synchronize(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_synchronize: stream is NULL");
    EXPECT_EQ(convkit_event_query(nullptr, &done), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_event_query: event is NULL");
    EXPECT_EQ(convkit_event_query(before, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_event_query: completed is NULL");
    EXPECT_EQ(convkit_event_wait(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_event_wait: event is NULL");

    convkit_event none = before;
    e.n_deps = -1;
    EXPECT_EQ(convkit_convolution_forward(&dst.t, &src.t, &wei.t, nullptr, nullptr, nullptr, &e, &none),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: exec.n_deps is -1 (expected >= 0)");
    EXPECT_EQ(none, nullptr);
    e.n_deps = 2;
    e.deps = nullptr;
    EXPECT_EQ(convkit_convolution_forward(&dst.t, &src.t, &wei.t, nullptr, nullptr, nullptr, &e, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: exec.deps is NULL but exec.n_deps is 2");
    convkit_event deps[2] = {before, nullptr};
    e.deps = deps;
    EXPECT_EQ(convkit_convolution_forward(&dst.t, &src.t, &wei.t, nullptr, nullptr, nullptr, &e, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: exec.deps[1] is NULL");

    EXPECT_EQ(convkit_event_destroy(before), CONVKIT_SUCCESS);
    EXPECT_EQ(convkit_event_destroy(finished), CONVKIT_SUCCESS);
    EXPECT_EQ(convkit_event_destroy(nullptr), CONVKIT_SUCCESS);
    EXPECT_EQ(convkit_stream_destroy(s), CONVKIT_SUCCESS);
    EXPECT_EQ(convkit_stream_destroy(nullptr), CONVKIT_SUCCESS);
}

bool cuda_device_visible() {
    for (Engine e : available_engines())
        if (e == Engine::cuda) return true;
    return false;
}

// On a machine without a GPU (or a build without CUDA) only the error paths run: C++'s message.
TEST(CApi, CudaStreams) {
    convkit_stream s = reinterpret_cast<convkit_stream>(&s);
    if (!cuda_device_visible()) {
        const convkit_status want =
#ifdef CONVKIT_WITH_CUDA
            CONVKIT_INVALID_ARGUMENT;  // the device does not exist
#else
            CONVKIT_UNSUPPORTED;  // no CUDA backend in this build
#endif
        EXPECT_EQ(convkit_stream_create_cuda(0, &s), want);
        EXPECT_EQ(convkit_last_error(), cpp_error([] { Stream::cuda(0); }));
        EXPECT_NE(std::string(convkit_last_error()).find("Stream::cuda"), std::string::npos) << convkit_last_error();
        EXPECT_EQ(s, nullptr);
        s = reinterpret_cast<convkit_stream>(&s);
        int fake_stream = 0;
        EXPECT_EQ(convkit_stream_wrap_cuda(0, &fake_stream, &s), want);
        EXPECT_EQ(convkit_last_error(), cpp_error([&] { Stream::cuda_external(0, &fake_stream); }));
        EXPECT_EQ(s, nullptr);
    } else {
        ASSERT_EQ(convkit_stream_create_cuda(0, &s), CONVKIT_SUCCESS) << convkit_last_error();
        convkit_device d{};
        ASSERT_EQ(convkit_stream_device(s, &d), CONVKIT_SUCCESS);
        EXPECT_EQ(d.type, CONVKIT_DEVICE_CUDA);
        EXPECT_EQ(d.index, 0);
        void* native = nullptr;
        ASSERT_EQ(convkit_stream_native_handle(s, &native), CONVKIT_SUCCESS);
        EXPECT_NE(native, nullptr);
        convkit_event ev = nullptr;
        ASSERT_EQ(convkit_stream_record(s, &ev), CONVKIT_SUCCESS);
        EXPECT_EQ(convkit_event_wait(ev), CONVKIT_SUCCESS);
        int done = 0;
        ASSERT_EQ(convkit_event_query(ev, &done), CONVKIT_SUCCESS);
        EXPECT_EQ(done, 1);
        convkit_stream wrapped = nullptr;
        ASSERT_EQ(convkit_stream_wrap_cuda(0, native, &wrapped), CONVKIT_SUCCESS);
        void* same = nullptr;
        ASSERT_EQ(convkit_stream_native_handle(wrapped, &same), CONVKIT_SUCCESS);
        EXPECT_EQ(same, native);
        EXPECT_EQ(convkit_stream_wait_event(wrapped, ev), CONVKIT_SUCCESS);
        EXPECT_EQ(convkit_stream_synchronize(wrapped), CONVKIT_SUCCESS);
        EXPECT_EQ(convkit_stream_destroy(wrapped), CONVKIT_SUCCESS);
        EXPECT_EQ(convkit_event_destroy(ev), CONVKIT_SUCCESS);
        EXPECT_EQ(convkit_stream_destroy(s), CONVKIT_SUCCESS);
    }
    EXPECT_EQ(convkit_stream_create_cuda(0, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_create_cuda: stream is NULL");
    EXPECT_EQ(convkit_stream_wrap_cuda(0, nullptr, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_stream_wrap_cuda: stream is NULL");
}

// ---- Switches, caches, engine queries ----

TEST(CApi, Switches) {
    int on = -1;
    const bool det = deterministic(), tf32 = allow_tf32(), tune = autotune();
    ASSERT_EQ(convkit_set_deterministic(1), CONVKIT_SUCCESS);
    ASSERT_EQ(convkit_get_deterministic(&on), CONVKIT_SUCCESS);
    EXPECT_EQ(on, 1);
    EXPECT_TRUE(deterministic());
    ASSERT_EQ(convkit_set_deterministic(0), CONVKIT_SUCCESS);
    EXPECT_FALSE(deterministic());
    ASSERT_EQ(convkit_set_allow_tf32(0), CONVKIT_SUCCESS);
    ASSERT_EQ(convkit_get_allow_tf32(&on), CONVKIT_SUCCESS);
    EXPECT_EQ(on, 0);
    EXPECT_FALSE(allow_tf32());
    ASSERT_EQ(convkit_set_autotune(1), CONVKIT_SUCCESS);
    ASSERT_EQ(convkit_get_autotune(&on), CONVKIT_SUCCESS);
    EXPECT_EQ(on, 1);
    EXPECT_TRUE(autotune());
    set_deterministic(det);
    set_allow_tf32(tf32);
    set_autotune(tune);

    const std::string tune_before = core::tune_file();
    ASSERT_EQ(convkit_set_tune_file("/tmp/convkit-c-api.tune"), CONVKIT_SUCCESS);
    EXPECT_EQ(core::tune_file(), "/tmp/convkit-c-api.tune");
    set_tune_file(tune_before);

    const int threads = num_threads();
    ASSERT_EQ(convkit_set_num_threads(1), CONVKIT_SUCCESS);
    int n = 0;
    ASSERT_EQ(convkit_get_num_threads(&n), CONVKIT_SUCCESS);
    EXPECT_EQ(n, 1);
    set_num_threads(threads);

    EXPECT_EQ(convkit_set_num_threads(0), CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([] { set_num_threads(0); }));
    EXPECT_STREQ(convkit_last_error(), "set_num_threads: n must be >= 1, got 0");
    EXPECT_EQ(convkit_get_num_threads(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_get_num_threads: n is NULL");
    EXPECT_EQ(convkit_set_tune_file(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_set_tune_file: path is NULL");
    EXPECT_EQ(convkit_get_deterministic(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_get_deterministic: on is NULL");
    EXPECT_EQ(convkit_get_allow_tf32(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_get_allow_tf32: on is NULL");
    EXPECT_EQ(convkit_get_autotune(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_get_autotune: on is NULL");
}

TEST(CApi, CacheStats) {
    if (!cpu_built()) GTEST_SKIP() << "the cpu engine keeps the cache under test";
    ASSERT_EQ(convkit_clear_cache(CONVKIT_ENGINE_CPU), CONVKIT_SUCCESS);
    convkit_cache_stats before{};
    ASSERT_EQ(convkit_get_cache_stats(CONVKIT_ENGINE_CPU, &before), CONVKIT_SUCCESS);
    EXPECT_EQ(before.size, 0u);
    Buf src({1, 3, 6, 6}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 50), wei({4, 3, 3, 3}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 51);
    Buf dst({1, 4, 4, 4}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 52);
    convkit_exec e = exec_on(CONVKIT_ENGINE_CPU);
    for (int i = 0; i < 2; ++i)
        ASSERT_EQ(convkit_convolution_forward(&dst.t, &src.t, &wei.t, nullptr, nullptr, nullptr, &e, nullptr),
                  CONVKIT_SUCCESS);
    convkit_cache_stats after{};
    ASSERT_EQ(convkit_get_cache_stats(CONVKIT_ENGINE_CPU, &after), CONVKIT_SUCCESS);
    const CacheStats cpp = cache_stats(Engine::cpu);
    EXPECT_EQ(after.hits, cpp.hits);
    EXPECT_EQ(after.misses, cpp.misses);
    EXPECT_EQ(after.evictions, cpp.evictions);
    EXPECT_EQ(after.size, cpp.size);
    EXPECT_EQ(after.capacity, cpp.capacity);
    EXPECT_GE(after.misses, before.misses + 1);
    EXPECT_GE(after.hits, before.hits + 1);
    EXPECT_GE(after.size, 1u);
    EXPECT_GT(after.capacity, 0u);
    ASSERT_EQ(convkit_clear_cache(CONVKIT_ENGINE_CPU), CONVKIT_SUCCESS);
    ASSERT_EQ(convkit_get_cache_stats(CONVKIT_ENGINE_CPU, &after), CONVKIT_SUCCESS);
    EXPECT_EQ(after.size, 0u);
    convkit_cache_stats ref{1, 1, 1, 1, 1};
    ASSERT_EQ(convkit_get_cache_stats(CONVKIT_ENGINE_REF, &ref), CONVKIT_SUCCESS);
    EXPECT_EQ(ref.hits + ref.misses + ref.evictions + ref.size + ref.capacity, 0u);  // keeps no cache

    EXPECT_EQ(convkit_get_cache_stats(static_cast<convkit_engine>(7), &after), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_get_cache_stats: engine is 7 (expected CONVKIT_ENGINE_AUTO, _REF, _CPU or _CUDA)");
    EXPECT_EQ(convkit_get_cache_stats(CONVKIT_ENGINE_CPU, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_get_cache_stats: stats is NULL");
    EXPECT_EQ(convkit_clear_cache(static_cast<convkit_engine>(-2)), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_clear_cache: engine is -2 (expected CONVKIT_ENGINE_AUTO, _REF, _CPU or _CUDA)");
}

TEST(CApi, EngineQueries) {
    const std::vector<Engine> cpp = available_engines();
    convkit_engine engines[8];
    int count = -1;
    ASSERT_EQ(convkit_available_engines(engines, 8, &count), CONVKIT_SUCCESS);
    ASSERT_EQ(count, static_cast<int>(cpp.size()));
    for (int i = 0; i < count; ++i) EXPECT_EQ(static_cast<int>(engines[i]), static_cast<int>(cpp[i])) << i;
    convkit_engine first[1] = {CONVKIT_ENGINE_AUTO};
    ASSERT_EQ(convkit_available_engines(first, 1, &count), CONVKIT_SUCCESS);
    EXPECT_EQ(count, static_cast<int>(cpp.size()));  // all of them counted, one written
    EXPECT_EQ(static_cast<int>(first[0]), static_cast<int>(cpp[0]));
    ASSERT_EQ(convkit_available_engines(nullptr, 0, &count), CONVKIT_SUCCESS);
    EXPECT_EQ(count, static_cast<int>(cpp.size()));

    convkit_engine best = CONVKIT_ENGINE_AUTO;
    ASSERT_EQ(convkit_best_engine(kCpu, &best), CONVKIT_SUCCESS);
    EXPECT_EQ(static_cast<int>(best), static_cast<int>(best_engine(Device::cpu())));
    EXPECT_EQ(best, engine_under_test());
    const convkit_device gpu = {CONVKIT_DEVICE_CUDA, 0};
#ifdef CONVKIT_WITH_CUDA
    ASSERT_EQ(convkit_best_engine(gpu, &best), CONVKIT_SUCCESS);
    EXPECT_EQ(best, CONVKIT_ENGINE_CUDA);
#else
    EXPECT_EQ(convkit_best_engine(gpu, &best), CONVKIT_UNSUPPORTED);
    EXPECT_EQ(convkit_last_error(), cpp_error([] { best_engine(Device::cuda(0)); }));
#endif

    const std::string info = engine_info(Engine::ref);
    ASSERT_FALSE(info.empty());
    char buf[256];
    size_t len = 0;
    ASSERT_EQ(convkit_engine_info(CONVKIT_ENGINE_REF, buf, sizeof buf, &len), CONVKIT_SUCCESS);
    EXPECT_EQ(std::string(buf), info);
    EXPECT_EQ(len, info.size());
    char small[5];
    ASSERT_EQ(convkit_engine_info(CONVKIT_ENGINE_REF, small, sizeof small, &len), CONVKIT_SUCCESS);
    EXPECT_EQ(std::string(small), info.substr(0, 4));  // truncated, NUL-terminated
    EXPECT_EQ(len, info.size());
    ASSERT_EQ(convkit_engine_info(CONVKIT_ENGINE_REF, nullptr, 0, &len), CONVKIT_SUCCESS);
    EXPECT_EQ(len, info.size());
    if (cpu_built()) {
        ASSERT_EQ(convkit_engine_info(CONVKIT_ENGINE_CPU, buf, sizeof buf, nullptr), CONVKIT_SUCCESS);
        EXPECT_EQ(std::string(buf), engine_info(Engine::cpu).substr(0, sizeof buf - 1));
    }

    EXPECT_STREQ(convkit_engine_name(CONVKIT_ENGINE_AUTO), "auto");
    EXPECT_STREQ(convkit_engine_name(CONVKIT_ENGINE_REF), "ref");
    EXPECT_STREQ(convkit_engine_name(CONVKIT_ENGINE_CPU), "cpu");
    EXPECT_STREQ(convkit_engine_name(CONVKIT_ENGINE_CUDA), "cuda");
    EXPECT_STREQ(convkit_engine_name(static_cast<convkit_engine>(9)), "?");
    convkit_engine e = CONVKIT_ENGINE_AUTO;
    ASSERT_EQ(convkit_engine_from_name("cuda", &e), CONVKIT_SUCCESS);
    EXPECT_EQ(e, CONVKIT_ENGINE_CUDA);

    EXPECT_EQ(convkit_engine_from_name("gpu", &e), CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([] { engine_from_string("gpu"); }));
    EXPECT_STREQ(convkit_last_error(), "unknown engine 'gpu' (expected one of auto, ref, cpu, cuda)");
    EXPECT_EQ(convkit_engine_from_name(nullptr, &e), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_engine_from_name: name is NULL");
    EXPECT_EQ(convkit_engine_from_name("ref", nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_engine_from_name: engine is NULL");
    EXPECT_EQ(convkit_available_engines(engines, -1, &count), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_available_engines: capacity is -1 (expected >= 0)");
    EXPECT_EQ(convkit_available_engines(nullptr, 2, &count), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_available_engines: engines is NULL");
    EXPECT_EQ(convkit_available_engines(engines, 8, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_available_engines: count is NULL");
    EXPECT_EQ(convkit_best_engine(kCpu, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_best_engine: engine is NULL");
    const convkit_device bad = {static_cast<convkit_device_type>(2), 0};
    EXPECT_EQ(convkit_best_engine(bad, &best), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_best_engine: device.type is 2 (expected CONVKIT_DEVICE_CPU or CONVKIT_DEVICE_CUDA)");
    EXPECT_EQ(convkit_engine_info(CONVKIT_ENGINE_REF, nullptr, 8, &len), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_engine_info: buffer is NULL");
    EXPECT_EQ(convkit_engine_info(static_cast<convkit_engine>(4), buf, sizeof buf, &len), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_engine_info: engine is 4 (expected CONVKIT_ENGINE_AUTO, _REF, _CPU or _CUDA)");
}

// ---- Invalid arguments: C++'s message where C++ checks it, the C layer's otherwise ----

class CApiInvalid : public testing::Test {
protected:
    Buf src{{1, 4, 6, 6}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 60};
    Buf wei{{5, 3, 3, 3}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 61};  // 3 channels, src has 4
    Buf good{{5, 4, 3, 3}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 62};
    Buf dst{{1, 5, 4, 4}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 63};

    convkit_status fwd(const convkit_post_ops* post = nullptr, const convkit_exec* e = nullptr,
                       const convkit_conv_params* p = nullptr) {
        return convkit_convolution_forward(&dst.t, &src.t, &good.t, nullptr, p, post, e, nullptr);
    }
};

TEST_F(CApiInvalid, SameMessageAsCpp) {
    const std::vector<float> before = dst.f32;
    convkit_event ev = reinterpret_cast<convkit_event>(&ev);
    EXPECT_EQ(convkit_convolution_forward(&dst.t, &src.t, &wei.t, nullptr, nullptr, nullptr, nullptr, &ev),
              CONVKIT_INVALID_ARGUMENT);
    const std::string want = cpp_error([&] { convolution_forward(view(dst.t), view(src.t), view(wei.t), TensorView(), ConvParams()); });
    EXPECT_EQ(convkit_last_error(), want);
    EXPECT_NE(want.find("convolution_forward: weights has 3 input channels per group but src has 4"), std::string::npos)
        << want;
    EXPECT_EQ(ev, nullptr);
    EXPECT_EQ(dst.f32, before);  // nothing written

    // Every direction: a mismatch the C++ validation names.
    Buf dsrc = src.like(64);
    EXPECT_EQ(convkit_convolution_backward_data(&dsrc.t, &dst.t, &wei.t, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] { convolution_backward_data(view(dsrc.t), view(dst.t), view(wei.t), ConvParams()); }));
    Buf dw = wei.like(65);
    EXPECT_EQ(convkit_convolution_backward_weights(&dw.t, nullptr, &dst.t, &src.t, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  convolution_backward_weights(view(dw.t), TensorView(), view(dst.t), view(src.t), ConvParams());
              }));
    // Transposed: weights [IC, OC/g, k]: IC must be src's 5 channels.
    EXPECT_EQ(convkit_conv_transpose_forward(&src.t, &dst.t, &wei.t, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  conv_transpose_forward(view(src.t), view(dst.t), view(wei.t), TensorView(), ConvTransposeParams());
              }));
    EXPECT_EQ(convkit_conv_transpose_backward_data(&dst.t, &src.t, &wei.t, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  conv_transpose_backward_data(view(dst.t), view(src.t), view(wei.t), ConvTransposeParams());
              }));
    EXPECT_EQ(convkit_conv_transpose_backward_weights(&dw.t, nullptr, &src.t, &dst.t, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  conv_transpose_backward_weights(view(dw.t), TensorView(), view(src.t), view(dst.t), ConvTransposeParams());
              }));

    // Rank 0 is C++'s undefined tensor; groups 0 (a zeroed struct) is C++'s message too.
    convkit_tensor empty{};
    EXPECT_EQ(convkit_convolution_forward(&dst.t, &empty, &good.t, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] { convolution_forward(view(dst.t), TensorView(), view(good.t), TensorView(), ConvParams()); }));
    convkit_conv_params zero{};
    EXPECT_EQ(fwd(nullptr, nullptr, &zero), CONVKIT_INVALID_ARGUMENT);
    ConvParams g0;
    g0.groups = 0;
    EXPECT_EQ(convkit_last_error(), cpp_error([&] { convolution_forward(view(dst.t), view(src.t), view(good.t), TensorView(), g0); }));
    EXPECT_NE(std::string(convkit_last_error()).find("groups"), std::string::npos) << convkit_last_error();
    // 17 post-ops: C++'s limit.
    std::vector<convkit_post_op> many(17);
    for (auto& op : many) op.kind = CONVKIT_POST_OP_ELTWISE;
    convkit_post_ops lots = {many.data(), 17};
    EXPECT_EQ(fwd(&lots), CONVKIT_INVALID_ARGUMENT);
    PostOps cpp_lots;
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  for (int i = 0; i < 17; ++i) cpp_lots.eltwise(EltwiseAlg::relu);
              }));

    // A successful call clears the message.
    ASSERT_EQ(fwd(), CONVKIT_SUCCESS) << convkit_last_error();
    EXPECT_STREQ(convkit_last_error(), "");
}

TEST_F(CApiInvalid, WhatOnlyCCanGetWrong) {
    EXPECT_EQ(convkit_convolution_forward(nullptr, &src.t, &good.t, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: dst is NULL");
    EXPECT_EQ(convkit_convolution_backward_data(nullptr, &dst.t, &good.t, nullptr, nullptr, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_backward_data: diff_src is NULL");
    EXPECT_EQ(convkit_convolution_backward_weights(nullptr, nullptr, &dst.t, &src.t, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_backward_weights: diff_weights is NULL");
    EXPECT_EQ(convkit_conv_transpose_forward(&src.t, nullptr, &good.t, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_conv_transpose_forward: src is NULL");
    EXPECT_EQ(convkit_conv_transpose_backward_data(&dst.t, &src.t, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_conv_transpose_backward_data: weights is NULL");
    EXPECT_EQ(convkit_conv_transpose_backward_weights(&good.t, nullptr, nullptr, &dst.t, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_conv_transpose_backward_weights: diff_dst is NULL");
    EXPECT_EQ(convkit_prepack_weights(nullptr, &src.t, nullptr, nullptr, nullptr, nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_prepack_weights: packed is NULL");

    convkit_tensor bad = src.t;
    bad.rank = 6;
    EXPECT_EQ(convkit_convolution_forward(&dst.t, &bad, &good.t, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_convolution_forward: src.rank is 6 (expected 0 for no tensor, or 1 to 5)");
    bad = src.t;
    bad.dtype = static_cast<convkit_dtype>(4);
    EXPECT_EQ(convkit_convolution_forward(&dst.t, &bad, &good.t, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: src.dtype is 4 (expected CONVKIT_F32, CONVKIT_F64, "
                                       "CONVKIT_F16 or CONVKIT_BF16)");
    bad = dst.t;
    bad.device.type = static_cast<convkit_device_type>(3);
    EXPECT_EQ(convkit_convolution_forward(&bad, &src.t, &good.t, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: dst.device.type is 3 (expected CONVKIT_DEVICE_CPU "
                                       "or CONVKIT_DEVICE_CUDA)");

    convkit_conv_params p;
    convkit_conv_params_init(&p);
    p.dilation.count = -1;
    EXPECT_EQ(fwd(nullptr, nullptr, &p), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: params.dilation.count is -1 (expected 0 to 3)");
    convkit_conv_transpose_params tp;
    convkit_conv_transpose_params_init(&tp);
    tp.output_padding.count = 5;
    EXPECT_EQ(convkit_conv_transpose_forward(&src.t, &dst.t, &good.t, nullptr, &tp, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_conv_transpose_forward: params.output_padding.count is 5 (expected 0 to 3)");

    convkit_post_op op = {};
    convkit_post_ops post = {&op, -1};
    EXPECT_EQ(fwd(&post), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: post_ops.count is -1 (expected >= 0)");
    post = {nullptr, 1};
    EXPECT_EQ(fwd(&post), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: post_ops.ops is NULL but post_ops.count is 1");
    post = {&op, 1};
    op.kind = static_cast<convkit_post_op_kind>(3);
    EXPECT_EQ(fwd(&post), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_convolution_forward: post_ops.ops[0].kind is 3 (expected CONVKIT_POST_OP_ELTWISE, _SUM or _BINARY)");
    op.kind = CONVKIT_POST_OP_ELTWISE;
    op.eltwise = static_cast<convkit_eltwise_alg>(16);
    EXPECT_EQ(fwd(&post), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: post_ops.ops[0].eltwise is 16 (expected "
                                       "CONVKIT_ELTWISE_RELU to CONVKIT_ELTWISE_LOG)");
    op.kind = CONVKIT_POST_OP_BINARY;
    op.binary = static_cast<convkit_binary_alg>(6);
    EXPECT_EQ(fwd(&post), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: post_ops.ops[0].binary is 6 (expected "
                                       "CONVKIT_BINARY_ADD to CONVKIT_BINARY_MIN)");
    op.binary = CONVKIT_BINARY_ADD;
    op.operand = src.t;
    op.operand.dtype = static_cast<convkit_dtype>(5);
    EXPECT_EQ(fwd(&post), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: post_ops.ops[0].operand.dtype is 5 (expected "
                                       "CONVKIT_F32, CONVKIT_F64, CONVKIT_F16 or CONVKIT_BF16)");
    // A binary operand that does not broadcast: C++'s message.
    op.operand = src.t;
    EXPECT_EQ(fwd(&post), CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  convolution_forward(view(dst.t), view(src.t), view(good.t), TensorView(), ConvParams(),
                                      PostOps().binary(BinaryAlg::add, view(src.t)));
              }));

    convkit_exec e{};
    e.options.engine = static_cast<convkit_engine>(8);
    EXPECT_EQ(fwd(nullptr, &e), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_convolution_forward: exec.options.engine is 8 (expected CONVKIT_ENGINE_AUTO, _REF, _CPU or _CUDA)");
    e.options.engine = CONVKIT_ENGINE_AUTO;
    e.options.deterministic = static_cast<convkit_determinism>(3);
    EXPECT_EQ(fwd(nullptr, &e), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_convolution_forward: exec.options.deterministic is 3 (expected "
                                       "CONVKIT_DETERMINISM_GLOBAL, _OFF or _ON)");
    convkit_options o = {CONVKIT_ENGINE_AUTO, static_cast<convkit_determinism>(-1)};
    convkit_packed_weights pw = nullptr;
    EXPECT_EQ(convkit_prepack_weights(&good.t, &src.t, nullptr, nullptr, &o, &pw), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convkit_prepack_weights: options.deterministic is -1 (expected "
                                       "CONVKIT_DETERMINISM_GLOBAL, _OFF or _ON)");
    // Determinism on and off both run.
    e.options.deterministic = CONVKIT_DETERMINISM_ON;
    EXPECT_EQ(fwd(nullptr, &e), CONVKIT_SUCCESS) << convkit_last_error();
    e.options.deterministic = CONVKIT_DETERMINISM_OFF;
    EXPECT_EQ(fwd(nullptr, &e), CONVKIT_SUCCESS) << convkit_last_error();
}

TEST_F(CApiInvalid, MessagesAreThreadLocal) {
    ASSERT_EQ(fwd(), CONVKIT_SUCCESS);
    std::string other;
    std::thread t([&] {
        convkit_set_num_threads(-3);
        other = convkit_last_error();
    });
    t.join();
    EXPECT_EQ(other, "set_num_threads: n must be >= 1, got -3");
    EXPECT_STREQ(convkit_last_error(), "");  // this thread's last call succeeded
}

// ---- Unsupported, and CUDA tensors without a device ----

// A build without CUDA refuses the cuda engine as unsupported. A build with it, on a machine
// without a GPU, says the device does not exist. (Unsupported from inside a backend: below,
// ExceptionsFromEveryLayerBecomeStatuses.)
TEST_F(CApiInvalid, UnsupportedOrNoDevice) {
#ifdef CONVKIT_WITH_CUDA
    if (cuda_device_visible()) GTEST_SKIP() << "a CUDA device is visible";
    std::vector<float> a(144), b(180), c(80);
    const int64_t s[] = {1, 4, 6, 6}, w[] = {5, 4, 3, 3}, d[] = {1, 5, 4, 4};
    const convkit_device gpu = {CONVKIT_DEVICE_CUDA, 0};
    convkit_tensor ts, tw, td;
    ASSERT_EQ(convkit_tensor_init(&ts, a.data(), CONVKIT_F32, 4, s, CONVKIT_CHANNELS_FIRST, gpu), CONVKIT_SUCCESS);
    ASSERT_EQ(convkit_tensor_init(&tw, b.data(), CONVKIT_F32, 4, w, CONVKIT_CHANNELS_FIRST, gpu), CONVKIT_SUCCESS);
    ASSERT_EQ(convkit_tensor_init(&td, c.data(), CONVKIT_F32, 4, d, CONVKIT_CHANNELS_FIRST, gpu), CONVKIT_SUCCESS);
    EXPECT_EQ(convkit_convolution_forward(&td, &ts, &tw, nullptr, nullptr, nullptr, nullptr, nullptr),
              CONVKIT_INVALID_ARGUMENT);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  convolution_forward(TensorView(c.data(), DType::f32, {1, 5, 4, 4}, Device::cuda(0)),
                                      TensorView(a.data(), DType::f32, {1, 4, 6, 6}, Device::cuda(0)),
                                      TensorView(b.data(), DType::f32, {5, 4, 3, 3}, Device::cuda(0)), TensorView(),
                                      ConvParams());
              }));
    EXPECT_NE(std::string(convkit_last_error()).find("device cuda:0 does not exist (0 CUDA device(s) visible)"),
              std::string::npos)
        << convkit_last_error();
    // The cuda engine for host tensors.
    convkit_exec e = exec_on(CONVKIT_ENGINE_CUDA);
    EXPECT_EQ(fwd(nullptr, &e), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "convolution_forward: engine 'cuda' does not run tensors on cpu");
#else
    convkit_exec e = exec_on(CONVKIT_ENGINE_CUDA);
    ConvOptions cuda;
    cuda.engine = Engine::cuda;
    EXPECT_EQ(fwd(nullptr, &e), CONVKIT_UNSUPPORTED);
    EXPECT_EQ(convkit_last_error(), cpp_error([&] {
                  convolution_forward(view(dst.t), view(src.t), view(good.t), TensorView(), ConvParams(), PostOps(),
                                      Stream(), {}, cuda);
              }));
    // The C++ Error's whole message: the line and the command that runs into the same refusal.
    EXPECT_STREQ(convkit_last_error(),
                 "convolution_forward: engine 'cuda' is not compiled into this build of convkit\n"
                 "reproduce: convkit bench --engine=cuda --dir=FWD_D --dt=f32 --tag=nchw --mode=corr "
                 "mb1ic4ih6iw6oc5oh4ow4kh3kw3sh1sw1ph0pw0dh0dw0");
#endif
}

// ---- Out of memory, backend errors and foreign exceptions, from every layer below ----

// A backward-weights call over an empty batch (mb 0): the core zero-fills diff_weights.
struct EmptyBatch {
    Buf dy{{0, 5, 4, 4}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 85};
    Buf src{{0, 4, 6, 6}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 86};
    Buf dw{{5, 4, 3, 3}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 87};
    convkit_status run(convkit_event* done) {
        return convkit_convolution_backward_weights(&dw.t, nullptr, &dy.t, &src.t, nullptr, nullptr, done);
    }
};

// A C allocator that fails after `budget` successful allocations.
struct FailingC {
    int budget = 0;
    int calls = 0;
    static void* allocate(void* user, size_t bytes, convkit_device, void*) {
        auto* self = static_cast<FailingC*>(user);
        ++self->calls;
        if (self->budget-- <= 0) return nullptr;
        return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    }
    static void deallocate(void*, void* ptr, size_t, convkit_device, void*) { std::free(ptr); }
};

// Restores the default allocators whatever a test does.
struct DefaultAllocatorsAfter {
    ~DefaultAllocatorsAfter() {
        convkit_set_allocator(CONVKIT_DEVICE_CPU, nullptr);
    }
};

TEST_F(CApiInvalid, OutOfMemoryThroughAFailingAllocator) {
    DefaultAllocatorsAfter restore;
    FailingC failing;
    convkit_allocator a = {&FailingC::allocate, &FailingC::deallocate, &failing};
    ASSERT_EQ(convkit_set_allocator(CONVKIT_DEVICE_CPU, &a), CONVKIT_SUCCESS);
    // The weight gradient of an empty batch is zeros, written through a temporary the core takes
    // from the allocator, whatever the engine.
    EmptyBatch empty;
    const std::vector<float> before = empty.dw.f32;
    convkit_event ev = reinterpret_cast<convkit_event>(&ev);
    EXPECT_EQ(empty.run(&ev), CONVKIT_OUT_OF_MEMORY);
    EXPECT_GE(failing.calls, 1);
    EXPECT_EQ(ev, nullptr);
    EXPECT_EQ(empty.dw.f32, before);
    EXPECT_STREQ(convkit_last_error(),
                 "the allocator set with convkit_set_allocator returned NULL for 720 bytes on cpu");
    // With memory to spare the same call runs, through that allocator.
    failing.budget = 100;
    failing.calls = 0;
    EXPECT_EQ(empty.run(nullptr), CONVKIT_SUCCESS) << convkit_last_error();
    EXPECT_GE(failing.calls, 1);
    EXPECT_EQ(empty.dw.f32, std::vector<float>(180, 0.0f));

    a.deallocate = nullptr;
    EXPECT_EQ(convkit_set_allocator(CONVKIT_DEVICE_CPU, &a), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_set_allocator: allocator->deallocate is NULL (pass a NULL allocator to restore the default)");
    EXPECT_EQ(convkit_set_allocator(static_cast<convkit_device_type>(2), nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(),
                 "convkit_set_allocator: type is 2 (expected CONVKIT_DEVICE_CPU or CONVKIT_DEVICE_CUDA)");
    // Back to the default: the call no longer reaches the failing allocator.
    ASSERT_EQ(convkit_set_allocator(CONVKIT_DEVICE_CPU, nullptr), CONVKIT_SUCCESS);
    failing.budget = 0;
    failing.calls = 0;
    EXPECT_EQ(empty.run(nullptr), CONVKIT_SUCCESS) << convkit_last_error();
    EXPECT_EQ(failing.calls, 0);
}

TEST_F(CApiInvalid, UnalignedAllocatorIsRefused) {
    DefaultAllocatorsAfter restore;
    struct Unaligned {
        static void* allocate(void*, size_t bytes, convkit_device, void*) {
            return static_cast<char*>(std::aligned_alloc(64, (bytes + 127) / 64 * 64)) + 8;
        }
        static void deallocate(void*, void* ptr, size_t, convkit_device, void*) { std::free(static_cast<char*>(ptr) - 8); }
    };
    convkit_allocator a = {&Unaligned::allocate, &Unaligned::deallocate, nullptr};
    ASSERT_EQ(convkit_set_allocator(CONVKIT_DEVICE_CPU, &a), CONVKIT_SUCCESS);
    EXPECT_EQ(EmptyBatch().run(nullptr), CONVKIT_INVALID_ARGUMENT);
    EXPECT_STREQ(convkit_last_error(), "the allocator set with convkit_set_allocator returned memory that is not "
                                       "64-byte aligned for 720 bytes on cpu");
}

// A C++ allocator (convkit::set_allocator) that throws what it is told to: the way to make an
// exception start inside the core, the cpu backend's run or its prepacking.
class Throwing final : public Allocator {
public:
    enum class What { nothing, backend_error, unsupported, bad_alloc, runtime_error, integer };
    What what = What::nothing;
    int calls = 0;
    void* allocate(std::size_t bytes, Device, void*) override {
        ++calls;
        switch (what) {
            case What::nothing: break;
            case What::backend_error: throw Error(ErrorKind::backend, "simulated backend failure");
            case What::unsupported: throw Error(ErrorKind::unsupported, "simulated unsupported problem");
            case What::bad_alloc: throw std::bad_alloc();
            case What::runtime_error: throw std::runtime_error("simulated foreign exception");
            case What::integer: throw 42;
        }
        return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    }
    void deallocate(void* ptr, std::size_t, Device, void*) override { std::free(ptr); }
};

struct Layer {
    const char* name;
    std::function<convkit_status()> call;
};

TEST_F(CApiInvalid, ExceptionsFromEveryLayerBecomeStatuses) {
    DefaultAllocatorsAfter restore;
    auto alloc = std::make_shared<Throwing>();
    set_allocator(DeviceType::cpu, alloc);

    EmptyBatch empty;
    // Every other column of a wider buffer: the cpu engine reads dense tensors only, so the core
    // copies it into a temporary first.
    Buf wide({1, 4, 6, 12}, CONVKIT_CHANNELS_FIRST, CONVKIT_F32, 90);
    convkit_tensor strided = wide.t;
    strided.sizes[3] = 6;
    strided.strides[3] = 2;
    // f64 on the cpu engine takes a workspace from the allocator on every call.
    Buf s64({1, 4, 6, 6}, CONVKIT_CHANNELS_FIRST, CONVKIT_F64, 91), w64({5, 4, 3, 3}, CONVKIT_CHANNELS_FIRST, CONVKIT_F64, 92);
    Buf d64({1, 5, 4, 4}, CONVKIT_CHANNELS_FIRST, CONVKIT_F64, 93);
    Buf s_cl({1, 8, 6, 6}, CONVKIT_CHANNELS_LAST, CONVKIT_F32, 94), w_cl({16, 8, 3, 3}, CONVKIT_CHANNELS_LAST, CONVKIT_F32, 95);

    std::vector<Layer> layers = {
        {"core: zeros for the weight gradient of an empty batch", [&] { return empty.run(nullptr); }},
    };
    if (cpu_built()) {
        layers.push_back({"core: a dense temporary for a strided src (cpu engine)", [&] {
                              convkit_exec c = exec_on(CONVKIT_ENGINE_CPU);
                              return convkit_convolution_forward(&dst.t, &strided, &good.t, nullptr, nullptr,
                                                                 nullptr, &c, nullptr);
                          }});
        layers.push_back({"cpu backend: an f64 workspace while running", [&] {
                              convkit_exec c = exec_on(CONVKIT_ENGINE_CPU);
                              return convkit_convolution_forward(&d64.t, &s64.t, &w64.t, nullptr, nullptr, nullptr,
                                                                 &c, nullptr);
                          }});
        layers.push_back({"cpu backend: packed weights' memory while prepacking", [&] {
                              convkit_options o = {CONVKIT_ENGINE_CPU, CONVKIT_DETERMINISM_GLOBAL};
                              convkit_packed_weights pw = nullptr;
                              convkit_status st = convkit_prepack_weights(&w_cl.t, &s_cl.t, nullptr, nullptr, &o, &pw);
                              if (pw) convkit_packed_weights_destroy(pw);  // (a call: it clears the message)
                              return st;
                          }});
    }
    struct Expect {
        Throwing::What what;
        convkit_status status;
        const char* message_part;
    };
    const Expect cases[] = {
        {Throwing::What::backend_error, CONVKIT_BACKEND_ERROR, "simulated backend failure"},
        {Throwing::What::unsupported, CONVKIT_UNSUPPORTED, "simulated unsupported problem"},
        {Throwing::What::bad_alloc, CONVKIT_OUT_OF_MEMORY, "out of host memory"},
        {Throwing::What::runtime_error, CONVKIT_INTERNAL_ERROR, "unexpected exception: simulated foreign exception"},
        {Throwing::What::integer, CONVKIT_INTERNAL_ERROR, "unexpected exception that is not a std::exception"},
    };
    for (const Layer& layer : layers) {
        for (const Expect& c : cases) {
            alloc->what = c.what;
            alloc->calls = 0;
            const convkit_status st = layer.call();
            EXPECT_GE(alloc->calls, 1) << layer.name << ": the allocator was not reached";
            EXPECT_EQ(st, c.status) << layer.name << ": " << convkit_last_error();
            EXPECT_NE(std::string(convkit_last_error()).find(c.message_part), std::string::npos)
                << layer.name << ": " << convkit_last_error();
        }
        alloc->what = Throwing::What::nothing;
        EXPECT_EQ(layer.call(), CONVKIT_SUCCESS) << layer.name << ": " << convkit_last_error();
    }
}

}  // namespace
