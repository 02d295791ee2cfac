// Several GPUs of one node. Every entry point honours the tensors' cuda:N and leaves the caller's
// current device as it found it; a call that mixes devices (tensors, or tensors and stream) is
// rejected with both devices named; the same problems run concurrently on every device, one host
// thread per device, match cuda:0's results bit for bit in deterministic mode.
//
// What needs two GPUs skips below two. The rejection tests run everywhere, even without a GPU:
// validation throws before any memory is touched, so TensorViews labelled cuda:N may point at host
// buffers (whose sentinels then prove that nothing was written).
#include <gtest/gtest.h>

#ifdef CONVKIT_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "convkit/convkit.hpp"

using namespace convkit;

namespace {

int device_count() {
#ifdef CONVKIT_WITH_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

int current_device() {
#ifdef CONVKIT_WITH_CUDA
    int d = -1;
    EXPECT_EQ(cudaGetDevice(&d), cudaSuccess);
    return d;
#else
    return -1;
#endif
}

void set_device(int d) {
#ifdef CONVKIT_WITH_CUDA
    ASSERT_EQ(cudaSetDevice(d), cudaSuccess);
#else
    (void)d;
#endif
}

std::string device_name(int d) {
#ifdef CONVKIT_WITH_CUDA
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) return "?";
    return p.name;
#else
    (void)d;
    return "";
#endif
}

void expect_error(const std::function<void()>& f, ErrorKind kind, const std::vector<std::string>& parts,
                  const std::string& what) {
    try {
        f();
        ADD_FAILURE() << what << ": no error thrown; expected one containing '" << parts.front() << "'";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), kind) << what << ": " << e.what();
        for (const auto& p : parts)
            EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << what << ": message '" << e.what()
                                                                         << "' lacks '" << p << "'";
    }
}

// ---------------------------------------------------------------------------------------------
// Problems, described once and run on any device.

enum class Dir { fwd, bwd_d, bwd_w };

struct Case {
    std::string name;
    Dir dir = Dir::fwd;
    DType dt = DType::f32;
    Layout layout = Layout::channels_first;
    Dims src, wei;
    ConvParams params;
    bool bias = false, relu = false;

    Case& named(std::string n) { name = std::move(n); return *this; }
    Case& direction(Dir d) { dir = d; return *this; }
    Case& dtype(DType d) { dt = d; return *this; }
    Case& nhwc() { layout = Layout::channels_last; return *this; }
    Case& shapes(Dims s, Dims w) { src = s; wei = w; return *this; }
    Case& stride(int64_t s) { params.stride = {s}; return *this; }
    Case& pad(int64_t p) { params.pad({p}); return *this; }
    Case& pad_lr(int64_t l, int64_t r) { params.padding_l = {l}; params.padding_r = {r}; return *this; }
    Case& dilation(int64_t d) { params.dilation = {d}; return *this; }
    Case& groups(int64_t g) { params.groups = g; return *this; }
    Case& with_bias() { bias = true; return *this; }
    Case& with_relu() { relu = true; return *this; }
    Dims dst() const { return output_shape(src, wei, params); }
};

std::vector<Case> cases() {
    return {
        Case().named("fwd f32 nchw 3x3 bias+relu").shapes({4, 16, 14, 14}, {32, 16, 3, 3}).pad(1).with_bias().with_relu(),
        Case().named("fwd bf16 nhwc 3x3/2 bias+relu").dtype(DType::bf16).nhwc().shapes({8, 32, 28, 28}, {64, 32, 3, 3})
            .stride(2).pad(1).with_bias().with_relu(),
        Case().named("fwd f16 nhwc g4 bias").dtype(DType::f16).nhwc().shapes({4, 32, 16, 16}, {32, 8, 3, 3}).groups(4)
            .pad(1).with_bias(),
        Case().named("fwd f32 ndhwc 3d bias+relu").nhwc().shapes({2, 8, 8, 8, 8}, {16, 8, 3, 3, 3}).pad(1).with_bias()
            .with_relu(),
        Case().named("fwd f16 ncw 1d dilation 2").dtype(DType::f16).shapes({4, 16, 64}, {32, 16, 5}).pad(4).dilation(2),
        Case().named("fwd f32 nchw 2x2/2 asymmetric padding").shapes({2, 8, 15, 15}, {16, 8, 2, 2}).stride(2).pad_lr(0, 1)
            .with_bias(),
        Case().named("bwd_d f32 nhwc 3x3").direction(Dir::bwd_d).nhwc().shapes({4, 32, 16, 16}, {64, 32, 3, 3}).pad(1),
        Case().named("bwd_d bf16 nchw 3x3/2").direction(Dir::bwd_d).dtype(DType::bf16).shapes({8, 16, 28, 28}, {32, 16, 3, 3})
            .stride(2).pad(1),
        Case().named("bwd_w f32 nhwc 3x3 +bias").direction(Dir::bwd_w).nhwc().shapes({4, 32, 16, 16}, {64, 32, 3, 3}).pad(1)
            .with_bias(),
        Case().named("bwd_w bf16 nhwc 1x1 +bias").direction(Dir::bwd_w).dtype(DType::bf16).nhwc()
            .shapes({8, 64, 14, 14}, {64, 64, 1, 1}).with_bias(),
    };
}

// Inputs as host f32 (channels-first); every device gets the same values converted to the case's
// dtype and layout.
struct Inputs {
    Tensor src, wei, dst, bias;
};

void fill(const Tensor& t, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < t.numel(); ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        t.ptr<float>()[i] = static_cast<float>(static_cast<int64_t>(s >> 40) % 2001 - 1000) / 1000.f;
    }
}

Inputs make_inputs(const Case& c, uint64_t seed) {
    Inputs in{Tensor(DType::f32, c.src), Tensor(DType::f32, c.wei), Tensor(DType::f32, c.dst()),
              Tensor(DType::f32, {c.wei[0]})};
    fill(in.src, seed);
    fill(in.wei, seed + 1);
    fill(in.dst, seed + 2);
    fill(in.bias, seed + 3);
    return in;
}

Tensor to_device(const Tensor& host, DType dt, Layout layout, int device) {
    Tensor t(dt, host.sizes(), host.sizes().rank() == 1 ? Layout::channels_first : layout, Device::cuda(device));
    copy(t, host);
    return t;
}

std::vector<uint8_t> bytes_of(const Tensor& device_tensor, Layout layout) {
    const TensorView& v = device_tensor.view();
    Tensor h(v.dtype, v.sizes, v.rank() == 1 ? Layout::channels_first : layout);
    copy(h, v);
    const auto* p = static_cast<const uint8_t*>(h.data());
    return std::vector<uint8_t>(p, p + h.nbytes());
}

// Runs the case on `device` through `stream` (a default Stream() = the device's default stream)
// and returns the output bytes (diff_weights then diff_bias for bwd_w).
std::vector<uint8_t> run_case(const Case& c, const Inputs& in, int device, const Stream& stream) {
    const ConvOptions opts{Engine::cuda, true};
    Tensor src = to_device(in.src, c.dt, c.layout, device);
    Tensor wei = to_device(in.wei, c.dt, c.layout, device);
    Tensor dst = to_device(in.dst, c.dt, c.layout, device);
    Tensor bias = to_device(in.bias, c.dt, c.layout, device);
    std::vector<uint8_t> out;
    if (c.dir == Dir::fwd) {
        PostOps po;
        if (c.relu) po.eltwise(EltwiseAlg::relu);
        convolution_forward(dst, src, wei, c.bias ? bias.view() : TensorView(), c.params, po, stream, {}, opts).wait();
        out = bytes_of(dst, c.layout);
    } else if (c.dir == Dir::bwd_d) {
        convolution_backward_data(src, dst, wei, c.params, stream, {}, opts).wait();
        out = bytes_of(src, c.layout);
    } else {
        convolution_backward_weights(wei, c.bias ? bias.view() : TensorView(), dst, src, c.params, stream, {}, opts).wait();
        out = bytes_of(wei, c.layout);
        if (c.bias) {
            auto b = bytes_of(bias, c.layout);
            out.insert(out.end(), b.begin(), b.end());
        }
    }
    return out;
}

std::string first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    if (a.size() != b.size()) return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i]) return "first differing byte at offset " + std::to_string(i);
    return "";
}

// ---------------------------------------------------------------------------------------------

TEST(MultiGpu, ConcurrentRunsMatchDevice0Bitwise) {
    const int n = device_count();
    if (n < 2) GTEST_SKIP() << "needs 2 or more CUDA devices, " << n << " visible";
    for (int d = 1; d < n; ++d)
        if (device_name(d) != device_name(0))
            GTEST_SKIP() << "cuda:" << d << " is a " << device_name(d) << " but cuda:0 a " << device_name(0)
                         << ": bitwise equality across devices holds for one GPU model only";

    const std::vector<Case> cs = cases();
    std::vector<Inputs> inputs;
    std::vector<std::vector<uint8_t>> ref(cs.size());
    std::vector<bool> runs(cs.size(), true);
    for (std::size_t i = 0; i < cs.size(); ++i) {
        inputs.push_back(make_inputs(cs[i], 100 + i));
        try {
            ref[i] = run_case(cs[i], inputs[i], 0, Stream());
        } catch (const Error& e) {
            // A problem the backend does not run says nothing about device handling; other tests
            // own that failure.
            if (e.kind() != ErrorKind::unsupported) throw;
            runs[i] = false;
            std::printf("[  NOTE    ] %s: not run by the cuda engine (%s)\n", cs[i].name.c_str(), e.what());
        }
    }

    std::mutex mu;
    std::vector<std::string> failures;
    auto fail = [&](const std::string& f) {
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back(f);
    };
    const int iterations = 3;
    std::vector<std::thread> threads;
    for (int d = 0; d < n; ++d)
        threads.emplace_back([&, d] {
            try {
                // The calling thread sits on another device than the tensors': convkit must switch
                // for the call and switch back.
                const int caller = (d + 1) % n;
                set_device(caller);
                const Stream own = Stream::cuda(d);
                for (int it = 0; it < iterations; ++it)
                    for (std::size_t i = 0; i < cs.size(); ++i) {
                        if (!runs[i]) continue;
                        for (int which = 0; which < 2; ++which) {
                            const std::string where = cs[i].name + " on cuda:" + std::to_string(d) + ", iteration " +
                                                      std::to_string(it) + (which ? ", own stream" : ", default stream");
                            const auto out = run_case(cs[i], inputs[i], d, which ? own : Stream());
                            const std::string diff = first_difference(out, ref[i]);
                            if (!diff.empty()) fail(where + ": differs from cuda:0 (" + diff + ")");
                            const int now = current_device();
                            if (now != caller)
                                fail(where + ": the caller's current device changed from cuda:" + std::to_string(caller) +
                                     " to cuda:" + std::to_string(now));
                        }
                    }
            } catch (const std::exception& e) {
                fail("cuda:" + std::to_string(d) + ": " + e.what());
            }
        });
    for (auto& t : threads) t.join();
    for (const auto& f : failures) ADD_FAILURE() << f;
}

// Every kind of call that touches a device, made from every device onto every device (with one
// GPU, onto the same one), and from a thread that never selected a device.
TEST(MultiGpu, CallerDevicePreserved) {
    const int n = device_count();
    if (n < 1) GTEST_SKIP() << "needs a CUDA device, none visible";
    const Case fwd = cases()[1];  // bf16 nhwc, bias + relu
    const Inputs in = make_inputs(fwd, 7);
    auto exercise = [&](int caller, int target) {
        const std::string ctx = "caller on cuda:" + std::to_string(caller) + ", tensors on cuda:" + std::to_string(target);
        auto check = [&](const char* op) {
            EXPECT_EQ(current_device(), caller) << "after " << op << " (" << ctx << ")";
        };
        {
            Tensor t(DType::f32, {2, 3, 4, 4}, Layout::channels_first, Device::cuda(target));
            check("Tensor allocation");
            Tensor h0(DType::f32, {2, 3, 4, 4});
            fill(h0, 1);
            copy(t, h0);
            check("copy to the device");
            Tensor h(DType::f32, {2, 3, 4, 4});
            copy(h, t);
            check("copy from the device");
        }
        check("Tensor release");
        Stream s = Stream::cuda(target);
        check("Stream::cuda");
        for (int which = 0; which < 2; ++which) {
            const Stream st = which ? s : Stream();
            Tensor src = to_device(in.src, fwd.dt, fwd.layout, target);
            Tensor wei = to_device(in.wei, fwd.dt, fwd.layout, target);
            Tensor dst = to_device(in.dst, fwd.dt, fwd.layout, target);
            Tensor bias = to_device(in.bias, fwd.dt, fwd.layout, target);
            check("copies of the inputs");
            PostOps relu;
            relu.eltwise(EltwiseAlg::relu);
            Event e = convolution_forward(dst, src, wei, bias, fwd.params, relu, st, {}, {Engine::cuda, true});
            check("convolution_forward");
            convolution_backward_data(src, dst, wei, fwd.params, st, {e}, {Engine::cuda, true});
            check("convolution_backward_data");
            Event last = convolution_backward_weights(wei, bias, dst, src, fwd.params, st, {}, {Engine::cuda, true});
            check("convolution_backward_weights");
            Event rec = st.record();
            check("Stream::record");
            st.wait(last);
            check("Stream::wait");
            rec.wait();
            last.wait();
            check("Event::wait");
            (void)last.completed();
            st.synchronize();
            check("Stream::synchronize");
        }
    };
    for (int caller = 0; caller < n; ++caller)
        for (int target = 0; target < n; ++target) {
            set_device(caller);
            exercise(caller, target);
        }
    // A fresh thread is on device 0 without ever having said so.
    std::thread([&] { exercise(0, n - 1); }).join();
}

// Host buffers posing as device memory: validation must reject the call before touching them.
struct FakeDeviceTensors {
    std::vector<float> src = std::vector<float>(2 * 4 * 8 * 8, 1.f);
    std::vector<float> wei = std::vector<float>(6 * 4 * 3 * 3, 2.f);
    std::vector<float> dst = std::vector<float>(2 * 6 * 8 * 8, 7.f);
    std::vector<float> bias = std::vector<float>(6, 3.f);
    std::vector<float> operand = std::vector<float>(6, 4.f);
    ConvParams params;
    FakeDeviceTensors() { params.pad({1}); }
    TensorView src_on(Device d) { return TensorView(src.data(), DType::f32, {2, 4, 8, 8}, d); }
    TensorView wei_on(Device d) { return TensorView(wei.data(), DType::f32, {6, 4, 3, 3}, d); }
    TensorView dst_on(Device d) { return TensorView(dst.data(), DType::f32, {2, 6, 8, 8}, d); }
    TensorView bias_on(Device d) { return TensorView(bias.data(), DType::f32, {6}, d); }
    TensorView operand_on(Device d) { return TensorView(operand.data(), DType::f32, {1, 6, 1, 1}, d); }
    bool untouched() const {
        for (float v : src) if (v != 1.f) return false;
        for (float v : wei) if (v != 2.f) return false;
        for (float v : dst) if (v != 7.f) return false;
        for (float v : bias) if (v != 3.f) return false;
        for (float v : operand) if (v != 4.f) return false;
        return true;
    }
};

TEST(MultiGpu, MixedDevicesRejected) {
    const Device c0 = Device::cuda(0), c1 = Device::cuda(1), cpu = Device::cpu();
    FakeDeviceTensors t;
    const auto inv = ErrorKind::invalid_argument;
    expect_error([&] { convolution_forward(t.dst_on(c0), t.src_on(c0), t.wei_on(c1), {}, t.params); }, inv,
                 {"convolution_forward", "weights is on cuda:1 but src is on cuda:0"}, "forward, weights elsewhere");
    expect_error([&] { convolution_forward(t.dst_on(c1), t.src_on(c0), t.wei_on(c0), {}, t.params); }, inv,
                 {"dst is on cuda:1 but src is on cuda:0"}, "forward, dst elsewhere");
    expect_error([&] { convolution_forward(t.dst_on(c0), t.src_on(c0), t.wei_on(c0), t.bias_on(c1), t.params); }, inv,
                 {"bias is on cuda:1 but src is on cuda:0"}, "forward, bias elsewhere");
    expect_error(
        [&] {
            PostOps po;
            po.binary(BinaryAlg::add, t.operand_on(c1));
            convolution_forward(t.dst_on(c0), t.src_on(c0), t.wei_on(c0), {}, t.params, po);
        },
        inv, {"operand is on cuda:1 but dst is on cuda:0"}, "forward, binary post-op operand elsewhere");
    expect_error([&] { convolution_forward(t.dst_on(cpu), t.src_on(cpu), t.wei_on(c0), {}, t.params); }, inv,
                 {"weights is on cuda:0 but src is on cpu"}, "forward, host src with device weights");
    expect_error([&] { convolution_backward_data(t.src_on(c0), t.dst_on(c1), t.wei_on(c0), t.params); }, inv,
                 {"convolution_backward_data", "diff_dst is on cuda:1 but diff_src is on cuda:0"},
                 "backward-data, diff_dst elsewhere");
    expect_error([&] { convolution_backward_data(t.src_on(c1), t.dst_on(c1), t.wei_on(c0), t.params); }, inv,
                 {"weights is on cuda:0 but diff_src is on cuda:1"}, "backward-data, weights elsewhere");
    expect_error([&] { convolution_backward_weights(t.wei_on(c1), {}, t.dst_on(c0), t.src_on(c0), t.params); }, inv,
                 {"convolution_backward_weights", "diff_weights is on cuda:1 but src is on cuda:0"},
                 "backward-weights, diff_weights elsewhere");
    expect_error([&] { convolution_backward_weights(t.wei_on(c0), t.bias_on(c1), t.dst_on(c0), t.src_on(c0), t.params); },
                 inv, {"diff_bias is on cuda:1 but src is on cuda:0"}, "backward-weights, diff_bias elsewhere");
    EXPECT_TRUE(t.untouched()) << "a rejected call wrote to its tensors";
}

TEST(MultiGpu, StreamOfAnotherDeviceRejected) {
    const int n = device_count();
    if (n < 1) GTEST_SKIP() << "needs a CUDA device to create a stream, none visible";
    // With one GPU the tensors claim cuda:1 (host memory behind them): the check comes first.
    FakeDeviceTensors t;
    const Device other = Device::cuda(1);
    const Stream s0 = Stream::cuda(0);
    expect_error([&] { convolution_forward(t.dst_on(other), t.src_on(other), t.wei_on(other), {}, t.params, {}, s0); },
                 ErrorKind::invalid_argument, {"the stream is on cuda:0 but the tensors are on cuda:1"},
                 "forward on cuda:1 through a cuda:0 stream");
    expect_error([&] { convolution_backward_data(t.src_on(other), t.dst_on(other), t.wei_on(other), t.params, s0); },
                 ErrorKind::invalid_argument, {"the stream is on cuda:0 but the tensors are on cuda:1"},
                 "backward-data on cuda:1 through a cuda:0 stream");
    expect_error(
        [&] { convolution_backward_weights(t.wei_on(other), t.bias_on(other), t.dst_on(other), t.src_on(other), t.params, s0); },
        ErrorKind::invalid_argument, {"the stream is on cuda:0 but the tensors are on cuda:1"},
        "backward-weights on cuda:1 through a cuda:0 stream");
    expect_error([&] { convolution_forward(t.dst_on(Device::cpu()), t.src_on(Device::cpu()), t.wei_on(Device::cpu()), {},
                                           t.params, {}, s0); },
                 ErrorKind::invalid_argument, {"the stream is on cuda:0 but the tensors are on cpu"},
                 "forward on the host through a cuda:0 stream");
    EXPECT_TRUE(t.untouched()) << "a rejected call wrote to its tensors";
}

TEST(MultiGpu, DeviceThatDoesNotExistRejected) {
    const int n = device_count();
    FakeDeviceTensors t;
    const Device missing = Device::cuda(n);
    try {
        convolution_forward(t.dst_on(missing), t.src_on(missing), t.wei_on(missing), {}, t.params);
        ADD_FAILURE() << "a convolution on " << missing.str() << " with " << n << " device(s) visible did not throw";
    } catch (const Error& e) {
        const std::string msg = e.what();
#ifdef CONVKIT_WITH_CUDA
        EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << msg;
        EXPECT_NE(msg.find(missing.str()), std::string::npos) << msg;
        EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
#else
        EXPECT_EQ(e.kind(), ErrorKind::unsupported) << msg;
        EXPECT_NE(msg.find("no CUDA backend"), std::string::npos) << msg;
#endif
    }
    EXPECT_TRUE(t.untouched()) << "a rejected call wrote to its tensors";
}

}  // namespace
