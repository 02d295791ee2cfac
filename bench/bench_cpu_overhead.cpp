// Per-call overhead of the CPU engine: a tiny convolution (1x16x8x8, 16 filters 3x3, pad 1,
// bias, f32) through convolution_forward, once with the plan cached (the steady state: pointer
// binding and oneDNN's execute only) and once with the cache cleared before every call (what a
// cache-less wrapper pays: descriptor building, implementation search, JIT'd kernels fetched
// from oneDNN's own primitive cache). Target for the cached call: <= 10 us.
//   build/bench/bench_cpu_overhead --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <cstring>

#include "convkit/convkit.hpp"

using namespace convkit;

namespace {

struct Tiny {
    Tensor src, wei, bias, dst;
    ConvParams params;
    explicit Tiny(Layout l)
        : src(DType::f32, Dims{1, 16, 8, 8}, l),
          wei(DType::f32, Dims{16, 16, 3, 3}, l),
          bias(DType::f32, Dims{16}),
          dst(DType::f32, Dims{1, 16, 8, 8}, l) {
        for (const Tensor* t : {&src, &wei, &bias, &dst})
            for (int64_t i = 0; i < t->numel(); ++i) t->ptr<float>()[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
        params.pad(Dims{1});
    }
    void call() {
        convolution_forward(dst, src, wei, bias, params, PostOps(), Stream(), {}, ConvOptions{Engine::cpu, {}});
    }
};

void BM_TinyCached(benchmark::State& state) {
    Tiny t(state.range(0) ? Layout::channels_last : Layout::channels_first);
    t.call();
    for (auto _ : state) t.call();
    state.SetLabel(state.range(0) ? "f32 nhwc" : "f32 nchw");
}

void BM_TinyPlanRebuiltEachCall(benchmark::State& state) {
    Tiny t(state.range(0) ? Layout::channels_last : Layout::channels_first);
    t.call();
    for (auto _ : state) {
        clear_cache(Engine::cpu);
        t.call();
    }
    state.SetLabel(state.range(0) ? "f32 nhwc" : "f32 nchw");
}

void BM_TinyReference(benchmark::State& state) {
    Tiny t(state.range(0) ? Layout::channels_last : Layout::channels_first);
    for (auto _ : state)
        convolution_forward(t.dst, t.src, t.wei, t.bias, t.params, PostOps(), Stream(), {}, ConvOptions{Engine::ref, {}});
    state.SetLabel(state.range(0) ? "f32 nhwc, ref engine" : "f32 nchw, ref engine");
}

void BM_TinyPrepacked(benchmark::State& state) {
    Tiny t(state.range(0) ? Layout::channels_last : Layout::channels_first);
    PackedWeights pw = prepack_weights(t.wei, t.src, t.params, PostOps(), ConvOptions{Engine::cpu, {}});
    for (auto _ : state)
        convolution_forward(t.dst, t.src, pw, t.bias, t.params, PostOps(), Stream(), {}, ConvOptions{Engine::cpu, {}});
    state.SetLabel(state.range(0) ? "f32 nhwc, prepacked weights" : "f32 nchw, prepacked weights");
}

}  // namespace

BENCHMARK(BM_TinyCached)->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TinyPrepacked)->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TinyPlanRebuiltEachCall)->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TinyReference)->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
