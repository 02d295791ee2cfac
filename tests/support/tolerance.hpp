// The one table of tolerances for tests that compare an engine with the reference engine
// (tests/support/conv_tester.hpp), and the measure it bounds. test_cuda*.cpp still carry their own
// table until they move to ConvTester; when they do, a cuDNN case that needs more than a bound
// below gets its own row here, with the measurement that justifies it.
//
// The measure, per element: |got - want| / max(|want|, scale), where `scale` is the typical
// magnitude of an output summing K products of values uniform in [-1, 1] (each of variance 1/9):
// sqrt(K) / 3, and at least 1. An output that cancels to near zero is judged against that
// magnitude, not against its own, so a rounding difference in one term cannot fail it; every
// other output is judged relative to itself. K is what one output sums: (ic / g) * prod(k) for
// forward, (oc / g) * prod(k) for backward data, mb * prod(dst spatial) for backward weights and
// for the bias gradient.
//
// How the bounds were chosen: from the arithmetic below (the tightest that the arithmetic allows
// and every current case passes), then checked against the largest error measured over every case
// of the test_cpu_* suites (2044 comparisons: shapes, post-ops, splits, widened 16-bit, all
// directions and layouts; oneDNN 2.6 on an AVX-512 (bf16/fp16) Xeon, and again under
// ONEDNN_MAX_CPU_ISA=AVX2), given in brackets. None is looser than what test_cpu.cpp used; f16's
// is tighter (1e-3 before, now exactly one ulp, as bf16's already was).
#pragma once
#include <algorithm>
#include <cmath>

#include "convkit/convkit.hpp"

namespace convkit::test {

// The `scale` of the measure above for an output that sums K terms.
inline double output_scale(double K) { return std::max(1.0, std::sqrt(K) / 3.0); }

// `tf32`: f32 convolutions allowed to round their inputs to TF32 (GPU engines only).
inline double tolerance(DType dt, bool tf32 = false) {
    switch (dt) {
        // Both sides accumulate in double, in different orders: ~2^-53 * sqrt(K) of the scale,
        // under 1e-13 for the K used here; 1e-12 keeps an order of magnitude of room.
        // [measured: 3.8e-15]
        case DType::f64: return 1e-12;
        // The reference accumulates in double, the engine in f32 in its own order: the error grows
        // like 2^-24 * sqrt(K) of the scale, 4e-6 at K = 4096; the room up to 1e-5 is for oneDNN's
        // fused eltwise approximations (exp, erf, tanh: a few f32 ulps of a value up to the scale).
        // Longer f32 reductions (WaveNet's 84k positions: 2.3e-5 in one f32 sequence) are split by
        // the CPU backend into pieces summed in double (src/cpu/split_plan.cpp, CpuSplit), rather
        // than met by a bound growing with K. [measured: fwd 2.4e-6, bwd_d 3.6e-6, bwd_w 5.5e-6
        // (WaveNet's 84k positions, split)]
        // TF32 rounds each input to a 10-bit mantissa (2^-11 relative, 2^-10 per product); the K
        // product errors add like a random walk against a scale of the same growth: ~2^-10 of the
        // scale, 4x that as the bound (the same as `convkit bench --mode=corr` on GPUs,
        // tools/cli_common.hpp kTf32Tolerance). No CPU case runs it.
        case DType::f32: return tf32 ? 4.0 / 1024 : 1e-5;
        // Both sides accumulate in f32 from the same bf16 inputs and round once, after bias and
        // post-ops (CpuDtypes.SixteenBitRoundsOnce); an f32 difference in the last bits can flip
        // that one rounding: one bf16 ulp, 2^-7 relative at the bottom of a binade (8 significant
        // bits). Two roundings (a 16-bit convolution result, then the epilogue) would be 2 ulps and
        // fail. `convkit bench` uses the same bound rounded up to 8e-3. [measured: fwd 7.6e-3 (one
        // flip just above a power of two), bwd_d 7.5e-3, bwd_w 0]
        case DType::bf16: return std::ldexp(1.0, -7);
        // As bf16 with 11 significant bits: one ulp, 2^-10 = 9.77e-4 relative at the bottom of a
        // binade. A flip can only move a result by that one ulp; a value below f16's normal range
        // (2^-14) is judged against the scale (>= 1), so its coarser relative spacing does not count.
        // [measured: fwd 9.72e-4, bwd_d 9.38e-4, bwd_w 5.1e-4]
        case DType::f16: return std::ldexp(1.0, -10);
    }
    return 0;
}

}  // namespace convkit::test
