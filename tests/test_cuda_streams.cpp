// One cached CUDA plan run from several host threads at once, each thread on its own convkit
// stream: plans are built once per problem and then shared, so concurrent calls of one problem must
// give every caller the single-threaded result, bit for bit (deterministic mode, TF32 off), and
// build no second plan. One case per plan kind that runs cuDNN (fused graph; convolution node with
// our epilogue, explicit padding or bias-gradient pass; widened 16-bit; phase-split backward-data)
// and the direct kernel; the single-threaded result is itself checked against the reference
// engine. Every test skips when no CUDA device is visible (CI). Built only with CUDA.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli_common.hpp"
#include "convkit/convkit.hpp"
#include "support/cuda_tolerance.hpp"
#include "cuda/cuda_api.hpp"
#include "support/cuda_device.hpp"

using namespace convkit;
using convkit::test::cuda::rel_err;
using convkit::test::cuda::tolerance;
using convkit::tools::from_host_f64;
using convkit::tools::random_values;
using convkit::tools::to_host_f64;

namespace {

using convkit::test::has_gpu;

constexpr int kThreads = 4;
constexpr int kIterations = 40;  // per thread, two calls in flight on its stream each

enum class Dir { fwd, bwd_d, bwd_w };

// The plan kind a case is meant to exercise (as cuda::last_plan() reports it).
enum class Kind { fused, conv, explicit_padding, direct, split, widened, gemm };

bool is_kind(Kind k, const cuda::PlanInfo& i) {
    const bool widened = i.engine_name.rfind("widened to f32", 0) == 0;
    switch (k) {
        case Kind::fused: return i.fused;
        case Kind::conv: return !i.fused && !i.direct && !i.split_dgrad && !widened && !i.gemm;
        case Kind::explicit_padding: return i.explicit_padding;
        case Kind::direct: return i.direct;
        case Kind::split: return i.split_dgrad;
        case Kind::widened: return widened;
        case Kind::gemm: return i.gemm;
    }
    return false;
}

struct Case {
    std::string name;
    Dir dir = Dir::fwd;
    DType dt = DType::f32;
    Layout layout = Layout::channels_first;
    Kind kind = Kind::conv;
    Dims src, wei;
    ConvParams params;
    bool bias = false, residual = false, relu = false;
    int64_t direct_max_macs = 0;  // the direct kernel only where a case asks for it
    int split_dgrad = 0;
    int f64_gemm = 0;  // cuDNN's f64 plans unless a case asks for the GEMM plan

    Case& named(std::string n, Kind k) { name = std::move(n); kind = k; return *this; }
    Case& direction(Dir d) { dir = d; return *this; }
    Case& dtype(DType d) { dt = d; return *this; }
    Case& nhwc() { layout = Layout::channels_last; return *this; }
    Case& shapes(Dims s, Dims w) { src = s; wei = w; return *this; }
    Case& stride(int64_t s) { params.stride = {s}; return *this; }
    Case& pad(int64_t p) { params.pad({p}); return *this; }
    Case& pad_lr(int64_t l, int64_t r) { params.padding_l = {l}; params.padding_r = {r}; return *this; }
    Case& with_bias() { bias = true; return *this; }
    Case& with_residual() { residual = true; return *this; }
    Case& with_relu() { relu = true; return *this; }
    Case& with_direct_kernel() { direct_max_macs = int64_t(1) << 20; return *this; }
    Case& with_split_dgrad() { split_dgrad = 1; return *this; }
    Case& with_gemm() { f64_gemm = 1; return *this; }
    Dims dst() const { return output_shape(src, wei, params); }
};

std::vector<Case> cases() {
    return {
        Case().named("fwd_bf16_nhwc_fused_bias_residual_relu", Kind::fused).dtype(DType::bf16).nhwc()
            .shapes({8, 32, 28, 28}, {64, 32, 3, 3}).pad(1).with_bias().with_residual().with_relu(),
        Case().named("fwd_f32_nchw_conv_then_epilogue", Kind::conv)
            .shapes({4, 16, 20, 20}, {32, 16, 3, 3}).pad(1).with_bias().with_residual().with_relu(),
        Case().named("fwd_f64_nchw_explicit_padding", Kind::explicit_padding).dtype(DType::f64)
            .shapes({2, 8, 16, 16}, {16, 8, 3, 3}).pad_lr(1, 0).with_bias().with_relu(),
        Case().named("fwd_f32_direct_kernel", Kind::direct)
            .shapes({1, 16, 8, 8}, {16, 16, 3, 3}).pad(1).with_bias().with_relu().with_direct_kernel(),
        Case().named("bwd_d_f32_nhwc_strided", Kind::conv).direction(Dir::bwd_d).nhwc()
            .shapes({8, 32, 28, 28}, {64, 32, 3, 3}).stride(2).pad(1),
        Case().named("bwd_d_f32_nchw_phase_split", Kind::split).direction(Dir::bwd_d)
            .shapes({4, 16, 14, 14}, {32, 16, 3, 3}).stride(2).pad(1).with_split_dgrad(),
        Case().named("bwd_w_f32_nchw_bias_grad", Kind::conv).direction(Dir::bwd_w)
            .shapes({8, 32, 14, 14}, {64, 32, 3, 3}).pad(1).with_bias(),
        Case().named("bwd_w_bf16_nhwc_widened", Kind::widened).direction(Dir::bwd_w).dtype(DType::bf16).nhwc()
            .shapes({4, 16, 12, 12}, {32, 16, 3, 3}).pad(1).with_bias(),
        Case().named("fwd_f64_nhwc_gemm", Kind::gemm).dtype(DType::f64).nhwc()
            .shapes({4, 16, 14, 14}, {32, 16, 3, 3}).pad(1).with_bias().with_residual().with_relu().with_gemm(),
        Case().named("bwd_d_f64_nchw_gemm", Kind::gemm).direction(Dir::bwd_d).dtype(DType::f64)
            .shapes({4, 16, 14, 14}, {32, 16, 3, 3}).stride(2).pad(1).with_gemm(),
        Case().named("bwd_w_f64_nchw_gemm_bias_grad", Kind::gemm).direction(Dir::bwd_w).dtype(DType::f64)
            .shapes({4, 16, 14, 14}, {32, 16, 3, 3}).pad(1).with_bias().with_gemm(),
    };
}


// Input values of a case, the same for the reference and every thread.
struct Values {
    std::vector<double> src, wei, dst, bias, residual;
};

Values values(const Case& c) {
    Values v;
    auto count = [](const Dims& d) {
        int64_t n = 1;
        for (int64_t s : d) n *= s;
        return n;
    };
    v.src = random_values(count(c.src), -1, 1, 31, c.dt);
    v.wei = random_values(count(c.wei), -1, 1, 32, c.dt);
    v.dst = random_values(count(c.dst()), -1, 1, 33, c.dt);
    v.bias = random_values(c.wei[0], -1, 1, 34, c.dt);
    v.residual = random_values(count(c.dst()), -1, 1, 35, c.dt);
    return v;
}

// The tensors of one caller on `dev`, filled from `v`.
struct Tensors {
    Tensor src, wei, dst, bias, residual;
    PostOps ops;

    Tensors(const Case& c, const Values& v, Device dev)
        : src(c.dt, c.src, c.layout, dev),
          wei(c.dt, c.wei, c.layout, dev),
          dst(c.dt, c.dst(), c.layout, dev),
          bias(c.dt, Dims{c.wei[0]}, Layout::channels_first, dev),
          residual(c.dt, c.dst(), c.layout, dev) {
        from_host_f64(src, v.src);
        from_host_f64(wei, v.wei);
        from_host_f64(dst, v.dst);
        from_host_f64(bias, v.bias);
        from_host_f64(residual, v.residual);
        if (c.residual) ops.binary(BinaryAlg::add, residual);
        if (c.relu) ops.eltwise(EltwiseAlg::relu);
    }

    Event run(const Case& c, Engine e, const Stream& s) const {
        const ConvOptions o{e, true};
        const TensorView b = c.bias ? bias.view() : TensorView();
        switch (c.dir) {
            case Dir::fwd: return convolution_forward(dst, src, wei, b, c.params, ops, s, {}, o);
            case Dir::bwd_d: return convolution_backward_data(src, dst, wei, c.params, s, {}, o);
            case Dir::bwd_w: return convolution_backward_weights(wei, b, dst, src, c.params, s, {}, o);
        }
        return Event();
    }

    // What the call writes: dst, diff_src, or diff_weights (and diff_bias).
    std::vector<const Tensor*> outputs(const Case& c) const {
        if (c.dir == Dir::fwd) return {&dst};
        if (c.dir == Dir::bwd_d) return {&src};
        if (c.bias) return {&wei, &bias};
        return {&wei};
    }

    std::vector<uint8_t> output_bytes(const Case& c) const {
        std::vector<uint8_t> out;
        for (const Tensor* t : outputs(c)) {
            Tensor h(t->dtype(), t->sizes(), t->view().layout());
            copy(h, *t);
            const auto* p = static_cast<const uint8_t*>(h.data());
            out.insert(out.end(), p, p + h.nbytes());
        }
        return out;
    }

    std::vector<double> output_values(const Case& c) const {
        std::vector<double> out;
        for (const Tensor* t : outputs(c)) {
            const std::vector<double> v = to_host_f64(*t);
            out.insert(out.end(), v.begin(), v.end());
        }
        return out;
    }

    // NaN bytes over the outputs, ordered on `s`: a call that wrote nothing cannot pass.
    void poison(const Case& c, const Stream& s) const {
        for (const Tensor* t : outputs(c))
            ASSERT_EQ(cudaMemsetAsync(t->data(), 0xff, t->nbytes(), static_cast<cudaStream_t>(s.native_handle())),
                      cudaSuccess);
    }
};

bool same_counters(const cuda::PlanCounters& a, const cuda::PlanCounters& b) {
    return a.fused == b.fused && a.unfused == b.unfused && a.direct == b.direct &&
           a.explicit_padding == b.explicit_padding && a.tuned == b.tuned && a.loaded == b.loaded && a.split == b.split &&
           a.gemm == b.gemm;
}

class CudaStreamsConcurrent : public ::testing::TestWithParam<Case> {};

TEST_P(CudaStreamsConcurrent, OnePlanManyThreads) {
    if (!has_gpu()) GTEST_SKIP() << "no CUDA device visible";
    const Case c = GetParam();
    const bool old_tf32 = allow_tf32();
    set_allow_tf32(false);
    cuda::set_direct_max_macs(c.direct_max_macs);
    cuda::set_split_dgrad(c.split_dgrad);
    cuda::set_f64_gemm(c.f64_gemm);
    clear_cache(Engine::cuda);
    const Values v = values(c);

    // The reference, then one call on the GPU from this thread: the result every caller must get.
    const Tensors ref(c, v, Device::cpu());
    ref.run(c, Engine::ref, Stream()).wait();
    const Tensors first(c, v, Device::cuda(0));
    first.run(c, Engine::cuda, Stream::cuda(0)).wait();
    const double err = rel_err(first.output_values(c), ref.output_values(c));
    EXPECT_LE(err, tolerance(c.dt)) << c.name << ": single-threaded result against the reference";
    const std::vector<uint8_t> want = first.output_bytes(c);
    const cuda::PlanInfo info = cuda::last_plan();
    ASSERT_TRUE(info.found) << c.name;
    const cuda::PlanCounters built = cuda::plan_counters();
    std::printf("[          ] %s: %s%s\n", c.name.c_str(), info.engine_name.c_str(), info.fused ? " (fused)" : "");
    EXPECT_TRUE(is_kind(c.kind, info)) << c.name << ": not the plan kind the case is for: " << info.engine_name;

    std::mutex mu;
    std::vector<std::string> failures;
    auto fail = [&](const std::string& f) {
        std::lock_guard<std::mutex> lock(mu);
        if (failures.size() < 20) failures.push_back(f);
    };
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            try {
                const Stream s = Stream::cuda(0);
                const Tensors a(c, v, Device::cuda(0)), b(c, v, Device::cuda(0));
                s.synchronize();
                ++ready;
                while (ready.load() < kThreads) std::this_thread::yield();  // start together
                for (int it = 0; it < kIterations; ++it) {
                    a.poison(c, s);
                    a.run(c, Engine::cuda, s);
                    b.poison(c, s);
                    b.run(c, Engine::cuda, s).wait();
                    const std::string where = c.name + ", thread " + std::to_string(t) + ", iteration " + std::to_string(it);
                    if (a.output_bytes(c) != want) fail(where + " (first call): differs from the single-threaded result");
                    if (b.output_bytes(c) != want) fail(where + " (second call): differs from the single-threaded result");
                }
                const cuda::PlanInfo mine = cuda::last_plan();
                if (mine.engine_name != info.engine_name)
                    fail(c.name + ", thread " + std::to_string(t) + ": ran '" + mine.engine_name + "', expected '" +
                         info.engine_name + "'");
            } catch (const std::exception& e) {
                fail(c.name + ", thread " + std::to_string(t) + ": " + e.what());
                ++ready;
            }
        });
    for (auto& th : threads) th.join();
    for (const auto& f : failures) ADD_FAILURE() << f;

    // One plan, built by the first call; every threaded call found it.
    const CacheStats stats = cache_stats(Engine::cuda);
    EXPECT_EQ(stats.misses, 1u) << c.name;
    EXPECT_EQ(stats.size, 1u) << c.name;
    EXPECT_EQ(stats.hits, static_cast<uint64_t>(2 * kThreads * kIterations)) << c.name;
    EXPECT_TRUE(same_counters(cuda::plan_counters(), built)) << c.name << ": the threaded calls built plans";

    cuda::set_direct_max_macs(0);
    cuda::set_split_dgrad(0);
    cuda::set_f64_gemm(-1);
    clear_cache(Engine::cuda);
    set_allow_tf32(old_tf32);
}

INSTANTIATE_TEST_SUITE_P(Kinds, CudaStreamsConcurrent, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
