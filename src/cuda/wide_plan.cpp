// The widened kind: a 16-bit problem run as an f32 plan on f32 copies of its inputs, the result
// rounded once into the user's output. src and weights widened to f32 and an f32 plan with TF32
// allowed is exact in the products (bf16 and f16 values fit TF32's 11 significant bits) and sums in
// f32; then the epilogue rounds once (forward: with bias and post-ops). Used when every engine
// refuses an f32 result of a 16-bit forward that needs a pass of ours (acc32), and for small 16-bit
// backward-weights (<= wide_bwd_w_max_macs()): cuDNN's 16-bit engine for a grouped, strided,
// dilated 3D layer came out 6 bf16 ulps off an f32-accumulated result (rounded partial sums).
// Larger backward-weights keep the 16-bit engines: an f32 result there ran 2-6x slower (H100,
// ResNet-50 mb 32). CONVKIT_CUDA_WIDE=0 turns it off. See docs/cuda.md, "Plan kinds".
#include <optional>

#include "cuda/graph_spec.hpp"
#include "cuda/plan.hpp"
#include "cuda/settings.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

class WidePlan final : public Plan {
public:
    WidePlan(const ConvProblem& p, std::shared_ptr<const Plan> inner) : Plan(p), inner_(std::move(inner)) {
        info_.found = true;
        info_.engine_name = "widened to f32: " + inner_->info().engine_name + " (f32 result)";
        if (p.has_epilogue()) {  // forward, or a transposed forward (backward data onto diff_src)
            fill_epilogue_template(p, &epi_);
            epi_.in_f32 = true;
        } else {
            // diff_weights in f32, converted by the epilogue kernel with no ops (element order is
            // the same on both sides: dense in the user's weight layout).
            set_epilogue_shape(&epi_, p.dt, p.wei_dims(), p.wei_layout);
            epi_.n_ops = 0;
            epi_.n_operands = 0;
            epi_.in_f32 = true;
        }
        bias_grad_ = p.dir == Direction::bwd_w && p.with_bias;
    }

    void run(const ConvArgs& a, cudaStream_t s) const override {
        const ConvProblem& p = problem_;
        auto widened = [&](const TensorView& t, core::Buffer* buf, bool fill, const char* what) {
            const int64_t n = t.numel();
            *buf = make_buffer(p.device, static_cast<std::size_t>(n) * sizeof(float), s, what);
            if (fill) launch_widen(static_cast<float*>(buf->data()), t.data, t.dtype, n, s);
            TensorView v = t;  // same sizes and strides (dense), f32 elements
            v.data = buf->data();
            v.dtype = DType::f32;
            return v;
        };
        const bool fwd = p.dir == Direction::fwd, bwd_d = p.dir == Direction::bwd_d;
        std::optional<BiasGradPass> bias_grad;
        if (bias_grad_ && !fwd && !bwd_d) bias_grad.emplace(p, a, s);
        core::Buffer x, w, y;
        ConvArgs wa;
        wa.src = widened(a.src, &x, !bwd_d, bwd_d ? "f32 convolution result" : "f32 copy of src");
        wa.weights = widened(a.weights, &w, fwd || bwd_d, p.dir == Direction::bwd_w ? "f32 diff_weights" : "f32 copy of the weights");
        wa.dst = widened(a.dst, &y, !fwd, fwd ? "f32 convolution result" : "f32 copy of diff_dst");
        inner_->run(wa, s);
        if (fwd || bwd_d) {
            const TensorView& out = core::epilogue_tensor(p, a);
            EpilogueArgs e = epilogue_args(epi_, a, out);
            e.in = fwd ? y.data() : x.data();
            e.in_f32 = true;
            launch_epilogue(e, s);
        } else {
            EpilogueArgs e = epi_;
            e.in = w.data();
            e.out = a.weights.data;
            launch_epilogue(e, s);
            if (bias_grad) bias_grad->run(s);
        }
    }

private:
    std::shared_ptr<const Plan> inner_;  // the f32 (TF32) plan, no bias or post-ops
    EpilogueArgs epi_;
    bool bias_grad_ = false;
};

// 16-bit forward that needs a pass of ours (the epilogue rounds once), or small backward-weights.
bool wide_applies(const ConvProblem& p) {
    return is_16bit(p.dt) && wide_enabled() &&
           (has_epilogue(p) || (p.dir == Direction::bwd_w && macs(p) <= static_cast<double>(wide_bwd_w_max_macs())));
}

std::shared_ptr<const Plan> build_wide(const ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* why) {
    ConvProblem q = p;
    q.dt = DType::f32;
    q.allow_tf32 = true;
    q.with_bias = false;
    q.n_post_ops = 0;
    q.transposed = false;
    std::shared_ptr<const Plan> inner = build_plain(q, aligned, h, why);
    if (!inner) return nullptr;
    return std::make_shared<WidePlan>(p, std::move(inner));
}

}  // namespace

const PlanKind wide_kind{"wide", wide_applies, build_wide};

}  // namespace convkit::cuda
