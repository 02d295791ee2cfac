// Long f32 reductions in bounded pieces.
//
// oneDNN's kernels sum a convolution's reduction in f32 registers, one term after another, so
// the rounding error of an output grows with the number of terms K: measured here at about
// 1.25 * 2^-24 * sqrt(K) of the output's scale at the worst element (K = 6.3k: 5e-6; WaveNet's
// 84k positions: 2.3e-5; U-Net's 1.9M: 1.3e-4). convkit promises f32 results within 1e-5 of
// the exact value's scale, so a backward pass whose reduction is longer than kMaxTerms is cut
// into pieces that are each an ordinary, shorter convolution (backward weights: groups of
// images or slabs of output positions; backward data: ranges of output channels). oneDNN runs
// each piece, and convkit sums the pieces' f32 results in double, in a fixed order: the error
// stays that of one piece, and the result does not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/env.hpp"
#include "cpu/cpu_internal.hpp"
#include "cpu/dnnl_convert.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

namespace {

int64_t split_limit() {
    static const int64_t limit = [] {
        const int64_t v = core::env::integer("CONVKIT_CPU_SPLIT", kMaxF32Terms);
        return v <= 0 ? int64_t(0) : v;
    }();
    return limit;
}

int64_t prod(const int64_t* v, int n) {
    int64_t r = 1;
    for (int i = 0; i < n; ++i) r *= v[i];
    return r;
}

using dnnl::memory;

void accumulate(double* acc, const float* part, int64_t n, bool first) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) acc[i] = first ? part[i] : acc[i] + part[i];
}

void store(float* out, const double* acc, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(acc[i]);
}

}  // namespace

// One piece: which sub-problem it is, and where its tensors start in the user's.
struct SplitPiece {
    int sub = 0;
    int64_t n0 = 0;                      // first image
    // bwd_w by position: the region's first input and output positions, (d, h, w) as in
    // core::Spatial3 (0 in the dims a 1D / 2D problem lacks).
    int64_t in0[3] = {0, 0, 0};
    int64_t out0[3] = {0, 0, 0};
    int64_t oc0 = 0;                     // bwd_d: first output channel
};

struct SplitSub {
    ConvProblem p;
    std::shared_ptr<DnnlPlan> plan;
    // bwd_w by position, channels-first side: the piece's region of the user's tensor (a strided
    // view) reordered into the dense channels-last tensor the piece reads.
    memory::desc src_view, dst_view;
    dnnl::reorder src_in, dst_in;
};

class SplitPlan {
public:
    ConvProblem p;
    std::vector<SplitSub> subs;
    std::vector<SplitPiece> pieces;
    bool by_position = false;    // bwd_w: pieces are slabs of positions (else groups of images)
    bool src_cf = false, dst_cf = false;  // bwd_w by position: that side is channels-first
    bool gather_src = false;     // bwd_w by position: input regions copied into one block
    int64_t gather_src_elems = 0, gather_dst_elems = 0;  // largest regions

    int sub_for(const ConvProblem& q) {
        for (std::size_t i = 0; i < subs.size(); ++i)
            if (subs[i].p == q) return static_cast<int>(i);
        SplitSub sub;
        sub.p = q;
        sub.plan = make_dnnl_plan(q);
        subs.push_back(std::move(sub));
        return static_cast<int>(subs.size()) - 1;
    }

    // Pieces over [0, total) in steps of `per` along one dim of the problem (images, output
    // channels): each sub-problem's `size` is its step's length, each piece's `start` its first index.
    void add_ranges(int64_t total, int64_t per, int64_t ConvProblem::*size, int64_t SplitPiece::*start) {
        for (int64_t a = 0; a < total; a += per) {
            ConvProblem q = p;
            q.*size = std::min(per, total - a);
            SplitPiece piece;
            piece.*start = a;
            piece.sub = sub_for(q);
            pieces.push_back(piece);
        }
    }
};

namespace {

// A reorder from the region of sub-problem q's src (or diff_dst) inside p's channels-first
// tensor, described with p's strides, to q's dense channels-last tensor.
dnnl::reorder view_reorder(const ConvProblem& p, const ConvProblem& q, bool dst, memory::desc& view) {
    const int64_t* full = dst ? p.out : p.in;
    memory::dims strides(static_cast<std::size_t>(p.nsp) + 2);
    int64_t st = 1;
    for (int i = p.nsp - 1; i >= 0; --i) {
        strides[static_cast<std::size_t>(i) + 2] = st;
        st *= full[i];
    }
    strides[1] = st;
    strides[0] = st * (dst ? p.oc : p.ic);
    view = memory::desc(act_dims(q, dst), memory::data_type::f32, strides);
    const memory::desc dense(act_dims(q, dst), memory::data_type::f32, act_tag(q.nsp, true));
    return dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), view, dnnl_engine(), dense));
}

// Backward weights: the reduction runs over every image and output position. Whole images are
// grouped while they fit; a larger image is cut along its outermost spatial dim that leaves
// slabs of at most `limit` positions (U-Net's 130x130 planes: rows of one plane).
bool plan_bwd_w(SplitPlan& s, int64_t limit) {
    const ConvProblem& p = s.p;
    const int nsp = p.nsp;
    const int64_t P = prod(p.out, nsp);
    if (P <= limit) {
        s.add_ranges(p.mb, std::max<int64_t>(1, limit / P), &ConvProblem::mb, &SplitPiece::n0);
        return true;
    }
    s.by_position = true;
    // Pieces run channels-last: oneDNN's channels-last backward-weights kernels keep their error
    // near 1.25 * 2^-24 * sqrt(K); its blocked ones, which channels-first pieces would get,
    // measured far worse in 3D (U-Net conv_6, 4056-position pieces: 1.2e-5 vs 1.8e-6). Channels-last: an
    // output region (rows of one plane) is one block, and so is its input region when the cut is
    // along the outermost dim (else its rows are copied). Channels-first: a oneDNN reorder per
    // piece reads the region as a strided view into a channels-last block.
    s.src_cf = p.src_layout == Layout::channels_first;
    s.dst_cf = p.dst_layout == Layout::channels_first;
    int j = 0;
    while (j < nsp - 1 && prod(p.out + j + 1, nsp - j - 1) > limit) ++j;
    const int64_t inner = prod(p.out + j + 1, nsp - j - 1);
    const int64_t rows = std::max<int64_t>(1, limit / inner);
    s.gather_src = j > 0 && !s.src_cf;
    // Output ranges per dim: one index along the dims before j, `rows` along j, all after.
    int64_t lead[3] = {1, 1, 1};
    for (int i = 0; i < j; ++i) lead[i] = p.out[i];
    const int64_t nlead = prod(lead, j);
    for (int64_t n = 0; n < p.mb; ++n)
        for (int64_t l = 0; l < nlead; ++l)
            for (int64_t a = 0; a < p.out[j]; a += rows) {
                ConvProblem q = p;
                q.mb = 1;
                q.src_layout = q.dst_layout = Layout::channels_last;
                SplitPiece piece;
                piece.n0 = n;
                int64_t rem = l;
                for (int i = nsp - 1; i >= 0; --i) {
                    int64_t o0 = 0, o1 = p.out[i];
                    if (i < j) {
                        o0 = rem % p.out[i];
                        rem /= p.out[i];
                        o1 = o0 + 1;
                    } else if (i == j) {
                        o0 = a;
                        o1 = std::min(a + rows, p.out[j]);
                    }
                    piece.out0[core::Spatial3::at(nsp, i)] = o0;
                    if (i > j) continue;  // whole dim: the problem's own extent and padding
                    const int64_t lo = o0 * p.stride[i] - p.padding_l[i];
                    const int64_t hi = (o1 - 1) * p.stride[i] - p.padding_l[i] + (p.k[i] - 1) * p.dilation[i];
                    const int64_t i0 = std::max<int64_t>(0, lo), i1 = std::min(p.in[i] - 1, hi);
                    if (i1 < i0) return false;  // outputs that see only padding: not split
                    piece.in0[core::Spatial3::at(nsp, i)] = i0;
                    q.in[i] = i1 - i0 + 1;
                    q.out[i] = o1 - o0;
                    q.padding_l[i] = i0 - lo;
                    q.padding_r[i] = hi - i1;
                }
                s.gather_src_elems = std::max(s.gather_src_elems, prod(q.in, nsp) * p.ic);
                s.gather_dst_elems = std::max(s.gather_dst_elems, prod(q.out, nsp) * p.oc);
                piece.sub = s.sub_for(q);
                SplitSub& sub = s.subs[static_cast<std::size_t>(piece.sub)];
                if (s.src_cf && !sub.src_in) sub.src_in = view_reorder(p, q, false, sub.src_view);
                if (s.dst_cf && !sub.dst_in) sub.dst_in = view_reorder(p, q, true, sub.dst_view);
                s.pieces.push_back(piece);
            }
    return true;
}

// Backward data: the reduction runs over output channels and kernel taps; pieces take ranges of
// output channels (multiples of 16, oneDNN's channel block) of equal size.
bool plan_bwd_d(SplitPlan& s, int64_t limit) {
    const ConvProblem& p = s.p;
    if (p.g != 1) return false;
    const int64_t taps = prod(p.k, p.nsp);
    const int64_t K = p.oc * taps;
    const int64_t n = (K + limit - 1) / limit;
    int64_t per = (p.oc + n - 1) / n;
    per = std::min(p.oc, (per + 15) / 16 * 16);
    s.add_ranges(p.oc, per, &ConvProblem::oc, &SplitPiece::oc0);
    return s.pieces.size() > 1;
}

}  // namespace

bool wants_split(const ConvProblem& p) {
    const int64_t limit = split_limit();
    if (limit <= 0 || p.dt != DType::f32 || p.mb == 0) return false;
    switch (p.dir) {
        case Direction::bwd_w: return p.mb * prod(p.out, p.nsp) > limit;
        case Direction::bwd_d: return p.g == 1 && p.oc * prod(p.k, p.nsp) > limit;
        case Direction::fwd: return false;
    }
    return false;
}

std::shared_ptr<SplitPlan> make_split_plan(const ConvProblem& p) {
    auto s = std::make_shared<SplitPlan>();
    s->p = p;
    const int64_t limit = split_limit();
    const bool ok = p.dir == Direction::bwd_w ? plan_bwd_w(*s, limit) : plan_bwd_d(*s, limit);
    if (!ok) return nullptr;
    return s;
}

PlanInfo split_plan_info(SplitPlan& s) {
    PlanInfo info = dnnl_plan_info(*s.subs.front().plan);
    info.impl = "split(" + std::to_string(s.pieces.size()) + " pieces):" + info.impl;
    return info;
}

namespace {

// Copies the box `ext` at `start` of one channels-last image (`full` spatial sizes, C channels)
// into a dense channels-last image of the box's sizes.
void gather_rows(float* out, const float* img, int64_t C, const int64_t full[3], const int64_t start[3],
                 const int64_t ext[3]) {
    const int64_t rows = ext[0] * ext[1];
    const std::size_t row = static_cast<std::size_t>(ext[2] * C) * sizeof(float);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t d = r / ext[1], h = r % ext[1];
        std::memcpy(out + r * ext[2] * C, img + (((start[0] + d) * full[1] + start[1] + h) * full[2] + start[2]) * C,
                    row);
    }
}

void run_bwd_w(SplitPlan& s, const ConvArgs& args) {
    const ConvProblem& p = s.p;
    const int nsp = p.nsp;
    const int64_t W = prod(p.k, nsp) * p.icg() * p.oc;
    const std::size_t f = sizeof(float);
    // Region: double accumulators, f32 partials, the piece's copied input and output.
    auto al = [](std::size_t b) { return (b + 63) & ~std::size_t(63); };
    const std::size_t acc_b = al((W + p.oc) * sizeof(double)), part_b = al((W + p.oc) * f);
    const bool copy_src = s.gather_src || s.src_cf;
    const std::size_t gs_b = copy_src ? al(s.gather_src_elems * f) : 0;
    const std::size_t gd_b = s.dst_cf ? al(s.gather_dst_elems * f) : 0;
    core::Buffer buf(Device::cpu(), acc_b + part_b + gs_b + gd_b);
    char* base = static_cast<char*>(buf.data());
    double* acc = reinterpret_cast<double*>(base);
    float* part = reinterpret_cast<float*>(base + acc_b);
    float* gathered = reinterpret_cast<float*>(base + acc_b + part_b);
    float* gathered_dst = reinterpret_cast<float*>(base + acc_b + part_b + gs_b);
    float* src = static_cast<float*>(args.src.data);
    float* ddst = static_cast<float*>(args.dst.data);
    dnnl::stream strm;
    if (s.src_cf || s.dst_cf) strm = dnnl::stream(dnnl_engine());
    // Runs sub's reorder from the region of a channels-first image starting at `start` (which
    // has `full` spatial sizes) into `to`.
    auto reorder_region = [&](const dnnl::reorder& r, const memory::desc& view, const ConvProblem& q, bool dst,
                              float* img, const int64_t full[3], const int64_t start[3], float* to) {
        const int64_t off = (start[0] * full[1] + start[1]) * full[2] + start[2];
        const memory::desc dense(act_dims(q, dst), memory::data_type::f32, act_tag(q.nsp, true));
        memory from(view, dnnl_engine(), img + off), into(dense, dnnl_engine(), to);
        r.execute(strm, from, into);
        strm.wait();
    };
    const core::Spatial3 geo = p.spatial3();
    const int64_t *in = geo.in, *out = geo.out;
    const int64_t img_in = p.ic * prod(p.in, nsp), img_out = p.oc * prod(p.out, nsp);
    bool first = true;
    for (const SplitPiece& piece : s.pieces) {
        SplitSub& sub = s.subs[static_cast<std::size_t>(piece.sub)];
        const ConvProblem& q = sub.p;
        ConvArgs a = args;
        a.weights.data = part;
        a.bias.data = p.with_bias ? part + W : nullptr;
        if (!s.by_position) {
            a.src.data = src + piece.n0 * img_in;
            a.dst.data = ddst + piece.n0 * img_out;
        } else {
            const int64_t *i0 = piece.in0, *o0 = piece.out0;
            float* const s0 = src + piece.n0 * img_in;
            float* const d0 = ddst + piece.n0 * img_out;
            if (s.src_cf) {
                reorder_region(sub.src_in, sub.src_view, q, false, s0, in, i0, gathered);
                a.src.data = gathered;
            } else if (s.gather_src) {
                const core::Spatial3 box = q.spatial3();
                gather_rows(gathered, s0, p.ic, in, i0, box.in);
                a.src.data = gathered;
            } else {
                a.src.data = s0 + ((i0[0] * in[1] + i0[1]) * in[2] + i0[2]) * p.ic;
            }
            if (s.dst_cf) {
                reorder_region(sub.dst_in, sub.dst_view, q, true, d0, out, o0, gathered_dst);
                a.dst.data = gathered_dst;
            } else {
                a.dst.data = d0 + ((o0[0] * out[1] + o0[1]) * out[2] + o0[2]) * p.oc;
            }
        }
        run_dnnl_plan(*sub.plan, q, a);
        accumulate(acc, part, p.with_bias ? W + p.oc : W, first);
        first = false;
    }
    store(static_cast<float*>(args.weights.data), acc, W);
    if (p.with_bias) store(static_cast<float*>(args.bias.data), acc + W, p.oc);
}

void run_bwd_d(SplitPlan& s, const ConvArgs& args) {
    const ConvProblem& p = s.p;
    const int nsp = p.nsp;
    const int64_t SP_out = prod(p.out, nsp), taps = prod(p.k, nsp);
    const int64_t N = p.mb * p.ic * prod(p.in, nsp);
    const std::size_t f = sizeof(float);
    auto al = [](std::size_t b) { return (b + 63) & ~std::size_t(63); };
    int64_t max_oc = 0;
    for (const SplitSub& sub : s.subs) max_oc = std::max(max_oc, sub.p.oc);
    const std::size_t acc_b = al(N * sizeof(double)), part_b = al(N * f);
    core::Buffer buf(Device::cpu(), acc_b + part_b + al(p.mb * max_oc * SP_out * f));
    char* base = static_cast<char*>(buf.data());
    double* acc = reinterpret_cast<double*>(base);
    float* part = reinterpret_cast<float*>(base + acc_b);
    float* slice = reinterpret_cast<float*>(base + acc_b + part_b);
    const float* ddst = static_cast<const float*>(args.dst.data);
    const float* wei = static_cast<const float*>(args.weights.data);
    const bool cl = p.dst_layout == Layout::channels_last;
    bool first = true;
    for (const SplitPiece& piece : s.pieces) {
        SplitSub& sub = s.subs[static_cast<std::size_t>(piece.sub)];
        const int64_t oc = sub.p.oc, oc0 = piece.oc0;
        // diff_dst's channels [oc0, oc0 + oc) as a dense tensor in the user's layout.
        if (cl) {
            const int64_t M = p.mb * SP_out;
#pragma omp parallel for schedule(static)
            for (int64_t m = 0; m < M; ++m)
                std::memcpy(slice + m * oc, ddst + m * p.oc + oc0, static_cast<std::size_t>(oc) * f);
        } else {
#pragma omp parallel for schedule(static)
            for (int64_t n = 0; n < p.mb; ++n)
                std::memcpy(slice + n * oc * SP_out, ddst + (n * p.oc + oc0) * SP_out,
                            static_cast<std::size_t>(oc * SP_out) * f);
        }
        ConvArgs a = args;
        a.dst.data = slice;
        // Output channels are the weights' outermost dim in both plain layouts (oi.., o..i).
        a.weights.data = const_cast<float*>(wei) + oc0 * p.ic * taps;
        a.src.data = part;
        run_dnnl_plan(*sub.plan, sub.p, a);
        accumulate(acc, part, N, first);
        first = false;
    }
    store(static_cast<float*>(args.src.data), acc, N);
}

}  // namespace

Event run_split_plan(SplitPlan& s, const ConvArgs& args) {
    if (s.p.dir == Direction::bwd_w) run_bwd_w(s, args);
    else run_bwd_d(s, args);
    return Event();
}

}  // namespace convkit::cpu
