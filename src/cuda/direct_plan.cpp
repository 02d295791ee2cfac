// The direct kind: forward problems of at most direct_max_macs() multiply-adds run on convkit's
// own kernel (kernels.hpp) with the epilogue fused, one launch, no cuDNN: at that size cuDNN's host
// cost per call is the larger part (docs/cuda.md, "Plan kinds").
#include "cuda/graph_spec.hpp"
#include "cuda/plan.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;

class DirectPlan final : public Plan {
public:
    explicit DirectPlan(const ConvProblem& p) : Plan(p) {
        info_.found = true;
        info_.direct = true;
        info_.engine_name = "convkit direct";
        fill_epilogue_template(p, &epi_);
        // The kernel takes (d, h, w) geometry with neutral values for missing dimensions.
        const core::Spatial3 g = p.spatial3();
        geometry_.icg = p.icg();
        geometry_.ocg = p.ocg();
        for (int j = 0; j < 3; ++j) {
            geometry_.in[j] = g.in[j];
            geometry_.k[j] = g.k[j];
            geometry_.stride[j] = g.stride[j];
            geometry_.pad[j] = g.padding_l[j];
            geometry_.dilation[j] = g.dilation[j];
        }
    }

    void run(const ConvArgs& a, cudaStream_t s) const override {
        DirectConvArgs d = geometry_;
        d.src = a.src.data;
        d.wei = a.weights.data;
        int64_t sizes[kMaxRank];
        core::spatial3_view(a.src, problem_.nsp, sizes, d.src_st);
        core::spatial3_view(a.weights, problem_.nsp, sizes, d.wei_st);
        launch_direct_conv(d, epilogue_args(epi_, a), s);
    }

private:
    DirectConvArgs geometry_;  // pointers and strides filled per call
    EpilogueArgs epi_;
};

bool direct_applies(const ConvProblem& p) {
    return p.dir == core::Direction::fwd && macs(p) <= static_cast<double>(direct_max_macs());
}

std::shared_ptr<const Plan> build_direct(const ConvProblem& p, bool, cudnnHandle_t, std::string*) {
    return std::make_shared<DirectPlan>(p);
}

}  // namespace

const PlanKind direct_kind{"direct", direct_applies, build_direct};

}  // namespace convkit::cuda
