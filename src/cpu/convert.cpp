// Widening bf16/f16 to f32 and narrowing back (round to nearest even, NaN kept), for 16-bit
// problems that run on oneDNN's f32 kernels. oneDNN 2.6 has only its scalar `simple:any` reorder
// for these conversions below avx512_core (measured: 9 ms for a 56x56x64 bf16 tensor, more than
// the convolution), so convkit converts itself in one streaming pass and leaves layout changes
// to oneDNN's f32 reorders. An AVX2+F16C version is picked at run time where the CPU has it.
#include "cpu/convert.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "convkit/tensor.hpp"

namespace convkit::cpu {
namespace {

// Below this many elements one thread converts faster than waking a team.
constexpr std::size_t kSerial = 1 << 15;

inline float bf16_to_float(uint16_t v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    return static_cast<uint16_t>(nan ? (u >> 16) | 0x40u : rounded);
}

// The loops are written so the compiler vectorises them in either target.
#define CONVKIT_CONVERT_LOOPS                                                              \
    static void widen_bf16(const uint16_t* s, float* d, std::size_t n) {                   \
        for (std::size_t i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);                    \
    }                                                                                      \
    static void narrow_bf16(const float* s, uint16_t* d, std::size_t n) {                  \
        for (std::size_t i = 0; i < n; ++i) d[i] = float_to_bf16(s[i]);                    \
    }

struct Generic {
    CONVKIT_CONVERT_LOOPS
    static void widen_f16(const uint16_t* s, float* d, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) d[i] = f16_to_f32(s[i]);
    }
    static void narrow_f16(const float* s, uint16_t* d, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_f16(s[i]);
    }
};

#pragma GCC push_options
#pragma GCC target("avx2,f16c,fma")
struct Avx2 {
    CONVKIT_CONVERT_LOOPS
    static void widen_f16(const uint16_t* s, float* d, std::size_t n) {
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
        for (; i < n; ++i) d[i] = f16_to_f32(s[i]);
    }
    static void narrow_f16(const float* s, uint16_t* d, std::size_t n) {
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
        for (; i < n; ++i) d[i] = f32_to_f16(s[i]);
    }
};
#pragma GCC pop_options

bool have_avx2() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    return yes;
}

// Splits [0, n) over the threads in cache-line-aligned pieces and runs fn(offset, count) on each.
template <typename Fn> void parallel_chunks(std::size_t n, Fn fn) {
    if (n < kSerial || omp_get_max_threads() == 1 || omp_in_parallel()) {
        fn(std::size_t(0), n);
        return;
    }
#pragma omp parallel
    {
        const std::size_t nt = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
        const std::size_t per = ((n + nt - 1) / nt + 31) & ~std::size_t(31);
        const std::size_t b = std::min(n, t * per), e = std::min(n, b + per);
        if (e > b) fn(b, e - b);
    }
}

}  // namespace

void widen_to_f32(DType dt, const void* src, float* dst, std::size_t n) {
    const auto* s = static_cast<const uint16_t*>(src);
    parallel_chunks(n, [&](std::size_t o, std::size_t c) {
        if (dt == DType::bf16) {
            if (have_avx2()) Avx2::widen_bf16(s + o, dst + o, c);
            else Generic::widen_bf16(s + o, dst + o, c);
        } else {
            if (have_avx2()) Avx2::widen_f16(s + o, dst + o, c);
            else Generic::widen_f16(s + o, dst + o, c);
        }
    });
}

void narrow_from_f32(DType dt, const float* src, void* dst, std::size_t n) {
    auto* d = static_cast<uint16_t*>(dst);
    parallel_chunks(n, [&](std::size_t o, std::size_t c) {
        if (dt == DType::bf16) {
            if (have_avx2()) Avx2::narrow_bf16(src + o, d + o, c);
            else Generic::narrow_bf16(src + o, d + o, c);
        } else {
            if (have_avx2()) Avx2::narrow_f16(src + o, d + o, c);
            else Generic::narrow_f16(src + o, d + o, c);
        }
    });
}

}  // namespace convkit::cpu

namespace convkit::cpu {

BlockedMap blocked_map(const dnnl_memory_desc_t& md, const int64_t* plain_strides) {
    BlockedMap m;
    m.ndims = md.ndims;
    const dnnl_blocking_desc_t& bd = md.format_desc.blocking;
    int64_t elems = 1;
    for (int d = 0; d < md.ndims; ++d) {
        m.dims[d] = md.dims[d];
        m.padded = m.padded || md.padded_dims[d] != md.dims[d];
        elems *= md.padded_dims[d];
    }
    m.blocked_elems = static_cast<std::size_t>(elems);
    // Inner blocks are listed outermost first; the innermost one has stride 1.
    int64_t blk_stride[DNNL_MAX_NDIMS];
    int64_t s = 1;
    for (int k = bd.inner_nblks - 1; k >= 0; --k) {
        blk_stride[k] = s;
        s *= bd.inner_blks[k];
    }
    for (int d = 0; d < md.ndims; ++d) {
        m.start[d] = static_cast<int64_t>(m.table.size());
        for (int64_t x = 0; x < m.dims[d]; ++x) {
            int64_t rest = x, off = 0;
            for (int k = bd.inner_nblks - 1; k >= 0; --k) {
                if (bd.inner_idxs[k] != d) continue;
                off += (rest % bd.inner_blks[k]) * blk_stride[k];
                rest /= bd.inner_blks[k];
            }
            m.table.push_back(md.offset0 * (d == 0) + off + rest * bd.strides[d]);
        }
    }
    std::stable_sort(m.order, m.order + m.ndims,
                     [&](int a, int b) { return plain_strides[a] > plain_strides[b]; });
    return m;
}

namespace {

// Walks the plain tensor in its memory order (rows of its innermost dim) over the threads and
// calls fn(plain_index, blocked_offset_of_row, inner_table, inner_len) per row.
template <typename Fn> void for_rows(const BlockedMap& m, Fn fn) {
    const int nd = m.ndims;
    const int inner = m.order[nd - 1];
    const int64_t len = m.dims[inner];
    int64_t rows = 1;
    for (int j = 0; j < nd - 1; ++j) rows *= m.dims[m.order[j]];
    const int64_t* tin = m.table.data() + m.start[inner];
#pragma omp parallel if (rows * len > (1 << 15))
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
        int64_t x[6] = {0, 0, 0, 0, 0, 0};
        int64_t rem = r0;
        for (int j = nd - 2; j >= 0; --j) {
            x[j] = rem % m.dims[m.order[j]];
            rem /= m.dims[m.order[j]];
        }
        for (int64_t r = r0; r < r1; ++r) {
            int64_t base = 0;
            for (int j = 0; j < nd - 1; ++j) base += m.table[static_cast<std::size_t>(m.start[m.order[j]] + x[j])];
            fn(r * len, base, tin, len);
            for (int j = nd - 2; j >= 0; --j) {  // odometer over the outer dims
                if (++x[j] < m.dims[m.order[j]]) break;
                x[j] = 0;
            }
        }
    }
}

}  // namespace

void widen_to_blocked(DType dt, const void* plain, float* blocked, const BlockedMap& m) {
    if (m.padded) std::memset(blocked, 0, m.blocked_elems * sizeof(float));
    const auto* s = static_cast<const uint16_t*>(plain);
    const bool bf = dt == DType::bf16;
    for_rows(m, [&](int64_t i0, int64_t base, const int64_t* tin, int64_t len) {
        float* d = blocked + base;
        for (int64_t x = 0; x < len; ++x) d[tin[x]] = bf ? bf16_to_float(s[i0 + x]) : f16_to_f32(s[i0 + x]);
    });
}

void narrow_from_blocked(DType dt, const float* blocked, void* plain, const BlockedMap& m) {
    auto* d = static_cast<uint16_t*>(plain);
    const bool bf = dt == DType::bf16;
    for_rows(m, [&](int64_t i0, int64_t base, const int64_t* tin, int64_t len) {
        const float* s = blocked + base;
        for (int64_t x = 0; x < len; ++x) d[i0 + x] = bf ? float_to_bf16(s[tin[x]]) : f32_to_f16(s[tin[x]]);
    });
}

}  // namespace convkit::cpu
