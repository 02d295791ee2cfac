// What the plan kinds share (see plan.hpp): temporaries, the epilogue's arguments, the
// bias-gradient pass and the plan counters.
#include "cuda/plan.hpp"

#include <new>

namespace convkit::cuda {
namespace {

// Strides of a binary operand as the epilogue reads it: 0 on broadcast dimensions.
void operand_strides(const TensorView& t, int64_t* out) {
    for (int d = 0; d < kMaxRank; ++d) out[d] = 0;
    for (int d = 0; d < t.rank(); ++d) out[d] = t.sizes[d] == 1 ? 0 : t.strides[d];
}

}  // namespace

core::Buffer make_buffer(Device dev, std::size_t bytes, cudaStream_t s, const char* what) {
    try {
        return core::Buffer(dev, bytes, s);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorKind::out_of_memory, std::string("cuda: allocating the ") + what + " (" + std::to_string(bytes) +
                                                  " bytes on " + dev.str() + ") failed: out of memory (the allocator threw std::bad_alloc)");
    }
}

std::size_t dense_bytes(const Dims& sizes, DType dt) {
    std::size_t n = dtype_size(dt);
    for (int64_t v : sizes) n *= static_cast<std::size_t>(v);
    return n;
}

void set_epilogue_shape(EpilogueArgs* e, DType dt, const Dims& sizes, Layout layout) {
    e->dt = dt;
    e->rank = sizes.rank();
    e->channels_last = layout == Layout::channels_last;
    for (int i = 0; i < kMaxRank; ++i) e->sizes[i] = i < sizes.rank() ? sizes[i] : 1;
}

void fill_epilogue_template(const core::ConvProblem& p, EpilogueArgs* e) {
    const core::ConvProblem v = p.epilogue_view();
    set_epilogue_shape(e, p.dt, v.dst_dims(), v.dst_layout);
    e->n_ops = p.n_post_ops;
    int nb = 0;
    for (int i = 0; i < p.n_post_ops; ++i) {
        const core::PostOpDesc& d = p.post_ops[i];
        EpilogueOp& op = e->ops[i];
        op.kind = static_cast<int>(d.kind);
        op.alg = d.alg;
        op.alpha = d.alpha;
        op.beta = d.beta;
        op.scale = d.scale;
        op.operand = d.kind == PostOp::Kind::binary ? nb++ : -1;
    }
    e->n_operands = nb;
}

EpilogueArgs epilogue_args(const EpilogueArgs& tmpl, const core::ConvArgs& a, const TensorView& out) {
    EpilogueArgs e = tmpl;
    e.in = out.data;
    e.prior = out.data;
    e.out = out.data;
    e.bias = a.bias.defined() ? a.bias.data : nullptr;
    e.bias_stride = a.bias.defined() ? a.bias.strides[0] : 0;
    int k = 0;
    if (a.post_ops)
        for (const PostOp& op : *a.post_ops)
            if (op.kind == PostOp::Kind::binary) {
                e.operands[k] = op.operand.data;
                operand_strides(op.operand, e.operand_strides[k]);
                ++k;
            }
    return e;
}

BiasGradPass::BiasGradPass(const core::ConvProblem& p, const core::ConvArgs& a, cudaStream_t s) {
    const core::ConvProblem v = p.epilogue_view();
    BiasGradArgs& b = args_;
    b.dt = p.dt;
    b.n = v.mb;
    b.c = v.oc;
    for (int i = 0; i < v.nsp; ++i) b.s *= v.out[i];
    b.channels_last = v.dst_layout == Layout::channels_last;
    b.diff_dst = core::epilogue_tensor(p, a).data;
    b.diff_bias = a.bias.data;
    b.bias_stride = a.bias.strides[0];
    partial_ = make_buffer(p.device, bias_grad_scratch_bytes(b), s, "bias-gradient scratch");
    b.partial = partial_.data();
}

void BiasGradPass::run(cudaStream_t s) { launch_bias_grad(args_, s); }

Counters& counters() {
    static auto* c = new Counters;
    return *c;
}

}  // namespace convkit::cuda
