// Widening bf16/f16 to f32 and narrowing back (round to nearest even, NaN kept), for 16-bit
// problems that run on oneDNN's f32 kernels. oneDNN 2.6 has only its scalar `simple:any` reorder
// for these conversions below avx512_core (measured: 9 ms for a 56x56x64 bf16 tensor, more than
// the convolution), so convkit converts itself in one streaming pass and leaves layout changes
// to oneDNN's f32 reorders. An AVX2+F16C version is picked at run time where the CPU has it.
//
// The AVX2 functions carry their target as a function attribute, not `#pragma GCC target`:
// clang ignores the pragma (and then refuses the intrinsics), while both compilers honour the
// attribute, so the file builds with g++ and clang++ without ISA flags for the whole file (which
// would let the compiler use AVX2 in the portable code too).
#include "cpu/convert.hpp"

#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "convkit/tensor.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {
namespace {

// Below this many elements one thread converts faster than waking a team.
constexpr std::size_t kSerial = 1 << 15;

// The targets of the AVX2 code: the whole-array loops, and the strided / tiled helpers.
#define CONVKIT_AVX2_F16C_FMA __attribute__((target("avx2,f16c,fma")))
#define CONVKIT_AVX2_F16C __attribute__((target("avx2,f16c")))

// The loops are written so the compiler vectorises them in either target.
#define CONVKIT_CONVERT_LOOPS(TARGET)                                                      \
    TARGET static void widen_bf16(const uint16_t* s, float* d, std::size_t n) {            \
        for (std::size_t i = 0; i < n; ++i) d[i] = bf16_load(s[i]);                    \
    }                                                                                      \
    TARGET static void narrow_bf16(const float* s, uint16_t* d, std::size_t n) {           \
        for (std::size_t i = 0; i < n; ++i) d[i] = bf16_store(s[i]);                    \
    }

struct Generic {
    CONVKIT_CONVERT_LOOPS()
    static void widen_f16(const uint16_t* s, float* d, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) d[i] = f16_to_f32(s[i]);
    }
    static void narrow_f16(const float* s, uint16_t* d, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_f16(s[i]);
    }
};

struct Avx2 {
    CONVKIT_CONVERT_LOOPS(CONVKIT_AVX2_F16C_FMA)
    CONVKIT_AVX2_F16C_FMA static void widen_f16(const uint16_t* s, float* d, std::size_t n) {
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
        for (; i < n; ++i) d[i] = f16_to_f32(s[i]);
    }
    CONVKIT_AVX2_F16C_FMA static void narrow_f16(const float* s, uint16_t* d, std::size_t n) {
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
        for (; i < n; ++i) d[i] = f32_to_f16(s[i]);
    }
};

// AVX2 and F16C usable here. __builtin_cpu_supports("avx2") also checks that the OS saves the
// YMM registers (XGETBV), in libgcc and in compiler-rt alike; "f16c" is a feature string clang 14
// does not know, so that bit comes from CPUID leaf 1. For g++ this is the same test as
// __builtin_cpu_supports("f16c"), which libgcc reports only where AVX is usable, implied here.
bool have_avx2() {
    static const bool yes = [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        return __builtin_cpu_supports("avx2") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
    }();
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

// The loop for dt on this CPU: bf16 or f16, AVX2+F16C or portable.
template <typename F> F pick(DType dt, F avx2_bf16, F generic_bf16, F avx2_f16, F generic_f16) {
    if (dt == DType::bf16) return have_avx2() ? avx2_bf16 : generic_bf16;
    return have_avx2() ? avx2_f16 : generic_f16;
}

void widen_to_f32(DType dt, const void* src, float* dst, std::size_t n) {
    const auto* s = static_cast<const uint16_t*>(src);
    const auto loop = pick(dt, &Avx2::widen_bf16, &Generic::widen_bf16, &Avx2::widen_f16, &Generic::widen_f16);
    parallel_chunks(n, [&](std::size_t o, std::size_t c) { loop(s + o, dst + o, c); });
}

void narrow_from_f32(DType dt, const float* src, void* dst, std::size_t n) {
    auto* d = static_cast<uint16_t*>(dst);
    const auto loop = pick(dt, &Avx2::narrow_bf16, &Generic::narrow_bf16, &Avx2::narrow_f16, &Generic::narrow_f16);
    parallel_chunks(n, [&](std::size_t o, std::size_t c) { loop(src + o, d + o, c); });
}

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
    const std::size_t nl = m.loops.size();
    if (!m.padded && nl >= 2) {
        const BlockedMap::Loop& a = m.loops[nl - 1];  // rows of the tile (plain side)
        const BlockedMap::Loop& b = m.loops[nl - 2];  // contiguous on the plain side
        m.tile8 = a.count == 8 && b.count == 8 && b.blocked_stride == 8 && a.mult == 1 && b.mult == 1 &&
                  a.dim != b.dim && m.plain_strides[b.dim] == 1;
        if (m.tile8) m.tile_loops.assign(m.loops.begin(), m.loops.end() - 1);
    }
    return m;
}

namespace {

// Runs fn(blocked_offset, plain_offset, plain_step, n) for every run of the innermost loop that
// holds real (not padding) elements, over the threads. Offsets move incrementally with the
// odometer: a run is 8 or 16 elements, so per-run work has to stay a handful of additions.
template <typename Fn> void for_runs(const BlockedMap& m, const std::vector<BlockedMap::Loop>& loops, Fn fn) {
    const int nl = static_cast<int>(loops.size());
    const BlockedMap::Loop& in = loops[static_cast<std::size_t>(nl - 1)];
    const int64_t step = in.mult * m.plain_strides[in.dim];
    int64_t rows = 1;
    for (int j = 0; j < nl - 1; ++j) rows *= loops[static_cast<std::size_t>(j)].count;
#pragma omp parallel if (rows * in.count > (1 << 15))
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
        int64_t idx[16] = {}, x[6] = {0, 0, 0, 0, 0, 0}, boff = 0, poff = 0;
        int64_t rem = r0;
        for (int j = nl - 2; j >= 0; --j) {
            const BlockedMap::Loop& l = loops[static_cast<std::size_t>(j)];
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
                const BlockedMap::Loop& l = loops[static_cast<std::size_t>(j)];
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

// Eight f16 values `step` apart, widened with F16C.
CONVKIT_AVX2_F16C void widen8_f16_f16c(const uint16_t* p, int64_t step, float* d) {
    const __m128i h = _mm_setr_epi16(static_cast<short>(p[0]), static_cast<short>(p[step]),
                                     static_cast<short>(p[2 * step]), static_cast<short>(p[3 * step]),
                                     static_cast<short>(p[4 * step]), static_cast<short>(p[5 * step]),
                                     static_cast<short>(p[6 * step]), static_cast<short>(p[7 * step]));
    _mm256_storeu_ps(d, _mm256_cvtph_ps(h));
}
CONVKIT_AVX2_F16C void narrow8_f16_f16c(const float* b, uint16_t* p, int64_t step) {
    alignas(16) uint16_t h[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(_mm256_loadu_ps(b), _MM_FROUND_TO_NEAREST_INT));
    for (int j = 0; j < 8; ++j) p[j * step] = h[j];
}

CONVKIT_AVX2_F16C void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// One 8x8 tile: plain rows a (8 contiguous values each, `row` apart) <-> blocked d[b * 8 + a].
CONVKIT_AVX2_F16C void widen_tile8(bool bf, const uint16_t* p, int64_t row, float* d) {
    __m256 r[8];
    for (int a = 0; a < 8; ++a) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + a * row));
        r[a] = bf ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
    }
    transpose8(r);
    for (int b = 0; b < 8; ++b) _mm256_storeu_ps(d + 8 * b, r[b]);
}
CONVKIT_AVX2_F16C void narrow_tile8(bool bf, const float* d, uint16_t* p, int64_t row) {
    __m256 r[8];
    for (int b = 0; b < 8; ++b) r[b] = _mm256_loadu_ps(d + 8 * b);
    transpose8(r);
    for (int a = 0; a < 8; ++a) {
        if (bf) {
            // bf16_store on eight lanes: round to nearest even, NaN kept quiet.
            const __m256i u = _mm256_castps_si256(r[a]);
            const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
            const __m256i rounded =
                _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
            const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                                   _mm256_set1_epi32(0x7f800000));
            const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
            const __m256i v = _mm256_blendv_epi8(rounded, quiet, nan);
            const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p + a * row), _mm256_castsi256_si128(packed));
        } else {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p + a * row), _mm256_cvtps_ph(r[a], _MM_FROUND_TO_NEAREST_INT));
        }
    }
}

}  // namespace

void widen_to_blocked(DType dt, const void* plain, float* blocked, const BlockedMap& m) {
    if (m.padded) std::memset(blocked, 0, m.blocked_elems * sizeof(float));
    const auto* s = static_cast<const uint16_t*>(plain);
    const bool bf = dt == DType::bf16;
    const bool f16c = have_avx2();
    if (m.tile8 && f16c) {
        const int64_t row = m.plain_strides[m.loops.back().dim];
        for_runs(m, m.tile_loops, [&](int64_t boff, int64_t poff, int64_t, int64_t) {
            widen_tile8(bf, s + poff, row, blocked + boff);
        });
        return;
    }
    for_runs(m, m.loops, [&](int64_t boff, int64_t poff, int64_t step, int64_t n) {
        float* d = blocked + boff;
        const uint16_t* p = s + poff;
        if (step == 1 && f16c) {  // the run is contiguous on both sides
            if (bf) Avx2::widen_bf16(p, d, static_cast<std::size_t>(n));
            else Avx2::widen_f16(p, d, static_cast<std::size_t>(n));
            return;
        }
        int64_t j = 0;
        if (bf) {
            for (; j < n; ++j) d[j] = bf16_load(p[j * step]);
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
    if (m.tile8 && f16c) {
        const int64_t row = m.plain_strides[m.loops.back().dim];
        for_runs(m, m.tile_loops, [&](int64_t boff, int64_t poff, int64_t, int64_t) {
            narrow_tile8(bf, blocked + boff, out + poff, row);
        });
        return;
    }
    for_runs(m, m.loops, [&](int64_t boff, int64_t poff, int64_t step, int64_t n) {
        const float* b = blocked + boff;
        uint16_t* p = out + poff;
        if (step == 1 && f16c) {
            if (bf) Avx2::narrow_bf16(b, p, static_cast<std::size_t>(n));
            else Avx2::narrow_f16(b, p, static_cast<std::size_t>(n));
            return;
        }
        int64_t j = 0;
        if (bf) {
            for (; j < n; ++j) p[j * step] = bf16_store(b[j]);
            return;
        }
        if (f16c)
            for (; j + 8 <= n; j += 8) narrow8_f16_f16c(b + j, p + j * step, step);
        for (; j < n; ++j) p[j * step] = f32_to_f16(b[j]);
    });
}

}  // namespace convkit::cpu
