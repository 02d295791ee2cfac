// The extended kind: a convolution whose post-padding is negative, which cuDNN's graphs do not
// take. It comes from a transposed convolution with output_padding >= stride (allowed where the
// dilation is larger): the convolution's input has trailing rows no window reaches. Adding m
// output rows (m = ceil(-padding_r / stride)) makes the post-padding non-negative and leaves the
// other outputs as they were, so the plan runs that convolution (any kind, epilogue included):
// its extra diff_dst rows are zeros (backward data and weights get nothing from them), and a
// forward's extra dst rows are computed into a temporary and dropped.
#include <cuda_runtime.h>

#include "cuda/cuda_util.hpp"
#include "cuda/plan.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

class ExtendPlan final : public Plan {
public:
    ExtendPlan(const ConvProblem& p, const ConvProblem& q, std::shared_ptr<const Plan> inner)
        : Plan(p), q_(q), inner_(std::move(inner)) {
        info_ = inner_->info();
        info_.engine_name = "extended output: " + info_.engine_name;
    }

    void run(const ConvArgs& a, cudaStream_t s) const override {
        const ConvProblem& p = problem_;
        const Dims ext = q_.dst_dims();
        const Layout layout = p.dst_layout == Layout::channels_last ? Layout::channels_last : Layout::channels_first;
        core::Buffer buf = make_buffer(p.device, dense_bytes(ext, p.dt), s, "extended dst temporary");
        const TensorView t(buf.data(), p.dt, ext, dense_strides(ext, layout), p.device);
        int64_t sizes[kMaxRank], user_st[kMaxRank], t_sizes[kMaxRank], t_st[kMaxRank];
        core::spatial3_view(a.dst, p.nsp, sizes, user_st);  // the window: the problem's own dst
        core::spatial3_view(t, p.nsp, t_sizes, t_st);
        const int es = static_cast<int>(dtype_size(p.dt));
        ConvArgs b = a;
        b.dst = t;
        if (p.dir == Direction::fwd) {
            inner_->run(b, s);
            launch_copy_window(a.dst.data, user_st, t.data, t_st, sizes, es, s);
        } else {
            check_cuda(cudaMemsetAsync(t.data, 0, buf.size(), s), "cudaMemsetAsync");
            launch_copy_window(t.data, t_st, a.dst.data, user_st, sizes, es, s);
            inner_->run(b, s);
        }
    }

private:
    ConvProblem q_;
    std::shared_ptr<const Plan> inner_;
};

}  // namespace

bool extend_applies(const ConvProblem& p) {
    for (int i = 0; i < p.nsp; ++i)
        if (p.padding_r[i] < 0) return true;
    return false;
}

std::shared_ptr<const Plan> build_extend_plan(const ConvProblem& p, bool aligned, cudnnHandle_t h, cudaStream_t s) {
    ConvProblem q = p;
    for (int i = 0; i < p.nsp; ++i)
        if (p.padding_r[i] < 0) {
            const int64_t m = (-p.padding_r[i] + p.stride[i] - 1) / p.stride[i];
            q.out[i] += m;
            q.padding_r[i] += m * p.stride[i];
        }
    // Binary post-op operands broadcast to the transposed output (diff_src), which the extension
    // leaves as it is; nothing else in the problem refers to dst's sizes.
    return std::make_shared<ExtendPlan>(p, q, build_plan(q, aligned, h, s));
}

}  // namespace convkit::cuda
