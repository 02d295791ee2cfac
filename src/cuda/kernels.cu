// The CUDA backend's own kernels. cuDNN's runtime fusion covers only NHWC, aligned, ungrouped
// forward problems with a few activations; everything else (NCHW, f64, depthwise, sum, linear,
// mish, ...) gets the convolution from a pre-compiled engine and then this one-pass epilogue, which
// must match the reference backend's semantics exactly (src/reference/reference.cpp): bias is added
// first, then the chain in order, all in the accumulation type (f32, f64 for f64), one rounding to
// the destination type at the end. The direct convolution kernel for tiny forward problems shares
// that epilogue code.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "core/eltwise_math.hpp"
#include "cuda/cuda_util.hpp"
#include "cuda/kernels.hpp"

namespace convkit::cuda {
namespace {

struct Strides5 {
    int64_t v[5];
};

template <typename T> struct Io;
template <> struct Io<float> {
    using acc = float;
    __device__ static float load(float v) { return v; }
    __device__ static float store(float v) { return v; }
};
template <> struct Io<double> {
    using acc = double;
    __device__ static double load(double v) { return v; }
    __device__ static double store(double v) { return v; }
};
template <> struct Io<__half> {
    using acc = float;
    __device__ static float load(__half v) { return __half2float(v); }
    __device__ static __half store(float v) { return __float2half_rn(v); }
};
template <> struct Io<__nv_bfloat16> {
    using acc = float;
    __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// Logical coordinates of dense dst element i (channels-first or channels-last memory order).
__device__ inline void coords_of(const EpilogueArgs& a, int64_t i, int64_t* coord) {
    int64_t rem = i;
    if (a.channels_last) {
        coord[1] = rem % a.sizes[1];
        rem /= a.sizes[1];
        for (int d = a.rank - 1; d >= 2; --d) {
            coord[d] = rem % a.sizes[d];
            rem /= a.sizes[d];
        }
        coord[0] = rem;
    } else {
        for (int d = a.rank - 1; d >= 0; --d) {
            coord[d] = rem % a.sizes[d];
            rem /= a.sizes[d];
        }
    }
}

// Bias, then the post-op chain, on the accumulator of dst element i (the reference's order).
template <typename T, typename A>
__device__ inline A apply_chain(const EpilogueArgs& a, A acc, int64_t i, const int64_t* coord) {
    using Tr = Io<T>;
    const T* bias = static_cast<const T*>(a.bias);
    if (bias) acc += Tr::load(bias[coord[1] * a.bias_stride]);
    for (int k = 0; k < a.n_ops; ++k) {
        const EpilogueOp& op = a.ops[k];
        switch (static_cast<PostOp::Kind>(op.kind)) {
            case PostOp::Kind::eltwise: acc = math::eltwise<A>(static_cast<EltwiseAlg>(op.alg), acc, A(op.alpha), A(op.beta)); break;
            case PostOp::Kind::sum: acc += A(op.scale) * Tr::load(static_cast<const T*>(a.prior)[i]); break;
            case PostOp::Kind::binary: {
                const T* o = static_cast<const T*>(a.operands[op.operand]);
                int64_t off = 0;
                for (int d = 0; d < a.rank; ++d) off += coord[d] * a.operand_strides[op.operand][d];
                acc = math::binary<A>(static_cast<BinaryAlg>(op.alg), acc, Tr::load(o[off]));
                break;
            }
        }
    }
    return acc;
}

template <typename T>
__global__ void epilogue_kernel(const EpilogueArgs a, int64_t numel, int64_t spatial) {
    using Tr = Io<T>;
    using A = typename Tr::acc;
    const T* in = static_cast<const T*>(a.in);
    T* out = static_cast<T*>(a.out);
    const int64_t C = a.sizes[1];
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        // Logical coordinates only when something needs them: the divisions cost more than the
        // arithmetic of a typical chain.
        int64_t coord[kMaxRank] = {0, 0, 0, 0, 0};
        if (a.n_operands > 0) coords_of(a, i, coord);
        else if (a.bias) coord[1] = a.channels_last ? i % C : (i / spatial) % C;
        A x = A(0);
        if (in) x = a.in_f32 ? A(static_cast<const float*>(a.in)[i]) : Tr::load(in[i]);
        out[i] = Tr::store(apply_chain<T, A>(a, x, i, coord));
    }
}

// Reduction index r of output element (n, oc, o) -> its input and weight offsets. Channels
// innermost (contiguous in channels-last tensors); taps that fall into padding return false.
struct DirectTap {
    int64_t s, w;
};
__device__ inline bool direct_tap(const DirectConvArgs& d, int64_t r, const int64_t* o, DirectTap* t) {
    const int64_t c = r % d.icg;
    int64_t tap = r / d.icg;
    const int64_t kw = tap % d.k[2];
    tap /= d.k[2];
    const int64_t kh = tap % d.k[1];
    const int64_t kd = tap / d.k[1];
    const int64_t id = o[0] * d.stride[0] - d.pad[0] + kd * d.dilation[0];
    const int64_t ih = o[1] * d.stride[1] - d.pad[1] + kh * d.dilation[1];
    const int64_t iw = o[2] * d.stride[2] - d.pad[2] + kw * d.dilation[2];
    if (id < 0 || id >= d.in[0] || ih < 0 || ih >= d.in[1] || iw < 0 || iw >= d.in[2]) return false;
    t->s = c * d.src_st[1] + id * d.src_st[2] + ih * d.src_st[3] + iw * d.src_st[4];
    t->w = c * d.wei_st[1] + kd * d.wei_st[2] + kh * d.wei_st[3] + kw * d.wei_st[4];
    return true;
}

// One warp per dst element: the lanes split the reduction (fixed partition and shuffle tree, so
// results are reproducible run to run), lane 0 applies the epilogue. Tiny problems have few
// outputs, so a thread per output would leave the GPU idle while each thread walks the sum alone.
template <typename T>
__global__ void direct_conv_kernel(const DirectConvArgs d, const EpilogueArgs a, int64_t numel, int64_t red) {
    using Tr = Io<T>;
    using A = typename Tr::acc;
    const T* src = static_cast<const T*>(d.src);
    const T* wei = static_cast<const T*>(d.wei);
    T* out = static_cast<T*>(a.out);
    const int lane = threadIdx.x & 31;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
    for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; i < numel; i += warps) {
        int64_t coord[kMaxRank] = {0, 0, 0, 0, 0};
        coords_of(a, i, coord);
        int64_t o[3] = {0, 0, 0};
        for (int s = 2; s < a.rank; ++s) o[3 - (a.rank - s)] = coord[s];
        const int64_t oc = coord[1];
        const T* sb = src + coord[0] * d.src_st[0] + (oc / d.ocg) * d.icg * d.src_st[1];
        const T* wb = wei + oc * d.wei_st[0];
        A acc = 0;
        for (int64_t r = lane; r < red; r += 32) {
            DirectTap t;
            if (direct_tap(d, r, o, &t)) acc += Tr::load(sb[t.s]) * Tr::load(wb[t.w]);
        }
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
        if (lane == 0) out[i] = Tr::store(apply_chain<T, A>(a, acc, i, coord));
    }
}

int grid_for(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 132 * 32)));
}

// Pass 1 of the bias gradient, channels-first: block (c, chunk) sums its chunk of the (n, s) plane.
template <typename T, typename A>
__global__ void bias_grad_nchw(const T* dy, A* partial, int64_t N, int64_t C, int64_t S, int64_t chunk) {
    const int64_t c = blockIdx.x, ch = blockIdx.y;
    const int64_t total = N * S, lo = ch * chunk, hi = min(total, lo + chunk);
    A acc = 0;
    for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        const int64_t n = j / S, s = j - n * S;
        acc += Io<T>::load(dy[(n * C + c) * S + s]);
    }
    __shared__ A sh[256];
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[ch * C + c] = sh[0];
}

// Pass 1, channels-last: rows are (n, s), 32 channels per block in x, 8 row lanes in y.
template <typename T, typename A>
__global__ void bias_grad_nhwc(const T* dy, A* partial, int64_t rows, int64_t C, int64_t chunk) {
    const int64_t c = blockIdx.x * 32 + threadIdx.x, ch = blockIdx.y;
    const int64_t lo = ch * chunk, hi = min(rows, lo + chunk);
    A acc = 0;
    if (c < C)
        for (int64_t r = lo + threadIdx.y; r < hi; r += 8) acc += Io<T>::load(dy[r * C + c]);
    __shared__ A sh[8][33];
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        A s = 0;
        for (int y = 0; y < 8; ++y) s += sh[y][threadIdx.x];
        partial[ch * C + c] = s;
    }
}

template <typename T, typename A>
__global__ void bias_grad_final(const A* partial, T* db, int64_t C, int64_t chunks, int64_t stride) {
    const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (c >= C) return;
    A s = 0;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * C + c];
    db[c * stride] = Io<T>::store(s);
}

int64_t bias_grad_chunks(const BiasGradArgs& a) {
    // Enough blocks to fill the GPU, each with at least a few thousand elements to sum.
    const int64_t rows = a.n * a.s;
    const int64_t per_chunk = 4096;
    return std::max<int64_t>(1, std::min<int64_t>((rows + per_chunk - 1) / per_chunk, 1024));
}

template <typename T, typename A> void bias_grad_impl(const BiasGradArgs& a, cudaStream_t s) {
    const int64_t chunks = bias_grad_chunks(a), rows = a.n * a.s;
    const int64_t chunk = (rows + chunks - 1) / chunks;
    A* partial = static_cast<A*>(a.partial);
    const T* dy = static_cast<const T*>(a.diff_dst);
    if (a.channels_last) {
        dim3 grid(static_cast<unsigned>((a.c + 31) / 32), static_cast<unsigned>(chunks));
        bias_grad_nhwc<T, A><<<grid, dim3(32, 8), 0, s>>>(dy, partial, rows, a.c, chunk);
    } else {
        dim3 grid(static_cast<unsigned>(a.c), static_cast<unsigned>(chunks));
        bias_grad_nchw<T, A><<<grid, 256, 0, s>>>(dy, partial, a.n, a.c, a.s, chunk);
    }
    check_cuda(cudaGetLastError(), "bias gradient kernel launch");
    bias_grad_final<T, A><<<static_cast<unsigned>((a.c + 127) / 128), 128, 0, s>>>(
        partial, static_cast<T*>(a.diff_bias), a.c, chunks, a.bias_stride);
    check_cuda(cudaGetLastError(), "bias gradient kernel launch");
}

// dst window = src window, or zeros where src is null (all-zero bits: 0.0 in every dtype).
template <typename U>
__global__ void window_kernel(U* dst, const U* src, Strides5 d, Strides5 st, int64_t n1, int64_t n2, int64_t n3,
                              int64_t n4, int64_t total) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t r = i;
        const int64_t i4 = r % n4; r /= n4;
        const int64_t i3 = r % n3; r /= n3;
        const int64_t i2 = r % n2; r /= n2;
        const int64_t i1 = r % n1; r /= n1;
        const int64_t i0 = r;
        dst[i0 * d.v[0] + i1 * d.v[1] + i2 * d.v[2] + i3 * d.v[3] + i4 * d.v[4]] =
                src ? src[i0 * st.v[0] + i1 * st.v[1] + i2 * st.v[2] + i3 * st.v[3] + i4 * st.v[4]] : U(0);
    }
}

__global__ void spin_kernel(long long cycles) {
    const long long start = clock64();
    while (clock64() - start < cycles) {
    }
}

}  // namespace

template <typename T>
__global__ void widen_kernel(float* dst, const T* src, int64_t n) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        dst[i] = static_cast<float>(Io<T>::load(src[i]));
}

void launch_widen(float* dst, const void* src, DType src_dt, int64_t n, void* stream) {
    if (n == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    const int threads = 256, grid = grid_for(n, threads);
    switch (src_dt) {
        case DType::f32: widen_kernel<float><<<grid, threads, 0, s>>>(dst, static_cast<const float*>(src), n); break;
        case DType::f64: widen_kernel<double><<<grid, threads, 0, s>>>(dst, static_cast<const double*>(src), n); break;
        case DType::f16: widen_kernel<__half><<<grid, threads, 0, s>>>(dst, static_cast<const __half*>(src), n); break;
        case DType::bf16:
            widen_kernel<__nv_bfloat16><<<grid, threads, 0, s>>>(dst, static_cast<const __nv_bfloat16*>(src), n);
            break;
    }
    check_cuda(cudaGetLastError(), "widen kernel launch");
}

template <typename T>
__global__ void accumulate_kernel(double* acc, const T* x, int64_t n, bool first) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const double v = static_cast<double>(Io<T>::load(x[i]));
        acc[i] = first ? v : acc[i] + v;
    }
}

template <typename T>
__global__ void store_kernel(T* out, const double* acc, int64_t n) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        out[i] = Io<T>::store(static_cast<typename Io<T>::acc>(acc[i]));
}

template <typename T>
__global__ void widen_blocks_kernel(float* dst, const T* src, int64_t width, int64_t pitch, int64_t n) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t b = i / width;
        dst[i] = static_cast<float>(Io<T>::load(src[b * pitch + (i - b * width)]));
    }
}

void launch_widen_blocks(float* dst, const void* src, DType dt, int64_t width, int64_t pitch, int64_t count, void* stream) {
    const int64_t n = width * count;
    if (n == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    const int threads = 256, grid = grid_for(n, threads);
    switch (dt) {
        case DType::f32: widen_blocks_kernel<<<grid, threads, 0, s>>>(dst, static_cast<const float*>(src), width, pitch, n); break;
        case DType::f64: widen_blocks_kernel<<<grid, threads, 0, s>>>(dst, static_cast<const double*>(src), width, pitch, n); break;
        case DType::f16: widen_blocks_kernel<<<grid, threads, 0, s>>>(dst, static_cast<const __half*>(src), width, pitch, n); break;
        case DType::bf16:
            widen_blocks_kernel<<<grid, threads, 0, s>>>(dst, static_cast<const __nv_bfloat16*>(src), width, pitch, n);
            break;
    }
    check_cuda(cudaGetLastError(), "widen blocks kernel launch");
}

void launch_accumulate(double* acc, const void* x, DType dt, int64_t n, bool first, void* stream) {
    if (n == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    const int threads = 256, grid = grid_for(n, threads);
    switch (dt) {
        case DType::f32: accumulate_kernel<<<grid, threads, 0, s>>>(acc, static_cast<const float*>(x), n, first); break;
        case DType::f64: accumulate_kernel<<<grid, threads, 0, s>>>(acc, static_cast<const double*>(x), n, first); break;
        case DType::f16: accumulate_kernel<<<grid, threads, 0, s>>>(acc, static_cast<const __half*>(x), n, first); break;
        case DType::bf16:
            accumulate_kernel<<<grid, threads, 0, s>>>(acc, static_cast<const __nv_bfloat16*>(x), n, first);
            break;
    }
    check_cuda(cudaGetLastError(), "accumulate kernel launch");
}

void launch_store(void* out, DType dt, const double* acc, int64_t n, void* stream) {
    if (n == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    const int threads = 256, grid = grid_for(n, threads);
    switch (dt) {
        case DType::f32: store_kernel<<<grid, threads, 0, s>>>(static_cast<float*>(out), acc, n); break;
        case DType::f64: store_kernel<<<grid, threads, 0, s>>>(static_cast<double*>(out), acc, n); break;
        case DType::f16: store_kernel<<<grid, threads, 0, s>>>(static_cast<__half*>(out), acc, n); break;
        case DType::bf16: store_kernel<<<grid, threads, 0, s>>>(static_cast<__nv_bfloat16*>(out), acc, n); break;
    }
    check_cuda(cudaGetLastError(), "store kernel launch");
}

void launch_epilogue(const EpilogueArgs& a, void* stream) {
    int64_t numel = 1, spatial = 1;
    for (int d = 0; d < a.rank; ++d) numel *= a.sizes[d];
    for (int d = 2; d < a.rank; ++d) spatial *= a.sizes[d];
    if (numel == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    const int threads = 256, grid = grid_for(numel, threads);
    switch (a.dt) {
        case DType::f32: epilogue_kernel<float><<<grid, threads, 0, s>>>(a, numel, spatial); break;
        case DType::f64: epilogue_kernel<double><<<grid, threads, 0, s>>>(a, numel, spatial); break;
        case DType::f16: epilogue_kernel<__half><<<grid, threads, 0, s>>>(a, numel, spatial); break;
        case DType::bf16: epilogue_kernel<__nv_bfloat16><<<grid, threads, 0, s>>>(a, numel, spatial); break;
    }
    check_cuda(cudaGetLastError(), "epilogue kernel launch");
}

void launch_direct_conv(const DirectConvArgs& d, const EpilogueArgs& a, void* stream) {
    int64_t numel = 1;
    for (int i = 0; i < a.rank; ++i) numel *= a.sizes[i];
    if (numel == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    const int64_t red = d.icg * d.k[0] * d.k[1] * d.k[2];
    // 4 warps per block: these problems have few outputs, and small blocks spread over more SMs.
    const int threads = 128, grid = grid_for(numel * 32, threads);
    switch (a.dt) {
        case DType::f32: direct_conv_kernel<float><<<grid, threads, 0, s>>>(d, a, numel, red); break;
        case DType::f64: direct_conv_kernel<double><<<grid, threads, 0, s>>>(d, a, numel, red); break;
        case DType::f16: direct_conv_kernel<__half><<<grid, threads, 0, s>>>(d, a, numel, red); break;
        case DType::bf16: direct_conv_kernel<__nv_bfloat16><<<grid, threads, 0, s>>>(d, a, numel, red); break;
    }
    check_cuda(cudaGetLastError(), "direct convolution kernel launch");
}

std::size_t bias_grad_scratch_bytes(const BiasGradArgs& a) {
    const std::size_t acc = a.dt == DType::f64 ? sizeof(double) : sizeof(float);
    return static_cast<std::size_t>(bias_grad_chunks(a) * a.c) * acc;
}

void launch_bias_grad(const BiasGradArgs& a, void* stream) {
    if (a.c == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    switch (a.dt) {
        case DType::f32: bias_grad_impl<float, float>(a, s); break;
        case DType::f64: bias_grad_impl<double, double>(a, s); break;
        case DType::f16: bias_grad_impl<__half, float>(a, s); break;
        case DType::bf16: bias_grad_impl<__nv_bfloat16, float>(a, s); break;
    }
}

void launch_copy_window(void* dst, const int64_t* ds, const void* src, const int64_t* ss, const int64_t* n,
                        int elem_size, void* stream) {
    const int64_t total = n[0] * n[1] * n[2] * n[3] * n[4];
    if (total == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    const int threads = 256, grid = grid_for(total, threads);
    Strides5 d{}, st{};
    for (int i = 0; i < 5; ++i) d.v[i] = ds[i], st.v[i] = ss ? ss[i] : 0;
    switch (elem_size) {
        case 2: window_kernel<<<grid, threads, 0, s>>>(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), d, st, n[1], n[2], n[3], n[4], total); break;
        case 4: window_kernel<<<grid, threads, 0, s>>>(static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src), d, st, n[1], n[2], n[3], n[4], total); break;
        default: window_kernel<<<grid, threads, 0, s>>>(static_cast<unsigned long long*>(dst), static_cast<const unsigned long long*>(src), d, st, n[1], n[2], n[3], n[4], total); break;
    }
    check_cuda(cudaGetLastError(), "window copy kernel launch");
}

void launch_zero_window(void* dst, const int64_t* ds, const int64_t* n, int elem_size, void* stream) {
    launch_copy_window(dst, ds, nullptr, nullptr, n, elem_size, stream);
}

void launch_spin(void* stream, double ms, int clock_khz) {
    spin_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<long long>(ms * clock_khz));
    check_cuda(cudaGetLastError(), "spin kernel launch");
}

}  // namespace convkit::cuda
