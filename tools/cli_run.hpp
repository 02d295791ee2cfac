// Pieces of `convkit run` shared by its convolution (cli_run.cpp) and transposed convolution
// (cli_deconv.cpp) paths: the options, the loaded inputs of a forward call, and the result.
// Each path reads and validates everything and computes the result; only run() writes files.
#pragma once
#include <string>
#include <vector>

#include "cli_common.hpp"

namespace convkit::tools {

struct RunOptions {
    std::string op = "conv", dir = "fwd", engine = "auto", dt = "f32", tag = "nchw";
    std::string stride, padding_l, padding_r, dilation;
    int64_t groups = 1;
    std::string src, wei, bia, diff_dst, src_shape, wei_shape, post_ops, dst_init, out, out_bia;
    // --op=deconv only.
    std::string output_padding, output_shape, auto_pad;
};

// What every direction's call needs besides its tensors.
struct RunContext {
    DType dt;
    Layout layout;
    Device dev;
    ConvOptions opt;
};

struct RunResult {
    Tensor out;       // dst, diff_src or diff_weights
    Tensor out_bias;  // diff_bias (bwd_w with --out-bia), else undefined
};

// An input .npy file as a tensor; `flag` names it in errors ("--src is required for this --dir").
Tensor load(const std::string& path, const char* flag, const RunContext& cx);

// The post-ops of a forward call with their operand files loaded (as tensors of `rank`
// dimensions; a 0-d file is a scalar).
struct ForwardExtras {
    PostOps post_ops;
    std::vector<Tensor> operands;  // owned here; post_ops' binary entries view them
};
ForwardExtras load_post_ops(const RunOptions& o, const RunContext& cx, int rank);

// dst of a forward call: --dst-init's contents when given (required with a sum post-op),
// checked against dst's sizes.
Tensor make_dst(const RunOptions& o, const RunContext& cx, const PostOps& post_ops, const Dims& dst_sizes);

// The --op=deconv path (cli_deconv.cpp).
RunResult run_deconv(const RunOptions& o, const RunContext& cx);

}  // namespace convkit::tools
