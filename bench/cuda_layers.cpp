// The CUDA engine on real networks' layers, for bench/compare_torch_gpu.py and for reading by hand
// (these runs used to live inside test_cuda; a unit test is no place for timings or dumps).
//
//   cuda_layers network --batch=inputs/resnet_50 [--mb=32 --dt=bf16 --tag=nhwc --dirs=fwd,bwd_d,bwd_w]
//                       [--driver=deconv]
//       (--driver=deconv: the batch file's descriptors are benchdnn deconvolutions, run as
//       conv_transpose_forward / _backward_data / _backward_weights.)
//       Per layer and direction: the wall time of the first call (plan building: heuristics,
//       autotuning or the tune file; plus the run and a synchronize), then the mean of 20
//       back-to-back calls after 3 warm-ups, as compare_torch_gpu.py times PyTorch. Tensors are
//       filled on the device (host-generated mb-256 tensors take minutes). The library's own
//       switches apply: CONVKIT_ALLOW_TF32, CONVKIT_CUDA_AUTOTUNE, CONVKIT_CUDA_TUNE_FILE.
//       Lines:  netperf <layer> <dir> first_ms <x> steady_ms <y> <engine>
//               netperf total <dir> first_ms <sum> steady_ms <sum>
//               netperf plans fused <n> unfused <n> direct <n> split <n> tuned <n> loaded <n> gemm <n>
//   cuda_layers tiny
//       Host cost of a cached tiny convolution (8x8, 16 channels, mb 1), direct kernel and cuDNN,
//       with and without bias, both layouts: enqueue-only and with the GPU, in us per call.
//   cuda_layers dump --dir=DIR
//       ResNet-50, MobileNet v1/v2 (mb 2) and 3D U-Net (mb 1) layers, f32 NCHW and bf16 NHWC,
//       every direction: inputs and cuda outputs as .npy plus DIR/manifest.txt, for
//       `compare_torch_gpu.py --check DIR` (PyTorch's CUDA convolution in f64 as the judge).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "convkit/convkit.hpp"
#include "cuda/cuda_api.hpp"
#include "desc.hpp"
#include "npy.hpp"

using namespace convkit;

namespace {

enum class Dir { fwd, bwd_d, bwd_w };
const char* name(Dir d) { return d == Dir::fwd ? "fwd" : d == Dir::bwd_d ? "bwd_d" : "bwd_w"; }

struct Layer {
    Dims src, wei, dst;
    ConvParams params;
    bool transposed = false;
    ConvTransposeParams tparams;  // transposed only
    DType dt = DType::f32;
    Layout layout = Layout::channels_first;
};

Layer layer_of(const tools::ConvDesc& d, DType dt, bool nhwc) {
    Layer l;
    l.dt = dt;
    l.layout = nhwc ? Layout::channels_last : Layout::channels_first;
    l.src = Dims{d.mb, d.ic};
    l.wei = Dims{d.oc, d.ic / d.g};
    for (int i = 3 - d.ndims; i < 3; ++i) {
        l.src.push_back(d.in[i]);
        l.wei.push_back(d.k[i]);
        l.params.stride.push_back(d.stride[i]);
        l.params.padding_l.push_back(d.padding_l[i]);
        l.params.padding_r.push_back(std::max<int64_t>(0, d.padding_r[i]));  // benchdnn's -1: same output
        l.params.dilation.push_back(d.dilation[i]);
    }
    l.params.groups = d.g;
    if (d.kind == tools::DescKind::deconv) {
        // src [mb, ic, in], weights [ic, oc/g, k] (the transposed layout); benchdnn's negative
        // padding_r is output rows past the last window: PyTorch's output_padding.
        l.transposed = true;
        l.wei = Dims{d.ic, d.oc / d.g};
        ConvTransposeParams& t = l.tparams;
        t.groups = d.g;
        for (int i = 3 - d.ndims; i < 3; ++i) {
            l.wei.push_back(d.k[i]);
            t.stride.push_back(d.stride[i]);
            t.padding_l.push_back(d.padding_l[i]);
            t.padding_r.push_back(std::max<int64_t>(0, d.padding_r[i]));
            t.output_padding.push_back(std::max<int64_t>(0, -d.padding_r[i]));
            t.dilation.push_back(d.dilation[i]);
        }
        l.dst = conv_transpose_output_shape(l.src, l.wei, t);
        return l;
    }
    l.dst = output_shape(l.src, l.wei, l.params);
    return l;
}

struct Tensors {
    Tensor src, wei, dst;
};

// 2^20 host-generated values, then repeated by device copies.
void fill_on_device(Tensor& x, uint64_t seed) {
    const int64_t n = x.numel(), chunk = std::min<int64_t>(n, int64_t(1) << 20);
    const std::size_t es = x.nbytes() / static_cast<std::size_t>(n);
    auto at = [&](int64_t i, int64_t m) {
        return TensorView(static_cast<char*>(x.data()) + static_cast<std::size_t>(i) * es, x.dtype(), Dims{m},
                          x.device());
    };
    tools::from_host_f64(at(0, chunk), tools::random_values(chunk, -1, 1, seed, x.dtype()));
    for (int64_t done = chunk; done < n;) {
        const int64_t m = std::min(done, n - done);
        copy(at(done, m), at(0, m));
        done += m;
    }
}

Tensors make(const Layer& l) {
    const Device dev = Device::cuda(0);
    Tensors t{Tensor(l.dt, l.src, l.layout, dev), Tensor(l.dt, l.wei, l.layout, dev), Tensor(l.dt, l.dst, l.layout, dev)};
    fill_on_device(t.src, 31);
    fill_on_device(t.wei, 32);
    fill_on_device(t.dst, 33);
    return t;
}

Event run(const Layer& l, Tensors& t, Dir d, const Stream& s, const TensorView& bias = TensorView()) {
    ConvOptions o;
    o.engine = Engine::cuda;
    if (l.transposed) {
        switch (d) {
            case Dir::fwd: return conv_transpose_forward(t.dst, t.src, t.wei, bias, l.tparams, PostOps(), s, {}, o);
            case Dir::bwd_d: return conv_transpose_backward_data(t.src, t.dst, t.wei, l.tparams, s, {}, o);
            case Dir::bwd_w: return conv_transpose_backward_weights(t.wei, TensorView(), t.dst, t.src, l.tparams, s, {}, o);
        }
    }
    switch (d) {
        case Dir::fwd: return convolution_forward(t.dst, t.src, t.wei, bias, l.params, PostOps(), s, {}, o);
        case Dir::bwd_d: return convolution_backward_data(t.src, t.dst, t.wei, l.params, s, {}, o);
        case Dir::bwd_w: return convolution_backward_weights(t.wei, TensorView(), t.dst, t.src, l.params, s, {}, o);
    }
    return Event();
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string find_input(const std::string& path) {
    if (std::ifstream(path).good()) return path;
    return std::string(CONVKIT_SOURCE_DIR) + "/" + path;
}

int network(const std::string& batch, int64_t mb, DType dt, const std::string& tag, const std::vector<Dir>& dirs,
            tools::DescKind kind) {
    const bool nhwc = tag == "nhwc" || tag == "nwc" || tag == "ndhwc";
    Stream s = Stream::cuda(0);
    // Warm the library (context, cuDNN handle, lazily loaded modules) on an unrelated shape, as the
    // PyTorch script does, so that first calls count plan building and the run only. Through
    // cuDNN, not the direct kernel that would take so small a shape.
    {
        const int64_t direct = cuda::direct_max_macs();
        cuda::set_direct_max_macs(0);
        const Layer w = layer_of(tools::parse_conv_desc("mb2ic8ih9oc8oh9kh3ph1"), DType::f32, false);
        Tensors t = make(w);
        run(w, t, Dir::fwd, s).wait();
        cuda::set_direct_max_macs(direct);
    }
    std::map<int, double> first_total, steady_total;
    for (tools::ConvDesc d : tools::read_batch_file(find_input(batch), kind)) {
        if (mb > 0) d.mb = mb;
        const Layer l = layer_of(d, dt, nhwc);
        Tensors t = make(l);
        s.synchronize();
        std::map<int, double> first;
        std::map<int, std::string> engine;
        for (Dir dir : dirs) {
            const double t0 = now_ms();
            run(l, t, dir, s);
            s.synchronize();
            first[static_cast<int>(dir)] = now_ms() - t0;
            engine[static_cast<int>(dir)] = cuda::last_plan().engine_name;
        }
        for (Dir dir : dirs) {
            for (int i = 0; i < 3; ++i) run(l, t, dir, s);
            s.synchronize();
            const int iters = 20;
            const double t0 = now_ms();
            for (int i = 0; i < iters; ++i) run(l, t, dir, s);
            s.synchronize();
            const double steady = (now_ms() - t0) / iters;
            const int k = static_cast<int>(dir);
            first_total[k] += first[k];
            steady_total[k] += steady;
            std::printf("netperf %s %s first_ms %.3f steady_ms %.5f %s\n", d.name.c_str(), name(dir), first[k], steady,
                        engine[k].c_str());
        }
        std::fflush(stdout);
    }
    for (Dir dir : dirs) {
        const int k = static_cast<int>(dir);
        std::printf("netperf total %s first_ms %.2f steady_ms %.4f\n", name(dir), first_total[k], steady_total[k]);
    }
    const cuda::PlanCounters pc = cuda::plan_counters();
    std::printf("netperf plans fused %llu unfused %llu direct %llu split %llu tuned %llu loaded %llu gemm %llu\n",
                static_cast<unsigned long long>(pc.fused), static_cast<unsigned long long>(pc.unfused),
                static_cast<unsigned long long>(pc.direct), static_cast<unsigned long long>(pc.split),
                static_cast<unsigned long long>(pc.tuned), static_cast<unsigned long long>(pc.loaded),
                static_cast<unsigned long long>(pc.gemm));
    return 0;
}

int tiny() {
    for (bool direct : {true, false}) {
        cuda::set_direct_max_macs(direct ? int64_t(1) << 20 : 0);
        clear_cache(Engine::cuda);
        for (bool with_bias : {false, true})
            for (bool nhwc : {false, true}) {
                const Layer l = layer_of(tools::parse_conv_desc("mb1ic16ih8oc16oh8kh3ph1"), DType::f32, nhwc);
                Tensors t = make(l);
                Tensor bias(DType::f32, Dims{16}, Layout::channels_first, Device::cuda(0));
                fill_on_device(bias, 34);
                const TensorView b = with_bias ? bias.view() : TensorView();
                Stream s = Stream::cuda(0);
                for (int i = 0; i < 200; ++i) run(l, t, Dir::fwd, s, b);
                s.synchronize();
                const int enq = 200, thr = 5000;
                double t0 = now_ms();
                for (int i = 0; i < enq; ++i) run(l, t, Dir::fwd, s, b);
                const double host = (now_ms() - t0) * 1e3 / enq;
                s.synchronize();
                t0 = now_ms();
                for (int i = 0; i < thr; ++i) run(l, t, Dir::fwd, s, b);
                s.synchronize();
                const double per = (now_ms() - t0) * 1e3 / thr;
                const cuda::PlanInfo info = cuda::last_plan();
                std::printf("tiny %s%s: host enqueue %.2f us/call, with GPU %.2f us/call (%s%s)\n",
                            nhwc ? "nhwc" : "nchw", with_bias ? " +bias" : "", host, per, info.engine_name.c_str(),
                            info.fused ? " fused" : "");
            }
    }
    return 0;
}

int dump(const std::string& out) {
    std::ofstream manifest(out + "/manifest.txt");
    if (!manifest) {
        std::fprintf(stderr, "cuda_layers dump: cannot write %s/manifest.txt\n", out.c_str());
        return 2;
    }
    set_allow_tf32(false);
    int n = 0;
    // U-Net at mb 1 (its layers are large: ~6 GB of .npy files in all).
    const std::pair<const char*, int64_t> batches[] = {
            {"inputs/resnet_50", 2}, {"inputs/mobilenet_v1", 2}, {"inputs/mobilenet_v2", 2}, {"inputs/unet_3d", 1}};
    for (const auto& [batch, batch_mb] : batches) {
        for (tools::ConvDesc d : tools::read_batch_file(find_input(batch))) {
            d.mb = batch_mb;
            for (DType dt : {DType::f32, DType::bf16}) {
                const Layer l = layer_of(d, dt, dt == DType::bf16);
                for (Dir dirn : {Dir::fwd, Dir::bwd_d, Dir::bwd_w}) {
                    Tensors t{Tensor(l.dt, l.src, l.layout, Device::cuda(0)), Tensor(l.dt, l.wei, l.layout, Device::cuda(0)),
                              Tensor(l.dt, l.dst, l.layout, Device::cuda(0))};
                    tools::from_host_f64(t.src, tools::random_values(t.src.numel(), -1, 1, 11, dt));
                    tools::from_host_f64(t.wei, tools::random_values(t.wei.numel(), -1, 1, 12, dt));
                    tools::from_host_f64(t.dst, tools::random_values(t.dst.numel(), -1, 1, 13, dt));
                    run(l, t, dirn, Stream()).wait();
                    const std::string stem = out + "/" + std::to_string(n++);
                    tools::write_npy(stem + "_src.npy", tools::npy_from_tensor(t.src));
                    tools::write_npy(stem + "_wei.npy", tools::npy_from_tensor(t.wei));
                    tools::write_npy(stem + "_dst.npy", tools::npy_from_tensor(t.dst));
                    const ConvParams& p = l.params;
                    manifest << stem << " " << d.name << " " << name(dirn) << " " << to_string(dt) << " " << d.g << " "
                             << p.stride[p.stride.rank() - 1] << " " << p.padding_l[p.padding_l.rank() - 1] << " "
                             << p.dilation[p.dilation.rank() - 1] << "\n";
                }
            }
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"The CUDA engine on real networks' layers: timings and dumps"};
    app.require_subcommand(1);
    std::string batch, dt_name = "bf16", tag = "nhwc", dirs_list = "fwd,bwd_d,bwd_w", dir, driver = "conv";
    int64_t mb = 32;
    CLI::App* net = app.add_subcommand("network", "first-call and steady-state time of each layer");
    net->add_option("--batch", batch, "benchdnn batch file")->required();
    net->add_option("--mb", mb, "minibatch (0: the file's)");
    net->add_option("--dt", dt_name, "f32, f16, bf16 or f64");
    net->add_option("--tag", tag, "nchw or nhwc (nwc/ndhwc too)");
    net->add_option("--dirs", dirs_list, "comma-separated fwd, bwd_d, bwd_w");
    net->add_option("--driver", driver, "conv or deconv (transposed convolution)")->check(CLI::IsMember({"conv", "deconv"}));
    CLI::App* tin = app.add_subcommand("tiny", "host cost of a cached tiny convolution");
    CLI::App* dmp = app.add_subcommand("dump", "layers' inputs and cuda outputs as .npy");
    dmp->add_option("--dir", dir, "output folder (must exist)")->required();
    CLI11_PARSE(app, argc, argv);
    try {
        bool gpu = false;
        for (Engine e : available_engines()) gpu = gpu || e == Engine::cuda;
        if (!gpu) {
            std::fprintf(stderr, "cuda_layers: no CUDA device visible\n");
            return 2;
        }
        if (*net) {
            std::vector<Dir> dirs;
            std::string cur;
            for (char ch : dirs_list + ",") {
                if (ch != ',') {
                    cur += ch;
                    continue;
                }
                if (cur == "fwd") dirs.push_back(Dir::fwd);
                else if (cur == "bwd_d") dirs.push_back(Dir::bwd_d);
                else if (cur == "bwd_w") dirs.push_back(Dir::bwd_w);
                else if (!cur.empty()) throw Error(ErrorKind::invalid_argument, "--dirs: unknown direction '" + cur + "'");
                cur.clear();
            }
            return network(batch, mb, dtype_from_string(dt_name), tag, dirs,
                           driver == "deconv" ? tools::DescKind::deconv : tools::DescKind::conv);
        }
        if (*tin) return tiny();
        return dump(dir);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cuda_layers: %s\n", e.what());
        return 1;
    }
}
