// The transposed kind: what a transposed convolution adds to the convolution it runs as
// (ConvProblem::transposed). Its forward is the convolution's backward data, whose oneDNN 2.6
// primitive takes no bias or post-ops, so the result goes through convkit's epilogue pass in
// f32 (f64 for f64): into the output when nothing reads the output's old contents, else through a
// temporary (a `sum`). A 16-bit forward with an epilogue runs the f32 convolution on widened
// inputs so the output is rounded once, as the reference rounds it. Its backward weights is the
// convolution's, with the bias gradient summed over the other activation (src), in double.
// oneDNN's own deconvolution primitive is the same backward-data kernels with a bias pass of its
// own (ref_deconvolution in 2.6); docs/cpu.md has the measurement behind this choice.
#include <omp.h>

#include "cpu/convert.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

class TransposedPlan {
public:
    explicit TransposedPlan(const ConvProblem& p) : p_(p), view_(p.epilogue_view()) {
        base_ = p;
        base_.transposed = false;
        base_.with_bias = false;
        base_.n_post_ops = 0;
        epilogue_ = p.has_epilogue();
        wide_ = epilogue_ && (p.dt == DType::bf16 || p.dt == DType::f16);
        if (wide_) base_.dt = DType::f32;
        bias_grad_ = p.dir == Direction::bwd_w && p.with_bias;
    }
    const ConvProblem& base() const { return base_; }
    const ConvProblem& problem() const { return p_; }
    const ConvProblem& view() const { return view_; }
    bool epilogue() const { return epilogue_; }
    bool wide() const { return wide_; }
    bool bias_grad() const { return bias_grad_; }

private:
    ConvProblem p_, view_, base_;
    bool epilogue_ = false, wide_ = false, bias_grad_ = false;
};

namespace {

template <typename T> double load(const void* p, int64_t i) {
    const T* v = static_cast<const T*>(p);
    if constexpr (std::is_same_v<T, core::Bf16Bits> || std::is_same_v<T, core::F16Bits>)
        return core::Scalar<T>::load(v[i]);
    else
        return static_cast<double>(v[i]);
}

template <typename T> void store(void* p, int64_t i, double x) {
    T* v = static_cast<T*>(p);
    if constexpr (std::is_same_v<T, core::Bf16Bits> || std::is_same_v<T, core::F16Bits>)
        v[i] = core::Scalar<T>::store(static_cast<float>(x));
    else
        v[i] = static_cast<T>(x);
}

// diff_bias[c] = sum over n and positions of t (dense, channels-first or -last), in double.
template <typename T> void channel_sums(const TensorView& t, int nsp, const TensorView& diff_bias) {
    const int64_t N = t.sizes[0], C = t.sizes[1];
    int64_t SP = 1;
    for (int i = 0; i < nsp; ++i) SP *= t.sizes[2 + i];
    const bool cl = t.layout() == Layout::channels_last && C > 1;
    const int64_t bst = diff_bias.strides[0];
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
            const int64_t base = n * C * SP;
            if (cl)
                for (int64_t s = 0; s < SP; ++s) acc += load<T>(t.data, base + s * C + c);
            else
                for (int64_t s = 0; s < SP; ++s) acc += load<T>(t.data, base + c * SP + s);
        }
        store<T>(diff_bias.data, c * bst, acc);
    }
}

void run_channel_sums(const TensorView& t, int nsp, const TensorView& diff_bias) {
    switch (t.dtype) {
        case DType::f32: channel_sums<float>(t, nsp, diff_bias); break;
        case DType::f64: channel_sums<double>(t, nsp, diff_bias); break;
        case DType::bf16: channel_sums<core::Bf16Bits>(t, nsp, diff_bias); break;
        case DType::f16: channel_sums<core::F16Bits>(t, nsp, diff_bias); break;
    }
}

// A dense f32 tensor of t's sizes and layout.
TensorView f32_like(const TensorView& t, core::Buffer* buf) {
    *buf = core::Buffer(Device::cpu(), static_cast<std::size_t>(t.numel()) * sizeof(float));
    TensorView v = t;
    v.data = buf->data();
    v.dtype = DType::f32;
    return v;
}

}  // namespace

std::shared_ptr<TransposedPlan> make_transposed_plan(const ConvProblem& p) {
    return std::make_shared<TransposedPlan>(p);
}

const ConvProblem& transposed_base(const TransposedPlan& plan) { return plan.base(); }

Event run_transposed_plan(const TransposedPlan& plan, const ConvArgs& args, const RunBase& run_base) {
    const ConvProblem& p = plan.problem();
    ConvArgs a = args;
    a.bias = TensorView();
    a.post_ops = nullptr;
    if (!plan.epilogue()) {
        run_base(plan.base(), a);
        if (plan.bias_grad()) run_channel_sums(args.src, p.nsp, args.bias);
        return Event();
    }
    // The convolution's result: f32 (f64) values the epilogue reads, the output itself where
    // it can be overwritten first.
    core::Buffer acc_buf, dst_buf, wei_buf;
    TensorView out = args.src;
    if (plan.wide()) {
        a.dst = f32_like(args.dst, &dst_buf);
        widen_to_f32(p.dt, args.dst.data, static_cast<float*>(a.dst.data), static_cast<std::size_t>(args.dst.numel()));
        a.weights = f32_like(args.weights, &wei_buf);
        widen_to_f32(p.dt, args.weights.data, static_cast<float*>(a.weights.data),
                     static_cast<std::size_t>(args.weights.numel()));
        a.src = f32_like(args.src, &acc_buf);
    } else if (p.has_sum()) {
        a.src = out;
        acc_buf = core::Buffer(Device::cpu(), static_cast<std::size_t>(out.numel()) * dtype_size(out.dtype));
        a.src.data = acc_buf.data();
    }
    run_base(plan.base(), a);
    Epilogue e;
    e.init(plan.view(), out.data, out.layout(), args.bias.defined() ? args.bias.data : nullptr, args.post_ops);
    e.run_all(a.src.data);
    return Event();
}

PlanInfo transposed_plan_info(const TransposedPlan& plan, const PlanInfo& base) {
    PlanInfo i = base;
    if (plan.epilogue()) {
        i.own_epilogue = true;
        i.post_ops_fused = false;
        if (plan.wide()) i.widened = true;
    }
    return i;
}

}  // namespace convkit::cpu
