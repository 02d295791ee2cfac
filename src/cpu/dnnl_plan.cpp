// f32/bf16 convolutions on oneDNN 2.6: a ConvProblem becomes a short program of steps
// (reorders in, the convolution or matrix product, reorders out, optionally convkit's own
// post-op pass), built once per problem and thread count and cached; a call then only binds
// pointers and executes. This file is the plan the backend caches (one variant per thread count)
// and its entry points (cpu_internal.hpp); the rooms behind it:
//   dnnl_convert  convkit's values as oneDNN descriptors, and back
//   dnnl_policy   the choices: fusable post-ops, layout order, native or widened 16-bit
//   dnnl_builder  the convolution's step program, widen / narrow steps for 16-bit
//   dnnl_matmul   1x1 convolutions as matrix products
//   dnnl_program  the steps, and their execution
#include <omp.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/dnnl_convert.hpp"
#include "cpu/dnnl_policy.hpp"
#include "cpu/dnnl_program.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;

class DnnlPlan {
public:
    explicit DnnlPlan(const ConvProblem& p) : p_(p) {}
    Variant& get(int nthr);

private:
    ConvProblem p_;
    std::mutex mu_;
    std::vector<std::unique_ptr<Variant>> variants_;  // a handful at most: one per thread count
};

Variant& DnnlPlan::get(int nthr) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& v : variants_)
            if (v->nthr == nthr) return *v;
    }
    auto made = build_variant(p_, nthr);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& v : variants_)
        if (v->nthr == nthr) return *v;
    variants_.push_back(std::move(made));
    return *variants_.back();
}

std::shared_ptr<DnnlPlan> make_dnnl_plan(const ConvProblem& p) {
    auto plan = std::make_shared<DnnlPlan>(p);
    plan->get(omp_get_max_threads());  // build now, so the cache holds a ready plan
    return plan;
}

PlanInfo dnnl_plan_info(DnnlPlan& plan) { return plan.get(omp_get_max_threads()).info; }

Event run_dnnl_plan(DnnlPlan& plan, const ConvProblem& p, const ConvArgs& args) {
    return run_variant(plan.get(omp_get_max_threads()), p, args);
}

std::shared_ptr<void> dnnl_prepack(DnnlPlan& plan, const ConvProblem& p, const TensorView& weights) {
    Variant& v = plan.get(omp_get_max_threads());
    auto h = std::make_shared<PackedWeightsHandle>();
    h->md = v.wei_md;
    h->data = core::Buffer(Device::cpu(), v.wei_md.get_size());
    // A widened plan reads f32 weights: widen first, then let oneDNN's f32 reorder block them.
    const bool wide = v.info.widened;
    const mdesc u_wei(wei_dims(p), wide ? ddt::f32 : to_dnnl(p.dt),
                      wei_tag(p.nsp, p.g > 1, p.wei_layout == Layout::channels_last));
    core::Buffer widened;
    const void* user = weights.data;
    if (wide) {
        widened = core::Buffer(Device::cpu(), u_wei.get_size());
        widen_to_f32(p.dt, weights.data, static_cast<float*>(widened.data()), u_wei.get_size() / sizeof(float));
        user = widened.data();
    }
    if (u_wei == v.wei_md) {
        std::memcpy(h->data.data(), user, v.wei_md.get_size());
    } else {
        dnnl::reorder r(dnnl::reorder::primitive_desc(dnnl_engine(), u_wei, dnnl_engine(), v.wei_md));
        dnnl::memory from(u_wei, dnnl_engine(), const_cast<void*>(user)), to(v.wei_md, dnnl_engine(), h->data.data());
        dnnl::stream s(dnnl_engine());
        r.execute(s, from, to);
        s.wait();
    }
    return h;
}

}  // namespace convkit::cpu
