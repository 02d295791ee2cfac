// The three public convolution entry points: validate every argument (one check per line, each
// naming the tensor and the values), describe the call as a ConvProblem, pick the backend, hand
// it dense tensors (copying strided ones through temporaries) and run it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "convkit/conv.hpp"
#include "core/backend.hpp"
#include "core/checked.hpp"
#include "core/tiling.hpp"
#include "core/trace.hpp"

namespace convkit {

struct PackedWeights::Impl {
    Engine engine = Engine::ref;
    Dims sizes;
    DType dtype = DType::f32;
    Device device;
    std::shared_ptr<void> handle;  // the backend's packed weights
    Tensor plain;                  // engines that do not pack: a dense copy
};

namespace core {
namespace {

struct Names {
    const char* fn;
    const char* src;   // src or diff_src
    const char* wei;   // weights or diff_weights
    const char* dst;   // dst or diff_dst
    const char* bias;  // bias or diff_bias
};

const Names kFwd{"convolution_forward", "src", "weights", "dst", "bias"};
const Names kBwdD{"convolution_backward_data", "diff_src", "weights", "diff_dst", "bias"};
const Names kBwdW{"convolution_backward_weights", "src", "diff_weights", "diff_dst", "diff_bias"};

// `e` again with the reproducer of its problem (as it is where there is none, or it has one).
[[noreturn]] void rethrow_with(const Error& e, const std::string& repro) {
    if (repro.empty() || !e.reproducer().empty()) throw e;
    throw Error(e.kind(), e.what(), repro);
}

[[noreturn]] void fail(const Names& n, const std::string& msg) {
    throw Error(ErrorKind::invalid_argument, std::string(n.fn) + ": " + msg);
}

std::string str128(__int128 v) {
    if (v >= INT64_MIN && v <= INT64_MAX) return std::to_string(static_cast<int64_t>(v));
    std::string s;
    const bool neg = v < 0;
    unsigned __int128 u = neg ? -static_cast<unsigned __int128>(v) : static_cast<unsigned __int128>(v);
    while (u) s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(u % 10))), u /= 10;
    return neg ? "-" + s : s;
}

std::string sp_name(int i, int nsp) {
    static const char* kSp[3] = {"d", "h", "w"};
    return kSp[3 - nsp + i];
}

void check_tensor(const Names& n, const char* name, const TensorView& t, bool need_data = true) {
    if (!t.defined()) fail(n, std::string(name) + " is undefined (a TensorView with no sizes)");
    if (t.rank() < 3 || t.rank() > 5)
        fail(n, std::string(name) + " must have rank 3, 4 or 5 (N, C and 1 to 3 spatial dims), got rank " +
                    std::to_string(t.rank()) + " " + t.sizes.str());
    for (int i = 0; i < t.rank(); ++i) {
        if (t.sizes[i] < 0) fail(n, std::string(name) + " has a negative size: " + t.sizes.str());
        if (t.strides[i] < 0)
            fail(n, std::string(name) + " has a negative stride: strides " + t.strides.str() +
                        " (copy it into a tensor with non-negative strides)");
    }
    int64_t numel;
    try {
        numel = t.numel();
        (void)t.nbytes();
    } catch (const Error&) {
        fail(n, std::string(name) + " sizes " + t.sizes.str() + ": the element count overflows int64");
    }
    // The last element's offset must be an int64 too (strides are free; sizes alone were checked).
    int64_t last = 0;
    for (int i = 0; i < t.rank() && numel > 0; ++i) {
        int64_t off;
        if (__builtin_mul_overflow(t.sizes[i] - 1, t.strides[i], &off) || __builtin_add_overflow(last, off, &last))
            fail(n, std::string(name) + " sizes " + t.sizes.str() + " with strides " + t.strides.str() +
                        ": the offset of the last element overflows int64");
    }
    if (need_data && numel > 0 && !t.data)
        fail(n, std::string(name) + " has " + std::to_string(numel) + " elements but a null data pointer");
}

// Byte range [lo, hi) touched by a tensor (strides are non-negative here).
std::pair<uintptr_t, uintptr_t> span(const TensorView& t) {
    if (t.numel() == 0) return {0, 0};
    int64_t last = 0;
    for (int i = 0; i < t.rank(); ++i) last += (t.sizes[i] - 1) * t.strides[i];
    auto lo = reinterpret_cast<uintptr_t>(t.data);
    return {lo, lo + static_cast<uintptr_t>((last + 1) * static_cast<int64_t>(dtype_size(t.dtype)))};
}

bool overlaps(const TensorView& a, const TensorView& b) {
    if (!a.defined() || !b.defined()) return false;
    auto x = span(a), y = span(b);
    if (x.first == x.second || y.first == y.second) return false;
    return x.first < y.second && y.first < x.second;
}

// An output must not write one memory location twice (stride-0 or interleaved views).
bool self_overlapping(const TensorView& t) {
    int idx[Dims::max_rank];
    int r = t.rank();
    for (int i = 0; i < r; ++i) idx[i] = i;
    for (int i = 1; i < r; ++i)  // insertion sort by stride: at most 5 entries
        for (int j = i; j > 0 && t.strides[idx[j]] < t.strides[idx[j - 1]]; --j) std::swap(idx[j], idx[j - 1]);
    int64_t need = 1;
    for (int j = 0; j < r; ++j) {
        int i = idx[j];
        if (t.sizes[i] <= 1) continue;
        if (t.strides[i] < need) return true;
        // check_tensor bounds the span by int64; the next dimension's start may still not fit, and
        // then no stride of an existing tensor reaches it.
        if (__builtin_mul_overflow(t.strides[i], t.sizes[i], &need)) need = INT64_MAX;
    }
    return false;
}

int64_t param_at(const Names& n, const char* what, const Dims& list, int i, int nsp, int64_t dflt) {
    if (list.empty()) return dflt;
    if (list.rank() == 1) return list[0];
    if (list.rank() != nsp)
        fail(n, std::string(what) + " has " + std::to_string(list.rank()) + " values " + list.str() +
                    " but the convolution has " + std::to_string(nsp) +
                    " spatial dimension(s) (give 1 or " + std::to_string(nsp) + " values)");
    return list[i];
}

struct Call {
    Direction dir;
    TensorView src, wei, dst, bias;  // oneDNN slots (see ConvArgs)
    const ConvParams* params;
    const PostOps* post_ops;
    const Stream* stream;
    const std::vector<Event>* deps;
    const ConvOptions* options;
    const PackedWeights::Impl* packed = nullptr;
    bool shapes_only = false;  // prepack: src/dst lend sizes only; skip data-pointer and overlap checks
    // A transposed convolution's call (see ConvProblem::transposed), its tensors already checked
    // against the transposed shapes; `names` then says what the caller calls each slot.
    bool transposed = false;
    const Names* names = nullptr;
};

const Names& names(Direction d) {
    return d == Direction::fwd ? kFwd : d == Direction::bwd_d ? kBwdD : kBwdW;
}

const Names& names(const Call& c) { return c.names ? *c.names : names(c.dir); }

// Sizes and parameters only: shared by validate() and output_shape() so the rules cannot drift.
// `negative_pr`: the problem of a transposed convolution, whose padding_r may be negative.
ConvProblem shape_problem(const Names& n, const Dims& src, const Dims& wei, const ConvParams& prm,
                          bool negative_pr = false) {
    const int r = src.rank();
    if (r < 3 || r > 5)
        fail(n, std::string(n.src) + " must have rank 3, 4 or 5 (N, C and 1 to 3 spatial dims), got rank " +
                    std::to_string(r) + " " + src.str());
    if (wei.rank() != r)
        fail(n, std::string(n.wei) + " has rank " + std::to_string(wei.rank()) + " " + wei.str() +
                    " but " + n.src + " has rank " + std::to_string(r) + " " + src.str() +
                    " (expected [OC, IC/groups, " + (r == 3 ? "kw" : r == 4 ? "kh, kw" : "kd, kh, kw") + "])");
    ConvProblem p;
    p.nsp = r - 2;
    p.mb = src[0];
    p.ic = src[1];
    p.oc = wei[0];
    p.g = prm.groups;
    if (p.mb < 0) fail(n, std::string(n.src) + " has a negative batch size: " + src.str());
    if (p.g < 1) fail(n, "groups must be >= 1, got " + std::to_string(p.g));
    if (p.ic < 1) fail(n, std::string(n.src) + " has " + std::to_string(p.ic) + " channels " + src.str() + " (must be >= 1)");
    if (p.oc < 1) fail(n, std::string(n.wei) + " has " + std::to_string(p.oc) + " output channels " + wei.str() + " (must be >= 1)");
    if (p.ic % p.g != 0)
        fail(n, std::string(n.src) + " has " + std::to_string(p.ic) + " channels, which groups=" +
                    std::to_string(p.g) + " does not divide");
    if (p.oc % p.g != 0)
        fail(n, std::string(n.wei) + " has " + std::to_string(p.oc) + " output channels, which groups=" +
                    std::to_string(p.g) + " does not divide");
    if (wei[1] != p.ic / p.g)
        fail(n, std::string(n.wei) + " has " + std::to_string(wei[1]) +
                    " input channels per group but " + n.src + " has " + std::to_string(p.ic) +
                    " channels and groups=" + std::to_string(p.g) + " (expected " +
                    std::to_string(p.ic / p.g) + ")");
    for (int i = 0; i < p.nsp; ++i) {
        const std::string d = sp_name(i, p.nsp);
        p.in[i] = src[2 + i];
        p.k[i] = wei[2 + i];
        p.stride[i] = param_at(n, "stride", prm.stride, i, p.nsp, 1);
        p.padding_l[i] = param_at(n, "padding_l", prm.padding_l, i, p.nsp, 0);
        p.padding_r[i] = param_at(n, "padding_r", prm.padding_r, i, p.nsp, 0);
        p.dilation[i] = param_at(n, "dilation", prm.dilation, i, p.nsp, 1);
        if (p.in[i] < 1) fail(n, std::string(n.src) + " spatial size " + d + " is " + std::to_string(p.in[i]) + " in " + src.str() + " (must be >= 1)");
        if (p.k[i] < 1) fail(n, std::string(n.wei) + " kernel size k" + d + " is " + std::to_string(p.k[i]) + " in " + wei.str() + " (must be >= 1)");
        if (p.stride[i] < 1) fail(n, "stride " + d + " must be >= 1, got " + std::to_string(p.stride[i]));
        if (p.dilation[i] < 1) fail(n, "dilation " + d + " must be >= 1 (1 = dense), got " + std::to_string(p.dilation[i]));
        if (p.padding_l[i] < 0) fail(n, "padding_l " + d + " must be >= 0, got " + std::to_string(p.padding_l[i]));
        if (p.padding_r[i] < 0 && !negative_pr)
            fail(n, "padding_r " + d + " must be >= 0, got " + std::to_string(p.padding_r[i]));
        // In 128 bits: the padded size or the dilated kernel may pass int64 while the output does
        // not (a huge padding and kernel), and the answer is then an ordinary size.
        const __int128 padded = static_cast<__int128>(p.in[i]) + p.padding_l[i] + p.padding_r[i];
        const __int128 ext = static_cast<__int128>(p.dilation[i]) * (p.k[i] - 1) + 1;
        if (padded < ext)
            fail(n, std::string(n.src) + " size " + d + " with padding (" + std::to_string(p.in[i]) + " + " +
                        std::to_string(p.padding_l[i]) + " + " + std::to_string(p.padding_r[i]) + " = " +
                        str128(padded) + ") is smaller than the dilated kernel (" + std::to_string(p.dilation[i]) +
                        " * (" + std::to_string(p.k[i]) + " - 1) + 1 = " + str128(ext) + ")");
        const __int128 out = (padded - ext) / p.stride[i] + 1;
        if (out > INT64_MAX)
            fail(n, "dst size " + d + " overflows int64 ((" + str128(padded) + " - " + str128(ext) + ") / " +
                        std::to_string(p.stride[i]) + " + 1)");
        p.out[i] = static_cast<int64_t>(out);
    }
    return p;
}

// Where validation failed, for the reproducer: in the sizes and parameters (a descriptor with
// the same values fails alike), in a post-op parameter (`problem` then holds the problem so far),
// or in the caller's buffers (no descriptor has those; no reproducer).
struct Validation {
    enum Stage { buffers, shapes, post_op_params } stage = buffers;
    std::optional<ConvProblem> problem;  // set only on failure: a call that validates pays nothing
};

ConvProblem validate(const Call& c, Validation* v = nullptr) {
    const Names& n = names(c);
    check_tensor(n, n.src, c.src, !c.shapes_only);
    check_tensor(n, n.wei, c.wei);
    check_tensor(n, n.dst, c.dst, !c.shapes_only);
    const int r = c.src.rank();
    if (v) v->stage = Validation::shapes;
    ConvProblem p = shape_problem(n, c.src.sizes, c.wei.sizes, *c.params, c.transposed);
    if (v) v->stage = Validation::buffers;
    // Where bias and post-ops go: dst, or diff_src of a transposed convolution's forward.
    const bool epi_on_src = c.transposed && c.dir == Direction::bwd_d;
    const bool bias_of_src = c.transposed && c.dir != Direction::fwd;
    if (c.dst.rank() != r)
        fail(n, std::string(n.dst) + " has rank " + std::to_string(c.dst.rank()) + " " + c.dst.sizes.str() +
                    " but " + n.src + " has rank " + std::to_string(r) + " " + c.src.sizes.str());
    const DType dt = c.src.dtype;
    if (c.wei.dtype != dt)
        fail(n, std::string(n.wei) + " has dtype " + to_string(c.wei.dtype) + " but " + n.src +
                    " has dtype " + to_string(dt) + " (all tensors must share one dtype)");
    if (c.dst.dtype != dt)
        fail(n, std::string(n.dst) + " has dtype " + to_string(c.dst.dtype) + " but " + n.src +
                    " has dtype " + to_string(dt) + " (all tensors must share one dtype)");
    const Device dev = c.src.device;
    if (c.wei.device != dev)
        fail(n, std::string(n.wei) + " is on " + c.wei.device.str() + " but " + n.src + " is on " + dev.str());
    if (c.dst.device != dev)
        fail(n, std::string(n.dst) + " is on " + c.dst.device.str() + " but " + n.src + " is on " + dev.str());
    if (!c.stream->is_default_cpu() && c.stream->device() != dev)
        fail(n, "the stream is on " + c.stream->device().str() + " but the tensors are on " + dev.str());
    p.dir = c.dir;
    p.dt = dt;
    p.device = dev;
    p.transposed = c.transposed && c.dir != Direction::fwd;
    if (c.dst.sizes[0] != p.mb)
        fail(n, std::string(n.dst) + " has batch " + std::to_string(c.dst.sizes[0]) + " but " + n.src +
                    " has batch " + std::to_string(p.mb));
    if (c.dst.sizes[1] != p.oc)
        fail(n, std::string(n.dst) + " has " + std::to_string(c.dst.sizes[1]) + " channels but " + n.wei +
                    " has " + std::to_string(p.oc) + " output channels");
    Dims expect = p.dst_dims();
    if (c.dst.sizes != expect)
        fail(n, std::string(n.dst) + " has sizes " + c.dst.sizes.str() + " but the convolution of " + n.src + " " +
                    c.src.sizes.str() + " with " + n.wei + " " + c.wei.sizes.str() + " produces " + expect.str());
    if (c.bias.defined()) {
        const int64_t bias_c = bias_of_src ? p.ic : p.oc;
        if (c.bias.rank() != 1 || c.bias.sizes[0] != bias_c)
            fail(n, std::string(n.bias) + " has sizes " + c.bias.sizes.str() + " but must be [" + std::to_string(bias_c) +
                        "] (one value per output channel)");
        if (c.bias.strides[0] < 0) fail(n, std::string(n.bias) + " has a negative stride");
        if (!c.bias.data) fail(n, std::string(n.bias) + " has " + std::to_string(bias_c) + " elements but a null data pointer");
        if (c.bias.dtype != dt)
            fail(n, std::string(n.bias) + " has dtype " + to_string(c.bias.dtype) + " but " + n.src +
                        " has dtype " + to_string(dt));
        if (c.bias.device != dev)
            fail(n, std::string(n.bias) + " is on " + c.bias.device.str() + " but " + n.src + " is on " + dev.str());
        p.with_bias = true;
    }
    // Outputs: no self-overlap, no overlap with any input.
    if (c.shapes_only) goto post_ops;
    {
    const TensorView* out1 = c.dir == Direction::fwd ? &c.dst : c.dir == Direction::bwd_d ? &c.src : &c.wei;
    const char* out1_name = c.dir == Direction::fwd ? n.dst : c.dir == Direction::bwd_d ? n.src : n.wei;
    if (self_overlapping(*out1))
        fail(n, std::string(out1_name) + " has strides " + out1->strides.str() + " under which elements overlap; outputs must not");
    // At most three inputs: a fixed array keeps the cached-call path free of heap allocation.
    std::pair<const TensorView*, const char*> inputs[3] = {};
    if (c.dir == Direction::fwd) {
        inputs[0] = {&c.src, n.src};
        // Prepacked weights live in the backend's own block: the view's pointer is the handle,
        // not memory of the weights' size, so it cannot be checked against dst (a dst allocated
        // right after the small handle was refused as overlapping it).
        if (!c.packed) inputs[1] = {&c.wei, n.wei};
        inputs[2] = {&c.bias, n.bias};
    } else if (c.dir == Direction::bwd_d) {
        inputs[0] = {&c.dst, n.dst};
        inputs[1] = {&c.wei, n.wei};
        if (epi_on_src) inputs[2] = {&c.bias, n.bias};
    } else {
        inputs[0] = {&c.dst, n.dst};
        inputs[1] = {&c.src, n.src};
    }
    for (auto& in : inputs)
        if (in.first && overlaps(*out1, *in.first))
            fail(n, std::string(out1_name) + " overlaps " + in.second + " in memory; convkit does not compute in place");
    if (c.dir == Direction::bwd_w && c.bias.defined()) {
        if (self_overlapping(c.bias)) fail(n, "diff_bias has overlapping strides");
        for (auto& in : inputs)
            if (in.first && overlaps(c.bias, *in.first))
                fail(n, std::string("diff_bias overlaps ") + in.second + " in memory");
        if (overlaps(c.bias, c.wei)) fail(n, "diff_bias overlaps diff_weights in memory");
    }
    }
post_ops:
    // Post-ops.
    if (c.post_ops && !c.post_ops->empty()) {
        const TensorView& out = epi_on_src ? c.src : c.dst;
        const char* out_name = epi_on_src ? n.src : n.dst;
        const Dims out_dims = epi_on_src ? p.src_dims() : p.dst_dims();
        if (c.dir != Direction::fwd && !epi_on_src) fail(n, "post-ops apply to the forward direction only");
        if (c.post_ops->size() > PostOps::max_ops)
            fail(n, "at most " + std::to_string(PostOps::max_ops) + " post-ops are supported");
        int i = 0;
        for (const PostOp& op : *c.post_ops) {
            PostOpDesc& pd = p.post_ops[i];
            pd.kind = op.kind;
            pd.alg = op.kind == PostOp::Kind::binary ? static_cast<int>(op.binary) : static_cast<int>(op.eltwise);
            if (op.kind == PostOp::Kind::eltwise) {
                pd.alpha = op.alpha;
                pd.beta = op.beta;
            }
            if (op.kind == PostOp::Kind::sum) pd.scale = op.scale;
            // oneDNN refuses non-finite post-op parameters (a backend error deep in the call); they
            // are refused here, for every engine alike, with the value.
            // Refused here for every engine alike: non-finite parameters (oneDNN refuses them deep in
            // the call) and clip bounds out of order (as the text parser does).
            const bool bad_clip = op.kind == PostOp::Kind::eltwise && op.eltwise == EltwiseAlg::clip && pd.alpha > pd.beta;
            const bool non_finite = !std::isfinite(pd.alpha) || !std::isfinite(pd.beta) || !std::isfinite(pd.scale);
            if (non_finite || bad_clip) {
                if (v) {
                    v->stage = Validation::post_op_params;
                    v->problem = p;
                    v->problem->n_post_ops = i + 1;
                    v->problem->src_layout = c.src.layout();
                    v->problem->wei_layout = c.wei.layout();
                    v->problem->dst_layout = c.dst.layout();
                }
                if (non_finite)
                    fail(n, "post-op " + std::to_string(i) + " (" + op.str() + ") has a non-finite parameter " +
                                "(alpha, beta and scale must be finite)");
                fail(n, "post-op " + std::to_string(i) + " (" + op.str() + ") clips to [" + std::to_string(pd.alpha) + ", " +
                            std::to_string(pd.beta) + "]: the lower bound must not exceed the upper");
            }
            if (op.kind == PostOp::Kind::binary) {
                const std::string nm = "post-op " + std::to_string(i) + " (" + op.str() + ") operand";
                const TensorView& t = op.operand;
                if (!t.defined()) fail(n, nm + " is undefined");
                check_tensor(n, nm.c_str(), t, !c.shapes_only);
                if (t.rank() != r)
                    fail(n, nm + " has sizes " + t.sizes.str() + " but must have " + std::string(out_name) + "'s rank " + std::to_string(r) +
                                " (each dimension 1 or equal to " + std::string(out_name) + " " + out_dims.str() + ")");
                for (int d = 0; d < r; ++d)
                    if (t.sizes[d] != 1 && t.sizes[d] != out_dims[d])
                        fail(n, nm + " has sizes " + t.sizes.str() + " which do not broadcast to " + std::string(out_name) + " " + out_dims.str() +
                                    " (dimension " + std::to_string(d) + " is " + std::to_string(t.sizes[d]) +
                                    ", expected 1 or " + std::to_string(out_dims[d]) + ")");
                if (t.dtype != dt)
                    fail(n, nm + " has dtype " + to_string(t.dtype) + " but " + std::string(out_name) + " has dtype " + to_string(dt));
                if (t.device != dev) fail(n, nm + " is on " + t.device.str() + " but " + std::string(out_name) + " is on " + dev.str());
                if (!c.shapes_only && overlaps(out, t)) fail(n, nm + " overlaps " + out_name + " in memory");
                pd.operand_sizes = t.sizes;
                pd.operand_layout = t.layout();
            }
            ++i;
        }
        p.n_post_ops = i;
    }
    p.src_layout = c.src.layout();
    p.wei_layout = c.wei.layout();
    p.dst_layout = c.dst.layout();
    p.deterministic = c.options->deterministic.value_or(convkit::deterministic());
    p.allow_tf32 = convkit::allow_tf32();
    return p;
}

Backend* pick(const ConvProblem& p, Engine requested, const char* fn) {
    if (requested != Engine::automatic) {
        Backend* b = find_backend(requested);
        if (!b)
            throw Error(ErrorKind::unsupported, std::string(fn) + ": engine '" + to_string(requested) +
                                                    "' is not compiled into this build of convkit");
        if (b->device_type() != p.device.type)
            throw Error(ErrorKind::invalid_argument, std::string(fn) + ": engine '" + to_string(requested) +
                                                         "' does not run tensors on " + p.device.str());
        std::string why = b->check(p);
        if (!why.empty())
            throw Error(ErrorKind::unsupported, std::string(fn) + ": engine '" + to_string(requested) +
                                                    "' does not support " + p.str() + ": " + why);
        return b;
    }
    std::string reasons;
    for (Backend* b : backends()) {
        if (b->device_type() != p.device.type) continue;
        std::string why = b->check(p);
        if (why.empty()) return b;
        reasons += std::string(" ") + to_string(b->engine()) + ": " + why + ";";
    }
    throw Error(ErrorKind::unsupported, std::string(fn) + ": no engine supports " + p.str() + ":" + reasons);
}

// A host temporary for the core's own copies; the allocator's std::bad_alloc becomes
// out_of_memory naming the call, as the backends' failures do.
Tensor temporary(const char* fn, DType dt, const Dims& sizes, Device device) {
    try {
        return Tensor(dt, sizes, Layout::channels_first, device);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorKind::out_of_memory, std::string(fn) + ": allocating a temporary of " + sizes.str() + " " +
                                                  to_string(dt) + " on " + device.str() + " failed: out of host memory (std::bad_alloc)");
    }
}

// Zeros for each defined, non-empty output, all allocated before any is written: a failed
// allocation leaves every output as it was.
void zero_fill(const char* fn, std::initializer_list<const TensorView*> outs) {
    std::vector<std::pair<const TensorView*, Tensor>> zeros;
    for (const TensorView* t : outs)
        if (t->defined() && t->numel() > 0) {
            zeros.emplace_back(t, temporary(fn, t->dtype, t->sizes, Device::cpu()));
            std::memset(zeros.back().second.data(), 0, zeros.back().second.nbytes());  // +0 in every dtype
        }
    for (auto& z : zeros) copy(*z.first, z.second.view());
}

// Level 2 of the trace: which engine takes the problem, and why that one.
void trace_dispatch(const ConvProblem& p, const trace::CallDesc& td, const Call& c, const Backend* chosen) {
    std::string why;
    if (c.packed) {
        why = "the weights were packed for it";
    } else if (c.options->engine != Engine::automatic) {
        why = "asked for";
    } else {
        why = "the first engine that runs the problem";
        for (Backend* o : backends()) {
            if (o == chosen) break;
            if (o->device_type() == p.device.type) why += std::string("; ") + to_string(o->engine()) + ": " + o->check(p);
        }
    }
    trace::dispatch_line(p, td, why);
}

Event run_problem(const Call& c, ConvProblem& p, trace::CallDesc& td, int tl);

// Tiles of the last call on this thread (0: it ran whole), for the trace.
thread_local std::size_t t_tiles = 0;

// The backend runs the problem whole, or as tiles when a tensor is larger than it takes.
Event execute(Backend* b, const ConvProblem& p, const ConvArgs& a, const Stream& s, const std::vector<Event>& deps,
              const char* fn) {
    t_tiles = 0;
    const int64_t limit = tile_limit(*b, p);
    if (limit <= 0 || largest_activation(p) <= limit) return b->execute(p, a, s, deps);
    const std::string head = std::string(fn) + ": engine '" + to_string(b->engine()) + "' runs tensors of at most " +
                             std::to_string(limit) + " elements, and ";
    if (p.packed_weights)
        throw Error(ErrorKind::unsupported, head + "prepacked weights cannot run as tiles of " + p.str() +
                                                "; pass the weights tensor");
    TilePlan tp = plan_tiles(p, limit);
    if (tp.tiles.empty()) throw Error(ErrorKind::unsupported, head + "cannot cut " + p.str() + ": " + tp.why_not);
    t_tiles = tp.tiles.size();
    return run_tiled(b, p, a, s, deps, tp, fn);
}

// validate(), its errors given the reproducer their stage allows.
ConvProblem validated(const Call& c, const trace::CallDesc& td) {
    Validation v;
    try {
        return validate(c, &v);
    } catch (const Error& e) {
        // Transposed calls checked their own shapes in their own terms already (run_transposed).
        std::string repro;
        if (v.stage == Validation::shapes && !c.transposed)
            repro = trace::raw_reproducer(c.src.sizes, c.wei.sizes, c.params->stride, c.params->padding_l,
                                          c.params->padding_r, c.params->dilation, Dims(), c.params->groups, false,
                                          c.src.dtype, c.src.device.is_cuda() ? Engine::cuda : td.engine);
        else if (v.stage == Validation::post_op_params && v.problem)
            repro = trace::reproducer(*v.problem, td);
        if (repro.empty()) throw;
        core::rethrow_with(e, repro);
    }
}

Event run(const Call& c) {
    t_tiles = 0;
    trace::CallDesc td;
    td.transposed = c.transposed;
    td.engine = c.packed ? c.packed->engine : c.options->engine;
    td.prepack = c.packed != nullptr;
    ConvProblem p = validated(c, td);
    // Tracing costs this load and branch when off.
    const int tl = trace::level();
    if (tl == 0) {
        try {
            return run_problem(c, p, td, 0);
        } catch (const Error& e) {
            // invalid_argument past validation is the caller's setup (options against tensors,
            // packed weights, the allocator's memory): no problem to reproduce.
            if (e.kind() == ErrorKind::invalid_argument) throw;
            core::rethrow_with(e, trace::reproducer(p, td));
        }
    }
    if (tl >= 2) trace::take_lookups();  // this call's lookups only
    const double t0 = trace::now_ms();
    Event done;
    try {
        done = run_problem(c, p, td, tl);
        done.wait();
    } catch (const Error& e) {
        if (e.kind() == ErrorKind::invalid_argument) throw;
        core::rethrow_with(e, trace::reproducer(p, td));
    }
    const double ms = trace::now_ms() - t0;
    Backend* b = find_backend(td.engine);
    std::string impl = p.mb == 0 ? "none:empty_batch" : b ? b->trace_impl(p) : "?";
    if (t_tiles > 0 && p.mb > 0) impl += "+tiles:" + std::to_string(t_tiles);
    if (tl >= 2) trace::create_line(p, td, impl, trace::take_lookups());
    trace::exec_line(p, td, impl, ms);
    return done;
}

// The call after validation: the backend, dense tensors, the work. `td.engine` becomes the
// engine chosen (for the trace and the reproducer of an error).
Event run_problem(const Call& c, ConvProblem& p, trace::CallDesc& td, int tl) {
    const Names& n = names(c);
    const bool epi_on_src = p.transposed && c.dir == Direction::bwd_d;
    Stream stream = *c.stream;
    if (p.device.is_cuda() && stream.is_default_cpu()) {
        DeviceRuntime* rt = runtime(DeviceType::cuda);
        if (!rt) throw Error(ErrorKind::unsupported, std::string(n.fn) + ": this build of convkit has no CUDA backend");
        stream = rt->default_stream(p.device.index);
    }
    Backend* b = nullptr;
    if (c.packed) {
        if (c.options->engine != Engine::automatic && c.options->engine != c.packed->engine)
            throw Error(ErrorKind::invalid_argument, std::string(n.fn) + ": the weights were packed for engine '" +
                                                         to_string(c.packed->engine) + "' but engine '" +
                                                         to_string(c.options->engine) + "' was asked for");
        if (c.packed->device != p.device)
            fail(n, "the packed weights are on " + c.packed->device.str() + " but src is on " + p.device.str());
        p.packed_weights = true;
        p.wei_layout = Layout::channels_first;
        b = find_backend(c.packed->engine);
    } else {
        b = pick(p, c.options->engine, n.fn);
    }
    td.engine = b->engine();
    if (tl >= 2) trace_dispatch(p, td, c, b);
    if (p.mb == 0) {
        // Nothing to compute; a weight gradient over an empty batch is zero.
        for (const auto& e : *c.deps) stream.wait(e);
        if (c.dir == Direction::bwd_w) {
            stream.synchronize();
            zero_fill(n.fn, {&c.wei, &c.bias});
        }
        return stream.record();
    }
    ConvArgs a;
    a.src = c.src;
    a.weights = c.wei;
    a.bias = c.bias;
    a.dst = c.dst;
    a.post_ops = c.post_ops;
    if (c.packed) a.packed = c.packed->handle.get();
    if (!b->needs_dense() ||
        (p.src_layout != Layout::strided && p.wei_layout != Layout::strided && p.dst_layout != Layout::strided &&
         (!c.bias.defined() || c.bias.strides[0] == 1 || c.bias.sizes[0] == 1)))
        return execute(b, p, a, stream, *c.deps, n.fn);

    // Strided tensors: one dense channels-first copy each, documented in the README; outputs are
    // copied back after the call (synchronously: the temporaries must outlive the work).
    // The copies below run on the host: device tensors must come dense.
    if (p.device.type != DeviceType::cpu)
        throw Error(ErrorKind::unsupported, std::string(n.fn) + ": strided (non-dense) tensors on " + p.device.str() +
                                                            " are not supported; pass channels-first or channels-last tensors");
    std::vector<Tensor> temps;
    auto densify = [&](TensorView& v, bool is_output, bool read_output) {
        if (!v.defined() || v.is_dense()) return;
        temps.push_back(temporary(n.fn, v.dtype, v.sizes, v.device));
        TensorView orig = v;
        v = temps.back().view();
        if (!is_output || read_output) copy(v, orig);
    };
    TensorView osrc = a.src, owei = a.weights, odst = a.dst, obias = a.bias;
    if (a.bias.defined() && a.bias.strides[0] != 1 && a.bias.sizes[0] != 1) {
        temps.push_back(temporary(n.fn, a.bias.dtype, a.bias.sizes, a.bias.device));
        TensorView orig = a.bias;
        a.bias = temps.back().view();
        if (c.dir == Direction::fwd || epi_on_src) copy(a.bias, orig);
    }
    densify(a.src, c.dir == Direction::bwd_d, epi_on_src && p.has_sum());
    densify(a.weights, c.dir == Direction::bwd_w, false);
    densify(a.dst, c.dir == Direction::fwd, c.dir == Direction::fwd && p.has_sum());
    p.src_layout = a.src.layout();
    p.wei_layout = a.weights.layout();
    p.dst_layout = a.dst.layout();
    Event e = execute(b, p, a, stream, *c.deps, n.fn);
    e.wait();
    if (c.dir == Direction::fwd && !odst.is_dense()) copy(odst, a.dst);
    if (c.dir == Direction::bwd_d && !osrc.is_dense()) copy(osrc, a.src);
    if (c.dir == Direction::bwd_w && !owei.is_dense()) copy(owei, a.weights);
    if (c.dir == Direction::bwd_w && obias.defined() && obias.data != a.bias.data) copy(obias, a.bias);
    return Event();
}


// ---- Transposed convolution ----

// In the transposed call's own terms (slot src = its input, dst = its output) ...
const Names kTFwd{"conv_transpose_forward", "src", "weights", "dst", "bias"};
const Names kTBwdD{"conv_transpose_backward_data", "diff_src", "weights", "diff_dst", "bias"};
const Names kTBwdW{"conv_transpose_backward_weights", "src", "diff_weights", "diff_dst", "diff_bias"};
// ... and as the convolution's slots see them (slot src = the transposed output side).
const Names kTFwdAsConv{"conv_transpose_forward", "dst", "weights", "src", "bias"};
const Names kTBwdDAsConv{"conv_transpose_backward_data", "diff_dst", "weights", "diff_src", "bias"};
const Names kTBwdWAsConv{"conv_transpose_backward_weights", "diff_dst", "diff_weights", "src", "diff_bias"};

// The transposed convolution's own shapes, checked in its own terms (PyTorch's rules and names),
// and the convolution it is the data gradient of: that convolution's input is the transposed
// output (dst), its output the transposed input (src).
struct TransposedShape {
    Dims dst;           // [N, OC, out...]
    ConvParams conv;    // the convolution's params (padding_r may be negative)
};

TransposedShape transposed_shape(const Names& n, const Dims& src, const Dims& wei, const ConvTransposeParams& prm) {
    const int r = src.rank();
    if (r < 3 || r > 5)
        fail(n, std::string(n.src) + " must have rank 3, 4 or 5 (N, C and 1 to 3 spatial dims), got rank " +
                    std::to_string(r) + " " + src.str());
    if (wei.rank() != r)
        fail(n, std::string(n.wei) + " has rank " + std::to_string(wei.rank()) + " " + wei.str() + " but " + n.src +
                    " has rank " + std::to_string(r) + " " + src.str() + " (expected [IC, OC/groups, " +
                    (r == 3 ? "kw" : r == 4 ? "kh, kw" : "kd, kh, kw") + "], PyTorch's transposed layout)");
    const int nsp = r - 2;
    const int64_t g = prm.groups;
    if (src[0] < 0) fail(n, std::string(n.src) + " has a negative batch size: " + src.str());
    if (g < 1) fail(n, "groups must be >= 1, got " + std::to_string(g));
    if (src[1] < 1) fail(n, std::string(n.src) + " has " + std::to_string(src[1]) + " channels " + src.str() + " (must be >= 1)");
    if (src[1] % g != 0)
        fail(n, std::string(n.src) + " has " + std::to_string(src[1]) + " channels, which groups=" + std::to_string(g) +
                    " does not divide");
    if (wei[0] != src[1])
        fail(n, std::string(n.wei) + " has " + std::to_string(wei[0]) + " input channels (dim 0 of " + wei.str() +
                    ", the transposed layout [IC, OC/groups, k...]) but " + n.src + " has " + std::to_string(src[1]) +
                    " channels " + src.str());
    if (wei[1] < 1)
        fail(n, std::string(n.wei) + " has " + std::to_string(wei[1]) + " output channels per group (dim 1 of " +
                    wei.str() + ") (must be >= 1)");
    const int64_t oc = checked_mul(wei[1], g, "output channels", n.fn);
    auto at = [&](const char* what, const Dims& list, int i, int64_t dflt) { return param_at(n, what, list, i, nsp, dflt); };
    TransposedShape t;
    t.dst = Dims{src[0], oc};
    t.conv.groups = g;
    Dims st, pl, pr, dil;
    for (int i = 0; i < nsp; ++i) {
        const std::string d = sp_name(i, nsp);
        const int64_t in = src[2 + i], k = wei[2 + i];
        const int64_t s = at("stride", prm.stride, i, 1), l = at("padding_l", prm.padding_l, i, 0),
                      rr = at("padding_r", prm.padding_r, i, 0), dl = at("dilation", prm.dilation, i, 1),
                      op = at("output_padding", prm.output_padding, i, 0);
        if (in < 1) fail(n, std::string(n.src) + " spatial size " + d + " is " + std::to_string(in) + " in " + src.str() + " (must be >= 1)");
        if (k < 1) fail(n, std::string(n.wei) + " kernel size k" + d + " is " + std::to_string(k) + " in " + wei.str() + " (must be >= 1)");
        if (s < 1) fail(n, "stride " + d + " must be >= 1, got " + std::to_string(s));
        if (dl < 1) fail(n, "dilation " + d + " must be >= 1 (1 = dense), got " + std::to_string(dl));
        if (l < 0) fail(n, "padding_l " + d + " must be >= 0, got " + std::to_string(l));
        if (rr < 0) fail(n, "padding_r " + d + " must be >= 0, got " + std::to_string(rr));
        if (op < 0) fail(n, "output_padding " + d + " must be >= 0, got " + std::to_string(op));
        if (op >= s && op >= dl)
            fail(n, "output_padding " + d + " (" + std::to_string(op) + ") must be smaller than either stride (" +
                        std::to_string(s) + ") or dilation (" + std::to_string(dl) + ")");
        // out = (in - 1) * stride - padding_l - padding_r + dilation * (k - 1) + output_padding + 1
        const int64_t grown = checked_add(checked_mul(in - 1, s, "output size", n.fn),
                                          checked_add(checked_mul(dl, k - 1, "dilated kernel", n.fn), op + 1, "output size", n.fn),
                                          "output size", n.fn);
        int64_t out;
        if (__builtin_sub_overflow(grown, l, &out) || __builtin_sub_overflow(out, rr, &out))
            fail(n, "output size " + d + " overflows int64 ((" + std::to_string(in) + " - 1) * " + std::to_string(s) +
                        " - " + std::to_string(l) + " - " + std::to_string(rr) + " + ...)");
        if (out < 1)
            fail(n, std::string(n.dst) + " size " + d + " would be " + std::to_string(out) + " = (" + std::to_string(in) +
                        " - 1) * " + std::to_string(s) + " - " + std::to_string(l) + " - " + std::to_string(rr) + " + " +
                        std::to_string(dl) + " * (" + std::to_string(k) + " - 1) + " + std::to_string(op) +
                        " + 1 (the padding removes more than the transposed convolution produces)");
        t.dst.push_back(out);
        // The convolution over `out` positions must give back `in`: its post-padding may be
        // anything in [padding_r - output_padding, padding_r - output_padding + stride - 1]; the
        // given padding_r where that range holds it (output_padding < stride), else the top.
        st.push_back(s);
        pl.push_back(l);
        pr.push_back(op < s ? rr : rr - op + s - 1);
        dil.push_back(dl);
    }
    t.conv.stride = st;
    t.conv.padding_l = pl;
    t.conv.padding_r = pr;
    t.conv.dilation = dil;
    return t;
}

void expect_sizes(const Names& n, const char* name, const TensorView& t, const Dims& want, const char* what) {
    if (t.sizes != want)
        fail(n, std::string(name) + " has sizes " + t.sizes.str() + " but " + what + " " + want.str());
}

// The three transposed directions as their convolutions (slots as in ConvArgs, see Call):
//   forward          = the convolution's bwd_d: diff_src <- dst, diff_dst <- src, + bias/post-ops
//   backward data    = the convolution's fwd:   src <- diff_dst, dst <- diff_src
//   backward weights = the convolution's bwd_w: src <- diff_dst, diff_dst <- src, diff_bias of src
Event run_transposed(Direction tdir, const TensorView& src, const TensorView& wei, const TensorView& dst,
                     const TensorView& bias, const ConvTransposeParams& prm, const PostOps* post_ops,
                     const Stream& stream, const std::vector<Event>& deps, const ConvOptions& options) {
    const Names& n = tdir == Direction::fwd ? kTFwd : tdir == Direction::bwd_d ? kTBwdD : kTBwdW;
    check_tensor(n, n.src, src);
    check_tensor(n, n.wei, wei);
    check_tensor(n, n.dst, dst);
    const Dims wei_sizes = wei.sizes;
    TransposedShape t;
    try {
        t = transposed_shape(n, src.sizes, wei_sizes, prm);
    } catch (const Error& e) {
        const std::string repro = trace::raw_reproducer(src.sizes, wei_sizes, prm.stride, prm.padding_l, prm.padding_r,
                                                        prm.dilation, prm.output_padding, prm.groups, true, src.dtype,
                                                        src.device.is_cuda() ? Engine::cuda : options.engine);
        if (repro.empty()) throw;
        core::rethrow_with(e, repro);
    }
    if (dst.rank() != src.rank())
        fail(n, std::string(n.dst) + " has rank " + std::to_string(dst.rank()) + " " + dst.sizes.str() + " but " + n.src +
                    " has rank " + std::to_string(src.rank()) + " " + src.sizes.str());
    expect_sizes(n, n.dst, dst, t.dst, (std::string("the transposed convolution of ") + n.src + " " + src.sizes.str() +
                                        " with " + n.wei + " " + wei_sizes.str() + " produces").c_str());
    if (bias.defined() && (bias.rank() != 1 || bias.sizes[0] != t.dst[1]))
        fail(n, std::string(n.bias) + " has sizes " + bias.sizes.str() + " but must be [" + std::to_string(t.dst[1]) +
                    "] (one value per output channel)");
    Call c{tdir == Direction::fwd ? Direction::bwd_d : tdir == Direction::bwd_d ? Direction::fwd : Direction::bwd_w,
           dst, wei, src, bias, &t.conv, post_ops, &stream, &deps, &options};
    c.transposed = true;
    c.names = tdir == Direction::fwd ? &kTFwdAsConv : tdir == Direction::bwd_d ? &kTBwdDAsConv : &kTBwdWAsConv;
    return run(c);
}
}  // namespace
}  // namespace core

Dims output_shape(const Dims& src_sizes, const Dims& weights_sizes, const ConvParams& params) {
    const core::Names n{"output_shape", "src", "weights", "dst", "bias"};
    try {
        return core::shape_problem(n, src_sizes, weights_sizes, params).dst_dims();
    } catch (const Error& e) {
        // Sizes only: the descriptor fails alike in any dtype and on any engine.
        const std::string repro =
                core::trace::raw_reproducer(src_sizes, weights_sizes, params.stride, params.padding_l, params.padding_r,
                                            params.dilation, Dims(), params.groups, false, DType::f32, Engine::automatic);
        if (repro.empty()) throw;
        core::rethrow_with(e, repro);
    }
}

Event convolution_forward(const TensorView& dst, const TensorView& src, const TensorView& weights,
                          const TensorView& bias, const ConvParams& params, const PostOps& post_ops,
                          const Stream& stream, const std::vector<Event>& deps, const ConvOptions& options) {
    core::Call c{core::Direction::fwd, src, weights, dst, bias, &params, &post_ops, &stream, &deps, &options};
    return core::run(c);
}

const Dims& PackedWeights::sizes() const { return impl_->sizes; }
DType PackedWeights::dtype() const { return impl_->dtype; }
Engine PackedWeights::engine() const { return impl_->engine; }

PackedWeights prepack_weights(const TensorView& weights, const TensorView& src, const ConvParams& params,
                              const PostOps& post_ops, const ConvOptions& options) {
    const core::Names n{"prepack_weights", "src", "weights", "dst", "bias"};
    core::check_tensor(n, "weights", weights);
    core::check_tensor(n, "src", src, false);  // before its layout is asked (sizes that overflow)
    Dims dst_sizes = core::shape_problem(n, src.sizes, weights.sizes, params).dst_dims();
    Layout dl = src.is_dense() ? src.layout() : Layout::channels_first;
    // The dense strides of dst (sizes 0 count as 1 there) must be int64s.
    int64_t span = 1;
    for (int64_t v : dst_sizes) span = core::checked_mul(span, std::max<int64_t>(v, 1), "dst size", n.fn);
    (void)span;
    TensorView dst = TensorView::with_layout(nullptr, src.dtype, dst_sizes, dl, src.device);
    Stream stream;
    std::vector<Event> deps;
    core::Call c{core::Direction::fwd, src, weights, dst, TensorView(), &params, &post_ops, &stream, &deps, &options};
    c.shapes_only = true;
    core::ConvProblem p = core::validate(c);
    core::trace::CallDesc td;
    td.engine = options.engine;
    td.prepack = true;
    auto impl = std::make_shared<PackedWeights::Impl>();
    try {
        core::Backend* b = core::pick(p, options.engine, n.fn);
        td.engine = b->engine();
        impl->engine = b->engine();
        if (p.wei_layout != Layout::strided) impl->handle = b->prepack(p, weights);
    } catch (const Error& e) {
        if (e.kind() == ErrorKind::invalid_argument) throw;
        core::rethrow_with(e, core::trace::reproducer(p, td));
    }
    impl->sizes = weights.sizes;
    impl->dtype = weights.dtype;
    impl->device = weights.device;
    if (!impl->handle) {
        // No packing in this engine: keep a dense copy, so the caller may free its weights.
        try {
            impl->plain = Tensor(weights.dtype, weights.sizes,
                                 weights.is_dense() ? weights.layout() : Layout::channels_first, weights.device);
        } catch (const std::bad_alloc&) {
            throw Error(ErrorKind::out_of_memory, std::string(n.fn) + ": allocating the dense copy of the weights " +
                                                      weights.sizes.str() + " failed: out of host memory (std::bad_alloc)");
        }
        copy(impl->plain.view(), weights);
    }
    return PackedWeights(impl);
}

Event convolution_forward(const TensorView& dst, const TensorView& src, const PackedWeights& weights,
                          const TensorView& bias, const ConvParams& params, const PostOps& post_ops,
                          const Stream& stream, const std::vector<Event>& deps, const ConvOptions& options) {
    if (!weights.defined())
        throw Error(ErrorKind::invalid_argument, "convolution_forward: the PackedWeights are empty (default-constructed)");
    const PackedWeights::Impl& pk = *weights.impl();
    if (!pk.handle) {
        ConvOptions opt = options;
        if (opt.engine == Engine::automatic) opt.engine = pk.engine;
        return convolution_forward(dst, src, pk.plain.view(), bias, params, post_ops, stream, deps, opt);
    }
    // The handle stands in for the data pointer: validation sees the weights' sizes, and the
    // backend reads ConvArgs::packed.
    TensorView w(pk.handle.get(), pk.dtype, pk.sizes, pk.device);
    core::Call c{core::Direction::fwd, src, w, dst, bias, &params, &post_ops, &stream, &deps, &options};
    c.packed = &pk;
    return core::run(c);
}

Event convolution_backward_data(const TensorView& diff_src, const TensorView& diff_dst,
                                const TensorView& weights, const ConvParams& params, const Stream& stream,
                                const std::vector<Event>& deps, const ConvOptions& options) {
    core::Call c{core::Direction::bwd_d, diff_src, weights, diff_dst, TensorView(), &params, nullptr, &stream, &deps, &options};
    return core::run(c);
}

Event convolution_backward_weights(const TensorView& diff_weights, const TensorView& diff_bias,
                                   const TensorView& diff_dst, const TensorView& src, const ConvParams& params,
                                   const Stream& stream, const std::vector<Event>& deps,
                                   const ConvOptions& options) {
    core::Call c{core::Direction::bwd_w, src, diff_weights, diff_dst, diff_bias, &params, nullptr, &stream, &deps, &options};
    return core::run(c);
}

Dims conv_transpose_output_shape(const Dims& src_sizes, const Dims& weights_sizes, const ConvTransposeParams& params) {
    const core::Names n{"conv_transpose_output_shape", "src", "weights", "dst", "bias"};
    try {
        return core::transposed_shape(n, src_sizes, weights_sizes, params).dst;
    } catch (const Error& e) {
        const std::string repro = core::trace::raw_reproducer(src_sizes, weights_sizes, params.stride, params.padding_l,
                                                              params.padding_r, params.dilation, params.output_padding,
                                                              params.groups, true, DType::f32, Engine::automatic);
        if (repro.empty()) throw;
        core::rethrow_with(e, repro);
    }
}

Event conv_transpose_forward(const TensorView& dst, const TensorView& src, const TensorView& weights,
                             const TensorView& bias, const ConvTransposeParams& params, const PostOps& post_ops,
                             const Stream& stream, const std::vector<Event>& deps, const ConvOptions& options) {
    return core::run_transposed(core::Direction::fwd, src, weights, dst, bias, params, &post_ops, stream, deps, options);
}

Event conv_transpose_backward_data(const TensorView& diff_src, const TensorView& diff_dst, const TensorView& weights,
                                   const ConvTransposeParams& params, const Stream& stream,
                                   const std::vector<Event>& deps, const ConvOptions& options) {
    return core::run_transposed(core::Direction::bwd_d, diff_src, weights, diff_dst, TensorView(), params, nullptr,
                                stream, deps, options);
}

Event conv_transpose_backward_weights(const TensorView& diff_weights, const TensorView& diff_bias,
                                      const TensorView& diff_dst, const TensorView& src,
                                      const ConvTransposeParams& params, const Stream& stream,
                                      const std::vector<Event>& deps, const ConvOptions& options) {
    return core::run_transposed(core::Direction::bwd_w, src, diff_weights, diff_dst, diff_bias, params, nullptr,
                                stream, deps, options);
}

}  // namespace convkit
