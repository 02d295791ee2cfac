// ResNet-50 layers (mb 1 by default) through the CPU engine's forward pass, with the weights as
// a plain tensor (reordered into oneDNN's layout on every call) and prepacked once with
// prepack_weights() (the inference case: no reorder per call). bench/compare_torch_cpu.py runs
// this for its `prepacked` rows and sums the per-layer times.
//   build/bench/bench_cpu_resnet50 --benchmark_filter='f32/nhwc' [--mb=N]
#include <benchmark/benchmark.h>

#include "desc.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "convkit/convkit.hpp"

using namespace convkit;

namespace {

struct Layer {
    std::string name;
    int64_t ic, oc, hw, k, stride, pad;
};

// The 23 distinct convolutions of ResNet-50 v1.5, from inputs/resnet_50 (square layers).
std::vector<Layer> resnet50_layers() {
    std::vector<Layer> out;
    for (const auto& d : tools::read_batch_file(std::string(CONVKIT_SOURCE_DIR) + "/inputs/resnet_50"))
        out.push_back({d.name, d.ic, d.oc, d.in[2], d.k[2], d.stride[2], d.padding_l[2]});
    return out;
}

int64_t g_mb = 1;

void fill(const Tensor& t) {
    Tensor f(DType::f32, t.sizes());
    for (int64_t i = 0; i < f.numel(); ++i) f.ptr<float>()[i] = 0.001f * static_cast<float>((i * 7919) % 2001) - 1.f;
    copy(t.view(), f.view());
}

void run_layer(benchmark::State& state, const Layer& l, DType dt, Layout layout, bool prepacked) {
    ConvParams prm;
    prm.stride = Dims{l.stride};
    prm.pad(Dims{l.pad});
    Tensor src(dt, Dims{g_mb, l.ic, l.hw, l.hw}, layout), wei(dt, Dims{l.oc, l.ic, l.k, l.k}, layout),
        bias(dt, Dims{l.oc});
    Tensor dst(dt, output_shape(src.sizes(), wei.sizes(), prm), layout);
    fill(src);
    fill(wei);
    fill(bias);
    const ConvOptions opt{Engine::cpu, {}};
    PackedWeights pw;
    if (prepacked) pw = prepack_weights(wei, src, prm, PostOps(), opt);
    auto call = [&] {
        if (prepacked) convolution_forward(dst, src, pw, bias, prm, PostOps(), Stream(), {}, opt);
        else convolution_forward(dst, src, wei, bias, prm, PostOps(), Stream(), {}, opt);
    };
    call();
    // Per-call minimum as well as Google Benchmark's mean: on a shared machine the minimum is
    // the figure that other people's jobs do not move.
    double best = 1e30;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        call();
        best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    state.counters["min_ms"] = best;
    const double flops = 2.0 * static_cast<double>(g_mb * l.oc * l.ic * l.k * l.k) *
                         static_cast<double>(dst.sizes()[2] * dst.sizes()[3]);
    state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
    // --mb=N (ours) is taken out before Google Benchmark parses the rest.
    int out = 1;
    for (int i = 1; i < argc; ++i) {
        if (std::strncmp(argv[i], "--mb=", 5) == 0) g_mb = std::atoll(argv[i] + 5);
        else argv[out++] = argv[i];
    }
    argc = out;
    for (DType dt : {DType::f32, DType::bf16, DType::f16})
        for (Layout layout : {Layout::channels_last, Layout::channels_first})
            for (bool packed : {true, false})
                for (const Layer& l : resnet50_layers()) {
                    const std::string name = std::string("fwd/") + to_string(dt) + "/" +
                                             (layout == Layout::channels_last ? "nhwc" : "nchw") + "/" +
                                             (packed ? "prepacked" : "plain_weights") + "/" + l.name;
                    benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { run_layer(s, l, dt, layout, packed); })
                        ->Unit(benchmark::kMillisecond)
                        ->MinTime(0.05);
                }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
