// Host-side interface of the CUDA backend's own kernels (kernels.cu): the one-pass forward epilogue
// (bias + the whole post-op chain, for problems cuDNN cannot fuse), the bias-gradient reduction,
// a strided window copy (explicit padding / cropping, phase gather and scatter), a strided zero
// fill and a spin kernel for tests. Plain C++ types only, so the .cpp files need no CUDA device
// headers.
#pragma once
#include <cstdint>

#include "convkit/post_ops.hpp"
#include "convkit/tensor.hpp"

namespace convkit::cuda {

constexpr int kMaxRank = 5;

struct EpilogueOp {
    int kind = 0;  // PostOp::Kind
    int alg = 0;   // EltwiseAlg or BinaryAlg
    double alpha = 0, beta = 0, scale = 1;  // rounded to the dst precision by the kernel
    int operand = -1;  // index into EpilogueArgs::operands (binary only)
};

// dst[i] = chain(in[i] + bias[c]) with `sum` reading prior[i]. `in`, `prior` and `out` are dense in
// the layout given (in may alias out; prior may alias out); a null `in` reads as 0 (with no ops,
// that broadcasts the bias into dst). Binary operands are read through
// their strides, with stride 0 on broadcast dimensions.
struct EpilogueArgs {
    DType dt = DType::f32;
    int rank = 4;
    bool channels_last = false;
    int64_t sizes[kMaxRank] = {1, 1, 1, 1, 1};  // logical N, C, spatial...
    const void* in = nullptr;
    bool in_f32 = false;  // `in` holds f32 (a 16-bit problem's convolution result before its one rounding)
    const void* prior = nullptr;
    void* out = nullptr;
    const void* bias = nullptr;
    int64_t bias_stride = 1;
    int n_ops = 0;
    EpilogueOp ops[PostOps::max_ops];
    int n_operands = 0;
    const void* operands[PostOps::max_ops] = {};
    int64_t operand_strides[PostOps::max_ops][kMaxRank] = {};
};
void launch_epilogue(const EpilogueArgs& a, void* stream);

// A direct forward convolution for problems too small to be worth cuDNN's per-call host cost:
// one thread per dst element computes the sum in the reference's order and applies the epilogue
// `e` (bias and post-ops; `sum` reads dst before the same thread overwrites it). One launch, no
// workspace. Spatial parameters are (d, h, w) with neutral values for missing dimensions.
struct DirectConvArgs {
    const void* src = nullptr;
    const void* wei = nullptr;
    int64_t icg = 1, ocg = 1;
    int64_t in[3] = {1, 1, 1}, k[3] = {1, 1, 1}, stride[3] = {1, 1, 1}, pad[3] = {0, 0, 0}, dilation[3] = {1, 1, 1};
    int64_t src_st[kMaxRank] = {}, wei_st[kMaxRank] = {};  // n, c, d, h, w (0 for missing dims)
};
void launch_direct_conv(const DirectConvArgs& d, const EpilogueArgs& e, void* stream);

// diff_bias[c] = sum over n and spatial of diff_dst[n, c, ...], accumulated in f32 (f64 for f64),
// in a fixed order (bitwise reproducible). `partial` is scratch of bias_grad_scratch_bytes().
struct BiasGradArgs {
    DType dt = DType::f32;
    int64_t n = 1, c = 1, s = 1;  // batch, channels, spatial size (product)
    bool channels_last = false;
    const void* diff_dst = nullptr;
    void* diff_bias = nullptr;
    int64_t bias_stride = 1;
    void* partial = nullptr;
};
std::size_t bias_grad_scratch_bytes(const BiasGradArgs& a);
void launch_bias_grad(const BiasGradArgs& a, void* stream);

// dst[idx] = src[idx] for idx over `sizes` (5-D), each side through its own strides (elements).
void launch_copy_window(void* dst, const int64_t* dst_strides, const void* src, const int64_t* src_strides,
                        const int64_t* sizes, int elem_size, void* stream);

// dst[idx] = 0 for idx over `sizes` (5-D) through `dst_strides` (elements): the diff_src positions
// that no kernel tap reaches in a phase-split backward-data (e.g. odd rows of a 1x1 stride-2 layer).
void launch_zero_window(void* dst, const int64_t* dst_strides, const int64_t* sizes, int elem_size, void* stream);

// A tiled backward-weights' sums (core/tiled_run.cpp): acc[i] = x[i] (first) or acc[i] + x[i] in
// f64; out[i] = acc[i] rounded once to `dt`.
void launch_accumulate(double* acc, const void* x, DType dt, int64_t n, bool first, void* stream);
void launch_store(void* out, DType dt, const double* acc, int64_t n, void* stream);
// dst[b * width + j] = float(src[b * pitch + j]): `count` blocks of a 16-bit tensor widened.
void launch_widen_blocks(float* dst, const void* src, DType dt, int64_t width, int64_t pitch, int64_t count, void* stream);

// dst[i] = float(src[i]) for i < n: a 16-bit (or f32) tensor widened to f32, memory order.
void launch_widen(float* dst, const void* src, DType src_dt, int64_t n, void* stream);

// The f64 GEMM plan's data movement (im2col.cu). A chunk is images [n0, n0 + nb) and, of each,
// output positions [m0, m0 + mlen) (d, h, w flattened; nb > 1 only with whole images); j below is
// a column of the chunk, (n - n0) * mlen + (m - m0). The columns' rows k run over one group's
// icg channels and the kernel taps, in the order of the weights the GEMM multiplies them with:
//   k_major (channels-first activations): col[k * ncol + j], k = ((c * kd + z) * kh + y) * kw + x
//   otherwise (channels-last):            col[j * K + k],    k = ((z * kh + y) * kw + x) * icg + c
// Geometry is (d, h, w) with neutral values for missing dimensions.
struct ColGeometry {
    int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1}, stride[3] = {1, 1, 1}, pad[3] = {0, 0, 0},
            dilation[3] = {1, 1, 1};
    int64_t icg = 1;
    bool k_major = true;
};
struct ColChunk {
    int64_t n0 = 0, nb = 1, m0 = 0, mlen = 1;
};
// col = the chunk's input windows of channels [c0, c0 + icg) of `src` (strides n, c, d, h, w);
// padding reads as 0.
void launch_im2col(const ColGeometry& g, const ColChunk& ch, const double* src, const int64_t* src_st, int64_t c0,
                   double* col, void* stream);
// The backward-data gather: each diff_src element of channels [c0, c0 + icg) of the chunk's
// images whose coordinate along spatial dim `outer` (0 = d, 1 = h, 2 = w) is in [lo, hi] gets the
// sum, in a fixed tap order, of the columns of the chunk that read it: written, or added to what
// is there (`accumulate`: an image split into several chunks, zeroed before its first).
void launch_col2im(const ColGeometry& g, const ColChunk& ch, const double* col, double* dst, const int64_t* dst_st,
                   int64_t c0, int outer, int64_t lo, int64_t hi, bool accumulate, void* stream);

// out[i] = (first ? 0 : out[i]) + parts[0 * n + i] + ... + parts[(slices - 1) * n + i], in that
// order: the GEMM plan's split-K backward-weights sums.
void launch_sum_slices(double* out, const double* parts, int64_t n, int slices, bool first, void* stream);

void launch_spin(void* stream, double ms, int clock_khz);

}  // namespace convkit::cuda
