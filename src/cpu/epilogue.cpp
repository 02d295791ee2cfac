// convkit's own post-op pass: bias + the whole chain in one sweep over dst, for what oneDNN 2.6
// cannot fuse (several sums, unusual broadcasts, strided operands) and for the f64 path.
// Formulas are core/eltwise_math.hpp's (the reference's, op for op); f32/bf16/f16 compute in float (as oneDNN's fused
// post-ops do), f64 in double. Each row of the tile is processed in chunks that stay in L1: load
// once, apply every op over the chunk (each op's loop vectorises), store once.
// Formulas with a select (relu's `x > 0 ? x : alpha * x`, max, min, clip) vectorise only when
// the compiler may compute both sides: under GCC's default -ftrapping-math it kept them scalar,
// with a branch per element (relu over U-Net's 9.8M-element up-convolution output: 37 ms, the
// bias pass beside it 4 ms). convkit reads no floating-point exception flags, and the values are
// the same either way.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/eltwise_math.hpp"
#include "core/half.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {
namespace {

constexpr int64_t kChunk = 256;

using Bf16 = core::Bf16Bits;
using F16 = core::F16Bits;
template <typename T> using Store = core::Scalar<T>;

// One op over a chunk: the algorithm is fixed before the loop so each loop vectorises.
template <typename A> void eltwise(EltwiseAlg alg, A* x, int64_t n, A alpha, A beta) {
    math::with_eltwise(alg, [&](auto op) {
        for (int64_t j = 0; j < n; ++j) x[j] = math::eltwise<decltype(op)::value>(x[j], alpha, beta);
    });
}

template <typename A> void binary(BinaryAlg alg, A* x, const A* y, int64_t n) {
    math::with_binary(alg, [&](auto op) {
        for (int64_t j = 0; j < n; ++j) x[j] = math::binary<decltype(op)::value>(x[j], y[j]);
    });
}

// Offset of flattened spatial position s in an operand whose spatial broadcast is mixed.
inline int64_t sp_offset(const Epilogue& e, const EpilogueOperand& op, int64_t s) {
    const int64_t w = s % e.sp_dims[2];
    const int64_t h = (s / e.sp_dims[2]) % e.sp_dims[1];
    const int64_t d = s / (e.sp_dims[2] * e.sp_dims[1]);
    return d * op.st_sp[0] + h * op.st_sp[1] + w * op.st_sp[2];
}

template <typename T, typename A>
void tile(const Epilogue& e, int64_t n, int64_t c0, int64_t c1, int64_t s0, int64_t s1, const A* acc,
          int64_t acc_cs, int64_t acc_ss) {
    using S = Store<T>;
    T* dst = static_cast<T*>(e.dst);
    const T* bias = static_cast<const T*>(e.bias);
    const bool cl = e.cl;
    const int64_t dst_n = n * e.C * e.SP;
    const int64_t o0 = cl ? s0 : c0, o1 = cl ? s1 : c1;
    const int64_t i0 = cl ? c0 : s0, i1 = cl ? c1 : s1;
    const int64_t dst_os = cl ? e.C : e.SP, acc_os = cl ? acc_ss : acc_cs;
    A buf[kChunk], obuf[kChunk];
    for (int64_t o = o0; o < o1; ++o) {
        for (int64_t ib = i0; ib < i1; ib += kChunk) {
            const int64_t len = std::min(kChunk, i1 - ib);
            const A* a = acc + (o - o0) * acc_os + (ib - i0);  // acc's inner stride is 1
            T* d = dst + dst_n + o * dst_os + ib;
            for (int64_t j = 0; j < len; ++j) buf[j] = a[j];
            if (bias) {
                if (cl)
                    for (int64_t j = 0; j < len; ++j) buf[j] += S::load(bias[ib + j]);
                else {
                    const A b = S::load(bias[o]);
                    for (int64_t j = 0; j < len; ++j) buf[j] += b;
                }
            }
            for (int k = 0; k < e.n_ops; ++k) {
                const core::PostOpDesc& pd = e.p->post_ops[k];
                switch (pd.kind) {
                    case PostOp::Kind::eltwise:
                        eltwise<A>(static_cast<EltwiseAlg>(pd.alg), buf, len, A(pd.alpha), A(pd.beta));
                        break;
                    case PostOp::Kind::sum: {
                        const A sc = A(pd.scale);
                        for (int64_t j = 0; j < len; ++j) buf[j] += sc * S::load(d[j]);
                        break;
                    }
                    case PostOp::Kind::binary: {
                        const EpilogueOperand& op = e.ops[k];
                        const T* y = static_cast<const T*>(op.data) + n * op.st_n;
                        if (cl) {
                            // o is the spatial position, the chunk runs over channels.
                            y += op.flat ? o * op.st_flat : sp_offset(e, op, o);
                            y += ib * op.st_c;
                            for (int64_t j = 0; j < len; ++j) obuf[j] = S::load(y[j * op.st_c]);
                        } else {
                            y += o * op.st_c;
                            if (op.flat) {
                                y += ib * op.st_flat;
                                for (int64_t j = 0; j < len; ++j) obuf[j] = S::load(y[j * op.st_flat]);
                            } else {
                                for (int64_t j = 0; j < len; ++j) obuf[j] = S::load(y[sp_offset(e, op, ib + j)]);
                            }
                        }
                        binary<A>(static_cast<BinaryAlg>(pd.alg), buf, obuf, len);
                        break;
                    }
                }
            }
            for (int64_t j = 0; j < len; ++j) d[j] = S::store(buf[j]);
        }
    }
}

}  // namespace

void Epilogue::init(const core::ConvProblem& prob, void* dst_data, Layout dst_layout, const void* bias_data,
                    const PostOps* post_ops) {
    p = &prob;
    dt = prob.dt;
    cl = dst_layout == Layout::channels_last;
    C = prob.oc;
    const core::Spatial3 g = prob.spatial3();
    for (int j = 0; j < 3; ++j) sp_dims[j] = g.out[j];
    SP = sp_dims[0] * sp_dims[1] * sp_dims[2];
    dst = dst_data;
    bias = bias_data;
    n_ops = prob.n_post_ops;
    for (int k = 0; k < n_ops; ++k) {
        EpilogueOperand& op = ops[k];
        op = EpilogueOperand();
        if (prob.post_ops[k].kind != PostOp::Kind::binary) continue;
        const TensorView& t = (*post_ops)[static_cast<std::size_t>(k)].operand;
        auto st = [&](int dim) { return t.sizes[dim] == 1 ? int64_t(0) : t.strides[dim]; };
        op.data = t.data;
        op.st_n = st(0);
        op.st_c = st(1);
        for (int i = 0; i < prob.nsp; ++i) op.st_sp[core::Spatial3::at(prob.nsp, i)] = st(2 + i);
        // One stride over flattened spatial positions when the operand is either broadcast over
        // all spatial dims or dense over them in (d, h, w) order.
        bool all_bcast = true, dense = true;
        int64_t expect = -1;
        for (int j = 2; j >= 0; --j) {
            if (sp_dims[j] == 1) continue;
            if (op.st_sp[j] != 0) all_bcast = false;
            if (op.st_sp[j] == 0) dense = false;
            if (expect < 0) {
                op.st_flat = op.st_sp[j];
                expect = op.st_sp[j];
            }
            if (op.st_sp[j] != expect) dense = false;
            expect *= sp_dims[j];
        }
        if (all_bcast) {
            op.flat = true;
            op.st_flat = 0;
        } else {
            op.flat = dense;
        }
    }
}

void Epilogue::tile_f32(int64_t n, int64_t c0, int64_t c1, int64_t s0, int64_t s1, const float* acc,
                        int64_t acc_cs, int64_t acc_ss) const {
    if (dt == DType::bf16)
        tile<Bf16, float>(*this, n, c0, c1, s0, s1, acc, acc_cs, acc_ss);
    else if (dt == DType::f16)
        tile<F16, float>(*this, n, c0, c1, s0, s1, acc, acc_cs, acc_ss);
    else
        tile<float, float>(*this, n, c0, c1, s0, s1, acc, acc_cs, acc_ss);
}

void Epilogue::tile_f64(int64_t n, int64_t c0, int64_t c1, int64_t s0, int64_t s1, const double* acc,
                        int64_t acc_cs, int64_t acc_ss) const {
    tile<double, double>(*this, n, c0, c1, s0, s1, acc, acc_cs, acc_ss);
}

void Epilogue::run_all(const void* acc) const {
    const int64_t mb = p->mb;
    const int64_t outer = cl ? SP : C, inner = cl ? C : SP;
    // Rows grouped so each task touches a few thousand elements.
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(outer, 4096 / std::max<int64_t>(inner, 1)));
    const int64_t blocks = (outer + rows - 1) / rows;
    const int64_t acc_cs = cl ? 1 : SP, acc_ss = cl ? C : 1;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < mb; ++n)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t o0 = b * rows, o1 = std::min(outer, o0 + rows);
            const int64_t c0 = cl ? 0 : o0, c1 = cl ? C : o1, s0 = cl ? o0 : 0, s1 = cl ? o1 : SP;
            // acc is dense in dst's layout: the tile starts at (c0, s0) of image n.
            const std::size_t first = static_cast<std::size_t>(n * C * SP + (cl ? s0 * C : c0 * SP));
            if (dt == DType::f64)
                tile_f64(n, c0, c1, s0, s1, static_cast<const double*>(acc) + first, acc_cs, acc_ss);
            else
                tile_f32(n, c0, c1, s0, s1, static_cast<const float*>(acc) + first, acc_cs, acc_ss);
        }
}

}  // namespace convkit::cpu
