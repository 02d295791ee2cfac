// The f64 GEMM plan's im2col and its backward-data inverse (kernels.hpp, gemm_plan.cpp). The
// gather form of col2im (each diff_src element sums the columns that read it) rather than a
// scatter with atomics: the sum's order is fixed, so backward-data stays bitwise reproducible,
// and no element is written twice.
//
// Coordinates are 32-bit (a chunk's columns and every dimension are below 2^31: the tiling and
// f64_gemm_workspace() see to it), and each thread splits its flat index into coordinates once,
// then walks the taps and several channels from there: 64-bit divisions per element made a first
// version's im2col cost more than the GEMM it fed (res2_3x3 f64, H200).
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cuda_util.hpp"
#include "cuda/kernels.hpp"

namespace convkit::cuda {
namespace {

struct St5 {
    int64_t v[5];
};

// Channels per thread in the channels-first kernels (accumulators of the gather).
constexpr int kChannelsPerThread = 8;

dim3 grid2(int64_t x_items, int x_per_block, int64_t y_items) {
    const int64_t bx = (x_items + x_per_block - 1) / x_per_block;
    return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(bx, INT32_MAX))),
                static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(y_items, 65535))), 1);
}

// Column j of the chunk: its image within the chunk (returned) and the first input coordinate
// (d, h, w) of its window, which may lie in the padding.
__device__ inline int window_of(const ColGeometry& g, const ColChunk& ch, int j, int* origin) {
    const int mlen = static_cast<int>(ch.mlen), nl = j / mlen;
    const int m = static_cast<int>(ch.m0) + (j - nl * mlen);
    const int o1 = static_cast<int>(g.out[1]), o2 = static_cast<int>(g.out[2]);
    const int r = m / o2;
    const int o[3] = {r / o1, r % o1, m % o2};
    for (int i = 0; i < 3; ++i) origin[i] = o[i] * int(g.stride[i]) - int(g.pad[i]);
    return nl;
}

// Channels-first: thread = column j, channels blockIdx.y * cpt + [0, cpt) (strided by the grid),
// every tap; consecutive threads write consecutive columns of a row.
__global__ void im2col_kmajor(ColGeometry g, ColChunk ch, const double* __restrict__ src, St5 st, int64_t c0,
                              double* __restrict__ col, int cpt) {
    const int ncol = static_cast<int>(ch.nb * ch.mlen);
    const int k0 = static_cast<int>(g.k[0]), k1 = static_cast<int>(g.k[1]), k2 = static_cast<int>(g.k[2]);
    const int taps = k0 * k1 * k2, icg = static_cast<int>(g.icg);
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < ncol; j += gridDim.x * blockDim.x) {
        int o0[3];
        const int nl = window_of(g, ch, j, o0);
        const int id0 = o0[0], ih0 = o0[1], iw0 = o0[2];
        const double* sn = src + (ch.n0 + nl) * st.v[0];
        for (int cb = blockIdx.y * cpt; cb < icg; cb += gridDim.y * cpt) {
            const int ce = min(cb + cpt, icg);
            for (int c = cb; c < ce; ++c) {
                const double* sc = sn + (c0 + c) * st.v[1];
                double* out = col + int64_t(c) * taps * ncol + j;
                for (int z = 0; z < k0; ++z) {
                    const int id = id0 + z * int(g.dilation[0]);
                    const bool okz = id >= 0 && id < g.in[0];
                    for (int y = 0; y < k1; ++y) {
                        const int ih = ih0 + y * int(g.dilation[1]);
                        const bool oky = okz && ih >= 0 && ih < g.in[1];
                        for (int x = 0; x < k2; ++x) {
                            const int iw = iw0 + x * int(g.dilation[2]);
                            *out = oky && iw >= 0 && iw < g.in[2] ? sc[id * st.v[2] + ih * st.v[3] + iw * st.v[4]] : 0.0;
                            out += ncol;
                        }
                    }
                }
            }
        }
    }
}

// Channels-last: threadIdx.y = column j, threadIdx.x walks the row's K = taps x icg contiguous
// elements (c fastest), so a warp reads and writes consecutive channels.
__global__ void im2col_jmajor(ColGeometry g, ColChunk ch, const double* __restrict__ src, St5 st, int64_t c0,
                              double* __restrict__ col) {
    const int ncol = static_cast<int>(ch.nb * ch.mlen);
    const int k1 = static_cast<int>(g.k[1]), k2 = static_cast<int>(g.k[2]);
    const int icg = static_cast<int>(g.icg), K = static_cast<int>(g.icg * g.k[0] * g.k[1] * g.k[2]);
    for (int j = blockIdx.x * blockDim.y + threadIdx.y; j < ncol; j += gridDim.x * blockDim.y) {
        int o0[3];
        const int nl = window_of(g, ch, j, o0);
        const int id0 = o0[0], ih0 = o0[1], iw0 = o0[2];
        const double* sn = src + (ch.n0 + nl) * st.v[0] + c0 * st.v[1];
        double* out = col + int64_t(j) * K;
        if (icg >= 32) {
            int t = 0;
            for (int z = 0; z < g.k[0]; ++z)
                for (int y = 0; y < k1; ++y)
                    for (int x = 0; x < k2; ++x, ++t) {
                        const int id = id0 + z * int(g.dilation[0]), ih = ih0 + y * int(g.dilation[1]),
                                  iw = iw0 + x * int(g.dilation[2]);
                        const bool ok = id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1] && iw >= 0 && iw < g.in[2];
                        const double* s = sn + id * st.v[2] + ih * st.v[3] + iw * st.v[4];
                        double* o = out + t * icg;
                        for (int c = threadIdx.x; c < icg; c += blockDim.x) o[c] = ok ? s[c * st.v[1]] : 0.0;
                    }
        } else {  // few channels (a first layer): the lanes split the row's elements
            for (int k = threadIdx.x; k < K; k += blockDim.x) {
                const int t = k / icg, c = k - t * icg;
                const int x = t % k2, y = (t / k2) % k1, z = t / (k2 * k1);
                const int id = id0 + z * int(g.dilation[0]), ih = ih0 + y * int(g.dilation[1]),
                          iw = iw0 + x * int(g.dilation[2]);
                const bool ok = id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1] && iw >= 0 && iw < g.in[2];
                out[k] = ok ? sn[id * st.v[2] + ih * st.v[3] + iw * st.v[4] + c * st.v[1]] : 0.0;
            }
        }
    }
}

// Output coordinate of input coordinate `i` through tap `t` of one dimension, or -1.
__device__ inline int out_of(int i, int t, int pad, int dil, int stride, int out) {
    const int q = i + pad - t * dil;
    if (q < 0 || q % stride != 0) return -1;
    const int o = q / stride;
    return o < out ? o : -1;
}

// The input range of a gather launch, and one of its positions split into coordinates.
struct Range {
    int r[3];
    int outer, lo;
    __device__ void split(int pos, int* co) const {
        co[2] = pos % r[2];
        const int t = pos / r[2];
        co[1] = t % r[1];
        co[0] = t / r[1];
        co[outer] += lo;
    }
};

// Column index (within the chunk's image nl) of output position (od, oh, ow), or -1 outside it.
__device__ inline int column_of(const ColGeometry& g, const ColChunk& ch, int nl, int od, int oh, int ow) {
    const int m = (od * int(g.out[1]) + oh) * int(g.out[2]) + ow - int(ch.m0);
    return m >= 0 && m < ch.mlen ? nl * int(ch.mlen) + m : -1;
}

// Calls f(j, t) for each tap t (z, y, x flattened) through which input coordinates `co` are read
// by a column j of the chunk (image nl), in the taps' order.
template <typename F>
__device__ inline void for_each_reader(const ColGeometry& g, const ColChunk& ch, int nl, const int* co, F f) {
    const int k1 = int(g.k[1]), k2 = int(g.k[2]);
    for (int z = 0; z < g.k[0]; ++z) {
        const int od = out_of(co[0], z, int(g.pad[0]), int(g.dilation[0]), int(g.stride[0]), int(g.out[0]));
        if (od < 0) continue;
        for (int y = 0; y < k1; ++y) {
            const int oh = out_of(co[1], y, int(g.pad[1]), int(g.dilation[1]), int(g.stride[1]), int(g.out[1]));
            if (oh < 0) continue;
            for (int x = 0; x < k2; ++x) {
                const int ow = out_of(co[2], x, int(g.pad[2]), int(g.dilation[2]), int(g.stride[2]), int(g.out[2]));
                if (ow < 0) continue;
                const int j = column_of(g, ch, nl, od, oh, ow);
                if (j >= 0) f(j, (z * k1 + y) * k2 + x);
            }
        }
    }
}

// Channels-first gather: thread = one position of the range, channels blockIdx.y * 8 + [0, 8)
// summed together in the taps' order.
__global__ void col2im_kmajor(ColGeometry g, ColChunk ch, const double* __restrict__ col, double* __restrict__ dst, St5 st,
                              int64_t c0, Range rg, bool accumulate) {
    const int plane = rg.r[0] * rg.r[1] * rg.r[2], total = int(ch.nb) * plane;
    const int ncol = static_cast<int>(ch.nb * ch.mlen), icg = static_cast<int>(g.icg);
    const int taps = int(g.k[0] * g.k[1] * g.k[2]);
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const int nl = idx / plane;
        int co[3];
        rg.split(idx - nl * plane, co);
        double* dn = dst + (ch.n0 + nl) * st.v[0] + co[0] * st.v[2] + co[1] * st.v[3] + co[2] * st.v[4];
        for (int cb = blockIdx.y * kChannelsPerThread; cb < icg; cb += gridDim.y * kChannelsPerThread) {
            const int nc = min(kChannelsPerThread, icg - cb);
            double acc[kChannelsPerThread] = {};
            for_each_reader(g, ch, nl, co, [&](int j, int t) {
                const double* cp = col + (int64_t(cb) * taps + t) * ncol + j;
#pragma unroll
                for (int c = 0; c < kChannelsPerThread; ++c)
                    if (c < nc) acc[c] += cp[int64_t(c) * taps * ncol];
            });
#pragma unroll
            for (int c = 0; c < kChannelsPerThread; ++c)
                if (c < nc) {
                    double* d = dn + (c0 + cb + c) * st.v[1];
                    *d = accumulate ? *d + acc[c] : acc[c];
                }
        }
    }
}

// Channels-last gather: threadIdx.y = one position of the range, threadIdx.x its channels, 8 of
// them per thread summed together (lanes 32 apart), in the taps' order.
__global__ void col2im_jmajor(ColGeometry g, ColChunk ch, const double* __restrict__ col, double* __restrict__ dst, St5 st,
                              int64_t c0, Range rg, bool accumulate) {
    const int plane = rg.r[0] * rg.r[1] * rg.r[2], total = int(ch.nb) * plane;
    const int icg = static_cast<int>(g.icg), K = static_cast<int>(g.icg * g.k[0] * g.k[1] * g.k[2]);
    const int lanes = blockDim.x;
    for (int idx = blockIdx.x * blockDim.y + threadIdx.y; idx < total; idx += gridDim.x * blockDim.y) {
        const int nl = idx / plane;
        int co[3];
        rg.split(idx - nl * plane, co);
        double* dn = dst + (ch.n0 + nl) * st.v[0] + co[0] * st.v[2] + co[1] * st.v[3] + co[2] * st.v[4];
        for (int cb = threadIdx.x; cb < icg; cb += lanes * kChannelsPerThread) {
            double acc[kChannelsPerThread] = {};
            for_each_reader(g, ch, nl, co, [&](int j, int t) {
                const double* cp = col + int64_t(j) * K + t * icg + cb;
#pragma unroll
                for (int u = 0; u < kChannelsPerThread; ++u)
                    if (cb + u * lanes < icg) acc[u] += cp[u * lanes];
            });
#pragma unroll
            for (int u = 0; u < kChannelsPerThread; ++u)
                if (cb + u * lanes < icg) {
                    double* d = dn + (c0 + cb + u * lanes) * st.v[1];
                    *d = accumulate ? *d + acc[u] : acc[u];
                }
        }
    }
}

__global__ void sum_slices_kernel(double* __restrict__ out, const double* __restrict__ parts, int64_t n, int slices,
                                  bool first) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        double v = first ? 0.0 : out[i];
        for (int s = 0; s < slices; ++s) v += parts[s * n + i];
        out[i] = v;
    }
}

}  // namespace

void launch_sum_slices(double* out, const double* parts, int64_t n, int slices, bool first, void* stream) {
    if (n == 0) return;
    const int64_t blocks = std::min<int64_t>((n + 255) / 256, 132 * 16);
    sum_slices_kernel<<<static_cast<unsigned>(blocks), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, parts, n, slices, first);
    check_cuda(cudaGetLastError(), "slice sum kernel launch");
}

void launch_im2col(const ColGeometry& g, const ColChunk& ch, const double* src, const int64_t* src_st, int64_t c0,
                   double* col, void* stream) {
    const int64_t ncol = ch.nb * ch.mlen, taps = g.k[0] * g.k[1] * g.k[2];
    if (ncol == 0 || g.icg == 0) return;
    St5 st;
    for (int i = 0; i < 5; ++i) st.v[i] = src_st[i];
    auto s = static_cast<cudaStream_t>(stream);
    if (g.k_major) {
        // Enough work per thread to pay for its index split: 8 or more elements.
        const int cpt = static_cast<int>(std::max<int64_t>(1, (8 + taps - 1) / taps));
        im2col_kmajor<<<grid2(ncol, 256, (g.icg + cpt - 1) / cpt), 256, 0, s>>>(g, ch, src, st, c0, col, cpt);
    } else {
        im2col_jmajor<<<grid2(ncol, 8, 1), dim3(32, 8), 0, s>>>(g, ch, src, st, c0, col);
    }
    check_cuda(cudaGetLastError(), "im2col kernel launch");
}

void launch_col2im(const ColGeometry& g, const ColChunk& ch, const double* col, double* dst, const int64_t* dst_st,
                   int64_t c0, int outer, int64_t lo, int64_t hi, bool accumulate, void* stream) {
    if (hi < lo) return;
    Range rg;
    for (int i = 0; i < 3; ++i) rg.r[i] = static_cast<int>(g.in[i]);
    rg.r[outer] = static_cast<int>(hi - lo + 1);
    rg.outer = outer;
    rg.lo = static_cast<int>(lo);
    const int64_t positions = ch.nb * int64_t(rg.r[0]) * rg.r[1] * rg.r[2];
    if (positions == 0 || g.icg == 0) return;
    St5 st;
    for (int i = 0; i < 5; ++i) st.v[i] = dst_st[i];
    auto s = static_cast<cudaStream_t>(stream);
    if (g.k_major) {
        col2im_kmajor<<<grid2(positions, 256, (g.icg + kChannelsPerThread - 1) / kChannelsPerThread), 256, 0, s>>>(
            g, ch, col, dst, st, c0, rg, accumulate);
    } else if (g.icg < 32) {  // few channels (a first layer): one lane per channel, 32 positions a block
        col2im_jmajor<<<grid2(positions, 32, 1), dim3(static_cast<unsigned>(g.icg), 32), 0, s>>>(g, ch, col, dst, st, c0, rg,
                                                                                                   accumulate);
    } else {
        col2im_jmajor<<<grid2(positions, 8, 1), dim3(32, 8), 0, s>>>(g, ch, col, dst, st, c0, rg, accumulate);
    }
    check_cuda(cudaGetLastError(), "col2im kernel launch");
}

}  // namespace convkit::cuda
