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
    int64_t block[DNNL_MAX_NDIMS];
    for (int d = 0; d < md.ndims; ++d) {
        m.dims[d] = md.dims[d];
        m.plain_strides[d] = plain_strides[d];
        m.padded = m.padded || md.padded_dims[d] != md.dims[d];
        elems *= md.padded_dims[d];
        block[d] = 1;
    }
    m.blocked_elems = static_cast<std::size_t>(elems);
    // Inner blocks, innermost last: stride 1, 8, ...; a dim blocked twice (4i16o4i) gets a
    // logical step of the blocks inside it.
    std::vector<BlockedMap::Loop> inner(static_cast<std::size_t>(bd.inner_nblks));
    int64_t s = 1;
    for (int k = bd.inner_nblks - 1; k >= 0; --k) {
        const int d = bd.inner_idxs[k];
        inner[static_cast<std::size_t>(k)] = {bd.inner_blks[k], s, block[d], d};
        s *= bd.inner_blks[k];
        block[d] *= bd.inner_blks[k];
    }
    for (int d = 0; d < md.ndims; ++d)
        m.loops.push_back({md.padded_dims[d] / block[d], bd.strides[d], block[d], d});
    // Outer loops by stride (size-1 dims anywhere), then the inner blocks.
    std::stable_sort(m.loops.begin(), m.loops.end(),
                     [](const BlockedMap::Loop& a, const BlockedMap::Loop& b) { return a.blocked_stride > b.blocked_stride; });
    m.loops.insert(m.loops.end(), inner.begin(), inner.end());
    if (m.loops.empty() || m.loops.back().blocked_stride != 1) m.loops.push_back({1, 1, 1, 0});
    return m;
}

namespace {

// Runs fn(blocked_offset, plain_offset, plain_step, n) for every run of the innermost loop that
// holds real (not padding) elements, over the threads. Offsets move incrementally with the
// odometer: a run is 8 or 16 elements, so per-run work has to stay a handful of additions.
template <typename Fn> void for_runs(const BlockedMap& m, Fn fn) {
    const int nl = static_cast<int>(m.loops.size());
    const BlockedMap::Loop& in = m.loops[static_cast<std::size_t>(nl - 1)];
    const int64_t step = in.mult * m.plain_strides[in.dim];
    int64_t rows = 1;
    for (int j = 0; j < nl - 1; ++j) rows *= m.loops[static_cast<std::size_t>(j)].count;
#pragma omp parallel if (rows * in.count > (1 << 15))
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
        int64_t idx[16] = {}, x[6] = {0, 0, 0, 0, 0, 0}, boff = 0, poff = 0;
        int64_t rem = r0;
        for (int j = nl - 2; j >= 0; --j) {
            const BlockedMap::Loop& l = m.loops[static_cast<std::size_t>(j)];
            idx[j] = rem % l.count;
            rem /= l.count;
            x[l.dim] += idx[j] * l.mult;
            boff += idx[j] * l.blocked_stride;
            poff += idx[j] * l.mult * m.plain_strides[l.dim];
        }
        for (int64_t r = r0; r < r1; ++r) {
            if (!m.padded) {
                fn(boff, poff, step, in.count);
            } else {
                bool inside = true;
                for (int d = 0; d < m.ndims; ++d) inside = inside && (d == in.dim || x[d] < m.dims[d]);
                const int64_t left = m.dims[in.dim] - x[in.dim];
                const int64_t n = std::min(in.count, left > 0 ? (left + in.mult - 1) / in.mult : 0);
                if (inside && n > 0) fn(boff, poff, step, n);
            }
            for (int j = nl - 2; j >= 0; --j) {  // odometer
                const BlockedMap::Loop& l = m.loops[static_cast<std::size_t>(j)];
                const int64_t pstep = l.mult * m.plain_strides[l.dim];
                x[l.dim] += l.mult;
                boff += l.blocked_stride;
                poff += pstep;
                if (++idx[j] < l.count) break;
                idx[j] = 0;
                x[l.dim] -= l.count * l.mult;
                boff -= l.count * l.blocked_stride;
                poff -= l.count * pstep;
            }
        }
    }
}

#pragma GCC push_options
#pragma GCC target("avx2,f16c")
// Eight f16 values `step` apart, widened with F16C.
void widen8_f16_f16c(const uint16_t* p, int64_t step, float* d) {
    const __m128i h = _mm_setr_epi16(static_cast<short>(p[0]), static_cast<short>(p[step]),
                                     static_cast<short>(p[2 * step]), static_cast<short>(p[3 * step]),
                                     static_cast<short>(p[4 * step]), static_cast<short>(p[5 * step]),
                                     static_cast<short>(p[6 * step]), static_cast<short>(p[7 * step]));
    _mm256_storeu_ps(d, _mm256_cvtph_ps(h));
}
void narrow8_f16_f16c(const float* b, uint16_t* p, int64_t step) {
    alignas(16) uint16_t h[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(_mm256_loadu_ps(b), _MM_FROUND_TO_NEAREST_INT));
    for (int j = 0; j < 8; ++j) p[j * step] = h[j];
}
#pragma GCC pop_options

}  // namespace

void widen_to_blocked(DType dt, const void* plain, float* blocked, const BlockedMap& m) {
    if (m.padded) std::memset(blocked, 0, m.blocked_elems * sizeof(float));
    const auto* s = static_cast<const uint16_t*>(plain);
    const bool bf = dt == DType::bf16;
    const bool f16c = have_avx2();
    for_runs(m, [&](int64_t boff, int64_t poff, int64_t step, int64_t n) {
        float* d = blocked + boff;
        const uint16_t* p = s + poff;
        int64_t j = 0;
        if (bf) {
            for (; j < n; ++j) d[j] = bf16_to_float(p[j * step]);
            return;
        }
        if (f16c)
            for (; j + 8 <= n; j += 8) widen8_f16_f16c(p + j * step, step, d + j);
        for (; j < n; ++j) d[j] = f16_to_f32(p[j * step]);
    });
}

void narrow_from_blocked(DType dt, const float* blocked, void* plain, const BlockedMap& m) {
    auto* out = static_cast<uint16_t*>(plain);
    const bool bf = dt == DType::bf16;
    const bool f16c = have_avx2();
    for_runs(m, [&](int64_t boff, int64_t poff, int64_t step, int64_t n) {
        const float* b = blocked + boff;
        uint16_t* p = out + poff;
        int64_t j = 0;
        if (bf) {
            for (; j < n; ++j) p[j * step] = float_to_bf16(b[j]);
            return;
        }
        if (f16c)
            for (; j + 8 <= n; j += 8) narrow8_f16_f16c(b + j, p + j * step, step);
        for (; j < n; ++j) p[j * step] = f32_to_f16(b[j]);
    });
}

}  // namespace convkit::cpu
