// `convkit run`: one convolution from .npy files, written back as .npy. Everything is read and
// validated, and the result computed, before anything is written; each output goes through a
// temporary file and a rename, so a failed run leaves existing files as they were.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <optional>

#include "cli.hpp"
#include "cli_common.hpp"

namespace convkit::tools {

namespace {

struct RunOptions {
    std::string dir = "fwd", engine = "auto", dt = "f32", tag = "nchw";
    std::string stride, padding_l, padding_r, dilation;
    int64_t groups = 1;
    std::string src, wei, bia, diff_dst, src_shape, wei_shape, post_ops, dst_init, out, out_bia;
};

Tensor load(const std::string& path, const char* flag, DType dt, Layout layout, Device dev) {
    if (path.empty()) throw Error(ErrorKind::invalid_argument, std::string(flag) + " is required for this --dir");
    NpyArray a = read_npy(path);
    if (a.shape.empty() || a.shape.size() > static_cast<std::size_t>(Dims::max_rank))
        throw Error(ErrorKind::invalid_argument, std::string(flag) + " '" + path + "' has " +
                                                     std::to_string(a.shape.size()) + " dimensions (expected 1 to 5)");
    return tensor_from_npy(a, dt, layout, dev);
}

int run(const RunOptions& o) {
    const DType dt = dtype_from_string(o.dt);
    const Engine engine = engine_from_string(o.engine);
    const Layout layout = o.tag == "nhwc" ? Layout::channels_last : Layout::channels_first;
    const Device dev = engine == Engine::cuda ? Device::cuda(0) : Device::cpu();
    if (engine != Engine::automatic) {
        auto avail = available_engines();
        if (std::find(avail.begin(), avail.end(), engine) == avail.end())
            throw Error(ErrorKind::unsupported, std::string("--engine=") + to_string(engine) +
                                                    " is not available here (" +
                                                    (engine == Engine::cuda ? "no CUDA backend or no visible CUDA device" : "not compiled in") + ")");
    }
    ConvParams params;
    if (!o.stride.empty()) params.stride = parse_list(o.stride, "--stride");
    if (!o.padding_l.empty()) params.padding_l = parse_list(o.padding_l, "--pad-l");
    if (!o.padding_r.empty()) params.padding_r = parse_list(o.padding_r, "--pad-r");
    if (!o.dilation.empty()) params.dilation = parse_list(o.dilation, "--dilation");
    params.groups = o.groups;
    ConvOptions opt;
    opt.engine = engine;
    if (o.out.empty()) throw Error(ErrorKind::invalid_argument, "--out is required");

    Tensor result, result_bias;
    if (o.dir == "fwd") {
        if (!o.diff_dst.empty() || !o.src_shape.empty() || !o.wei_shape.empty() || !o.out_bia.empty())
            throw Error(ErrorKind::invalid_argument, "--diff-dst, --src-shape, --wei-shape and --out-bia do not apply to --dir=fwd");
        Tensor src = load(o.src, "--src", dt, layout, dev);
        Tensor wei = load(o.wei, "--wei", dt, layout, dev);
        Tensor bia;
        if (!o.bia.empty()) bia = load(o.bia, "--bia", dt, Layout::channels_first, dev);
        std::vector<std::string> bin_args;
        PostOps post_ops = parse_post_ops(o.post_ops, &bin_args);
        std::vector<Tensor> operands;
        std::size_t bi = 0;
        for (std::size_t i = 0; i < post_ops.size(); ++i) {
            if (post_ops[i].kind != PostOp::Kind::binary) continue;
            const std::string& file = bin_args[bi++];
            if (file.empty())
                throw Error(ErrorKind::invalid_argument, "--post-ops: binary post-op '" + post_ops[i].str() +
                                                             "' needs an operand file, e.g. " + post_ops[i].str() + ":FILE.npy");
            NpyArray a = read_npy(file);
            if (a.shape.empty()) a.shape.assign(static_cast<std::size_t>(src.view().rank()), 1);  // 0-d = scalar
            if (a.shape.size() > static_cast<std::size_t>(Dims::max_rank))
                throw Error(ErrorKind::invalid_argument, "--post-ops: operand '" + file + "' has too many dimensions");
            operands.push_back(tensor_from_npy(a, dt, layout, dev));
            post_ops[i].operand = operands.back().view();
        }
        Dims dst_sizes = output_shape(src.sizes(), wei.sizes(), params);
        result = Tensor(dt, dst_sizes, layout, dev);
        // --dst-init gives dst's contents before the call: what a sum post-op adds to, and
        // otherwise a fill that every output element must overwrite.
        if (post_ops.has_sum() && o.dst_init.empty())
            throw Error(ErrorKind::invalid_argument, "--post-ops has sum: --dst-init=FILE.npy must give the prior dst contents");
        if (!o.dst_init.empty()) {
            Tensor init = load(o.dst_init, "--dst-init", dt, layout, dev);
            if (init.sizes() != dst_sizes)
                throw Error(ErrorKind::invalid_argument, "--dst-init '" + o.dst_init + "' has shape " + init.sizes().str() +
                                                             " but dst is " + dst_sizes.str());
            copy(result.view(), init.view());
        }
        convolution_forward(result, src, wei, bia.view(), params, post_ops, Stream(), {}, opt).wait();
    } else if (o.dir == "bwd_d") {
        if (!o.src.empty() || !o.bia.empty() || !o.post_ops.empty() || !o.dst_init.empty() || !o.out_bia.empty() || !o.wei_shape.empty())
            throw Error(ErrorKind::invalid_argument, "--src, --bia, --post-ops, --dst-init, --wei-shape and --out-bia do not apply to --dir=bwd_d");
        if (o.src_shape.empty()) throw Error(ErrorKind::invalid_argument, "--src-shape=N,C,... is required for --dir=bwd_d");
        Dims src_sizes = parse_list(o.src_shape, "--src-shape");
        Tensor ddst = load(o.diff_dst, "--diff-dst", dt, layout, dev);
        Tensor wei = load(o.wei, "--wei", dt, layout, dev);
        Dims want = output_shape(src_sizes, wei.sizes(), params);
        if (ddst.sizes() != want)
            throw Error(ErrorKind::invalid_argument, "--diff-dst '" + o.diff_dst + "' has shape " + ddst.sizes().str() +
                                                         " but --src-shape " + src_sizes.str() + " with --wei " + wei.sizes().str() +
                                                         " gives dst " + want.str());
        result = Tensor(dt, src_sizes, layout, dev);
        convolution_backward_data(result, ddst, wei, params, Stream(), {}, opt).wait();
    } else if (o.dir == "bwd_w") {
        if (!o.wei.empty() || !o.bia.empty() || !o.post_ops.empty() || !o.dst_init.empty() || !o.src_shape.empty())
            throw Error(ErrorKind::invalid_argument, "--wei, --bia, --post-ops, --dst-init and --src-shape do not apply to --dir=bwd_w");
        if (o.wei_shape.empty()) throw Error(ErrorKind::invalid_argument, "--wei-shape=OC,IC/G,... is required for --dir=bwd_w");
        Dims wei_sizes = parse_list(o.wei_shape, "--wei-shape");
        Tensor ddst = load(o.diff_dst, "--diff-dst", dt, layout, dev);
        Tensor src = load(o.src, "--src", dt, layout, dev);
        Dims want = output_shape(src.sizes(), wei_sizes, params);
        if (ddst.sizes() != want)
            throw Error(ErrorKind::invalid_argument, "--diff-dst '" + o.diff_dst + "' has shape " + ddst.sizes().str() +
                                                         " but --src " + src.sizes().str() + " with --wei-shape " + wei_sizes.str() +
                                                         " gives dst " + want.str());
        result = Tensor(dt, wei_sizes, layout, dev);
        if (!o.out_bia.empty()) result_bias = Tensor(dt, Dims{wei_sizes[0]}, Layout::channels_first, dev);
        convolution_backward_weights(result, result_bias.view(), ddst, src, params, Stream(), {}, opt).wait();
    } else {
        throw Error(ErrorKind::invalid_argument, "--dir must be fwd, bwd_d or bwd_w, got '" + o.dir + "'");
    }
    NpyArray out = npy_from_tensor(result.view());
    std::optional<NpyArray> out_b;
    if (!o.out_bia.empty()) out_b = npy_from_tensor(result_bias.view());
    write_npy(o.out, out);
    if (out_b) write_npy(o.out_bia, *out_b);
    return 0;
}

}  // namespace

int report_error(const char* command) {
    try {
        throw;
    } catch (const Error& e) {
        std::cerr << "convkit " << command << ": error: " << e.what() << "\n";
        return (e.kind() == ErrorKind::invalid_argument || e.kind() == ErrorKind::unsupported) ? 2 : 1;
    } catch (const std::bad_alloc&) {
        std::cerr << "convkit " << command << ": error: out of memory\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "convkit " << command << ": error: " << e.what() << "\n";
        return 1;
    }
}

int run_command(const std::vector<std::string>& args) {
    RunOptions o;
    CLI::App app{"convkit run: compute one convolution from .npy files", "convkit run"};
    app.add_option("--dir", o.dir, "fwd | bwd_d | bwd_w")->check(CLI::IsMember({"fwd", "bwd_d", "bwd_w"}));
    app.add_option("--engine", o.engine, "auto | ref | cpu | cuda")->check(CLI::IsMember({"auto", "ref", "cpu", "cuda"}));
    app.add_option("--dt", o.dt, "compute dtype: f32 | f64 | bf16 | f16")->check(CLI::IsMember({"f32", "f64", "bf16", "f16"}));
    app.add_option("--tag", o.tag, "layout handed to the library: nchw | nhwc")->check(CLI::IsMember({"nchw", "nhwc"}));
    app.add_option("--stride", o.stride, "per spatial dim, comma-separated (one value = all dims)");
    app.add_option("--pad-l", o.padding_l, "front/top/left padding");
    app.add_option("--pad-r", o.padding_r, "back/bottom/right padding");
    app.add_option("--dilation", o.dilation, "1 = dense");
    app.add_option("--groups", o.groups, "groups");
    app.add_option("--src", o.src, "src .npy [N, C, spatial...]");
    app.add_option("--wei", o.wei, "weights .npy [OC, C/groups, k...]");
    app.add_option("--bia", o.bia, "bias .npy [OC]");
    app.add_option("--diff-dst", o.diff_dst, "diff_dst .npy (bwd_d, bwd_w)");
    app.add_option("--src-shape", o.src_shape, "N,C,spatial... (bwd_d)");
    app.add_option("--wei-shape", o.wei_shape, "OC,IC/G,k... (bwd_w)");
    app.add_option("--post-ops", o.post_ops, "OP[+OP...], benchdnn spelling; binary ops take a file: add:FILE.npy");
    app.add_option("--dst-init", o.dst_init, "prior dst contents for a sum post-op");
    app.add_option("--out", o.out, "output .npy (dst, diff_src or diff_weights)");
    app.add_option("--out-bia", o.out_bia, "bias gradient .npy (bwd_w)");
    std::vector<std::string> rev(args.rbegin(), args.rend());
    try {
        app.parse(rev);
    } catch (const CLI::CallForHelp& e) {
        std::cout << app.help();
        return 0;
    } catch (const CLI::ParseError& e) {
        std::cerr << "convkit run: error: " << e.what() << " (see convkit run --help)\n";
        return 2;
    }
    try {
        return run(o);
    } catch (...) {
        return report_error("run");
    }
}

}  // namespace convkit::tools
