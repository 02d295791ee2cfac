// `convkit bench`: a benchdnn-compatible convolution (--driver=conv) and deconvolution
// (--driver=deconv, convkit's transposed convolution) driver. Problems come from descriptors on
// the command line and from batch files; each runs in correctness mode (the chosen engine
// against the reference backend on the same random inputs), performance mode (min and median
// time over timed batches of calls, GFLOP/s), or both. --report=FILE.html|png adds a picture of
// the layers' times and a roofline against peaks measured in the same run (tools/report.cpp).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <numeric>
#include <optional>

#include "cli.hpp"
#include "cli_common.hpp"
#include "desc.hpp"
#include "report.hpp"

namespace convkit::tools {

namespace {

struct BenchOptions {
    std::vector<std::string> batches, descs;
    std::string driver = "conv", dir = "FWD_B", dt = "f32", tag = "nchw", engine = "auto", post_ops, mode = "both", csv;
    std::string report, torch_csv;  // --report=FILE.html|png, PyTorch's per-layer times for it
    int64_t mb = 0;
    double max_ms = 300;   // time budget per problem in perf mode
    bool prepack = false;  // forward: weights packed once, ahead of the timed calls
    int min_reps = 5;
};

enum class Dir { fwd, bwd_d, bwd_w };

struct Variant {
    Dir dir;
    bool bias;
    const char* label;
    std::string given;  // as spelled on the command line, for the report's configuration names
};

Variant parse_dir(const std::string& s) {
    if (s == "fwd" || s == "FWD_B") return {Dir::fwd, true, "fwd", s};
    if (s == "FWD_D" || s == "FWD_I") return {Dir::fwd, false, "fwd", s};
    if (s == "bwd_d" || s == "BWD_D") return {Dir::bwd_d, false, "bwd_d", s};
    if (s == "bwd_w" || s == "BWD_W") return {Dir::bwd_w, false, "bwd_w", s};
    if (s == "BWD_WB") return {Dir::bwd_w, true, "bwd_w", s};
    throw Error(ErrorKind::invalid_argument,
                "--dir: '" + s + "' is not one of fwd, bwd_d, bwd_w, FWD_B, FWD_D, BWD_D, BWD_W, BWD_WB");
}

ConvParams params_of(const ConvDesc& d) {
    ConvParams p;
    p.groups = d.g;
    for (int i = 3 - d.ndims; i < 3; ++i) {
        p.stride.push_back(d.stride[i]);
        p.padding_l.push_back(d.padding_l[i]);
        // benchdnn derives padding_r from the given output size, which for strided layers can be
        // negative (down to 1 - stride: input rows the kernel never reaches). Those rows would be
        // dropped by the floor in the output size anyway, so 0 gives the same output.
        p.padding_r.push_back(std::max<int64_t>(0, d.padding_r[i]));
        p.dilation.push_back(d.dilation[i]);
    }
    return p;
}

// A deconv descriptor as a transposed convolution: benchdnn's padding_r is negative where the
// output reaches past the last window, which is PyTorch's output_padding (the parser has checked
// that it is below the stride or the dilation).
ConvTransposeParams transposed_params_of(const ConvDesc& d) {
    ConvTransposeParams p;
    p.groups = d.g;
    for (int i = 3 - d.ndims; i < 3; ++i) {
        p.stride.push_back(d.stride[i]);
        p.padding_l.push_back(d.padding_l[i]);
        p.padding_r.push_back(std::max<int64_t>(0, d.padding_r[i]));
        p.output_padding.push_back(std::max<int64_t>(0, -d.padding_r[i]));
        p.dilation.push_back(d.dilation[i]);
    }
    return p;
}

// Products per output element of the problem's direction, for the comparison's scale.
int64_t reduction_length(const ConvDesc& d, Dir dir) {
    int64_t k = d.k[0] * d.k[1] * d.k[2];
    if (d.kind == DescKind::deconv) {
        // fwd is the data gradient of a convolution: an output meets the taps whose offsets
        // t * dilation agree with it modulo the stride, at most ceil(k / (stride / gcd)).
        if (dir == Dir::fwd) {
            int64_t taps = 1;
            for (int i = 0; i < 3; ++i) {
                const int64_t period = d.stride[i] / std::gcd(d.stride[i], d.dilation[i]);
                taps *= (d.k[i] + period - 1) / period;
            }
            return (d.ic / d.g) * taps;
        }
        if (dir == Dir::bwd_d) return (d.oc / d.g) * k;
        return d.mb * d.in[0] * d.in[1] * d.in[2];
    }
    if (dir == Dir::fwd) return (d.ic / d.g) * k;
    if (dir == Dir::bwd_d) return (d.oc / d.g) * k;
    return d.mb * d.out[0] * d.out[1] * d.out[2];
}

Dims dims_of(int64_t a, int64_t b, const std::array<int64_t, 3>& sp, int ndims) {
    Dims d{a, b};
    for (int i = 3 - ndims; i < 3; ++i) d.push_back(sp[i]);
    return d;
}

struct Result {
    std::string status = "ok";
    double tmin = 0, tmed = 0, gflops = 0, err = 0;
    double tfirst = 0;  // the problem's first call in this process: plan build, reorders, prepack
    std::string detail;
};

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One problem's tensors and the call that runs it, so correctness and timing share them.
struct Problem {
    Variant v;
    DType dt;
    Layout layout;
    Device dev;
    ConvParams params;
    bool transposed = false;  // a deconv descriptor: tparams, weights [IC, OC/g, k...]
    ConvTransposeParams tparams;
    Tensor src, wei, bia, dst, dst_init;
    std::vector<Tensor> operands;
    PostOps post_ops;
    ConvOptions opt;
    Stream stream;
    PackedWeights packed;

    Event call() {
        if (transposed) return call_transposed();
        switch (v.dir) {
            case Dir::fwd:
                if (post_ops.has_sum()) copy(dst.view(), dst_init.view());
                if (packed.defined())
                    return convolution_forward(dst, src, packed, bia.view(), params, post_ops, stream, {}, opt);
                return convolution_forward(dst, src, wei, bia.view(), params, post_ops, stream, {}, opt);
            case Dir::bwd_d:
                return convolution_backward_data(src, dst, wei, params, stream, {}, opt);
            case Dir::bwd_w:
                return convolution_backward_weights(wei, bia.view(), dst, src, params, stream, {}, opt);
        }
        return Event();
    }
    // src is the deconvolution's input and dst its output, in every direction.
    Event call_transposed() {
        switch (v.dir) {
            case Dir::fwd:
                if (post_ops.has_sum()) copy(dst.view(), dst_init.view());
                return conv_transpose_forward(dst, src, wei, bia.view(), tparams, post_ops, stream, {}, opt);
            case Dir::bwd_d:
                return conv_transpose_backward_data(src, dst, wei, tparams, stream, {}, opt);
            case Dir::bwd_w:
                return conv_transpose_backward_weights(wei, bia.view(), dst, src, tparams, stream, {}, opt);
        }
        return Event();
    }
    const TensorView& output() const {
        return v.dir == Dir::fwd ? dst.view() : v.dir == Dir::bwd_d ? src.view() : wei.view();
    }
};

Problem make_problem(const ConvDesc& d, const Variant& v, DType dt, Layout layout, Engine engine,
                     const std::string& post_ops_text, uint64_t seed) {
    Problem p;
    p.v = v;
    p.dt = dt;
    p.layout = layout;
    p.dev = engine == Engine::cuda ? Device::cuda(0) : Device::cpu();
    p.transposed = d.kind == DescKind::deconv;
    if (p.transposed) p.tparams = transposed_params_of(d);
    else p.params = params_of(d);
    p.opt.engine = engine;
    if (p.dev.is_cuda()) p.stream = Stream::cuda(0);
    Dims s = dims_of(d.mb, d.ic, d.in, d.ndims),
         w = p.transposed ? dims_of(d.ic, d.oc / d.g, d.k, d.ndims) : dims_of(d.oc, d.ic / d.g, d.k, d.ndims),
         o = dims_of(d.mb, d.oc, d.out, d.ndims);
    p.src = Tensor(dt, s, layout, p.dev);
    p.wei = Tensor(dt, w, layout, p.dev);
    p.dst = Tensor(dt, o, layout, p.dev);
    if (v.bias) p.bia = Tensor(dt, Dims{d.oc}, Layout::channels_first, p.dev);
    // Inputs get random values; outputs get them too so a backend that skips elements is caught.
    from_host_f64(p.src.view(), random_values(p.src.numel(), -1, 1, seed + 1, dt));
    from_host_f64(p.wei.view(), random_values(p.wei.numel(), -1, 1, seed + 2, dt));
    from_host_f64(p.dst.view(), random_values(p.dst.numel(), -1, 1, seed + 3, dt));
    if (v.bias) from_host_f64(p.bia.view(), random_values(d.oc, -1, 1, seed + 4, dt));
    std::vector<std::string> args;
    p.post_ops = parse_post_ops(post_ops_text, &args);
    std::size_t bi = 0;
    for (std::size_t i = 0; i < p.post_ops.size(); ++i) {
        if (p.post_ops[i].kind != PostOp::Kind::binary) continue;
        // benchdnn spelling: add[:dt[:policy]], policy common (scalar), per_oc, per_tensor.
        std::string a = args[bi++];
        std::string policy = "common";
        auto c = a.find(':');
        if (c != std::string::npos) policy = a.substr(c + 1);
        Dims od = o;
        if (policy == "common" || policy.empty()) {
            for (int k = 0; k < od.rank(); ++k) od[k] = 1;
        } else if (policy == "per_oc") {
            for (int k = 0; k < od.rank(); ++k)
                if (k != 1) od[k] = 1;
        } else if (policy != "per_tensor") {
            throw Error(ErrorKind::invalid_argument, "--attr-post-ops: binary policy '" + policy +
                                                         "' is not one of common, per_oc, per_tensor");
        }
        p.operands.emplace_back(dt, od, layout, p.dev);
        from_host_f64(p.operands.back().view(), random_values(p.operands.back().numel(), 0.5, 1.5, seed + 10 + i, dt));
        p.post_ops[i].operand = p.operands.back().view();
    }
    if (p.post_ops.has_sum()) {
        p.dst_init = Tensor(dt, o, layout, p.dev);
        copy(p.dst_init.view(), p.dst.view());
    }
    return p;
}

Result run_one(const ConvDesc& d, const Variant& v, DType dt, Layout layout, Engine engine,
               const BenchOptions& o) {
    Result r;
    const bool corr = o.mode != "perf", perf = o.mode != "corr";
    Problem p = make_problem(d, v, dt, layout, engine, o.post_ops, 1234);
    try {
        const double t0 = now_ms();
        if (o.prepack && v.dir == Dir::fwd) p.packed = prepack_weights(p.wei, p.src, p.params, p.post_ops, p.opt);
        p.call().wait();
        r.tfirst = now_ms() - t0;
    } catch (const Error& e) {
        if (e.kind() == ErrorKind::unsupported) {
            r.status = "unsupported";
            r.detail = e.what();
            return r;
        }
        throw;
    }
    if (corr) {
        // The same inputs on the reference backend, host side, in the same layout.
        Problem q = make_problem(d, v, dt, layout, Engine::ref, o.post_ops, 1234);
        q.call().wait();
        std::vector<double> got = to_host_f64(p.output()), want = to_host_f64(q.output());
        const int64_t K = reduction_length(d, v.dir);
        const double scale = std::max(1.0, std::sqrt(static_cast<double>(K)) / 3.0);
        const double tol = (engine == Engine::cuda && dt == DType::f32 && allow_tf32()) ? kTf32Tolerance : tolerance(dt);
        CompareResult c = compare(got, want, dt, scale, tol);
        if (c.ok && v.dir == Dir::bwd_w && v.bias) {
            // The bias gradient sums diff_dst over mb and every output position.
            const double Kb = static_cast<double>(d.mb * d.out[0] * d.out[1] * d.out[2]);
            std::vector<double> gb = to_host_f64(p.bia.view()), wb = to_host_f64(q.bia.view());
            CompareResult cb = compare(gb, wb, dt, std::max(1.0, std::sqrt(Kb) / 3.0), tol);
            if (!cb.ok) c = cb, c.detail = "diff_bias: " + cb.detail;
        }
        r.err = c.max_err;
        if (!c.ok) {
            r.status = "FAILED";
            r.detail = c.detail + " (" + std::to_string(c.bad) + " of " + std::to_string(got.size()) +
                       " elements outside tolerance " + std::to_string(tol) + ")";
        }
    }
    if (perf) {
        // Batches of calls between host syncs, sized to ~1 ms, so GPU launches overlap as in a real
        // network; per-call time = batch time / calls. The min and median are over batches.
        double t0 = now_ms();
        p.call();
        p.stream.synchronize();
        double one = std::max(now_ms() - t0, 1e-3);
        int per_batch = std::max(1, static_cast<int>(1.0 / one));
        std::vector<double> times;
        double start = now_ms();
        while (static_cast<int>(times.size()) < o.min_reps || (now_ms() - start < o.max_ms && times.size() < 1000)) {
            double b0 = now_ms();
            for (int i = 0; i < per_batch; ++i) p.call();
            p.stream.synchronize();
            times.push_back((now_ms() - b0) / per_batch);
        }
        std::sort(times.begin(), times.end());
        r.tmin = times.front();
        r.tmed = times[times.size() / 2];
        r.gflops = d.flops() / (r.tmin * 1e6);
    }
    return r;
}

// The run as a shell command, for the report's title.
std::string command_line(const std::vector<std::string>& args) {
    std::string cmd = "convkit bench";
    for (const auto& a : args) {
        const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789_./=,:+-@%") == std::string::npos;
        if (plain) {
            cmd += " " + a;
            continue;
        }
        cmd += " '";
        for (char c : a) cmd += c == '\'' ? std::string("'\\''") : std::string(1, c);
        cmd += "'";
    }
    return cmd;
}

// src + weights + dst, each read or written once: the roofline's bytes.
double tensor_bytes(const ConvDesc& d, DType dt) {
    auto prod = [](const std::array<int64_t, 3>& a) { return static_cast<double>(a[0] * a[1] * a[2]); };
    const double src = static_cast<double>(d.mb * d.ic) * prod(d.in), dst = static_cast<double>(d.mb * d.oc) * prod(d.out);
    const double wei = static_cast<double>(d.oc) * static_cast<double>(d.ic / d.g) * prod(d.k);
    return (src + wei + dst) * static_cast<double>(dtype_size(dt));
}

// What PyTorch rows with a tf32 column are matched against.
bool uses_tf32(Engine engine, DType dt) { return engine == Engine::cuda && dt == DType::f32 && allow_tf32(); }

}  // namespace

int bench_command(const std::vector<std::string>& args) {
    BenchOptions o;
    CLI::App app{"convkit bench: benchdnn-compatible convolution / deconvolution driver", "convkit bench"};
    app.add_option("--driver", o.driver,
                   "conv | deconv (benchdnn's deconv descriptors: ic/i* = the transposed convolution's input, "
                   "oc/o* = its output, weights [IC, OC/g, k...])")
            ->check(CLI::IsMember({"conv", "deconv"}));
    app.add_option("--batch", o.batches, "batch file of problem descriptors (repeatable)");
    app.add_option("--dir", o.dir, "fwd|bwd_d|bwd_w or FWD_B|FWD_D|BWD_D|BWD_W|BWD_WB; comma-separated for several");
    app.add_option("--dt", o.dt, "f32|f64|bf16|f16; comma-separated for several");
    app.add_option("--tag", o.tag, "nchw|nhwc; comma-separated for several");
    app.add_option("--mb", o.mb, "minibatch override (0 = as in the descriptor)");
    app.add_option("--engine", o.engine, "auto|ref|cpu|cuda")->check(CLI::IsMember({"auto", "ref", "cpu", "cuda"}));
    app.add_option("--attr-post-ops", o.post_ops, "post-ops, benchdnn spelling (binary: add:f32:per_oc)");
    app.add_option("--mode", o.mode, "corr|perf|both")->check(CLI::IsMember({"corr", "perf", "both", "C", "P", "CP"}));
    app.add_option("--csv", o.csv, "write one row per problem to this CSV file");
    app.add_option("--max-ms-per-prb", o.max_ms, "perf mode time budget per problem (ms)");
    app.add_flag("--prepack", o.prepack, "conv forward: pack the weights once before timing (inference)");
    app.add_option("--report", o.report,
                   "write a per-layer report with a roofline against peaks measured here: FILE.html (self-contained, "
                   "inline SVG) or FILE.png (python3 + matplotlib); needs --mode=perf or both");
    app.add_option("--torch-csv", o.torch_csv,
                   "PyTorch's per-layer times for --report: the --layers-csv file of bench/compare_torch_cpu.py or "
                   "compare_torch_gpu.py (columns name,dir,dt,tag,pytorch_ms[,mb][,tf32])");
    app.add_option("descriptors", o.descs, "problem descriptors, e.g. mb32ic64ih56oc64oh56kh3ph1n\"res2\"");
    std::vector<std::string> rev(args.rbegin(), args.rend());
    try {
        app.parse(rev);
    } catch (const CLI::CallForHelp&) {
        std::cout << app.help();
        return 0;
    } catch (const CLI::ParseError& e) {
        std::cerr << "convkit bench: error: " << e.what() << " (see convkit bench --help)\n";
        return 2;
    }
    if (o.mode == "C") o.mode = "corr";
    if (o.mode == "P") o.mode = "perf";
    if (o.mode == "CP") o.mode = "both";
    int failures = 0;
    try {
        const DescKind kind = o.driver == "deconv" ? DescKind::deconv : DescKind::conv;
        if (kind == DescKind::deconv && o.prepack)
            throw Error(ErrorKind::invalid_argument, "--prepack applies to --driver=conv only (weights are packed for convolution_forward)");
        std::vector<ConvDesc> probs;
        for (const auto& b : o.batches) {
            auto v = read_batch_file(b, kind);
            probs.insert(probs.end(), v.begin(), v.end());
        }
        for (const auto& s : o.descs) probs.push_back(parse_conv_desc(s, kind));
        if (probs.empty()) throw Error(ErrorKind::invalid_argument, "no problems: give --batch=FILE or descriptors");
        if (o.mb < 0) throw Error(ErrorKind::invalid_argument, "--mb must be >= 0, got " + std::to_string(o.mb));
        Engine engine = engine_from_string(o.engine);
        if (engine == Engine::automatic) engine = best_engine(Device::cpu());
        {
            auto avail = available_engines();
            if (std::find(avail.begin(), avail.end(), engine) == avail.end())
                throw Error(ErrorKind::unsupported, std::string("--engine=") + to_string(engine) +
                                                        " is not available here (" +
                                                        (engine == Engine::cuda ? "no CUDA backend or no visible CUDA device" : "not compiled in") + ")");
        }
        std::vector<Variant> dirs;
        std::vector<DType> dts;
        std::vector<std::string> tags;
        auto split = [](const std::string& s) {
            std::vector<std::string> out;
            std::string cur;
            for (char c : s + ",") {
                if (c == ',') {
                    if (!cur.empty()) out.push_back(cur);
                    cur.clear();
                } else {
                    cur += c;
                }
            }
            return out;
        };
        for (const auto& s : split(o.dir)) dirs.push_back(parse_dir(s));
        for (const auto& s : split(o.dt)) dts.push_back(dtype_from_string(s));
        for (const auto& s : split(o.tag)) {
            if (s != "nchw" && s != "nhwc" && s != "ncw" && s != "nwc" && s != "ncdhw" && s != "ndhwc")
                throw Error(ErrorKind::invalid_argument, "--tag: '" + s + "' is not one of nchw, nhwc (ncw/nwc, ncdhw/ndhwc)");
            tags.push_back(s);
        }
        (void)parse_post_ops(o.post_ops, nullptr);  // reject a malformed chain before any work

        // Everything the report needs is checked here, so that a run that would fail to write it
        // fails before the benchmarks (and before --csv is truncated).
        std::optional<ReportWriter> report;
        TorchTimes torch;
        if (!o.torch_csv.empty() && o.report.empty())
            throw Error(ErrorKind::invalid_argument,
                        "--torch-csv '" + o.torch_csv + "' is read only for a report: add --report=FILE.html or FILE.png");
        if (!o.report.empty()) {
            if (o.mode == "corr")
                throw Error(ErrorKind::invalid_argument, "--report '" + o.report +
                                                             "' needs performance times: use --mode=perf or --mode=both (got --mode=corr)");
            report.emplace(o.report);
            if (!o.torch_csv.empty()) {
                torch = TorchTimes::read(o.torch_csv);
                std::size_t matched = 0;
                for (const auto& v : dirs)
                    for (DType dt : dts)
                        for (const auto& tag : tags)
                            for (const ConvDesc& d : probs)
                                if (std::isfinite(torch.find(d.name, v.label, to_string(dt), tag, o.mb > 0 ? o.mb : d.mb,
                                                             uses_tf32(engine, dt))))
                                    ++matched;
                if (matched == 0)
                    throw Error(ErrorKind::invalid_argument,
                                "--torch-csv '" + o.torch_csv + "': none of its " + std::to_string(torch.rows()) +
                                        " timed rows matches a layer of this run (rows match by name, dir, dt, tag, and "
                                        "by mb and tf32 where the file has those columns; this run: --dir=" + o.dir +
                                        " --dt=" + o.dt + " --tag=" + o.tag +
                                        (o.mb > 0 ? " --mb=" + std::to_string(o.mb) : std::string()) + ")");
            }
        }

        std::ofstream csv;
        if (!o.csv.empty()) {
            csv.open(o.csv);
            if (!csv) throw Error(ErrorKind::invalid_argument, "--csv: cannot write '" + o.csv + "'");
            csv << "name,dir,dt,tag,mb,descriptor,status,time_min_ms,time_med_ms,gflops,first_ms\n";
        }
        const bool tty = isatty(2);
        const std::size_t total = probs.size() * dirs.size() * dts.size() * tags.size();
        std::size_t done = 0;
        // Which kernels the figures come from (ISA, library version, threads).
        const std::string info = engine_info(engine);
        std::printf("# engine %s%s%s\n", to_string(engine), info.empty() ? "" : ": ", info.c_str());
        ReportData rd;
        // The peaks are measured before the layers and again after them, and the better of the two
        // kept: a burst of other work on the machine during one measurement would otherwise put
        // the roof under the layers.
        auto measure_peaks = [&] {
            if (tty) std::fprintf(stderr, "measuring the memory and compute peaks for --report...");
            auto better = [](double now, double before) {
                return std::isfinite(now) && (!std::isfinite(before) || now > before);
            };
            MemoryPeak m = measure_memory_bandwidth(engine);
            if (rd.memory.note.empty() || better(m.gbs, rd.memory.gbs)) rd.memory = m;
            for (DType dt : dts) {
                ComputePeak c = measure_compute_peak(engine, dt);
                auto it = std::find_if(rd.compute.begin(), rd.compute.end(), [&](const ComputePeak& p) { return p.dt == c.dt; });
                if (it == rd.compute.end()) rd.compute.push_back(c);
                else if (better(c.gflops, it->gflops)) *it = c;
            }
            if (tty) std::fprintf(stderr, "\r\033[K");
        };
        if (report) {
            rd.engine = std::string(to_string(engine)) + (info.empty() ? "" : ": " + info);
            rd.command = command_line(args);
            rd.torch_csv = o.torch_csv;
            rd.torch_rows = torch.rows();
            char host[256] = "";
            if (gethostname(host, sizeof host - 1) == 0) rd.host = host;
            const std::time_t now = std::time(nullptr);
            char date[64];
            std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
            rd.date = date;
            measure_peaks();
        }
        std::printf("%-22s %-6s %-5s %-5s %4s %-12s %10s %10s %9s %9s %10s\n", "name", "dir", "dt", "tag", "mb", "status",
                    "min_ms", "med_ms", "GFLOP/s", "max_err", "first_ms");
        for (const auto& v : dirs)
            for (DType dt : dts)
                for (const auto& tag : tags) {
                    double sum_min = 0, sum_flops = 0, sum_first = 0;
                    for (ConvDesc d : probs) {
                        if (o.mb > 0) d.mb = o.mb;
                        ++done;
                        if (tty) std::fprintf(stderr, "\r[%zu/%zu] %s %s %s %s        ", done, total, d.name.c_str(), v.label, to_string(dt), tag.c_str());
                        Layout layout = (tag == "nhwc" || tag == "nwc" || tag == "ndhwc") ? Layout::channels_last : Layout::channels_first;
                        Result r = run_one(d, v, dt, layout, engine, o);
                        if (r.status == "FAILED") ++failures;
                        if (tty) std::fprintf(stderr, "\r\033[K");
                        std::printf("%-22s %-6s %-5s %-5s %4lld %-12s %10.4f %10.4f %9.1f %9.2e %10.3f\n", d.name.c_str(), v.label,
                                    to_string(dt), tag.c_str(), static_cast<long long>(d.mb), r.status.c_str(), r.tmin, r.tmed,
                                    r.gflops, r.err, r.tfirst);
                        if (!r.detail.empty()) std::printf("    %s\n", r.detail.c_str());
                        std::fflush(stdout);
                        sum_min += r.tmin;
                        sum_first += r.tfirst;
                        sum_flops += d.flops();
                        if (report) {
                            ReportLayer l;
                            l.config = std::string(v.label) + (v.given != v.label ? " (" + v.given + ")" : "") + " " +
                                       to_string(dt) + " " + tag;
                            l.name = d.name;
                            l.descriptor = d.str();
                            l.dir = v.label;
                            l.dt = to_string(dt);
                            l.tag = tag;
                            l.mb = d.mb;
                            l.status = r.status;
                            l.ms = r.status == "unsupported" ? NAN : r.tmin;
                            l.flops = d.flops();
                            l.bytes = tensor_bytes(d, dt);
                            l.torch_ms = torch.find(d.name, v.label, l.dt, tag, d.mb, uses_tf32(engine, dt));
                            rd.layers.push_back(std::move(l));
                        }
                        if (csv)
                            csv << d.name << "," << v.label << "," << to_string(dt) << "," << tag << "," << d.mb << ",\""
                                << d.str() << "\"," << r.status << "," << r.tmin << "," << r.tmed << "," << r.gflops << "," << r.tfirst << "\n";
                    }
                    if (o.mode != "corr")
                        std::printf("%-22s %-6s %-5s %-5s %4s %-12s %10.4f %10s %9.1f %9s %10.3f\n", "total", v.label, to_string(dt),
                                    tag.c_str(), "", "", sum_min, "", sum_flops / (sum_min * 1e6), "", sum_first);
                }
        if (report) {
            measure_peaks();
            std::printf("# peak memory: %.1f GB/s (%s; the better of before and after the layers)\n", rd.memory.gbs,
                        rd.memory.note.c_str());
            for (const auto& p : rd.compute)
                std::printf("# peak compute %s: %.1f GFLOP/s (%s; the better of before and after the layers)\n",
                            p.dt.c_str(), p.gflops, p.note.c_str());
            report->write(rd);
            std::size_t with_torch = 0;
            for (const auto& l : rd.layers) with_torch += std::isfinite(l.torch_ms) ? 1 : 0;
            std::printf("# report: %s (%zu layers", report->path().c_str(), rd.layers.size());
            if (!o.torch_csv.empty()) std::printf(", PyTorch times for %zu", with_torch);
            std::printf(")\n");
        }
    } catch (...) {
        return report_error("bench");
    }
    if (o.mode != "perf")
        std::printf("%s\n", failures ? "correctness: FAILED" : "correctness: all problems within tolerance");
    return failures ? 1 : 0;
}

}  // namespace convkit::tools
