// ConvProblem: one convolution described as a plain, hashable value. Everything a backend builds
// (oneDNN primitives, cuDNN plans) is keyed by it, so it holds every property that changes what
// gets built: direction, sizes, dtypes, layouts, params, post-op kinds and values, determinism.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "convkit/conv.hpp"

namespace convkit::core {

enum class Direction { fwd, bwd_d, bwd_w };
const char* to_string(Direction d);

struct PostOpDesc {
    PostOp::Kind kind = PostOp::Kind::eltwise;
    int alg = 0;  // EltwiseAlg or BinaryAlg
    double alpha = 0, beta = 0, scale = 1;  // as given: each backend rounds to dst's precision
    Dims operand_sizes;                       // binary only
    Layout operand_layout = Layout::channels_first;
    bool operator==(const PostOpDesc& o) const;
};

// The geometry right-aligned to three spatial dims (d, h, w), the unused leading ones neutral
// (size 1, stride 1, padding 0, dilation 1), so a loop nest over three dims serves 1D, 2D and 3D.
struct Spatial3 {
    int64_t in[3], out[3], k[3], stride[3], padding_l[3], padding_r[3], dilation[3];
    // Index into the arrays above of spatial dim `i` of a problem with `nsp` spatial dims.
    static int at(int nsp, int i) { return 3 - nsp + i; }
};

// A tensor's sizes and strides as (N, C, D, H, W): missing spatial dims have size 1, stride 0.
void spatial3_view(const TensorView& t, int nsp, int64_t sizes[5], int64_t strides[5]);

struct ConvProblem {
    Direction dir = Direction::fwd;
    DType dt = DType::f32;
    Device device = Device::cpu();
    int nsp = 2;  // spatial dims, 1..3
    int64_t mb = 0, g = 1, ic = 0, oc = 0;
    // Spatial values in PyTorch's order (d, h, w), first `nsp` entries used; dilation 1 = dense.
    int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1};
    int64_t stride[3] = {1, 1, 1}, padding_l[3] = {0, 0, 0}, padding_r[3] = {0, 0, 0}, dilation[3] = {1, 1, 1};
    // Layouts of the tensors as handed to the backend (dense: channels_first or channels_last).
    // src/dst mean diff_src/diff_dst in the backward directions.
    Layout src_layout = Layout::channels_first, wei_layout = Layout::channels_first,
           dst_layout = Layout::channels_first;
    bool with_bias = false;  // bias (fwd) or diff_bias (bwd_w)
    int n_post_ops = 0;
    PostOpDesc post_ops[PostOps::max_ops];
    bool deterministic = false;
    bool allow_tf32 = true;
    // Weights come prepacked by this backend (ConvArgs::packed) instead of as a tensor.
    bool packed_weights = false;
    // Part of a transposed convolution (conv_transpose_*), which the core describes as the
    // convolution whose data gradient it is: its forward is this problem's bwd_d, its backward
    // data a plain fwd (never marked), its backward weights this problem's bwd_w with the
    // activations' roles swapped. What the mark changes:
    //   bwd_d: bias [ic] and the post-ops apply to diff_src (the transposed output), fused where
    //          the backend can, as a forward convolution's apply to dst;
    //   bwd_w: diff_bias [ic] is the channel sum of `src` (the transposed output's gradient),
    //          not of diff_dst.
    // padding_r may be negative here (output_padding >= stride, allowed when dilation is larger).
    bool transposed = false;

    int64_t icg() const { return ic / g; }
    int64_t ocg() const { return oc / g; }
    int rank() const { return nsp + 2; }
    Dims src_dims() const;
    Dims wei_dims() const;
    Dims dst_dims() const;
    Spatial3 spatial3() const;
    double flops() const;
    bool has_sum() const;
    // bias and post-ops go onto the output (forward, or transposed backward-data).
    bool has_epilogue() const {
        return (dir == Direction::fwd || (dir == Direction::bwd_d && transposed)) && (with_bias || n_post_ops > 0);
    }
    // The problem as a forward convolution's epilogue sees it: its dst (oc channels of out
    // positions, dst_layout) is the tensor that bias and post-ops apply to, or whose channel sums
    // are the bias gradient. That is this problem's dst except in transposed problems, where it
    // is src (channels and sizes swapped in the view).
    ConvProblem epilogue_view() const;

    std::size_t hash() const;
    bool operator==(const ConvProblem& o) const;
    bool operator!=(const ConvProblem& o) const { return !(*this == o); }
    // benchdnn-style descriptor plus direction, dtype and layout, for messages and logs.
    std::string str() const;
};

struct ConvProblemHash {
    std::size_t operator()(const ConvProblem& p) const { return p.hash(); }
};

// The tensors of one call, already validated and dense. Slots follow oneDNN's convention:
//   fwd:   src, weights, bias in; dst out (also read by a `sum` post-op)
//   bwd_d: dst = diff_dst in, weights in; src = diff_src out
//   bwd_w: dst = diff_dst in, src in; weights = diff_weights out, bias = diff_bias out (optional)
// With prepacked weights, `weights` has the weights' sizes and dtype but its data must not be
// read: `packed` is the handle the same backend's prepack() returned.
struct ConvArgs {
    TensorView src, weights, bias, dst;
    const PostOps* post_ops = nullptr;
    const void* packed = nullptr;
};

// The tensor of `a` that ConvProblem::epilogue_view() calls dst.
inline const TensorView& epilogue_tensor(const ConvProblem& p, const ConvArgs& a) {
    return p.transposed ? a.src : a.dst;
}

}  // namespace convkit::core
