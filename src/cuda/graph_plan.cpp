// Plans that run a cuDNN graph, with what it needs of ours around it. Four kinds (plan.hpp), in
// the list's order:
//   fused          forward, NHWC, ungrouped, 16-byte aligned channels, f16/bf16/f32 (TF32 allowed),
//                  bias/binary add.../relu/clip/elu/swish/gelu/logistic/tanh: one runtime-fusion
//                  graph conv -> pointwise chain, no pass over dst of ours.
//   acc32          16-bit forward with bias or post-ops: the convolution writes an f32 temporary and
//                  the epilogue rounds once (explicit padding only when asymmetric; see below).
//   conv           a single convolution node (pre-compiled engines), then at most one kernel of ours:
//                  the epilogue (bias + the whole post-op chain) or the bias-gradient reduction.
//                  With a `sum` post-op the convolution writes a temporary, as the epilogue reads
//                  the old dst. Asymmetric padding natively first (explicitly first where
//                  prefer_explicit_padding()), then
//   conv_repadded  the other way: the input (forward, backward-weights) copied into a zero-padded
//                  temporary, or the backward-data result computed padded and cropped.
// docs/cuda.md, "Plan kinds", has the measurements behind each.
#include <cuda_runtime.h>

#include <memory>
#include <optional>

#include "cuda/cuda_util.hpp"
#include "cuda/engine_choice.hpp"
#include "cuda/executor.hpp"
#include "cuda/graph_spec.hpp"
#include "cuda/handles.hpp"
#include "cuda/plan.hpp"
#include "cuda/settings.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

enum class Result { fused, acc32, plain };  // where the convolution's result goes

class GraphPlan final : public Plan {
public:
    GraphPlan(const ConvProblem& p, Graph&& graph, Choice&& c, const GraphSpec& g, std::vector<int> slots, bool padded,
              bool acc32)
        : Plan(p), slots_(std::move(slots)), padded_(padded), acc32_(acc32) {
        info_.found = true;
        info_.fused = !g.epilogue.empty();
        info_.explicit_padding = padded;
        info_.autotuned = c.tuned;
        info_.from_tune_file = c.loaded;
        info_.engine_index = c.engine_index;
        info_.engine_name = c.name;
        executor_ = std::make_unique<Executor>(std::move(graph), std::move(c.plan), graph_uids(g), c.engine_index,
                                               std::move(c.knobs));
        if (padded) set_padded_geometry(g.x);
    }

    // What depends on the chosen plan (its workspace) and on the result's form (our passes).
    void finish() {
        const ConvProblem& p = problem_;
        workspace_ = plan_workspace(executor_->plan());
        info_.workspace = workspace_;
        if (acc32_) info_.engine_name += " (f32 result)";
        if (!info_.fused && has_epilogue(p)) {
            epilogue_ = true;
            conv_to_temp_ = p.has_sum() || acc32_;
            if (conv_to_temp_) {
                // The result tensor: y (forward), x (a transposed forward's backward data).
                const core::ConvProblem v = p.epilogue_view();
                if (p.dir != Direction::bwd_d) slots_[2] = kConvTemp;
                else if (!padded_) slots_[0] = kConvTemp;  // padded: cropped into the temporary
                temp_bytes_ = static_cast<std::size_t>(v.mb) * static_cast<std::size_t>(v.oc) *
                              (acc32_ ? sizeof(float) : dtype_size(p.dt));
                for (int i = 0; i < v.nsp; ++i) temp_bytes_ *= static_cast<std::size_t>(v.out[i]);
            }
            fill_epilogue_template(p, &epi_);
            epi_.in_f32 = acc32_;
        }
        bias_grad_ = p.dir == Direction::bwd_w && p.with_bias;
    }

    void run(const ConvArgs& a, cudaStream_t s) const override {
        const ConvProblem& p = problem_;
        HandleLease h(p.device.index);
        check_cudnn(cudnnSetStream(h.get(), s), "cudnnSetStream");
        core::Buffer ws, padded, temp;
        if (workspace_ > 0) ws = make_buffer(p.device, static_cast<std::size_t>(workspace_), s, "cuDNN workspace");
        if (padded_) padded = make_buffer(p.device, pad_bytes_, s, "padded input");
        if (conv_to_temp_) temp = make_buffer(p.device, temp_bytes_, s, "convolution result temporary");
        std::optional<BiasGradPass> bias_grad;
        if (bias_grad_) bias_grad.emplace(p, a, s);
        const int es = static_cast<int>(dtype_size(p.dt));
        // The activation the padding applies to: src (fwd, bwd_w) or diff_src (bwd_d, an output).
        const TensorView& act = a.src;
        int64_t act_sizes[kMaxRank], act_strides[kMaxRank];
        core::spatial3_view(act, p.nsp, act_sizes, act_strides);
        void* interior = padded.data() ? static_cast<char*>(padded.data()) + pad_offset_ * es : nullptr;
        if (padded_ && p.dir != Direction::bwd_d) {
            check_cuda(cudaMemsetAsync(padded.data(), 0, pad_bytes_, s), "cudaMemsetAsync");
            launch_copy_window(interior, pad_strides_, act.data, act_strides, act_sizes, es, s);
        }

        Binding b;  // on the stack: the hot path allocates nothing of its own
        for (int slot : slots_) b.data[b.n++] = pointer(slot, a, padded.data(), temp.data());
        b.workspace = ws.data();
        executor_->execute(h.get(), b);

        if (padded_ && p.dir == Direction::bwd_d) {
            // Cropped into diff_src, or into the temporary the epilogue reads (same dense layout).
            void* to = conv_to_temp_ ? temp.data() : act.data;
            launch_copy_window(to, act_strides, interior, pad_strides_, act_sizes, es, s);
        }
        if (epilogue_) {
            const TensorView& out = core::epilogue_tensor(p, a);
            EpilogueArgs e = epilogue_args(epi_, a, out);
            e.in = conv_to_temp_ ? temp.data() : out.data;
            launch_epilogue(e, s);
        }
        if (bias_grad) bias_grad->run(s);
    }

private:
    static void* pointer(int slot, const ConvArgs& a, void* padded, void* temp) {
        switch (slot) {
            case kSrc: return a.src.data;
            case kWei: return a.weights.data;
            case kDst: return a.dst.data;
            case kBias: return a.bias.data;
            case kPaddedSrc: return padded;
            case kConvTemp: return temp;
            default: return (*a.post_ops)[static_cast<std::size_t>(slot - kOperand0)].operand.data;
        }
    }

    // The zero-padded activation (src, or diff_src for bwd_d), dense in the problem's layout, as
    // graph tensor x describes it (N, C, [1,] spatial...).
    void set_padded_geometry(const TensorSpec& x) {
        const ConvProblem& p = problem_;
        // Back to convkit's rank: drop the unit H inserted for 1D.
        std::vector<int64_t> dims = x.dims, st = x.strides;
        if (p.nsp == 1) {
            dims.erase(dims.begin() + 2);
            st.erase(st.begin() + 2);
        }
        core::spatial3_view(TensorView(nullptr, p.dt, Dims(dims), Dims(st), p.device), p.nsp, pad_sizes_, pad_strides_);
        int64_t off = 0, n = 1;
        for (int i = 0; i < p.nsp; ++i) off += p.padding_l[i] * st[static_cast<std::size_t>(2 + i)];
        for (int64_t d : dims) n *= d;
        pad_offset_ = off;  // elements from the padded origin to the interior
        pad_bytes_ = static_cast<std::size_t>(n) * dtype_size(p.dt);
    }

    std::unique_ptr<Executor> executor_;
    std::vector<int> slots_;  // what each of the graph's tensors is bound to
    int64_t workspace_ = 0;
    bool padded_, acc32_;
    int64_t pad_sizes_[kMaxRank] = {}, pad_strides_[kMaxRank] = {}, pad_offset_ = 0;
    std::size_t pad_bytes_ = 0;
    bool conv_to_temp_ = false, epilogue_ = false, bias_grad_ = false;
    std::size_t temp_bytes_ = 0;  // conv_to_temp_: the dst-sized temporary
    EpilogueArgs epi_;            // pointers filled per call
};

// The graph of `p` with the result in `r`, `padded` or natively padded, and the engine chosen for
// it; null with the reason in *why when cuDNN refuses the graph or every engine.
std::shared_ptr<const Plan> build_graph_plan(const ConvProblem& p, bool aligned, cudnnHandle_t h, Result r, bool padded,
                                             std::string* why) {
    const int64_t alignment = aligned ? 16 : static_cast<int64_t>(dtype_size(p.dt));
    GraphSpec g = conv_spec(p, padded, alignment);
    std::vector<int> slots;
    if (r == Result::fused && !fused_spec(p, &g, &slots)) return nullptr;
    if (r == Result::acc32) {
        // A transposed forward's f32 backward data: not cropped from a padded temporary (that has
        // the problem's dtype), and NHWC only: NCHW bf16/f16 -> f32 dgrad graphs built and ran,
        // and came out wrong on every element (H200, cuDNN 9.19, 3x3 stride 1 8 -> 16 channels),
        // so those go to the widened kind.
        if (p.dir == Direction::bwd_d &&
            (padded || p.src_layout != Layout::channels_last || p.dst_layout != Layout::channels_last ||
             p.wei_layout != Layout::channels_last)) {
            *why = "no f32 result for this backward data (padded or not NHWC)";
            return nullptr;
        }
        (p.dir == Direction::bwd_d ? g.x : g.y).dtype = CUDNN_DATA_FLOAT;
    }
    std::shared_ptr<GraphPlan> plan;
    try {
        Graph graph = build_graph(h, g);
        std::string variant = r == Result::fused ? "fused" : padded ? "padded" : "conv";
        if (r == Result::acc32) variant += "+acc32";
        Choice c = choose(p, g, graph.graph, variant.c_str(), h, why);
        if (!c.plan) return nullptr;
        if (r != Result::fused) {
            // x is src (fwd, bwd_w) or diff_src (bwd_d): the padded temporary either way.
            slots = {padded ? kPaddedSrc : kSrc, kWei, kDst};
            if (r == Result::acc32) slots[p.dir == Direction::bwd_w ? 1 : p.dir == Direction::bwd_d ? 0 : 2] = kConvTemp;
        }
        plan = std::make_shared<GraphPlan>(p, std::move(graph), std::move(c), g, std::move(slots), padded,
                                           r == Result::acc32);
    } catch (const Error& e) {
        if (e.kind() == ErrorKind::out_of_memory) throw;
        *why = e.what();  // the graph itself was refused: the next kind is tried
        return nullptr;
    }
    plan->finish();
    return plan;
}

// Backward weights with unequal native paddings: an f32 (TF32) engine picked for a 1D grouped
// stride-3 problem with padding 1/2 (a widened bf16 transposed convolution's) left diff_weights
// elements unwritten (H200, cuDNN 9.19), as a bf16 one did on the H100 (acc32 below): explicit first.
bool explicit_first(const ConvProblem& p) {
    return asymmetric(p) && (prefer_explicit_padding(p) || p.dir == Direction::bwd_w);
}

bool fused_applies(const ConvProblem& p) {
    GraphSpec g = conv_spec(p, false, 16);
    std::vector<int> slots;
    return fused_spec(p, &g, &slots);
}

// A 16-bit forward with bias or post-ops must round dst once, as the reference does (conv, then
// the epilogue, rounds twice: 2 ulps off, beyond bf16's 1-ulp tolerance).
bool acc32_applies(const ConvProblem& p) { return is_16bit(p.dt) && has_epilogue(p) && acc32_enabled(); }

bool always(const ConvProblem&) { return true; }

std::shared_ptr<const Plan> build_fused(const ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* why) {
    return build_graph_plan(p, aligned, h, Result::fused, false, why);
}

// An f32 result with unequal native paddings: an engine accepted bf16 backward-weights NCHW pads
// 1/0, 0/2 and left elements unwritten (H100, cuDNN 9.19): explicit padding only.
std::shared_ptr<const Plan> build_acc32(const ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* why) {
    return build_graph_plan(p, aligned, h, Result::acc32, asymmetric(p), why);
}

std::shared_ptr<const Plan> build_conv(const ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* why) {
    return build_graph_plan(p, aligned, h, Result::plain, explicit_first(p), why);
}

std::shared_ptr<const Plan> build_conv_repadded(const ConvProblem& p, bool aligned, cudnnHandle_t h, std::string* why) {
    return build_graph_plan(p, aligned, h, Result::plain, !explicit_first(p), why);
}

}  // namespace

const PlanKind fused_kind{"fused", fused_applies, build_fused};
const PlanKind acc32_kind{"acc32", acc32_applies, build_acc32};
const PlanKind conv_kind{"conv", always, build_conv};
const PlanKind conv_repadded_kind{"conv, other padding", asymmetric, build_conv_repadded};

}  // namespace convkit::cuda
