// data_parallel: SGD training of an all-convolutional network, data-parallel over the GPUs of one
// node: one host thread per GPU, convkit for every convolution (forward with bias + ReLU fused as
// post-ops, backward-data, backward-weights with the bias gradient), NCCL for the gradient
// all-reduce, and a few kernels of our own (kernels.cu) for pooling, loss, ReLU backward and SGD.
//
//   data_parallel [options]            train the small network, print the global loss per step
//   data_parallel --check [options]    1 GPU on the global batch vs N GPUs on 1/N of it each (and/or
//                                      M micro-batches per GPU): loss trace and final weights must
//                                      agree within --tol; exit 0 (pass), 1 (fail), 77 (skipped)
//   data_parallel --bench [options]    ResNet-50-sized conv stack, images/s on 1..N GPUs, scaling
//                                      efficiency and the share of the step spent in NCCL
// `--help` lists the options; docs/multi_gpu.md explains the design and the measurements.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "convkit/convkit.hpp"
#include "kernels.hpp"

namespace {

using convkit::ConvParams;
using convkit::Device;
using convkit::Dims;
using convkit::DType;
using convkit::Layout;
using convkit::TensorView;

// ctest's SKIP_RETURN_CODE for "not enough GPUs here" (the automake convention).
constexpr int kExitSkip = 77;

void cuda_ok(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

void nccl_ok(ncclResult_t r, const char* what) {
    if (r != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + ncclGetErrorString(r));
}

// ---------------------------------------------------------------------------------------------
// Options.

enum class Mode { train, check, bench };

struct Options {
    Mode mode = Mode::train;
    int gpus = 0;      // 0: every visible GPU
    int min_gpus = 0;  // --check: skip below this many visible GPUs (0: 2)
    int steps = 20;
    int warmup = 5;         // --bench: untimed steps before the timed ones
    int64_t batch = 0;      // global batch (train, check); 0: the mode's default
    int64_t mb = 64;        // --bench: batch per GPU
    int micro = 1;          // micro-batches per GPU per step (gradient accumulation)
    float lr = 0.05f;
    bool lr_set = false;
    DType dt = DType::f32;
    bool dt_set = false;
    Layout layout = Layout::channels_last;
    int deterministic = -1;  // -1: on for train and check, off for bench
    int tf32 = -1;           // -1: convkit's default for train and bench, off for check
    double bucket_mb = 25;   // gradient bytes per all-reduce (as PyTorch DDP's bucket_cap_mb)
    double tol = 1e-3;
    int64_t in_channels = 3;
    uint64_t seed = 1;
};

void usage() {
    std::printf(
        "usage: data_parallel [--check | --bench] [options]\n"
        "  --gpus=N          GPUs to use (default: all visible; --bench measures 1..N)\n"
        "  --steps=S         training steps (default 20; --bench: timed steps)\n"
        "  --warmup=W        --bench: untimed steps before the timed ones (default 5)\n"
        "  --batch=B         global batch (default 32; --check: 32 rounded up to a multiple of N*M)\n"
        "  --mb=B            --bench: batch per GPU (default 64)\n"
        "  --micro=M         micro-batches per GPU and step, gradients accumulated (default 1)\n"
        "  --lr=X            SGD learning rate (default 0.05; --bench: 1e-4)\n"
        "  --dtype=T         f32, f16 or bf16 (default f32; --bench: bf16)\n"
        "  --layout=L        nhwc or nchw (default nhwc)\n"
        "  --deterministic=0|1  convkit's deterministic mode (default 1; --bench: 0)\n"
        "  --tf32=0|1        TF32 for f32 convolutions (default: convkit's; --check: 0)\n"
        "  --bucket-mb=X     gradient megabytes per NCCL all-reduce (default 25)\n"
        "  --tol=X           --check: relative tolerance on losses and weights (default 1e-3)\n"
        "  --min-gpus=N      --check: exit 77 (skipped) with fewer visible GPUs (default 2)\n"
        "  --in-channels=C   input channels (default 3)\n"
        "  --seed=S          data and initialisation seed (default 1)\n");
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage();
            std::exit(0);
        }
        if (a == "--check") { o.mode = Mode::check; continue; }
        if (a == "--bench") { o.mode = Mode::bench; continue; }
        if (a.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + a + "' (see --help)");
        std::string key = a.substr(2), val;
        const auto eq = key.find('=');
        static const char* const known[] = {"gpus", "min-gpus", "steps", "warmup", "batch", "mb", "micro", "lr",
                                            "dtype", "layout", "deterministic", "tf32", "bucket-mb", "tol",
                                            "in-channels", "seed"};
        const std::string name = key.substr(0, eq);
        if (std::none_of(std::begin(known), std::end(known), [&](const char* k) { return name == k; }))
            throw std::invalid_argument("unknown option --" + name + " (see --help)");
        if (eq != std::string::npos) {
            val = key.substr(eq + 1);
            key = key.substr(0, eq);
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            throw std::invalid_argument("option --" + key + " needs a value");
        }
        auto to_ll = [&](long long lo) {
            std::size_t used = 0;
            long long v = 0;
            try {
                v = std::stoll(val, &used);
            } catch (const std::logic_error&) {
                used = 0;
            }
            if (used != val.size() || v < lo)
                throw std::invalid_argument("--" + key + " needs an integer >= " + std::to_string(lo) + ", got '" + val + "'");
            return v;
        };
        auto to_int = [&](int lo) { return static_cast<int>(std::min<long long>(to_ll(lo), 1 << 30)); };
        auto to_double = [&] {
            std::size_t used = 0;
            double v = 0;
            try {
                v = std::stod(val, &used);
            } catch (const std::logic_error&) {
                used = 0;
            }
            if (used != val.size() || !(v > 0))
                throw std::invalid_argument("--" + key + " needs a positive number, got '" + val + "'");
            return v;
        };
        if (key == "gpus") o.gpus = to_int(0);
        else if (key == "min-gpus") o.min_gpus = to_int(0);
        else if (key == "steps") o.steps = to_int(1);
        else if (key == "warmup") o.warmup = to_int(0);
        else if (key == "batch") o.batch = to_ll(1);
        else if (key == "mb") o.mb = to_ll(1);
        else if (key == "micro") o.micro = to_int(1);
        else if (key == "lr") { o.lr = static_cast<float>(to_double()); o.lr_set = true; }
        else if (key == "dtype") { o.dt = convkit::dtype_from_string(val); o.dt_set = true; }
        else if (key == "layout") {
            if (val == "nhwc") o.layout = Layout::channels_last;
            else if (val == "nchw") o.layout = Layout::channels_first;
            else throw std::invalid_argument("--layout must be nhwc or nchw, got '" + val + "'");
        }
        else if (key == "deterministic") o.deterministic = to_int(0) != 0;
        else if (key == "tf32") o.tf32 = to_int(0) != 0;
        else if (key == "bucket-mb") o.bucket_mb = to_double();
        else if (key == "tol") o.tol = to_double();
        else if (key == "in-channels") o.in_channels = to_ll(1);
        else if (key == "seed") o.seed = static_cast<uint64_t>(to_ll(0));
    }
    if (o.dt == DType::f64) throw std::invalid_argument("--dtype f64 is not supported by this example (f32, f16, bf16)");
    return o;
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

// splitmix64 + Box-Muller: the same numbers from every compiler and standard library, so a run
// can be reproduced anywhere.
class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
    uint64_t next() {
        uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return static_cast<double>((next() >> 11) + 1) * 0x1.0p-53; }  // (0, 1]
    double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }

private:
    uint64_t s_;
};

class Barrier {
public:
    explicit Barrier(int n) : n_(n) {}
    void wait() {
        std::unique_lock<std::mutex> lock(mu_);
        const uint64_t gen = gen_;
        if (++count_ == n_) {
            count_ = 0;
            ++gen_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return gen != gen_; });
        }
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    int n_, count_ = 0;
    uint64_t gen_ = 0;
};

class DeviceMem {
public:
    DeviceMem() = default;
    explicit DeviceMem(std::size_t bytes) {
        if (bytes) cuda_ok(cudaMalloc(&p_, bytes), "cudaMalloc");
    }
    ~DeviceMem() {
        if (p_) cudaFree(p_);
    }
    DeviceMem(DeviceMem&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
    DeviceMem& operator=(DeviceMem&& o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    DeviceMem(const DeviceMem&) = delete;
    DeviceMem& operator=(const DeviceMem&) = delete;
    template <typename T = void> T* get() const { return static_cast<T*>(p_); }

private:
    void* p_ = nullptr;
};

class PinnedMem {
public:
    PinnedMem() = default;
    explicit PinnedMem(std::size_t bytes) {
        // Portable: every GPU's thread copies from it asynchronously.
        if (bytes) cuda_ok(cudaHostAlloc(&p_, bytes, cudaHostAllocPortable), "cudaHostAlloc");
    }
    ~PinnedMem() {
        if (p_) cudaFreeHost(p_);
    }
    PinnedMem(PinnedMem&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
    PinnedMem& operator=(PinnedMem&& o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    PinnedMem(const PinnedMem&) = delete;
    PinnedMem& operator=(const PinnedMem&) = delete;
    template <typename T = void> T* get() const { return static_cast<T*>(p_); }

private:
    void* p_ = nullptr;
};

int64_t numel(const Dims& d) {
    int64_t n = 1;
    for (int64_t v : d) n *= v;
    return n;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

ncclDataType_t nccl_type(DType dt) {
    switch (dt) {
        case DType::f32: return ncclFloat32;
        case DType::f16: return ncclFloat16;
        case DType::bf16: return ncclBfloat16;
        default: throw std::invalid_argument(std::string("no NCCL type for ") + convkit::to_string(dt));
    }
}

// ---------------------------------------------------------------------------------------------
// The network: a stack of convolutions, each with bias and (all but the last) ReLU, then global
// average pooling over the last one's output and a mean-squared error against a target.

struct Layer {
    int64_t ic, oc, k, stride, pad;
    bool relu;
};

struct Net {
    std::string name;
    int64_t in_c = 3, in_hw = 32;
    std::vector<Layer> layers;
};

Net small_net(int64_t in_c) {
    Net n;
    n.name = "small (4 convolutions, 32x32 input, 10 outputs)";
    n.in_c = in_c;
    n.in_hw = 32;
    n.layers = {{in_c, 16, 3, 1, 1, true}, {16, 32, 3, 2, 1, true}, {32, 64, 3, 2, 1, true}, {64, 10, 1, 1, 0, false}};
    return n;
}

// The convolutions of ResNet-50's main path (v1.5: the stride on the 3x3 of each bottleneck) on a
// 224x224 input, without residual connections (so without the projection shortcuts) and without
// batch norm: what matters here is the convolution work and the gradient volume of a ResNet-50
// step, 23.4 GFLOP per image and 22.8M parameters against about 24.6 and 25.6M. The 3x3/2
// max-pool after the stem is a 3x3/2 convolution here, and the classifier a 1x1 convolution to
// 1000 channels ahead of the pooling (the two commute).
Net resnet50_stack(int64_t in_c) {
    Net n;
    n.name = "ResNet-50-sized stack (51 convolutions, 224x224 input, 1000 outputs)";
    n.in_c = in_c;
    n.in_hw = 224;
    n.layers.push_back({in_c, 64, 7, 2, 3, true});
    n.layers.push_back({64, 64, 3, 2, 1, true});
    const int blocks[4] = {3, 4, 6, 3};
    const int64_t widths[4] = {64, 128, 256, 512};
    int64_t c = 64;
    for (int s = 0; s < 4; ++s)
        for (int b = 0; b < blocks[s]; ++b) {
            const int64_t w = widths[s];
            n.layers.push_back({c, w, 1, 1, 0, true});
            n.layers.push_back({w, w, 3, s > 0 && b == 0 ? 2 : 1, 1, true});
            n.layers.push_back({w, 4 * w, 1, 1, 0, true});
            c = 4 * w;
        }
    n.layers.push_back({c, 1000, 1, 1, 0, false});
    return n;
}

// Sizes of everything for one micro-batch, and where each parameter lives in the flat buffers.
struct Geometry {
    int64_t batch = 0;                // per micro-batch
    std::vector<Dims> act;            // act[0] = input, act[l + 1] = output of layer l
    std::vector<Dims> wsizes;
    std::vector<ConvParams> params;
    std::vector<int64_t> w_off, b_off;  // element offsets in the flat parameter buffers
    int64_t n_params = 0;             // flat length, with alignment padding
    int64_t n_weights = 0;            // without padding
    int64_t max_grad_act = 0;         // largest act[l], l >= 1 (the gradient ping-pong buffers)
    double train_flops_per_image = 0;  // forward + backward-weights + backward-data (not layer 0's)
};

Geometry geometry(const Net& net, int64_t batch) {
    Geometry g;
    g.batch = batch;
    g.act.push_back(Dims{batch, net.in_c, net.in_hw, net.in_hw});
    // 64 elements: every tensor starts 128-byte aligned even in 16-bit types, which keeps
    // convkit's fused cuDNN path (16-byte aligned pointers) and our vector loads available.
    const int64_t align = 64;
    int64_t off = 0;
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const Layer& L = net.layers[l];
        ConvParams p;
        p.stride = {L.stride};
        p.pad({L.pad});
        Dims w{L.oc, L.ic, L.k, L.k};
        Dims out = convkit::output_shape(g.act.back(), w, p);
        g.train_flops_per_image += (l == 0 ? 2.0 : 3.0) * 2.0 * static_cast<double>(numel(out) / batch) *
                                   static_cast<double>(L.ic * L.k * L.k);
        g.params.push_back(p);
        g.wsizes.push_back(w);
        g.act.push_back(out);
        g.max_grad_act = std::max(g.max_grad_act, numel(out));
        g.w_off.push_back(off);
        off = round_up(off + numel(w), align);
        g.b_off.push_back(off);
        off = round_up(off + L.oc, align);
        g.n_weights += numel(w) + L.oc;
    }
    g.n_params = off;
    return g;
}

// A contiguous range of layers whose gradients go out in one all-reduce, issued as soon as the
// lowest layer of the range has its weight gradient (backward runs from the last layer down).
struct Bucket {
    int lo, hi;  // layers lo..hi
    int64_t off, count;
};

std::vector<Bucket> buckets(const Net& net, const Geometry& g, double cap_bytes, DType dt) {
    std::vector<Bucket> out;
    const int L = static_cast<int>(net.layers.size());
    int hi = L - 1;
    double bytes = 0;
    for (int l = L - 1; l >= 0; --l) {
        bytes += static_cast<double>(numel(g.wsizes[l]) + net.layers[l].oc) * static_cast<double>(convkit::dtype_size(dt));
        if (bytes >= cap_bytes || l == 0) {
            const int64_t end = hi + 1 < L ? g.w_off[hi + 1] : g.n_params;
            out.push_back({l, hi, g.w_off[l], end - g.w_off[l]});
            hi = l - 1;
            bytes = 0;
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Data: `samples` images in the run's dtype and layout, and their f32 targets, in pinned memory.

struct Dataset {
    int64_t samples = 0, image_elems = 0, outputs = 0;
    std::size_t image_bytes = 0;
    PinnedMem x, t;
};

// Train and check: each image is a per-channel level m[c] plus unit noise, and the target is a
// fixed linear map of the levels. The network must learn to read the levels through the noise,
// which a few conv + ReLU layers and the pooling can do, so the loss visibly falls in 20 steps.
// Bench: noise in, noise out (only the work matters).
Dataset make_dataset(const Net& net, int64_t samples, DType dt, Layout layout, uint64_t seed, bool learnable) {
    Dataset d;
    d.samples = samples;
    const int64_t C = net.in_c, HW = net.in_hw * net.in_hw;
    d.image_elems = C * HW;
    d.outputs = net.layers.back().oc;
    d.image_bytes = static_cast<std::size_t>(d.image_elems) * convkit::dtype_size(dt);
    Rng rng(seed);
    std::vector<float> x(static_cast<std::size_t>(samples * d.image_elems));
    d.t = PinnedMem(static_cast<std::size_t>(samples * d.outputs) * sizeof(float));
    float* t = d.t.get<float>();
    std::vector<double> A(static_cast<std::size_t>(d.outputs * C));
    for (auto& a : A) a = rng.normal() / std::sqrt(static_cast<double>(C));
    for (int64_t s = 0; s < samples; ++s) {
        std::vector<double> m(static_cast<std::size_t>(C));
        for (auto& v : m) v = learnable ? rng.normal() : 0.0;
        for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < HW; ++i)
                x[static_cast<std::size_t>((s * C + c) * HW + i)] = static_cast<float>(m[static_cast<std::size_t>(c)] + rng.normal());
        for (int64_t k = 0; k < d.outputs; ++k) {
            double v = 0;
            if (learnable)
                for (int64_t c = 0; c < C; ++c) v += A[static_cast<std::size_t>(k * C + c)] * m[static_cast<std::size_t>(c)];
            else
                v = rng.normal();
            t[s * d.outputs + k] = static_cast<float>(v);
        }
    }
    // convkit::copy converts dtype (round to nearest even) and layout in one go.
    d.x = PinnedMem(static_cast<std::size_t>(samples) * d.image_bytes);
    Dims sizes{samples, C, net.in_hw, net.in_hw};
    convkit::copy(TensorView::with_layout(d.x.get(), dt, sizes, layout),
                  TensorView(x.data(), DType::f32, sizes));
    return d;
}

// He-normal weights (unit gain for the last layer, which has no ReLU), zero biases, laid out as
// the flat f32 master buffer: each weight tensor in the run's layout at its offset.
std::vector<float> init_params(const Net& net, const Geometry& g, Layout layout, uint64_t seed) {
    std::vector<float> flat(static_cast<std::size_t>(g.n_params), 0.f);
    Rng rng(seed ^ 0xA5A5A5A5ull);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const Layer& L = net.layers[l];
        const double std_dev = std::sqrt((L.relu ? 2.0 : 1.0) / static_cast<double>(L.ic * L.k * L.k));
        std::vector<float> w(static_cast<std::size_t>(numel(g.wsizes[l])));
        for (auto& v : w) v = static_cast<float>(rng.normal() * std_dev);
        convkit::copy(TensorView::with_layout(flat.data() + g.w_off[l], DType::f32, g.wsizes[l], layout),
                      TensorView(w.data(), DType::f32, g.wsizes[l]));
    }
    return flat;
}

// ---------------------------------------------------------------------------------------------
// One training run on `gpus` GPUs.

struct RunConfig {
    int gpus = 1, micro = 1, steps = 20, warmup = 0;
    int64_t global_batch = 32;
    DType dt = DType::f32;
    Layout layout = Layout::channels_last;
    bool deterministic = true;
    float lr = 0.05f;
    double bucket_bytes = 25e6;
    bool print_loss = false;
    bool timing = false;
    bool static_data = false;  // bench: one batch uploaded once, reused every step
};

struct RunResult {
    std::vector<double> loss;   // global loss per step (timed steps only in bench)
    std::vector<float> master;  // rank 0's final f32 parameters (flat)
    bool ranks_agree = true;    // every rank ended with bitwise the same parameters
    double wall_s = 0;          // the timed steps, host clock
    double step_ms = 0, nccl_ms = 0, exposed_ms = 0;  // per step, GPU events, mean over ranks
};

struct Shared {
    const RunConfig& cfg;
    const Net& net;
    const Geometry& geo;
    const std::vector<Bucket>& buckets;
    const Dataset& data;
    const std::vector<float>& init;
    std::vector<ncclComm_t> comms;
    Barrier barrier;
    std::vector<std::vector<float>> rank_loss;    // [rank][step]
    std::vector<std::vector<float>> rank_master;  // [rank]
    std::vector<double> step_ms, nccl_ms, exposed_ms;  // [rank] means over the timed steps
    std::chrono::steady_clock::time_point t0, t1;

    Shared(const RunConfig& c, const Net& n, const Geometry& g, const std::vector<Bucket>& b, const Dataset& d,
           const std::vector<float>& i)
        : cfg(c), net(n), geo(g), buckets(b), data(d), init(i), barrier(c.gpus),
          rank_loss(static_cast<std::size_t>(c.gpus)), rank_master(static_cast<std::size_t>(c.gpus)),
          step_ms(static_cast<std::size_t>(c.gpus)), nccl_ms(static_cast<std::size_t>(c.gpus)),
          exposed_ms(static_cast<std::size_t>(c.gpus)) {}
};

class Events {
public:
    explicit Events(std::size_t n) : e_(n) {
        for (auto& e : e_) cuda_ok(cudaEventCreate(&e), "cudaEventCreate");
    }
    ~Events() {
        for (auto e : e_) cudaEventDestroy(e);
    }
    Events(const Events&) = delete;
    Events& operator=(const Events&) = delete;
    cudaEvent_t operator[](std::size_t i) const { return e_[i]; }

private:
    std::vector<cudaEvent_t> e_;
};

float elapsed_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    cuda_ok(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    return ms;
}

class Worker {
public:
    Worker(Shared& sh, int rank)
        : sh_(sh), cfg_(sh.cfg), geo_(sh.geo), rank_(rank), dev_(Device::cuda(rank)), es_(convkit::dtype_size(cfg_.dt)) {}

    void run() {
        cuda_ok(cudaSetDevice(rank_), "cudaSetDevice");
        compute_ = convkit::Stream::cuda(rank_);
        cs_ = static_cast<cudaStream_t>(compute_.native_handle());
        // NCCL on its own stream, so the all-reduce of the last layers' gradients overlaps the
        // backward pass of the first ones; high priority so its kernels get SMs while
        // convolutions keep the GPU full.
        int least = 0, greatest = 0;
        cuda_ok(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange");
        cuda_ok(cudaStreamCreateWithPriority(&ms_, cudaStreamNonBlocking, greatest), "cudaStreamCreateWithPriority");
        train();  // on failure the process exits (see run()), so no cleanup on that path
        cudaStreamDestroy(ms_);
    }

private:
    void allocate() {
        const int L = static_cast<int>(sh_.net.layers.size());
        const std::size_t pbytes = static_cast<std::size_t>(geo_.n_params);
        master_ = DeviceMem(pbytes * sizeof(float));
        if (cfg_.dt != DType::f32) work_ = DeviceMem(pbytes * es_);
        grad_ = DeviceMem(pbytes * es_);
        if (cfg_.micro > 1) {
            // Zeroed once: convkit never writes the alignment gaps, and the accumulation and
            // the all-reduce run over them.
            grad_tmp_ = DeviceMem(pbytes * es_);
            cuda_ok(cudaMemsetAsync(grad_tmp_.get(), 0, pbytes * es_, cs_), "cudaMemsetAsync");
        }
        for (int l = 0; l <= L; ++l)
            act_.emplace_back(static_cast<std::size_t>(numel(geo_.act[static_cast<std::size_t>(l)])) * es_);
        for (auto& d : dact_) d = DeviceMem(static_cast<std::size_t>(geo_.max_grad_act) * es_);
        const std::size_t bk = static_cast<std::size_t>(geo_.batch * sh_.data.outputs);
        target_ = DeviceMem(bk * sizeof(float));
        y_ = DeviceMem(bk * sizeof(float));
        sqerr_ = DeviceMem(bk * sizeof(float));
        loss_ = DeviceMem(static_cast<std::size_t>(cfg_.warmup + cfg_.steps + 1) * sizeof(float));
        // Parameters: master from the host, work = master rounded to the run's dtype (an SGD step
        // with a zero gradient and lr 0 does exactly that).
        cuda_ok(cudaMemcpy(master_.get(), sh_.init.data(), pbytes * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
        cuda_ok(cudaMemsetAsync(grad_.get(), 0, pbytes * es_, cs_), "cudaMemsetAsync");
        dp::launch_sgd(cfg_.dt, master_.get<float>(), work(), grad_.get(), geo_.n_params, 0.f, cs_);
    }

    void* work() const { return cfg_.dt == DType::f32 ? master_.get() : work_.get(); }
    void* at(void* base, int64_t elems) const { return static_cast<char*>(base) + elems * static_cast<int64_t>(es_); }
    TensorView view(void* p, const Dims& sizes) const { return TensorView::with_layout(p, cfg_.dt, sizes, cfg_.layout, dev_); }
    TensorView bias_view(void* base, int l) const {
        return TensorView(at(base, geo_.b_off[static_cast<std::size_t>(l)]), cfg_.dt, Dims{sh_.net.layers[static_cast<std::size_t>(l)].oc}, dev_);
    }

    void load_batch(int64_t row) {
        const Dataset& d = sh_.data;
        cuda_ok(cudaMemcpyAsync(act_[0].get(), d.x.get<char>() + static_cast<std::size_t>(row) * d.image_bytes,
                                static_cast<std::size_t>(geo_.batch) * d.image_bytes, cudaMemcpyHostToDevice, cs_),
                "cudaMemcpyAsync (input)");
        cuda_ok(cudaMemcpyAsync(target_.get(), d.t.get<float>() + row * d.outputs,
                                static_cast<std::size_t>(geo_.batch * d.outputs) * sizeof(float), cudaMemcpyHostToDevice, cs_),
                "cudaMemcpyAsync (target)");
    }

    // One step: forward and backward over every micro-batch, gradients all-reduced bucket by
    // bucket (when `comm`), then SGD (when `update`). `ev` (timing) holds the step's events:
    // start, backward done, all-reduce done, end, then a start/stop pair per bucket.
    void step(int s, bool comm, bool update, const Events* ev) {
        const auto& layers = sh_.net.layers;
        const int L = static_cast<int>(layers.size());
        const convkit::ConvOptions opts{convkit::Engine::cuda, cfg_.deterministic};
        convkit::PostOps relu;
        relu.eltwise(convkit::EltwiseAlg::relu);
        const convkit::PostOps none;
        const int64_t local = cfg_.global_batch / cfg_.gpus;
        // The warm-up pass (s < 0) reads step 0's batch.
        const int64_t base = (static_cast<int64_t>(std::max(s, 0)) * cfg_.global_batch) % sh_.data.samples;
        float* loss_slot = loss_.get<float>() + (s < 0 ? cfg_.warmup + cfg_.steps : s);
        if (ev) cuda_ok(cudaEventRecord((*ev)[0], cs_), "cudaEventRecord");

        for (int m = 0; m < cfg_.micro; ++m) {
            if (!cfg_.static_data) load_batch(base + rank_ * local + m * geo_.batch);
            for (int l = 0; l < L; ++l) {
                const auto li = static_cast<std::size_t>(l);
                convkit::convolution_forward(view(act_[li + 1].get(), geo_.act[li + 1]), view(act_[li].get(), geo_.act[li]),
                                             view(at(work(), geo_.w_off[li]), geo_.wsizes[li]), bias_view(work(), l),
                                             geo_.params[li], layers[li].relu ? relu : none, compute_, {}, opts);
            }
            const Dims& out = geo_.act[static_cast<std::size_t>(L)];
            const Dims st = convkit::dense_strides(out, cfg_.layout);
            dp::PoolLossArgs pl;
            pl.dt = cfg_.dt;
            pl.x = act_[static_cast<std::size_t>(L)].get();
            pl.dx = dact_[L % 2].get();
            pl.batch = out[0];
            pl.channels = out[1];
            pl.spatial = numel(out) / (out[0] * out[1]);
            pl.sb = st[0];
            pl.sk = st[1];
            pl.ss = st[out.rank() - 1];
            pl.target = target_.get<float>();
            pl.y = y_.get<float>();
            pl.sqerr = sqerr_.get<float>();
            pl.loss_scale = static_cast<float>(1.0 / (static_cast<double>(cfg_.global_batch) * static_cast<double>(out[1])));
            dp::launch_pool_loss(pl, cs_);
            dp::launch_sum(sqerr_.get<float>(), out[0] * out[1], loss_slot, m > 0, cs_);

            for (int l = L - 1; l >= 0; --l) {
                const auto li = static_cast<std::size_t>(l);
                void* dz = dact_[(l + 1) % 2].get();
                const Dims& zs = geo_.act[li + 1];
                if (layers[li].relu) dp::launch_relu_backward(cfg_.dt, dz, act_[li + 1].get(), numel(zs), cs_);
                // convkit overwrites the gradient; later micro-batches go through a temporary and
                // are added in.
                void* g = m == 0 ? grad_.get() : grad_tmp_.get();
                convkit::convolution_backward_weights(view(at(g, geo_.w_off[li]), geo_.wsizes[li]), bias_view(g, l),
                                                      view(dz, zs), view(act_[li].get(), geo_.act[li]), geo_.params[li],
                                                      compute_, {}, opts);
                if (m > 0) {
                    const int64_t span = geo_.b_off[li] + layers[li].oc - geo_.w_off[li];
                    dp::launch_accumulate(cfg_.dt, at(grad_.get(), geo_.w_off[li]), at(grad_tmp_.get(), geo_.w_off[li]), span, cs_);
                }
                if (comm && m == cfg_.micro - 1) all_reduce_ready(l, ev);
                if (l > 0)
                    convkit::convolution_backward_data(view(dact_[l % 2].get(), geo_.act[li]), view(dz, zs),
                                                       view(at(work(), geo_.w_off[li]), geo_.wsizes[li]),
                                                       geo_.params[li], compute_, {}, opts);
            }
        }
        if (ev) cuda_ok(cudaEventRecord((*ev)[1], cs_), "cudaEventRecord");
        if (comm) {
            cuda_ok(cudaEventRecord(comm_done_, ms_), "cudaEventRecord");
            if (ev) cuda_ok(cudaEventRecord((*ev)[2], ms_), "cudaEventRecord");
            cuda_ok(cudaStreamWaitEvent(cs_, comm_done_, 0), "cudaStreamWaitEvent");
        }
        if (update) dp::launch_sgd(cfg_.dt, master_.get<float>(), work(), grad_.get(), geo_.n_params, cfg_.lr, cs_);
        if (ev) cuda_ok(cudaEventRecord((*ev)[3], cs_), "cudaEventRecord");
    }

    // Launches the all-reduce of the bucket whose lowest layer is `l`, if there is one.
    void all_reduce_ready(int l, const Events* ev) {
        for (std::size_t b = 0; b < sh_.buckets.size(); ++b) {
            const Bucket& bk = sh_.buckets[b];
            if (bk.lo != l) continue;
            cuda_ok(cudaEventRecord(ready_[b], cs_), "cudaEventRecord");
            cuda_ok(cudaStreamWaitEvent(ms_, ready_[b], 0), "cudaStreamWaitEvent");
            if (ev) cuda_ok(cudaEventRecord((*ev)[4 + 2 * b], ms_), "cudaEventRecord");
            void* p = at(grad_.get(), bk.off);
            // A sum, not a mean: each rank's loss is already scaled by the global batch.
            nccl_ok(ncclAllReduce(p, p, static_cast<std::size_t>(bk.count), nccl_type(cfg_.dt), ncclSum,
                                  sh_.comms[static_cast<std::size_t>(rank_)], ms_),
                    "ncclAllReduce");
            if (ev) cuda_ok(cudaEventRecord((*ev)[5 + 2 * b], ms_), "cudaEventRecord");
        }
    }

    void train() {
        allocate();
        Events sync(sh_.buckets.size() + 1);
        for (std::size_t b = 0; b < sh_.buckets.size(); ++b) ready_.push_back(sync[b]);
        comm_done_ = sync[sh_.buckets.size()];
        if (cfg_.static_data) load_batch(0);

        // Warm-up pass without collectives or update: convkit builds its plans and fills its
        // allocator's cache here, because cudaMalloc / cudaFree may synchronize the device, which
        // must not happen while an all-reduce on it waits for a peer that is itself blocked.
        step(-1, false, false, nullptr);
        cuda_ok(cudaStreamSynchronize(cs_), "cudaStreamSynchronize");
        sh_.barrier.wait();

        const int total = cfg_.warmup + cfg_.steps;
        const std::size_t per_step = 4 + 2 * sh_.buckets.size();
        std::vector<std::unique_ptr<Events>> timing;
        if (cfg_.timing)
            for (int s = 0; s < cfg_.steps; ++s) timing.push_back(std::make_unique<Events>(per_step));
        PinnedMem loss_host(static_cast<std::size_t>(total) * sizeof(float));
        auto& my_loss = sh_.rank_loss[static_cast<std::size_t>(rank_)];
        my_loss.assign(static_cast<std::size_t>(total), 0.f);

        for (int s = 0; s < total; ++s) {
            const bool timed = s >= cfg_.warmup;
            if (s == cfg_.warmup) {
                cuda_ok(cudaStreamSynchronize(cs_), "cudaStreamSynchronize");
                sh_.barrier.wait();
                if (rank_ == 0) sh_.t0 = std::chrono::steady_clock::now();
            }
            step(s, true, true, cfg_.timing && timed ? timing[static_cast<std::size_t>(s - cfg_.warmup)].get() : nullptr);
            if (cfg_.print_loss) {
                cuda_ok(cudaMemcpyAsync(loss_host.get<float>() + s, loss_.get<float>() + s, sizeof(float),
                                        cudaMemcpyDeviceToHost, cs_), "cudaMemcpyAsync (loss)");
                cuda_ok(cudaStreamSynchronize(cs_), "cudaStreamSynchronize");
                my_loss[static_cast<std::size_t>(s)] = loss_host.get<float>()[s];
                sh_.barrier.wait();
                if (rank_ == 0) {
                    double sum = 0;  // in rank order: the same digits on every run
                    for (const auto& r : sh_.rank_loss) sum += r[static_cast<std::size_t>(s)];
                    std::printf("step %3d  loss %.6f\n", s + 1, sum);
                    std::fflush(stdout);
                }
            }
        }
        cuda_ok(cudaStreamSynchronize(cs_), "cudaStreamSynchronize");
        sh_.barrier.wait();
        if (rank_ == 0) sh_.t1 = std::chrono::steady_clock::now();

        cuda_ok(cudaMemcpy(loss_host.get(), loss_.get(), static_cast<std::size_t>(total) * sizeof(float), cudaMemcpyDeviceToHost),
                "cudaMemcpy (loss)");
        for (int s = 0; s < total; ++s) my_loss[static_cast<std::size_t>(s)] = loss_host.get<float>()[s];
        auto& mine = sh_.rank_master[static_cast<std::size_t>(rank_)];
        mine.resize(static_cast<std::size_t>(geo_.n_params));
        cuda_ok(cudaMemcpy(mine.data(), master_.get(), mine.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy (weights)");

        if (cfg_.timing) {
            double st = 0, nc = 0, ex = 0;
            for (const auto& e : timing) {
                st += elapsed_ms((*e)[0], (*e)[3]);
                for (std::size_t b = 0; b < sh_.buckets.size(); ++b) nc += elapsed_ms((*e)[4 + 2 * b], (*e)[5 + 2 * b]);
                // Communication that compute did not hide: from the end of backward to the end
                // of the last all-reduce (negative when it finished first).
                ex += std::max(0.f, elapsed_ms((*e)[1], (*e)[2]));
            }
            const auto r = static_cast<std::size_t>(rank_);
            sh_.step_ms[r] = st / cfg_.steps;
            sh_.nccl_ms[r] = nc / cfg_.steps;
            sh_.exposed_ms[r] = ex / cfg_.steps;
        }
    }

    Shared& sh_;
    const RunConfig& cfg_;
    const Geometry& geo_;
    int rank_;
    Device dev_;
    std::size_t es_;
    convkit::Stream compute_;
    cudaStream_t cs_ = nullptr, ms_ = nullptr;
    DeviceMem master_, work_, grad_, grad_tmp_, target_, y_, sqerr_, loss_;
    std::vector<DeviceMem> act_;
    DeviceMem dact_[2];
    std::vector<cudaEvent_t> ready_;
    cudaEvent_t comm_done_ = nullptr;
};

RunResult run(const RunConfig& cfg, const Net& net, const Dataset& data, const std::vector<float>& init) {
    if (cfg.global_batch % (static_cast<int64_t>(cfg.gpus) * cfg.micro) != 0)
        throw std::invalid_argument("the global batch " + std::to_string(cfg.global_batch) + " is not divisible by " +
                                    std::to_string(cfg.gpus) + " GPU(s) x " + std::to_string(cfg.micro) +
                                    " micro-batch(es); pass --batch");
    const Geometry geo = geometry(net, cfg.global_batch / cfg.gpus / cfg.micro);
    if (static_cast<int64_t>(init.size()) != geo.n_params) throw std::logic_error("parameter layout mismatch");
    const std::vector<Bucket> bk = buckets(net, geo, cfg.bucket_bytes, cfg.dt);
    Shared sh(cfg, net, geo, bk, data, init);

    // NVLink SHARP (multicast) stays off: the machines this runs on require it (see
    // docs/multi_gpu.md), and a user's setting does not override that.
    const char* nvls = std::getenv("NCCL_NVLS_ENABLE");
    if (nvls && std::strcmp(nvls, "0") != 0)
        std::fprintf(stderr, "data_parallel: NCCL_NVLS_ENABLE=%s overridden to 0\n", nvls);
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    sh.comms.resize(static_cast<std::size_t>(cfg.gpus));
    std::vector<int> devs(static_cast<std::size_t>(cfg.gpus));
    std::iota(devs.begin(), devs.end(), 0);
    nccl_ok(ncclCommInitAll(sh.comms.data(), cfg.gpus, devs.data()), "ncclCommInitAll");

    std::vector<std::thread> threads;
    for (int r = 0; r < cfg.gpus; ++r)
        threads.emplace_back([&sh, r] {
            try {
                Worker(sh, r).run();
            } catch (const std::exception& e) {
                // Peers may be inside a collective that waits for this rank forever, so the
                // process cannot wind down in order: report and leave.
                std::fprintf(stderr, "data_parallel: rank %d (cuda:%d): %s\n", r, r, e.what());
                std::fflush(stderr);
                std::_Exit(1);
            }
        });
    for (auto& t : threads) t.join();
    for (auto c : sh.comms) ncclCommDestroy(c);

    RunResult res;
    for (int s = cfg.warmup; s < cfg.warmup + cfg.steps; ++s) {
        double sum = 0;
        for (const auto& r : sh.rank_loss) sum += r[static_cast<std::size_t>(s)];
        res.loss.push_back(sum);
    }
    res.master = sh.rank_master[0];
    for (const auto& m : sh.rank_master) res.ranks_agree = res.ranks_agree && m == res.master;
    res.wall_s = std::chrono::duration<double>(sh.t1 - sh.t0).count();
    for (int r = 0; r < cfg.gpus; ++r) {
        res.step_ms += sh.step_ms[static_cast<std::size_t>(r)] / cfg.gpus;
        res.nccl_ms += sh.nccl_ms[static_cast<std::size_t>(r)] / cfg.gpus;
        res.exposed_ms += sh.exposed_ms[static_cast<std::size_t>(r)] / cfg.gpus;
    }
    return res;
}

// ---------------------------------------------------------------------------------------------
// Modes.

const char* layout_name(Layout l) { return l == Layout::channels_last ? "nhwc" : "nchw"; }

RunConfig base_config(const Options& o, int gpus) {
    RunConfig c;
    c.gpus = gpus;
    c.micro = o.micro;
    c.steps = o.steps;
    c.dt = o.dt;
    c.layout = o.layout;
    c.lr = o.lr;
    c.bucket_bytes = o.bucket_mb * 1024.0 * 1024.0;
    return c;
}

int train_mode(const Options& o, int visible) {
    const int n = o.gpus ? o.gpus : visible;
    if (visible < 1 || n > visible) {
        std::printf("SKIP: %d GPU(s) asked for, %d visible\n", n, visible);
        return kExitSkip;
    }
    const Net net = small_net(o.in_channels);
    RunConfig c = base_config(o, n);
    c.global_batch = o.batch ? o.batch : 32;
    c.deterministic = o.deterministic != 0;
    c.print_loss = true;
    const Geometry g = geometry(net, 1);
    const Dataset data = make_dataset(net, 8 * c.global_batch, c.dt, c.layout, o.seed, true);
    std::printf("%s, %d GPU(s), global batch %lld (%lld per GPU, %d micro-batch(es)), %s %s, lr %g, deterministic %d, tf32 %d\n",
                net.name.c_str(), n, static_cast<long long>(c.global_batch), static_cast<long long>(c.global_batch / n),
                c.micro, convkit::to_string(c.dt), layout_name(c.layout), static_cast<double>(c.lr), c.deterministic,
                convkit::allow_tf32());
    run(c, net, data, init_params(net, g, c.layout, o.seed));
    return 0;
}

int check_mode(const Options& o, int visible) {
    const int n = o.gpus ? o.gpus : visible;
    const int need = std::max(o.min_gpus ? o.min_gpus : 2, n);
    if (visible < need) {
        std::printf("SKIP: the 1-vs-N check needs %d GPU(s), %d visible\n", need, visible);
        return kExitSkip;
    }
    if (o.dt != DType::f32)
        throw std::invalid_argument("--check compares f32 training (its tolerance is argued for f32 only)");
    const Net net = small_net(o.in_channels);
    RunConfig ref = base_config(o, 1);
    ref.micro = 1;
    ref.global_batch = o.batch ? o.batch : round_up(32, static_cast<int64_t>(n) * o.micro);
    ref.deterministic = o.deterministic != 0;
    RunConfig dp = ref;
    dp.gpus = n;
    dp.micro = o.micro;
    const Geometry g = geometry(net, 1);
    const Dataset data = make_dataset(net, 8 * ref.global_batch, ref.dt, ref.layout, o.seed, true);
    const std::vector<float> init = init_params(net, g, ref.layout, o.seed);
    std::printf("check: %s, global batch %lld, %d steps, %s %s, deterministic %d, tf32 %d\n", net.name.c_str(),
                static_cast<long long>(ref.global_batch), o.steps, convkit::to_string(ref.dt), layout_name(ref.layout),
                ref.deterministic, convkit::allow_tf32());
    std::printf("reference: 1 GPU, the whole batch; candidate: %d GPU(s) x %d micro-batch(es) of %lld\n", n, dp.micro,
                static_cast<long long>(ref.global_batch / n / dp.micro));
    const RunResult a = run(ref, net, data, init);
    const RunResult b = run(dp, net, data, init);

    double loss_rel = 0;
    std::printf("step  loss(1 GPU)  loss(%d GPU)  rel.diff\n", n);
    for (std::size_t s = 0; s < a.loss.size(); ++s) {
        const double rel = std::fabs(a.loss[s] - b.loss[s]) / std::max(std::fabs(a.loss[s]), 1e-30);
        loss_rel = std::max(loss_rel, rel);
        std::printf("%4zu  %11.6f  %11.6f  %.2e\n", s + 1, a.loss[s], b.loss[s], rel);
    }
    double dmax = 0, wmax = 0;
    for (std::size_t i = 0; i < a.master.size(); ++i) {
        dmax = std::max(dmax, static_cast<double>(std::fabs(a.master[i] - b.master[i])));
        wmax = std::max(wmax, static_cast<double>(std::fabs(a.master[i])));
    }
    const double w_rel = dmax / std::max(wmax, 1e-30);
    const bool learned = a.loss.back() < a.loss.front();
    const bool ok = loss_rel <= o.tol && w_rel <= o.tol && b.ranks_agree && learned;
    std::printf("max loss rel.diff %.2e, max |dw| / max |w| %.2e (tolerance %.1e); ranks bitwise equal: %s; loss %.4f -> %.4f\n",
                loss_rel, w_rel, o.tol, b.ranks_agree ? "yes" : "NO", a.loss.front(), a.loss.back());
    std::printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

int bench_mode(const Options& o, int visible) {
    const int n_max = o.gpus ? o.gpus : visible;
    if (visible < 1 || n_max > visible) {
        std::printf("SKIP: %d GPU(s) asked for, %d visible\n", n_max, visible);
        return kExitSkip;
    }
    const Net net = resnet50_stack(o.in_channels);
    RunConfig c = base_config(o, 1);
    c.dt = o.dt_set ? o.dt : DType::bf16;
    c.deterministic = o.deterministic == 1;
    c.warmup = o.warmup;
    c.timing = true;
    c.static_data = true;
    // The 51-layer stack has no normalisation; a small step keeps it finite, which is all the
    // benchmark needs of the numbers.
    c.lr = o.lr_set ? o.lr : 1e-4f;
    const Geometry g = geometry(net, o.mb);
    const Dataset data = make_dataset(net, o.mb / o.micro, c.dt, c.layout, o.seed, false);
    const std::vector<float> init = init_params(net, g, c.layout, o.seed);
    cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("bench: %s on %s\n", net.name.c_str(), prop.name);
    std::printf("  %.2f GFLOP per image per training step (forward, backward-data, backward-weights), %.1fM parameters\n",
                g.train_flops_per_image * 1e-9, static_cast<double>(g.n_weights) * 1e-6);
    std::printf("  batch %lld per GPU (%d micro-batch(es)), %s %s, deterministic %d, %zu all-reduce bucket(s) of <= %.0f MiB, "
                "%d warm-up + %d timed steps\n",
                static_cast<long long>(o.mb), c.micro, convkit::to_string(c.dt), layout_name(c.layout), c.deterministic,
                buckets(net, g, c.bucket_bytes, c.dt).size(), o.bucket_mb, c.warmup, c.steps);
    std::printf("gpus  global_batch  step_ms  images/s  TFLOP/s  scaling_eff  nccl_ms  nccl_share  exposed_ms  loss\n");
    double ips1 = 0;
    for (int n = 1; n <= n_max; ++n) {
        c.gpus = n;
        c.global_batch = o.mb * n;
        const RunResult r = run(c, net, data, init);
        const double ips = static_cast<double>(c.global_batch) * c.steps / r.wall_s;
        if (n == 1) ips1 = ips;
        std::printf("%4d  %12lld  %7.2f  %8.1f  %7.1f  %10.1f%%  %7.2f  %9.1f%%  %10.2f  %.4g\n", n,
                    static_cast<long long>(c.global_batch), 1e3 * r.wall_s / c.steps, ips,
                    ips * g.train_flops_per_image * 1e-12, 100.0 * ips / (n * ips1), r.nccl_ms,
                    100.0 * r.nccl_ms / r.step_ms, r.exposed_ms, r.loss.back());
        std::fflush(stdout);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options o = parse(argc, argv);
        int visible = 0;
        if (cudaGetDeviceCount(&visible) != cudaSuccess) {
            (void)cudaGetLastError();
            visible = 0;
        }
        if (o.deterministic >= 0 || o.mode != Mode::bench) convkit::set_deterministic(o.deterministic != 0);
        if (o.tf32 >= 0) convkit::set_allow_tf32(o.tf32 != 0);
        else if (o.mode == Mode::check) convkit::set_allow_tf32(false);
        switch (o.mode) {
            case Mode::train: return train_mode(o, visible);
            case Mode::check: return check_mode(o, visible);
            case Mode::bench: return bench_mode(o, visible);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "data_parallel: %s\n", e.what());
        return 1;
    }
    return 0;
}
