// The cropped kind: a convolution whose post-padding is below 1 - stride, which oneDNN 2.6's
// descriptors refuse. It comes from a transposed convolution with output_padding >= stride
// (allowed where the dilation is larger): the convolution's input then has trailing rows that no
// window reaches. The same convolution over the input without them (post-padding 0) has the same
// output, so the plan runs that one: forward and backward weights read a dense copy of the rows
// the windows reach, backward data writes them and zeroes the rest (their gradient is zero).
#include <cstring>

#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

class CropPlan {
public:
    explicit CropPlan(const ConvProblem& p) : base_(p) {
        for (int i = 0; i < p.nsp; ++i)
            if (p.padding_r[i] < 0) {
                base_.in[i] += p.padding_r[i];
                base_.padding_r[i] = 0;
            }
    }
    const ConvProblem& base() const { return base_; }

private:
    ConvProblem base_;
};

bool wants_crop(const ConvProblem& p) {
    if (p.dt == DType::f64) return false;  // convkit's own f64 path takes any padding
    for (int i = 0; i < p.nsp; ++i)
        if (p.padding_r[i] < 1 - p.stride[i]) return true;
    return false;
}

std::shared_ptr<CropPlan> make_crop_plan(const ConvProblem& p) { return std::make_shared<CropPlan>(p); }

const ConvProblem& crop_base(const CropPlan& plan) { return plan.base(); }

Event run_crop_plan(const CropPlan& plan, const ConvArgs& args, const RunBase& run_base) {
    const ConvProblem& q = plan.base();
    // The rows the windows reach: a view of the activation with the cropped sizes, same strides.
    TensorView reached = args.src;
    for (int i = 0; i < q.nsp; ++i) reached.sizes[2 + i] = q.in[i];
    Tensor dense(reached.dtype, reached.sizes, q.src_layout, Device::cpu());
    ConvArgs a = args;
    a.src = dense.view();
    if (q.dir == Direction::bwd_d) {
        run_base(q, a);
        std::memset(args.src.data, 0, args.src.nbytes());  // dense (the core densifies): all-zero bits are +0
        copy(reached, dense.view());
    } else {
        copy(dense.view(), reached);
        run_base(q, a);
    }
    return Event();
}

}  // namespace convkit::cpu
