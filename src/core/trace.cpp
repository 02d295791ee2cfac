// The trace lines and reproducers (trace.hpp). Everything here runs only when tracing is on or an
// error is being raised, so it is written for clarity, not speed.
#include "core/trace.hpp"

#include <chrono>
#include <cstdio>
#include <mutex>

#include "convkit/convkit.h"
#include "core/backend.hpp"
#include "core/env.hpp"

namespace convkit {

void set_verbose(int level) { core::trace::g_level.store(level > 0 ? level : 0, std::memory_order_relaxed); }
int verbose() { return core::trace::level(); }

namespace core::trace {

std::atomic<int> g_level{-1};

int init_level() {
    // Read once; a racing first call reads the same environment and stores the same value.
    const int64_t v = env::integer("CONVKIT_VERBOSE", 0);
    int l = v > 0 ? static_cast<int>(v > 2 ? 2 : v) : 0;
    int expected = -1;
    if (!g_level.compare_exchange_strong(expected, l, std::memory_order_relaxed)) l = expected;
    return l;
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

namespace {

thread_local Lookups t_lookups;

// The letters benchdnn and oneDNN use for spatial dims: 1D w, 2D h and w, 3D d, h and w.
const char* sp_letter(int nsp, int i) {
    static const char* kSp[3] = {"d", "h", "w"};
    return kSp[3 - nsp + i];
}

// The user-facing view of a call: for transposed calls the transposed convolution's own
// direction and sizes (input = the convolution's output side), as a deconv descriptor has them.
struct View {
    Direction dir;
    int64_t ic, oc;  // input / output channels of the call
    const int64_t *in, *out;
    Layout src_layout, dst_layout;  // the call's input / output activations
};

View view_of(const ConvProblem& p, const CallDesc& c) {
    if (!c.transposed) return {p.dir, p.ic, p.oc, p.in, p.out, p.src_layout, p.dst_layout};
    const Direction d = p.dir == Direction::bwd_d ? Direction::fwd : p.dir == Direction::fwd ? Direction::bwd_d : Direction::bwd_w;
    return {d, p.oc, p.ic, p.out, p.in, p.dst_layout, p.src_layout};
}

const char* tag(Layout l, int rank) {
    static const char* kFirst[6] = {"", "", "", "abc", "abcd", "abcde"};
    static const char* kLast[6] = {"", "", "", "acb", "acdb", "acdeb"};
    if (l == Layout::channels_first) return kFirst[rank];
    if (l == Layout::channels_last) return kLast[rank];
    return "strided";
}

std::string md(const char* name, DType dt, const char* t) {
    return std::string(name) + "_" + to_string(dt) + "::blocked:" + t + ":f0";
}

// oneDNN's memory-descriptor field: the call's tensors in its own terms.
std::string mds(const ConvProblem& p, const View& v) {
    const int r = p.rank();
    const char* s = tag(v.src_layout, r);
    const char* w = tag(p.wei_layout, r);
    const char* d = tag(v.dst_layout, r);
    const std::string bia = p.with_bias ? md(v.dir == Direction::bwd_w ? "diff_bia" : "bia", p.dt, "a") : "bia_undef::undef::f0";
    switch (v.dir) {
        case Direction::fwd: return md("src", p.dt, s) + " " + md("wei", p.dt, w) + " " + bia + " " + md("dst", p.dt, d);
        case Direction::bwd_d: return md("diff_src", p.dt, s) + " " + md("wei", p.dt, w) + " bia_undef::undef::f0 " + md("diff_dst", p.dt, d);
        case Direction::bwd_w: return md("src", p.dt, s) + " " + md("diff_wei", p.dt, w) + " " + bia + " " + md("diff_dst", p.dt, d);
    }
    return "";
}

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

std::string attrs(const ConvProblem& p) {
    if (p.n_post_ops == 0) return "";
    std::string s = "attr-post-ops:";
    for (int i = 0; i < p.n_post_ops; ++i) {
        const PostOpDesc& d = p.post_ops[i];
        if (i) s += "+";
        if (d.kind == PostOp::Kind::sum) {
            s += "sum";
            if (d.scale != 1) s += ":" + num(d.scale);
        } else if (d.kind == PostOp::Kind::eltwise) {
            s += std::string("eltwise_") + to_string(static_cast<EltwiseAlg>(d.alg));
            if (d.alpha != 0 || d.beta != 0) s += ":" + num(d.alpha) + ":" + num(d.beta);
        } else {
            // oneDNN's broadcast mask: a bit per dimension the operand does not broadcast over.
            int mask = 0;
            for (int k = 0; k < d.operand_sizes.rank(); ++k)
                if (d.operand_sizes[k] != 1) mask |= 1 << k;
            s += std::string("binary_") + to_string(static_cast<BinaryAlg>(d.alg)) + ":" + to_string(p.dt) + ":" + std::to_string(mask);
        }
    }
    return s;
}

// oneDNN's problem field, e.g. mb2_ic4oc6_ih9oh5kh3sh2dh0ph1_iw9ow5kw3sw2dw1pw2.
std::string prb(const ConvProblem& p, const View& v) {
    std::string s = "mb" + std::to_string(p.mb) + "_";
    if (p.g > 1) s += "g" + std::to_string(p.g);
    s += "ic" + std::to_string(v.ic) + "oc" + std::to_string(v.oc);
    for (int i = 0; i < p.nsp; ++i) {
        const std::string l = sp_letter(p.nsp, i);
        s += "_i" + l + std::to_string(v.in[i]) + "o" + l + std::to_string(v.out[i]) + "k" + l + std::to_string(p.k[i]) +
             "s" + l + std::to_string(p.stride[i]) + "d" + l + std::to_string(p.dilation[i] - 1) + "p" + l +
             std::to_string(p.padding_l[i]);
    }
    return s;
}

// A benchdnn descriptor with every entry explicit (padding_r follows from the output size).
std::string descriptor(const ConvProblem& p, const View& v) {
    std::string s;
    if (p.g > 1) s += "g" + std::to_string(p.g);
    s += "mb" + std::to_string(p.mb) + "ic" + std::to_string(v.ic);
    for (int i = 0; i < p.nsp; ++i) s += std::string("i") + sp_letter(p.nsp, i) + std::to_string(v.in[i]);
    s += "oc" + std::to_string(v.oc);
    for (int i = 0; i < p.nsp; ++i) s += std::string("o") + sp_letter(p.nsp, i) + std::to_string(v.out[i]);
    for (int i = 0; i < p.nsp; ++i) s += std::string("k") + sp_letter(p.nsp, i) + std::to_string(p.k[i]);
    for (int i = 0; i < p.nsp; ++i) s += std::string("s") + sp_letter(p.nsp, i) + std::to_string(p.stride[i]);
    for (int i = 0; i < p.nsp; ++i) s += std::string("p") + sp_letter(p.nsp, i) + std::to_string(p.padding_l[i]);
    for (int i = 0; i < p.nsp; ++i) s += std::string("d") + sp_letter(p.nsp, i) + std::to_string(p.dilation[i] - 1);
    return s;
}

// The chain in `convkit bench --attr-post-ops` spelling; false where an operand's broadcast is
// none of benchdnn's policies (common, per_oc, per_tensor).
bool bench_post_ops(const ConvProblem& p, std::string* out) {
    const Dims od = p.epilogue_view().dst_dims();
    std::string s;
    for (int i = 0; i < p.n_post_ops; ++i) {
        const PostOpDesc& d = p.post_ops[i];
        if (i) s += "+";
        PostOp op;
        op.kind = d.kind;
        if (d.kind == PostOp::Kind::binary) {
            bool common = true, per_oc = true, full = d.operand_sizes == od;
            for (int k = 0; k < d.operand_sizes.rank(); ++k) {
                if (d.operand_sizes[k] != 1) common = false;
                if (d.operand_sizes[k] != (k == 1 ? od[1] : 1)) per_oc = false;
            }
            if (!common && !per_oc && !full) return false;
            s += std::string(to_string(static_cast<BinaryAlg>(d.alg))) + ":" + to_string(p.dt) + ":" +
                 (common ? "common" : per_oc ? "per_oc" : "per_tensor");
            continue;
        }
        op.eltwise = static_cast<EltwiseAlg>(d.alg);
        op.alpha = d.alpha;
        op.beta = d.beta;
        op.scale = d.scale;
        s += op.str();
    }
    *out = s;
    return true;
}

// Switches that change what runs, as the environment settings that seed them.
std::string env_prefix(const ConvProblem& p) {
    std::string s;
    if (p.device.is_cuda() && p.device.index != 0) s += "CUDA_VISIBLE_DEVICES=" + std::to_string(p.device.index) + " ";
    if (p.deterministic) s += "CONVKIT_DETERMINISTIC=1 ";
    if (p.device.is_cuda() && p.dt == DType::f32 && !p.allow_tf32) s += "CONVKIT_ALLOW_TF32=0 ";
    return s;
}

const char* dir_label(Direction d, bool bias) {
    switch (d) {
        case Direction::fwd: return bias ? "FWD_B" : "FWD_D";
        case Direction::bwd_d: return "BWD_D";
        case Direction::bwd_w: return bias ? "BWD_WB" : "BWD_W";
    }
    return "";
}

void header_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        std::string h = std::string("convkit_verbose,info,convkit ") + CONVKIT_VERSION_STRING + "\n";
        for (Backend* b : backends()) {
            std::string d = b->describe();
            for (char& ch : d)
                if (ch == ',') ch = ';';
            h += std::string("convkit_verbose,info,engine:") + to_string(b->engine()) + "," + d + "\n";
        }
        h += "convkit_verbose,info,prim_template:operation,engine,primitive,implementation,prop_kind,memory_descriptors,"
             "attributes,auxiliary,problem_desc,exec_time,reproducer\n";
        std::fputs(h.c_str(), stderr);
    });
}

// The fields from engine to problem_desc (oneDNN's order), without the leading comma.
std::string fields(const ConvProblem& p, const CallDesc& c, const std::string& impl) {
    const View v = view_of(p, c);
    static const char* kProp[3] = {"forward_training", "backward_data", "backward_weights"};
    std::string s = p.device.is_cuda() ? "gpu," : "cpu,";
    s += c.transposed ? "deconvolution," : "convolution,";
    s += impl + ",";
    s += kProp[static_cast<int>(v.dir)];
    s += "," + mds(p, v) + "," + attrs(p) + ",alg:" + (c.transposed ? "deconvolution_direct," : "convolution_direct,");
    s += prb(p, v);
    return s;
}

void emit(const std::string& line) {
    header_once();
    std::fputs(line.c_str(), stderr);
}

std::string ms_text(double ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", ms);
    return buf;
}

}  // namespace

std::string reproducer(const ConvProblem& p, const CallDesc& c) {
    std::string post;
    // benchdnn descriptors have no empty batch, and bench no strided tensors.
    if (p.mb == 0 || (p.src_layout == Layout::strided && p.dst_layout == Layout::strided)) return "";
    if (!bench_post_ops(p, &post)) return "";
    const View v = view_of(p, c);
    Engine e = c.engine;
    if (e == Engine::automatic && p.device.is_cuda()) e = Engine::cuda;
    const Layout act = v.src_layout != Layout::strided ? v.src_layout : v.dst_layout;
    std::string s = env_prefix(p) + "convkit bench --engine=" + to_string(e);
    if (c.transposed) s += " --driver=deconv";
    s += std::string(" --dir=") + dir_label(v.dir, p.with_bias) + " --dt=" + to_string(p.dt) +
         " --tag=" + (act == Layout::channels_last ? "nhwc" : "nchw");
    if (!post.empty()) s += " --attr-post-ops=" + post;
    if (c.prepack) s += " --prepack";
    s += " --mode=corr " + descriptor(p, v);
    return s;
}

std::string raw_reproducer(const Dims& src, const Dims& wei, const Dims& stride, const Dims& padding_l,
                           const Dims& padding_r, const Dims& dilation, const Dims& output_padding, int64_t groups, bool transposed,
                           DType dt, Engine engine) {
    const int r = src.rank();
    if (r < 3 || r > 5 || wei.rank() != r) return "";
    const int nsp = r - 2;
    auto at = [&](const Dims& d, int i, int64_t dflt, int64_t* out) {
        if (d.empty()) *out = dflt;
        else if (d.rank() == 1) *out = d[0];
        else if (d.rank() == nsp) *out = d[i];
        else return false;
        return true;
    };
    // Only what a descriptor can say: the weights' channels follow from the other sizes there.
    int64_t wc = 0;
    if (groups < 1 || __builtin_mul_overflow(wei[1], groups, &wc)) return "";
    if (!transposed && wc != src[1]) return "";
    if (transposed && wei[0] != src[1]) return "";
    std::string s = "convkit bench --engine=" + std::string(to_string(engine)) + (transposed ? " --driver=deconv" : "") +
                    " --dir=FWD_D --dt=" + to_string(dt) + " --tag=nchw --mode=corr ";
    if (groups != 1) s += "g" + std::to_string(groups);
    s += "mb" + std::to_string(src[0]) + "ic" + std::to_string(src[1]);
    for (int i = 0; i < nsp; ++i) s += std::string("i") + sp_letter(nsp, i) + std::to_string(src[2 + i]);
    const int64_t oc = transposed ? wc : wei[0];
    int64_t o[3], st[3], pl[3], pr[3], dl[3], op[3];
    for (int i = 0; i < nsp; ++i) {
        if (!at(stride, i, 1, &st[i]) || !at(padding_l, i, 0, &pl[i]) || !at(padding_r, i, 0, &pr[i]) ||
            !at(dilation, i, 1, &dl[i]) || !at(output_padding, i, 0, &op[i]))
            return "";
        // The output size that this padding_r implies (benchdnn derives padding_r from it); in
        // long double so that hostile values give some size rather than overflow here.
        const long double in = static_cast<long double>(src[2 + i]), k = static_cast<long double>(wei[2 + i]);
        const long double ext = static_cast<long double>(dl[i]) * (k - 1) + 1;
        long double v = transposed ? (in - 1) * st[i] - pl[i] - pr[i] + ext + op[i]
                                   : (in + pl[i] + pr[i] - ext) / (st[i] > 0 ? st[i] : 1) + 1;
        if (v < 0) v = 0;
        if (v > 9.2e18L) v = 9.2e18L;
        o[i] = static_cast<int64_t>(v);  // floor for the non-negative values left
    }
    auto entries = [&](const char* key, const int64_t* vals, int64_t shift) {
        for (int i = 0; i < nsp; ++i) {
            int64_t v;
            if (__builtin_sub_overflow(vals[i], shift, &v)) v = vals[i];  // hostile values stay as given
            s += std::string(key) + sp_letter(nsp, i) + std::to_string(v);
        }
    };
    int64_t k[3];
    for (int i = 0; i < nsp; ++i) k[i] = wei[2 + i];
    s += "oc" + std::to_string(oc);
    entries("o", o, 0);
    entries("k", k, 0);
    entries("s", st, 0);
    entries("p", pl, 0);
    entries("d", dl, 1);
    return s;
}


void note_hit() { ++t_lookups.hits; }
void note_miss(double ms) {
    ++t_lookups.misses;
    if (ms > t_lookups.create_ms) t_lookups.create_ms = ms;
}
Lookups take_lookups() {
    Lookups l = t_lookups;
    t_lookups = Lookups();
    return l;
}

void exec_line(const ConvProblem& p, const CallDesc& c, const std::string& impl, double ms) {
    emit("convkit_verbose,exec," + fields(p, c, impl) + "," + ms_text(ms) + "," + reproducer(p, c) + "\n");
}

void create_line(const ConvProblem& p, const CallDesc& c, const std::string& impl, const Lookups& l) {
    if (l.hits == 0 && l.misses == 0) return;
    emit(std::string("convkit_verbose,") + (l.misses ? "create:cache_miss," : "create:cache_hit,") + fields(p, c, impl) +
         "," + ms_text(l.misses ? l.create_ms : 0) + "," + reproducer(p, c) + "\n");
}

void dispatch_line(const ConvProblem& p, const CallDesc& c, const std::string& why) {
    std::string w = why;
    for (char& ch : w)
        if (ch == ',') ch = ';';
    emit("convkit_verbose,dispatch," + fields(p, c, std::string("engine:") + to_string(c.engine)) + "," + w + "," +
         reproducer(p, c) + "\n");
}

}  // namespace core::trace
}  // namespace convkit
