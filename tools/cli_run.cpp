// `convkit run`: one convolution or transposed convolution (--op=deconv) from .npy files,
// written back as .npy. Everything is read and validated, and the result computed, before
// anything is written; each output goes through a temporary file and a rename, so a failed run
// leaves existing files as they were.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <optional>

#include "cli.hpp"
#include "cli_run.hpp"

namespace convkit::tools {

Tensor load(const std::string& path, const char* flag, const RunContext& cx) {
    if (path.empty()) throw Error(ErrorKind::invalid_argument, std::string(flag) + " is required for this --dir");
    NpyArray a = read_npy(path);
    if (a.shape.empty() || a.shape.size() > static_cast<std::size_t>(Dims::max_rank))
        throw Error(ErrorKind::invalid_argument, std::string(flag) + " '" + path + "' has " +
                                                     std::to_string(a.shape.size()) + " dimensions (expected 1 to 5)");
    return tensor_from_npy(a, cx.dt, cx.layout, cx.dev);
}

ForwardExtras load_post_ops(const RunOptions& o, const RunContext& cx, int rank) {
    ForwardExtras x;
    std::vector<std::string> bin_args;
    x.post_ops = parse_post_ops(o.post_ops, &bin_args);
    x.operands.reserve(x.post_ops.size());  // the post-ops keep views of these
    std::size_t bi = 0;
    for (std::size_t i = 0; i < x.post_ops.size(); ++i) {
        if (x.post_ops[i].kind != PostOp::Kind::binary) continue;
        const std::string& file = bin_args[bi++];
        if (file.empty())
            throw Error(ErrorKind::invalid_argument, "--post-ops: binary post-op '" + x.post_ops[i].str() +
                                                         "' needs an operand file, e.g. " + x.post_ops[i].str() + ":FILE.npy");
        NpyArray a = read_npy(file);
        if (a.shape.empty()) a.shape.assign(static_cast<std::size_t>(rank), 1);  // 0-d = scalar
        if (a.shape.size() > static_cast<std::size_t>(Dims::max_rank))
            throw Error(ErrorKind::invalid_argument, "--post-ops: operand '" + file + "' has too many dimensions");
        x.operands.push_back(tensor_from_npy(a, cx.dt, cx.layout, cx.dev));
        x.post_ops[i].operand = x.operands.back().view();
    }
    return x;
}

Tensor make_dst(const RunOptions& o, const RunContext& cx, const PostOps& post_ops, const Dims& dst_sizes) {
    Tensor dst(cx.dt, dst_sizes, cx.layout, cx.dev);
    // --dst-init gives dst's contents before the call: what a sum post-op adds to, and
    // otherwise a fill that every output element must overwrite.
    if (post_ops.has_sum() && o.dst_init.empty())
        throw Error(ErrorKind::invalid_argument, "--post-ops has sum: --dst-init=FILE.npy must give the prior dst contents");
    if (!o.dst_init.empty()) {
        Tensor init = load(o.dst_init, "--dst-init", cx);
        if (init.sizes() != dst_sizes)
            throw Error(ErrorKind::invalid_argument, "--dst-init '" + o.dst_init + "' has shape " + init.sizes().str() +
                                                         " but dst is " + dst_sizes.str());
        copy(dst.view(), init.view());
    }
    return dst;
}

namespace {

// Which inputs a direction reads: the same flags for --op=conv and --op=deconv.
void check_flags_apply(const RunOptions& o) {
    if (o.op != "deconv" && (!o.output_padding.empty() || !o.output_shape.empty() || !o.auto_pad.empty()))
        throw Error(ErrorKind::invalid_argument, "--output-padding, --output-shape and --auto-pad apply only to --op=deconv (got --op=" + o.op + ")");
    if (o.dir == "fwd") {
        if (!o.diff_dst.empty() || !o.src_shape.empty() || !o.wei_shape.empty() || !o.out_bia.empty())
            throw Error(ErrorKind::invalid_argument, "--diff-dst, --src-shape, --wei-shape and --out-bia do not apply to --dir=fwd");
    } else if (o.dir == "bwd_d") {
        if (!o.src.empty() || !o.bia.empty() || !o.post_ops.empty() || !o.dst_init.empty() || !o.out_bia.empty() || !o.wei_shape.empty())
            throw Error(ErrorKind::invalid_argument, "--src, --bia, --post-ops, --dst-init, --wei-shape and --out-bia do not apply to --dir=bwd_d");
        if (o.src_shape.empty()) throw Error(ErrorKind::invalid_argument, "--src-shape=N,C,... is required for --dir=bwd_d");
    } else if (o.dir == "bwd_w") {
        if (!o.wei.empty() || !o.bia.empty() || !o.post_ops.empty() || !o.dst_init.empty() || !o.src_shape.empty())
            throw Error(ErrorKind::invalid_argument, "--wei, --bia, --post-ops, --dst-init and --src-shape do not apply to --dir=bwd_w");
        if (o.wei_shape.empty())
            throw Error(ErrorKind::invalid_argument, o.op == "deconv" ? "--wei-shape=IC,OC/G,... is required for --dir=bwd_w"
                                                                      : "--wei-shape=OC,IC/G,... is required for --dir=bwd_w");
    } else {
        throw Error(ErrorKind::invalid_argument, "--dir must be fwd, bwd_d or bwd_w, got '" + o.dir + "'");
    }
}

RunResult run_conv(const RunOptions& o, const RunContext& cx) {
    ConvParams params;
    if (!o.stride.empty()) params.stride = parse_list(o.stride, "--stride");
    if (!o.padding_l.empty()) params.padding_l = parse_list(o.padding_l, "--pad-l");
    if (!o.padding_r.empty()) params.padding_r = parse_list(o.padding_r, "--pad-r");
    if (!o.dilation.empty()) params.dilation = parse_list(o.dilation, "--dilation");
    params.groups = o.groups;

    RunResult r;
    if (o.dir == "fwd") {
        Tensor src = load(o.src, "--src", cx);
        Tensor wei = load(o.wei, "--wei", cx);
        Tensor bia;
        if (!o.bia.empty()) bia = load(o.bia, "--bia", RunContext{cx.dt, Layout::channels_first, cx.dev, cx.opt});
        ForwardExtras x = load_post_ops(o, cx, src.view().rank());
        r.out = make_dst(o, cx, x.post_ops, output_shape(src.sizes(), wei.sizes(), params));
        convolution_forward(r.out, src, wei, bia.view(), params, x.post_ops, Stream(), {}, cx.opt).wait();
    } else if (o.dir == "bwd_d") {
        Dims src_sizes = parse_list(o.src_shape, "--src-shape");
        Tensor ddst = load(o.diff_dst, "--diff-dst", cx);
        Tensor wei = load(o.wei, "--wei", cx);
        Dims want = output_shape(src_sizes, wei.sizes(), params);
        if (ddst.sizes() != want)
            throw Error(ErrorKind::invalid_argument, "--diff-dst '" + o.diff_dst + "' has shape " + ddst.sizes().str() +
                                                         " but --src-shape " + src_sizes.str() + " with --wei " + wei.sizes().str() +
                                                         " gives dst " + want.str());
        r.out = Tensor(cx.dt, src_sizes, cx.layout, cx.dev);
        convolution_backward_data(r.out, ddst, wei, params, Stream(), {}, cx.opt).wait();
    } else {
        Dims wei_sizes = parse_list(o.wei_shape, "--wei-shape");
        Tensor ddst = load(o.diff_dst, "--diff-dst", cx);
        Tensor src = load(o.src, "--src", cx);
        Dims want = output_shape(src.sizes(), wei_sizes, params);
        if (ddst.sizes() != want)
            throw Error(ErrorKind::invalid_argument, "--diff-dst '" + o.diff_dst + "' has shape " + ddst.sizes().str() +
                                                         " but --src " + src.sizes().str() + " with --wei-shape " + wei_sizes.str() +
                                                         " gives dst " + want.str());
        r.out = Tensor(cx.dt, wei_sizes, cx.layout, cx.dev);
        if (!o.out_bia.empty()) r.out_bias = Tensor(cx.dt, Dims{wei_sizes[0]}, Layout::channels_first, cx.dev);
        convolution_backward_weights(r.out, r.out_bias.view(), ddst, src, params, Stream(), {}, cx.opt).wait();
    }
    return r;
}

int run(const RunOptions& o) {
    RunContext cx{dtype_from_string(o.dt), o.tag == "nhwc" ? Layout::channels_last : Layout::channels_first,
                  Device::cpu(), ConvOptions()};
    cx.opt.engine = engine_from_string(o.engine);
    if (cx.opt.engine == Engine::cuda) cx.dev = Device::cuda(0);
    if (cx.opt.engine != Engine::automatic) {
        auto avail = available_engines();
        if (std::find(avail.begin(), avail.end(), cx.opt.engine) == avail.end())
            throw Error(ErrorKind::unsupported, std::string("--engine=") + to_string(cx.opt.engine) +
                                                    " is not available here (" +
                                                    (cx.opt.engine == Engine::cuda ? "no CUDA backend or no visible CUDA device" : "not compiled in") + ")");
    }
    if (o.out.empty()) throw Error(ErrorKind::invalid_argument, "--out is required");
    check_flags_apply(o);

    RunResult r = o.op == "deconv" ? run_deconv(o, cx) : run_conv(o, cx);
    NpyArray out = npy_from_tensor(r.out.view());
    std::optional<NpyArray> out_b;
    if (!o.out_bia.empty()) out_b = npy_from_tensor(r.out_bias.view());
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
    CLI::App app{"convkit run: compute one convolution (--op=conv) or transposed convolution (--op=deconv,\n"
                 "PyTorch's conv_transpose / ONNX ConvTranspose) from .npy files.\n"
                 "  conv:   fwd   --src [N,IC,in...] --wei [OC,IC/G,k...] (--bia [OC]) -> dst [N,OC,out...]\n"
                 "          bwd_d --diff-dst --wei --src-shape -> diff_src;  bwd_w --diff-dst --src --wei-shape -> diff_weights\n"
                 "  deconv: fwd   --src [N,IC,in...] --wei [IC,OC/G,k...] (--bia [OC]) -> dst [N,OC,out...],\n"
                 "          out = (in-1)*stride - pad_l - pad_r + dilation*(k-1) + output_padding + 1\n"
                 "          bwd_d --diff-dst [N,OC,out...] --wei --src-shape=N,IC,in... -> diff_src\n"
                 "          bwd_w --diff-dst --src --wei-shape=IC,OC/G,k... -> diff_weights (--out-bia: diff_bias [OC])",
                 "convkit run"};
    app.add_option("--op", o.op, "conv | deconv (transposed convolution)")->check(CLI::IsMember({"conv", "deconv"}));
    app.add_option("--dir", o.dir, "fwd | bwd_d | bwd_w")->check(CLI::IsMember({"fwd", "bwd_d", "bwd_w"}));
    app.add_option("--engine", o.engine, "auto | ref | cpu | cuda")->check(CLI::IsMember({"auto", "ref", "cpu", "cuda"}));
    app.add_option("--dt", o.dt, "compute dtype: f32 | f64 | bf16 | f16")->check(CLI::IsMember({"f32", "f64", "bf16", "f16"}));
    app.add_option("--tag", o.tag, "layout handed to the library: nchw | nhwc")->check(CLI::IsMember({"nchw", "nhwc"}));
    app.add_option("--stride", o.stride, "per spatial dim, comma-separated (one value = all dims)");
    app.add_option("--pad-l", o.padding_l, "front/top/left padding (deconv: rows removed from dst's front)");
    app.add_option("--pad-r", o.padding_r, "back/bottom/right padding (deconv: rows removed from dst's back)");
    app.add_option("--dilation", o.dilation, "1 = dense");
    app.add_option("--groups", o.groups, "groups");
    app.add_option("--output-padding", o.output_padding,
                   "deconv: rows added at dst's back, per spatial dim; each < stride or < dilation (default 0)");
    app.add_option("--output-shape", o.output_shape,
                   "deconv: dst's spatial sizes (ONNX output_shape); the padding follows from them: total = "
                   "stride*(in-1) + output_padding + dilation*(k-1) + 1 - output_shape, split by --auto-pad");
    app.add_option("--auto-pad", o.auto_pad,
                   "deconv: ONNX auto_pad. NOTSET = --pad-l/--pad-r (the default without --output-shape); "
                   "SAME_UPPER (the default with --output-shape): pad_l = total/2, pad_r = total - pad_l; SAME_LOWER: "
                   "the larger half in front; without --output-shape SAME_* make out = in*stride; VALID = no padding")
            ->check(CLI::IsMember({"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"}, CLI::ignore_case));
    app.add_option("--src", o.src, "src .npy [N, C, spatial...]");
    app.add_option("--wei", o.wei, "weights .npy: conv [OC, IC/groups, k...], deconv [IC, OC/groups, k...]");
    app.add_option("--bia", o.bia, "bias .npy [OC]");
    app.add_option("--diff-dst", o.diff_dst, "diff_dst .npy (bwd_d, bwd_w)");
    app.add_option("--src-shape", o.src_shape, "N,C,spatial... (bwd_d)");
    app.add_option("--wei-shape", o.wei_shape, "conv OC,IC/G,k...; deconv IC,OC/G,k... (bwd_w)");
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
