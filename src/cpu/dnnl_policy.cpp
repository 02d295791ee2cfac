// The choices of the oneDNN plans (see dnnl_policy.hpp), each with the measurement or the oneDNN
// defect behind it: the post-op trust list, the activation layout order, native against widened
// 16-bit kernels.
#include "cpu/dnnl_policy.hpp"

#include <omp.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "core/env.hpp"
#include "cpu/dnnl_builder.hpp"
#include "cpu/dnnl_convert.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

namespace {

// Whether some output position's window has no tap inside the input (it sees only padding).
bool has_padding_only_output(const ConvProblem& p) {
    for (int i = 0; i < p.nsp; ++i)
        for (int64_t o = 0; o < p.out[i]; ++o) {
            bool touches = false;
            for (int64_t k = 0; k < p.k[i] && !touches; ++k) {
                const int64_t x = o * p.stride[i] - p.padding_l[i] + k * p.dilation[i];
                touches = x >= 0 && x < p.in[i];
            }
            if (!touches) return true;
        }
    return false;
}

// 16-bit problems run on oneDNN's native kernels where it has them (avx512_core_bf16, AMX) and
// otherwise as f32 convolutions over widened copies (exact), with one rounding at the end: on an
// AVX2 machine oneDNN 2.6 offers only its `ref` kernels for bf16 and nothing at all for f16.
// Whether oneDNN's native 16-bit kernels beat the widened f32 path on this CPU: timed once per
// process, dtype and thread count on a mid-sized ResNet layer (forward 3x3, 64 channels, 28x28,
// mb 1, channels-last), best of three calls each. Which one wins depends on the machine, not
// only on its ISA flags: on an Intel Xeon with avx512_core_bf16 (no AMX exposed) native bf16 ran
// ResNet-50 at mb 1 1.2-1.6x slower than widened (and slower than f32), while on Zen 5 (earlier
// sessions) native bf16 was 1.4-1.8x faster than f32. Costs two plan builds and eight calls once.
bool native_measures_faster(DType dt, int nthr) {
    static std::mutex mu;
    static std::map<std::pair<int, int>, bool> known;
    const std::pair<int, int> key{static_cast<int>(dt), nthr};
    {
        std::lock_guard<std::mutex> lock(mu);
        auto it = known.find(key);
        if (it != known.end()) return it->second;
    }
    ConvProblem q;
    q.dt = dt;
    q.mb = 1;
    q.ic = q.oc = 64;
    for (int i = 0; i < 2; ++i) q.in[i] = q.out[i] = 28, q.k[i] = 3, q.padding_l[i] = q.padding_r[i] = 1;
    q.src_layout = q.wei_layout = q.dst_layout = Layout::channels_last;
    bool native_wins = false;
    try {
        auto native = build_variant_as(q, nthr, false);
        if (!is_ref(native->info.impl.c_str())) {
            auto wide = build_variant_as(q, nthr, true);
            // 1.0 in the dtype everywhere: finite sums, no denormals on either side.
            const uint16_t one = dt == DType::bf16 ? 0x3f80 : 0x3c00;
            std::vector<uint16_t> src(64 * 28 * 28, one), wei(64 * 64 * 9, one), dst(64 * 28 * 28, one);
            ConvArgs a;
            a.src.data = src.data();
            a.weights.data = wei.data();
            a.dst.data = dst.data();
            auto best = [&](Variant& v) {
                double t = 1e30;
                for (int r = 0; r < 4; ++r) {
                    const double t0 = omp_get_wtime();
                    run_variant(v, q, a);
                    if (r > 0) t = std::min(t, omp_get_wtime() - t0);  // the first call warms up
                }
                return t;
            };
            native_wins = best(*native) < best(*wide);
        }
    } catch (const Error&) {
    } catch (const dnnl::error&) {
    }
    std::lock_guard<std::mutex> lock(mu);
    return known.emplace(key, native_wins).first->second;
}

}  // namespace

// Found by the tests and the PyTorch oracle here, each accepted with a non-ref implementation and
// computed wrong:
//  * two sums in one chain (brgconv);
//  * one eltwise kind twice with different parameters (elu:0.5+elu:1, relu:0.1+...+relu:0.3):
//    the jit kernels keep one injector per kind and apply the first one's alpha/beta;
//  * binary operands: spatial-only broadcasts and operands laid out unlike dst, but also
//    per-channel and same-layout full operands on 1D/3D, grouped, depthwise and odd-channel
//    shapes (brgconv, jit dw);
//  * a sum together with an eltwise op where some output's window lies entirely in padding
//    (brgconv segfaults).
// So at most one sum, each eltwise kind at most once, no binary op, and no fusion at all
// where an output sees only padding: such chains run whole in convkit's own pass, one sweep
// over dst after the convolution.
bool fusable_post_ops(const ConvProblem& p, dnnl::post_ops& ops) {
    if (has_padding_only_output(p)) return false;
    int sums = 0;
    for (int k = 0; k < p.n_post_ops; ++k) {
        const core::PostOpDesc& pd = p.post_ops[k];
        if (pd.kind == PostOp::Kind::binary) return false;
        if (pd.kind == PostOp::Kind::sum && ++sums > 1) return false;
        if (pd.kind == PostOp::Kind::eltwise)
            for (int j = 0; j < k; ++j)
                if (p.post_ops[j].kind == PostOp::Kind::eltwise && p.post_ops[j].alg == pd.alg) return false;
    }
    for (int k = 0; k < p.n_post_ops; ++k) {
        const core::PostOpDesc& pd = p.post_ops[k];
        if (pd.kind == PostOp::Kind::sum) {
            ops.append_sum(static_cast<float>(pd.scale));
            continue;
        }
        const auto alg = static_cast<EltwiseAlg>(pd.alg);
        float alpha = static_cast<float>(pd.alpha), beta = static_cast<float>(pd.beta);
        // oneDNN 2.6's hardswish has no parameters (x * relu6(x + 3) / 6); pass the ONNX-style
        // 1/6, 1/2 that later versions read, which mean the same function.
        if (alg == EltwiseAlg::hardswish) alpha = 1.f / 6.f, beta = 0.5f;
        ops.append_eltwise(1.f, eltwise_alg(alg), alpha, beta);
    }
    return true;
}

ActLayout preferred_act_layout(const ConvProblem& p) {
    // CONVKIT_CPU_ACT_LAYOUT's values, in the order of its names.
    static const ActLayout kForced[] = {ActLayout::user, ActLayout::channels_first, ActLayout::channels_last,
                                        ActLayout::any};
    static const int forced = core::env::choice("CONVKIT_CPU_ACT_LAYOUT", {"user", "nchw", "nhwc", "any"});
    if (forced >= 0) return kForced[forced];
    // Rules measured on the ResNet-50 layers (f32, mb 1, 2 threads; docs/cpu.md has the tables).
    int64_t ks = 1, os = 1;
    for (int i = 0; i < p.nsp; ++i) ks *= p.k[i], os *= p.out[i];
    if (p.src_layout == Layout::channels_last && p.dst_layout == Layout::channels_last) {
        // Channels-last tensors are used in place, except f32 backward data with very few input
        // channels (a network's first layer, ic 3): oneDNN's nhwc kernels run that at ~70
        // GFLOP/s, its gemm kernels on nchw ~150 (conv1: 3.4 -> 1.6 ms), which repays two
        // reorders. The price is the first execution's lazy sgemm kernel generation (~48 ms once
        // per process). In bf16 the gemm path gains little (conv1 1.5-2.2 vs 2.0-2.2 ms) for a
        // 70 ms first call, so bf16 stays in place.
        if (p.dir == Direction::bwd_d && p.dt == DType::f32 && ks > 1 && p.ic < 8) return ActLayout::channels_first;
        // oneDNN 2.6's jit_bf16 backward weights computes grouped 3D channels-last problems
        // wrong when the depth windows run into end padding (found by the PyTorch oracle); its
        // blocked-layout kernels get them right.
        if (p.dir == Direction::bwd_w && p.dt == DType::bf16 && p.nsp == 3 && p.g > 1) return ActLayout::any;
        return ActLayout::user;
    }
    // Channels-first: oneDNN's gemm:jit on plain nchw wins wherever reorders to a blocked or
    // nhwc layout cost about as much as the convolution (1x1 kernels, small images); kernels
    // with taps on large images repay the reorders.
    switch (p.dir) {
        case Direction::fwd:
            // Tiny problems (they run on one thread, see kSerialFlops) are dominated by gemm:jit's
            // im2col setup: the 1x16x8x8 3x3 call costs 13.6 us on nchw in place against 7.3 us
            // through reorders to the blocked layout (AVX2 cap: 14.5 vs 8.9 us).
            if (ks > 1 && p.flops() < 1e6) return ActLayout::any;
            return ks > 1 && os >= 196 ? ActLayout::channels_last : ActLayout::user;
        case Direction::bwd_d:
            if (ks > 1) return os >= 196 && p.ic >= 16 ? ActLayout::any : ActLayout::user;
            return os <= 196 ? ActLayout::any : ActLayout::user;
        case Direction::bwd_w:
            return ks > 1 && os >= 784 ? ActLayout::any : ActLayout::user;
    }
    return ActLayout::user;
}

std::vector<ActLayout> mode_order(const ConvProblem& p, bool wide) {
    // A widened problem runs f32 kernels, so it follows the f32 rules.
    ConvProblem as_run = p;
    if (wide) as_run.dt = DType::f32;
    std::vector<ActLayout> order{preferred_act_layout(as_run)};
    for (ActLayout m : {ActLayout::user, ActLayout::any, ActLayout::channels_last, ActLayout::channels_first})
        if (std::find(order.begin(), order.end(), m) == order.end()) order.push_back(m);
    return order;
}

bool native_16bit_preferred(DType dt) { return native_measures_faster(dt, omp_get_max_threads()); }

std::unique_ptr<Variant> build_variant(const ConvProblem& p, int nthr) {
    const bool half = p.dt == DType::bf16 || p.dt == DType::f16;
    if (!half) return build_variant_as(p, nthr, false);
    const WidePolicy policy = wide_policy();
    if (policy == WidePolicy::always) return build_variant_as(p, nthr, true);
    // Where native kernels lose to widening on this CPU (or it has none), no native plan is built.
    if (policy == WidePolicy::automatic && !native_measures_faster(p.dt, nthr)) return build_variant_as(p, nthr, true);
    try {
        auto native = build_variant_as(p, nthr, false);
        if (policy == WidePolicy::never || !is_ref(native->info.impl.c_str())) return native;
    } catch (const Error&) {
        if (policy == WidePolicy::never) throw;
    } catch (const dnnl::error&) {
        if (policy == WidePolicy::never) throw;
    }
    return build_variant_as(p, nthr, true);
}

}  // namespace convkit::cpu
