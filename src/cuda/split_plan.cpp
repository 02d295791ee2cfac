// The split kind: backward-data of a strided layer (f32 without TF32, f64) as one stride-1
// sub-convolution per phase of diff_src, each with the kernel taps that reach it (no multiplies by
// inserted zeros). Per phase: gather of the phase's taps, the sub-plan (itself a plain plan) into a
// dense temporary, scatter into diff_src; phases no tap reaches are zeroed. Opt-in
// (set_split_dgrad): timed against cuDNN's plans it won on no ResNet-50 layer once the padding was
// normalized, and it costs first-call time (docs/cuda.md, "Plan kinds").
#include <algorithm>

#include "cuda/plan.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

// One phase: diff_src positions r + s*j (per spatial dim), reached by the kernel taps phi + s*t.
// `plan` runs the stride-1 problem over those positions and taps.
struct Phase {
    std::shared_ptr<const Plan> plan;  // null: no tap reaches the phase, its positions are zero-filled
    int64_t r[3] = {0, 0, 0}, phi[3] = {0, 0, 0}, in[3] = {1, 1, 1}, k[3] = {1, 1, 1};
};

// 5-D sizes and strides (elements; the spatial dims placed as spatial3_view places them) of the
// window of `t` that keeps N and C whole and takes, per spatial dim i, n[i] positions step[i] apart
// from position at[i]; *offset is its first element.
void phase_window(const TensorView& t, int nsp, const int64_t* n, const int64_t* step, const int64_t* at,
                  int64_t* sizes, int64_t* strides, int64_t* offset) {
    core::spatial3_view(t, nsp, sizes, strides);
    *offset = 0;
    for (int i = 0; i < nsp; ++i) {
        const int j = 2 + core::Spatial3::at(nsp, i);
        sizes[j] = n[i];
        strides[j] *= step[i];
        *offset += at[i] * t.strides[2 + i];
    }
}

class SplitPlan final : public Plan {
public:
    // `phases` in order, of `total` (empty phases, with no diff_src position, left out).
    SplitPlan(const ConvProblem& p, std::vector<Phase> phases, int64_t total, bool from_tune_file)
        : Plan(p), phases_(std::move(phases)) {
        std::string names;
        int convs = 0;
        for (const Phase& ph : phases_) {
            if (!ph.plan) continue;
            const ConvProblem& q = ph.plan->problem();
            dx_bytes_ = std::max(dx_bytes_, dense_bytes(q.src_dims(), q.dt));
            w_bytes_ = std::max(w_bytes_, dense_bytes(q.wei_dims(), q.dt));
            names += (convs++ ? ", " : "") + ph.plan->info().engine_name;
            info_.autotuned = info_.autotuned || ph.plan->info().autotuned;
        }
        info_.found = true;
        info_.split_dgrad = true;
        info_.phases = convs;
        info_.from_tune_file = from_tune_file;
        info_.engine_name = "split dgrad, " + std::to_string(convs) + " of " + std::to_string(total) + " phases: " + names;
    }

    void run(const ConvArgs& a, cudaStream_t s) const override {
        const ConvProblem& p = problem_;
        const int64_t es = static_cast<int64_t>(dtype_size(p.dt));
        // One temporary pair for all phases: they run one after the other on `s`.
        core::Buffer dxt = make_buffer(p.device, dx_bytes_, s, "split backward-data temporary");
        core::Buffer wt = make_buffer(p.device, w_bytes_, s, "split backward-data weights");
        char* dx = static_cast<char*>(a.src.data);
        const char* w = static_cast<const char*>(a.weights.data);
        for (const Phase& ph : phases_) {
            int64_t xs[kMaxRank], xst[kMaxRank], xoff = 0;
            phase_window(a.src, p.nsp, ph.in, p.stride, ph.r, xs, xst, &xoff);
            if (!ph.plan) {
                launch_zero_window(dx + xoff * es, xst, xs, static_cast<int>(es), s);
                continue;
            }
            const ConvProblem& q = ph.plan->problem();
            // The phase's kernel taps, gathered into dense weights in the sub-problem's layout (the
            // weights change every training step, so this runs per call; it moves ~1/s^2 of them).
            int64_t ws[kMaxRank], wst[kMaxRank], woff = 0, wsz[kMaxRank], wdst[kMaxRank];
            phase_window(a.weights, p.nsp, ph.k, p.stride, ph.phi, ws, wst, &woff);
            TensorView wv = TensorView::with_layout(wt.data(), p.dt, q.wei_dims(), q.wei_layout, p.device);
            core::spatial3_view(wv, p.nsp, wsz, wdst);
            launch_copy_window(wv.data, wdst, w + woff * es, wst, ws, static_cast<int>(es), s);
            // The stride-1 sub-convolution into a dense temporary, then scattered to the phase's
            // positions of diff_src (cuDNN engines want dense tensors; the scatter is a copy of
            // diff_src's size in all, a few microseconds at ResNet-50 sizes).
            TensorView xv = TensorView::with_layout(dxt.data(), p.dt, q.src_dims(), q.src_layout, p.device);
            ConvArgs sa;
            sa.src = xv;
            sa.weights = wv;
            sa.dst = a.dst;
            ph.plan->run(sa, s);
            int64_t xsz[kMaxRank], xsrc[kMaxRank];
            core::spatial3_view(xv, p.nsp, xsz, xsrc);
            launch_copy_window(dx + xoff * es, xst, xv.data, xsrc, xs, static_cast<int>(es), s);
        }
    }

private:
    std::vector<Phase> phases_;
    std::size_t dx_bytes_ = 0, w_bytes_ = 0;  // the largest phase's diff_src and weights temporaries
};

}  // namespace

// Strided backward-data whose numerics rule out tensor-core engines (f32 without TF32, f64):
// there cuDNN's strided dgrad engines are slow. Tensor-core dtypes have fast ones.
bool split_applies(const ConvProblem& p) {
    if (p.dir != Direction::bwd_d || p.mb == 0 || p.has_epilogue()) return false;
    if (!((p.dt == DType::f32 && !p.allow_tf32) || p.dt == DType::f64)) return false;
    bool strided = false;
    for (int i = 0; i < p.nsp; ++i) {
        if (p.dilation[i] != 1) return false;
        strided = strided || p.stride[i] > 1;
    }
    return strided;
}

std::shared_ptr<const Plan> build_split_plan(const ConvProblem& p, bool aligned, cudnnHandle_t h, bool from_tune_file) {
    int64_t nph = 1;
    for (int i = 0; i < p.nsp; ++i) nph *= p.stride[i];
    std::vector<Phase> phases;
    int convs = 0;
    for (int64_t idx = 0; idx < nph; ++idx) {
        Phase ph;
        ConvProblem q = p;
        bool empty = false, zero = false, valid = true;
        int64_t rem = idx;
        for (int i = p.nsp - 1; i >= 0; --i) {
            const int64_t st = p.stride[i], phi = rem % st;
            rem /= st;
            // Taps phi, phi + st, ... reach the diff_src positions i with (i + padding_l) % st == phi,
            // the first of which is r.
            const int64_t r = ((phi - p.padding_l[i]) % st + st) % st;
            const int64_t n = r < p.in[i] ? (p.in[i] - r + st - 1) / st : 0;
            const int64_t kk = phi < p.k[i] ? (p.k[i] - phi + st - 1) / st : 0;
            ph.r[i] = r;
            ph.phi[i] = phi;
            ph.in[i] = n;
            ph.k[i] = kk;
            if (n == 0) empty = true;
            if (kk == 0) {
                zero = true;
                continue;
            }
            // diff_src[r + st*j] = sum_t diff_dst[j + pre - t] * w[phi + st*t]: a stride-1
            // backward-data with pre-padding `pre`; the post-padding follows from the sizes.
            const int64_t pre = (r + p.padding_l[i] - phi) / st;
            const int64_t post = p.out[i] - n - pre + kk - 1;
            // Paddings of a stride-1 convolution lie in [0, kernel - 1]; outside that range the
            // phase would need diff_dst rows that do not exist (or a cropped result): no split.
            if (pre > kk - 1 || post < 0 || post > kk - 1) valid = false;
            q.in[i] = n;
            q.k[i] = kk;
            q.stride[i] = 1;
            q.padding_l[i] = pre;
            q.padding_r[i] = post;
        }
        if (empty) continue;  // no diff_src position in this phase (input smaller than the stride)
        if (!zero) {
            if (!valid) return nullptr;
            std::string error;
            ph.plan = build_plain(q, aligned, h, &error);
            if (!ph.plan) return nullptr;
            ++convs;
        }
        phases.push_back(std::move(ph));
    }
    if (convs == 0) return nullptr;  // nothing but zeros: cannot happen for a valid problem
    return std::make_shared<SplitPlan>(p, std::move(phases), nph, from_tune_file);
}

}  // namespace convkit::cuda
