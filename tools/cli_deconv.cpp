// `convkit run --op=deconv`: one transposed convolution (PyTorch's conv_transpose1d/2d/3d, ONNX
// ConvTranspose) from .npy files, and the padding rules of ONNX's output_shape and auto_pad.
//
// ONNX (onnx/defs/nn/defs.cc, ConvTranspose): with output_shape given,
//   total_padding = stride * (in - 1) + output_padding + ((k - 1) * dilation + 1) - output_shape
//   SAME_UPPER: pads_begin = total / 2, pads_end = total - total / 2
//   otherwise:  pads_begin = total - total / 2, pads_end = total / 2
// and auto_pad SAME_UPPER / SAME_LOWER without output_shape mean output_shape = in * stride.
// auto_pad NOTSET with output_shape is where the spec ("otherwise") and onnxruntime (the smaller
// half in front) disagree, so the CLI makes SAME_UPPER the default with --output-shape and
// refuses an explicit NOTSET there rather than pick a side silently.
#include <cctype>
#include <string>

#include "cli_run.hpp"

namespace convkit::tools {

namespace {

enum class AutoPad { notset, same_upper, same_lower, valid };

AutoPad auto_pad_of(const RunOptions& o) {
    std::string s = o.auto_pad;
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (s.empty()) return o.output_shape.empty() ? AutoPad::notset : AutoPad::same_upper;
    if (s == "NOTSET") return AutoPad::notset;
    if (s == "SAME_UPPER") return AutoPad::same_upper;
    if (s == "SAME_LOWER") return AutoPad::same_lower;
    if (s == "VALID") return AutoPad::valid;
    throw Error(ErrorKind::invalid_argument,
                "--auto-pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got '" + o.auto_pad + "'");
}

std::string spatial_name(int i, int nsp) { return std::string(1, "dhw"[3 - nsp + i]); }

// The transposed convolution's parameters from the flags; the padding from --output-shape or
// --auto-pad where they are given. Validation of everything else is the library's.
ConvTransposeParams deconv_params(const RunOptions& o, const Dims& src_sizes, const Dims& wei_sizes) {
    ConvTransposeParams p;
    if (!o.stride.empty()) p.stride = parse_list(o.stride, "--stride");
    if (!o.dilation.empty()) p.dilation = parse_list(o.dilation, "--dilation");
    if (!o.output_padding.empty()) p.output_padding = parse_list(o.output_padding, "--output-padding");
    p.groups = o.groups;
    const AutoPad ap = auto_pad_of(o);
    if (ap == AutoPad::notset) {
        if (!o.output_shape.empty())
            throw Error(ErrorKind::invalid_argument,
                        "--output-shape with --auto-pad=NOTSET: ONNX's spec and runtimes split an odd total padding "
                        "differently there; give --auto-pad=SAME_UPPER (the default with --output-shape) or SAME_LOWER");
        if (!o.padding_l.empty()) p.padding_l = parse_list(o.padding_l, "--pad-l");
        if (!o.padding_r.empty()) p.padding_r = parse_list(o.padding_r, "--pad-r");
        return p;
    }
    const char* const names[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
    const std::string ap_flag = o.auto_pad.empty() ? "--output-shape" : std::string("--auto-pad=") + names[static_cast<int>(ap)];
    if (!o.padding_l.empty() || !o.padding_r.empty())
        throw Error(ErrorKind::invalid_argument,
                    "--pad-l/--pad-r cannot be combined with " + ap_flag + ", which derives the padding");
    if (ap == AutoPad::valid) {
        if (!o.output_shape.empty())
            throw Error(ErrorKind::invalid_argument,
                        "--output-shape needs --auto-pad=SAME_UPPER or SAME_LOWER (VALID means no padding)");
        return p;
    }
    // dst without padding, (in - 1) * stride + dilation * (k - 1) + output_padding + 1 per dim;
    // this also validates ranks, channels, groups, strides, dilations and output_padding.
    const Dims grown = conv_transpose_output_shape(src_sizes, wei_sizes, p);
    const int nsp = src_sizes.rank() - 2;
    Dims target;
    if (!o.output_shape.empty()) {
        target = parse_list(o.output_shape, "--output-shape");
        if (target.rank() != 1 && target.rank() != nsp)
            throw Error(ErrorKind::invalid_argument,
                        "--output-shape has " + std::to_string(target.rank()) + " values " + target.str() + " but src " +
                                src_sizes.str() + " has " + std::to_string(nsp) +
                                " spatial dims (give dst's spatial sizes only, or one value for all)");
    }
    // One value per spatial dim ("" = the default, one value = every dim; counts are validated).
    auto at = [](const Dims& list, int i, int64_t dflt) {
        return list.rank() == 0 ? dflt : list.rank() == 1 ? list[0] : list[i];
    };
    Dims pl, pr;
    for (int i = 0; i < nsp; ++i) {
        const std::string d = spatial_name(i, nsp);
        const int64_t in = src_sizes[2 + i], s = at(p.stride, i, 1);
        int64_t want;
        std::string what;
        if (target.rank() > 0) {
            want = at(target, i, 0);
            if (want < 1)
                throw Error(ErrorKind::invalid_argument,
                            "--output-shape " + d + " must be >= 1, got " + std::to_string(want));
            what = "--output-shape " + d + " " + std::to_string(want);
        } else {
            want = in * s;  // in and s are validated (>= 1) and bounded by the output size above
            what = ap_flag + " asks for dst " + d + " = in * stride = " + std::to_string(in) + " * " +
                   std::to_string(s) + " = " + std::to_string(want) + ", which";
        }
        const int64_t total = grown[2 + i] - want;
        if (total < 0) {
            const int64_t k = wei_sizes[2 + i], dil = at(p.dilation, i, 1), op = at(p.output_padding, i, 0);
            throw Error(ErrorKind::invalid_argument,
                        what + " is larger than the transposed convolution produces without padding: (" +
                                std::to_string(in) + " - 1) * stride " + std::to_string(s) + " + dilation " +
                                std::to_string(dil) + " * (k " + std::to_string(k) + " - 1) + output_padding " +
                                std::to_string(op) + " + 1 = " + std::to_string(grown[2 + i]) +
                                " (total padding would be " + std::to_string(total) +
                                "; --output-padding adds rows, each below the stride or the dilation)");
        }
        const int64_t front = ap == AutoPad::same_upper ? total / 2 : total - total / 2;
        pl.push_back(front);
        pr.push_back(total - front);
    }
    p.padding_l = pl;
    p.padding_r = pr;
    return p;
}

}  // namespace

RunResult run_deconv(const RunOptions& o, const RunContext& cx) {
    RunResult r;
    if (o.dir == "fwd") {
        Tensor src = load(o.src, "--src", cx);
        Tensor wei = load(o.wei, "--wei", cx);
        Tensor bia;
        if (!o.bia.empty()) bia = load(o.bia, "--bia", RunContext{cx.dt, Layout::channels_first, cx.dev, cx.opt});
        const ConvTransposeParams params = deconv_params(o, src.sizes(), wei.sizes());
        ForwardExtras x = load_post_ops(o, cx, src.view().rank());
        r.out = make_dst(o, cx, x.post_ops, conv_transpose_output_shape(src.sizes(), wei.sizes(), params));
        conv_transpose_forward(r.out, src, wei, bia.view(), params, x.post_ops, Stream(), {}, cx.opt).wait();
    } else if (o.dir == "bwd_d") {
        Dims src_sizes = parse_list(o.src_shape, "--src-shape");
        Tensor ddst = load(o.diff_dst, "--diff-dst", cx);
        Tensor wei = load(o.wei, "--wei", cx);
        const ConvTransposeParams params = deconv_params(o, src_sizes, wei.sizes());
        Dims want = conv_transpose_output_shape(src_sizes, wei.sizes(), params);
        if (ddst.sizes() != want)
            throw Error(ErrorKind::invalid_argument, "--diff-dst '" + o.diff_dst + "' has shape " + ddst.sizes().str() +
                                                         " but the transposed convolution of --src-shape " + src_sizes.str() +
                                                         " with --wei " + wei.sizes().str() + " gives dst " + want.str());
        r.out = Tensor(cx.dt, src_sizes, cx.layout, cx.dev);
        conv_transpose_backward_data(r.out, ddst, wei, params, Stream(), {}, cx.opt).wait();
    } else {
        Dims wei_sizes = parse_list(o.wei_shape, "--wei-shape");
        Tensor ddst = load(o.diff_dst, "--diff-dst", cx);
        Tensor src = load(o.src, "--src", cx);
        const ConvTransposeParams params = deconv_params(o, src.sizes(), wei_sizes);
        Dims want = conv_transpose_output_shape(src.sizes(), wei_sizes, params);
        if (ddst.sizes() != want)
            throw Error(ErrorKind::invalid_argument, "--diff-dst '" + o.diff_dst + "' has shape " + ddst.sizes().str() +
                                                         " but the transposed convolution of --src " + src.sizes().str() +
                                                         " with --wei-shape " + wei_sizes.str() + " gives dst " + want.str());
        r.out = Tensor(cx.dt, wei_sizes, cx.layout, cx.dev);
        // The bias gradient has one value per output channel: OC = weights[1] * groups.
        if (!o.out_bia.empty()) r.out_bias = Tensor(cx.dt, Dims{want[1]}, Layout::channels_first, cx.dev);
        conv_transpose_backward_weights(r.out, r.out_bias.view(), ddst, src, params, Stream(), {}, cx.opt).wait();
    }
    return r;
}

}  // namespace convkit::tools
