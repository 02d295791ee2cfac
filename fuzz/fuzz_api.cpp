// Fuzzes the C++ entry points through validation and into the engines: random ranks, sizes,
// strides, parameters, dtypes, devices, post-op chains and aliasing between tensors, most of them
// near a valid call (a consistent problem with one thing changed) so that both the checks and the
// engines behind them are reached. The properties, for every input:
//  - a call returns or throws convkit::Error of kind invalid_argument or unsupported whose message
//    starts with the function's name; nothing else escapes (no other exception, no crash, no
//    sanitizer report, no hang);
//  - inputs are never written; a call that throws leaves its outputs byte for byte as they were;
//  - a call that returns wrote nothing outside its outputs' elements (a strided output's gaps stay)
//    and, on the cpu engine, agrees with the reference engine (tests/support/tolerance.hpp's table);
//  - output_shape / conv_transpose_output_shape return what the formula gives (computed here in
//    128-bit arithmetic) or throw when the formula has no valid answer.
// Tensors too large to allocate here (hostile sizes) get a null data pointer, which validation must
// refuse; problems too costly for the reference engine under ASan are skipped.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "convkit/convkit.hpp"
#include "fuzz_common.hpp"
#include "support/tolerance.hpp"

using namespace convkit;

namespace {

constexpr int64_t kMaxArenaBytes = 1 << 18;
constexpr double kMaxMacs = 1e5;  // the reference engine under ASan: a few ms

enum Op { fwd, bwd_d, bwd_w, t_fwd, t_bwd_d, t_bwd_w, shape, t_shape, packed_fwd, kNumOps };
const char* const kFn[kNumOps] = {"convolution_forward", "convolution_backward_data", "convolution_backward_weights",
                                  "conv_transpose_forward", "conv_transpose_backward_data",
                                  "conv_transpose_backward_weights", "output_shape", "conv_transpose_output_shape",
                                  "prepack_weights"};

class Gen {
public:
    explicit Gen(FuzzedDataProvider& f) : f_(f) {}
    uint8_t byte() { return f_.ConsumeIntegral<uint8_t>(); }
    // Once the input is used up every byte reads 0: "no" then, so that loops end.
    bool chance(int in256) { return f_.remaining_bytes() > 0 && byte() < in256; }
    int64_t hostile() {
        static const int64_t k[] = {-1, 0, -2, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
                                    std::numeric_limits<int64_t>::max() / 2, int64_t(1) << 31, (int64_t(1) << 31) - 1,
                                    int64_t(1) << 32, int64_t(1) << 62, 3037000500, 1000003, 65536};
        const uint8_t b = byte();
        if (b < 2 * sizeof(k) / sizeof(k[0])) return k[b / 2];
        return f_.ConsumeIntegral<int64_t>();
    }
    // Mostly in [lo, hi]; now and then a hostile value.
    int64_t small(int64_t lo, int64_t hi) {
        const uint8_t b = byte();
        if (b < 244) return lo + static_cast<int64_t>(b) % (hi - lo + 1);
        return hostile();
    }
    double real() {
        static const double k[] = {0, 1, -1, 0.5, 2, 0.1, -3, 6, 1e30, -1e30, 1e-30};
        const uint8_t b = byte();
        if (b < 240) return k[b % 11];
        if (b < 250) return f_.ConsumeFloatingPoint<double>();
        return b & 1 ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    }
    FuzzedDataProvider& f_;
};

// One tensor argument: its view, and the memory behind it (owned here unless it aliases another).
struct Arg {
    TensorView v;
    bool is_output = false;
    int alias_of = -1;
    std::unique_ptr<uint8_t[]> arena;
    int64_t arena_bytes = 0;
    std::vector<uint8_t> before;  // the arena before the call
};

// Byte span of a view, or -1 if it overflows or is beyond what is allocated here.
int64_t span_bytes(const TensorView& t) {
    __int128 last = 0;
    bool empty = false;
    for (int i = 0; i < t.rank(); ++i) {
        if (t.sizes[i] == 0) empty = true;
        if (t.sizes[i] < 0 || t.strides[i] < 0) return -1;
        last += static_cast<__int128>(t.sizes[i] - 1) * t.strides[i];
        if (last > kMaxArenaBytes) return -1;
    }
    if (empty) return 0;
    const __int128 b = (last + 1) * static_cast<__int128>(dtype_size(t.dtype));
    return b > kMaxArenaBytes ? -1 : static_cast<int64_t>(b);
}

Dims strides_for(Gen& g, const Dims& sizes) {
    const int r = sizes.rank();
    Dims st;
    for (int i = 0; i < r; ++i) st.push_back(0);
    const uint8_t kind = g.byte() % 16;
    // Dense, in one of several orders (0: channels-first, 1: channels-last, 2: a random order), or
    // with the innermost dimension padded, or arbitrary.
    int order[Dims::max_rank];
    for (int i = 0; i < r; ++i) order[i] = r - 1 - i;  // innermost first
    if (kind == 1 && r >= 3) {
        order[0] = 1;
        for (int i = 1; i < r - 1; ++i) order[i] = r - i;
        order[r - 1] = 0;
    } else if (kind == 2) {
        for (int i = r - 1; i > 0; --i) std::swap(order[i], order[g.byte() % (i + 1)]);
    }
    if (kind < 11) {
        __int128 s = kind == 3 ? 1 + g.byte() % 3 : 1;  // 3: every element `s` apart
        for (int i = 0; i < r; ++i) {
            st[order[i]] = static_cast<int64_t>(s);
            s *= static_cast<__int128>(std::max<int64_t>(sizes[order[i]], 1)) + (kind == 4 && i == 0 ? 1 + g.byte() % 3 : 0);
            if (s > std::numeric_limits<int64_t>::max()) s = std::numeric_limits<int64_t>::max();
        }
        return st;
    }
    for (int i = 0; i < r; ++i) st[i] = g.small(0, 9);
    return st;
}

Dims spatial_list(Gen& g, int nsp, int64_t lo, int64_t hi) {
    const uint8_t b = g.byte() % 16;
    const int n = b < 5 ? 0 : b < 10 ? 1 : b < 15 ? nsp : g.byte() % 6;
    Dims d;
    for (int i = 0; i < n && i < Dims::max_rank; ++i) d.push_back(g.small(lo, hi));
    return d;
}

int64_t at(const Dims& d, int i, int64_t dflt) { return d.empty() ? dflt : d.rank() == 1 ? d[0] : d[i]; }

// The conv / transposed output sizes by the formula (README), in 128-bit arithmetic; false when
// the formula has no answer the library may give (a size < 1, a parameter out of range).
bool formula(bool transposed, const Dims& src, const Dims& wei, const Dims& stride, const Dims& pl, const Dims& pr,
             const Dims& dil, const Dims& op, int64_t groups, Dims* out) {
    const int r = src.rank();
    if (r < 3 || r > 5 || wei.rank() != r || groups < 1) return false;
    const int nsp = r - 2;
    for (const Dims* l : {&stride, &pl, &pr, &dil, &op})
        if (l->rank() > 1 && l->rank() != nsp) return false;
    if (src[0] < 0 || src[1] < 1 || src[1] % groups) return false;
    __int128 oc;
    if (transposed) {
        if (wei[0] != src[1] || wei[1] < 1) return false;
        oc = static_cast<__int128>(wei[1]) * groups;
    } else {
        if (wei[0] < 1 || wei[0] % groups || wei[1] != src[1] / groups) return false;
        oc = wei[0];
    }
    if (oc > std::numeric_limits<int64_t>::max()) return false;
    *out = Dims{src[0], static_cast<int64_t>(oc)};
    for (int i = 0; i < nsp; ++i) {
        const __int128 in = src[2 + i], k = wei[2 + i], s = at(stride, i, 1), l = at(pl, i, 0), rr = at(pr, i, 0),
                       d = at(dil, i, 1), o = at(op, i, 0);
        if (in < 1 || k < 1 || s < 1 || d < 1 || l < 0 || rr < 0) return false;
        __int128 v;
        if (transposed) {
            if (o < 0 || (o >= s && o >= d)) return false;
            v = (in - 1) * s - l - rr + d * (k - 1) + o + 1;
        } else {
            const __int128 span = in + l + rr - (d * (k - 1) + 1);
            if (span < 0) return false;
            v = span / s + 1;
        }
        if (v < 1 || v > std::numeric_limits<int64_t>::max()) return false;
        out->push_back(static_cast<int64_t>(v));
    }
    return true;
}

void check_shape_functions(Gen& g, bool transposed) {
    const int r = 1 + g.byte() % 5;
    Dims src, wei;
    for (int i = 0; i < r; ++i) src.push_back(g.chance(200) ? g.small(1, 9) : g.hostile());
    for (int i = 0; i < r + (g.chance(10) ? 1 : 0) && i < Dims::max_rank; ++i)
        wei.push_back(g.chance(200) ? g.small(1, 5) : g.hostile());
    const int nsp = std::max(r - 2, 1);
    ConvTransposeParams tp;
    tp.stride = spatial_list(g, nsp, 1, 3);
    tp.padding_l = spatial_list(g, nsp, 0, 2);
    tp.padding_r = spatial_list(g, nsp, 0, 2);
    tp.dilation = spatial_list(g, nsp, 1, 3);
    tp.output_padding = transposed ? spatial_list(g, nsp, 0, 2) : Dims();
    tp.groups = g.chance(200) ? 1 + g.byte() % 3 : g.hostile();
    Dims want;
    const bool valid = formula(transposed, src, wei, tp.stride, tp.padding_l, tp.padding_r, tp.dilation,
                               tp.output_padding, tp.groups, &want);
    const char* fn = transposed ? "conv_transpose_output_shape" : "output_shape";
    Dims got;
    try {
        if (transposed) {
            got = conv_transpose_output_shape(src, wei, tp);
        } else {
            ConvParams p;
            p.stride = tp.stride, p.padding_l = tp.padding_l, p.padding_r = tp.padding_r, p.dilation = tp.dilation;
            p.groups = tp.groups;
            got = output_shape(src, wei, p);
        }
    } catch (const Error& e) {
        fuzz::expect_prefix(e, std::string(fn) + ": ");
        if (valid) fuzz::finding("%s(%s, %s) threw, but the formula gives %s: %s", fn, src.str().c_str(),
                                 wei.str().c_str(), want.str().c_str(), e.what());
        return;
    } catch (const std::exception& e) {
        fuzz::finding("%s threw a non-convkit exception: %s", fn, e.what());
    }
    if (!valid || got != want)
        fuzz::finding("%s(%s, %s) returned %s; the formula gives %s", fn, src.str().c_str(), wei.str().c_str(),
                      got.str().c_str(), valid ? want.str().c_str() : "no valid shape");
}

// Values in [-1, 1] (operands in [0.5, 1.5], so div and log stay defined) in every element slot
// of the arena that `t`'s dtype can address.
void fill(Arg& a, uint64_t seed, bool operand) {
    const std::size_t es = dtype_size(a.v.dtype);
    const int64_t n = a.arena_bytes / static_cast<int64_t>(es);
    const std::vector<double> v =
        tools::random_values(n, operand ? 0.5 : -1, operand ? 1.5 : 1, seed, a.v.dtype);
    if (n == 0) return;
    const TensorView flat(a.arena.get(), a.v.dtype, Dims{n});
    tools::from_host_f64(flat, v);
}

struct Call {
    Op op;
    Engine engine;
    DType dt;
    ConvParams params;
    ConvTransposeParams tparams;
    PostOps post_ops;
    bool deterministic = false;
    // Slots, as the entry point names them: 0 src/diff_src, 1 weights/diff_weights, 2 dst/diff_dst,
    // 3 bias/diff_bias, then the binary post-ops' operands in chain order.
    std::vector<Arg> args;
};

bool outputs_of(Op op, int slot) {
    switch (op) {
        case fwd: case t_fwd: case packed_fwd: return slot == 2;
        case bwd_d: case t_bwd_d: return slot == 0;
        case bwd_w: case t_bwd_w: return slot == 1 || slot == 3;
        default: return false;
    }
}

// The call in words, for reproducers (CONVKIT_FUZZ_VERBOSE=1 prints it before each call).
std::string describe(const Call& c) {
    std::string s = std::string(kFn[c.op]) + " engine " + to_string(c.engine) + " dt " + to_string(c.dt) + "\n";
    const ConvParams& p = c.params;
    s += "  stride " + p.stride.str() + " padding_l " + p.padding_l.str() + " padding_r " + p.padding_r.str() +
         " dilation " + p.dilation.str() + " output_padding " + c.tparams.output_padding.str() + " groups " +
         std::to_string(p.groups) + (c.deterministic ? " deterministic" : "") + "\n";
    for (std::size_t i = 0; i < c.args.size(); ++i) {
        const TensorView& t = c.args[i].v;
        if (!t.defined()) continue;
        s += "  arg " + std::to_string(i) + ": " + to_string(t.dtype) + " sizes " + t.sizes.str() + " strides " +
             t.strides.str() + " " + t.device.str() + (t.data ? "" : " null") +
             (c.args[i].alias_of >= 0 ? " inside arg " + std::to_string(c.args[i].alias_of) : "") + "\n";
    }
    for (const PostOp& op : c.post_ops) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "  post-op %s alpha %.17g beta %.17g scale %.17g\n", op.str().c_str(), op.alpha,
                      op.beta, op.scale);
        s += buf;
    }
    return s;
}

void invoke(Call& c, Engine engine) {
    const ConvOptions o{engine, c.deterministic};
    const TensorView& s = c.args[0].v;
    const TensorView& w = c.args[1].v;
    const TensorView& d = c.args[2].v;
    const TensorView& b = c.args[3].v;
    switch (c.op) {
        case fwd: convolution_forward(d, s, w, b, c.params, c.post_ops, Stream(), {}, o).wait(); break;
        case bwd_d: convolution_backward_data(s, d, w, c.params, Stream(), {}, o).wait(); break;
        case bwd_w: convolution_backward_weights(w, b, d, s, c.params, Stream(), {}, o).wait(); break;
        case t_fwd: conv_transpose_forward(d, s, w, b, c.tparams, c.post_ops, Stream(), {}, o).wait(); break;
        case t_bwd_d: conv_transpose_backward_data(s, d, w, c.tparams, Stream(), {}, o).wait(); break;
        case t_bwd_w: conv_transpose_backward_weights(w, b, d, s, c.tparams, Stream(), {}, o).wait(); break;
        case packed_fwd: {
            PackedWeights pw = prepack_weights(w, s, c.params, c.post_ops, o);
            convolution_forward(d, s, pw, b, c.params, c.post_ops, Stream(), {}, o).wait();
            break;
        }
        default: break;
    }
}

// Multiply-adds of the call as its sizes say, saturating (a bound, to skip the costly ones).
double macs(const Call& c) {
    const bool tr = c.op == t_fwd || c.op == t_bwd_d || c.op == t_bwd_w;
    const TensorView& big = tr ? c.args[0].v : c.args[2].v;  // the strided side
    double m = 1;
    for (int64_t s : big.sizes) m *= static_cast<double>(std::max<int64_t>(s, 0));
    const TensorView& w = c.args[1].v;
    for (int i = 1; i < w.rank(); ++i) m *= static_cast<double>(std::max<int64_t>(w.sizes[i], 0));
    return m;
}

// Marks the bytes of `t`'s elements in the arena at `arena` (small tensors only: arenas bound them).
void mark(const TensorView& t, const uint8_t* arena, std::vector<bool>* may) {
    const int64_t n = t.numel();
    const int64_t es = static_cast<int64_t>(dtype_size(t.dtype));
    const int64_t base = static_cast<const uint8_t*>(t.data) - arena;
    int64_t idx[Dims::max_rank] = {};
    for (int64_t i = 0; i < n; ++i) {
        int64_t off = 0;
        for (int d = 0; d < t.rank(); ++d) off += idx[d] * t.strides[d];
        for (int64_t b = 0; b < es; ++b) (*may)[static_cast<std::size_t>(base + off * es + b)] = true;
        for (int d = t.rank() - 1; d >= 0; --d) {
            if (++idx[d] < t.sizes[d]) break;
            idx[d] = 0;
        }
    }
}

bool finite_params(const PostOps& ops) {
    for (const PostOp& op : ops)
        if (!std::isfinite(op.alpha) || !std::isfinite(op.beta) || !std::isfinite(op.scale) ||
            std::abs(op.alpha) > 100 || std::abs(op.beta) > 100 || std::abs(op.scale) > 100)
            return false;
    return true;
}

double scale_of(const Call& c) {
    const TensorView& w = c.args[1].v;
    const TensorView& d = c.args[2].v;
    const TensorView& s = c.args[0].v;
    double K = 1;
    const bool tr = c.op == t_fwd || c.op == t_bwd_d || c.op == t_bwd_w;
    switch (c.op) {
        case fwd: case packed_fwd: case t_bwd_d: K = static_cast<double>(w.sizes[1]); break;
        case bwd_d: case t_fwd: K = static_cast<double>(w.sizes[0]) / std::max<int64_t>(c.params.groups, 1); break;
        default: {
            const TensorView& red = tr ? s : d;
            K = static_cast<double>(red.sizes[0]);
            for (int i = 2; i < red.rank(); ++i) K *= static_cast<double>(red.sizes[i]);
            return test::output_scale(K);
        }
    }
    for (int i = 2; i < w.rank(); ++i) K *= static_cast<double>(w.sizes[i]);
    return test::output_scale(K);
}

void run_call(Gen& g) {
    Call c;
    c.op = static_cast<Op>(g.byte() % kNumOps);
    if (c.op == shape || c.op == t_shape) return check_shape_functions(g, c.op == t_shape);
    const uint8_t e = g.byte() % 8;
    c.engine = e < 4 ? Engine::ref : e < 7 ? Engine::cpu : Engine::automatic;
    static const DType kDt[] = {DType::f32, DType::f64, DType::bf16, DType::f16};
    c.dt = kDt[g.byte() % 4];
    c.deterministic = g.chance(64);
    const bool tr = c.op == t_fwd || c.op == t_bwd_d || c.op == t_bwd_w;

    // A consistent problem first.
    const int r = g.chance(250) ? 3 + g.byte() % 3 : 1 + g.byte() % 5;
    const int nsp = std::max(r - 2, 1);
    int64_t groups = g.chance(200) ? 1 : g.chance(128) ? 2 + g.byte() % 3 : g.hostile();
    const int64_t gg = std::max<int64_t>(groups, 1) > 8 ? 1 : std::max<int64_t>(groups, 1);
    const int64_t mb = g.chance(240) ? 1 + g.byte() % 3 : g.byte() % 2 == 0 ? 0 : g.hostile();
    const int64_t ic = gg * (1 + g.byte() % 4), oc = gg * (1 + g.byte() % 4);
    Dims src{mb, ic}, wei = tr ? Dims{ic, oc / gg} : Dims{oc, ic / gg};
    for (int i = 0; i < r - 2; ++i) {
        src.push_back(1 + g.byte() % 7);
        wei.push_back(1 + g.byte() % 4);
    }
    c.params.stride = c.tparams.stride = spatial_list(g, nsp, 1, 3);
    c.params.padding_l = c.tparams.padding_l = spatial_list(g, nsp, 0, 2);
    c.params.padding_r = c.tparams.padding_r = spatial_list(g, nsp, 0, 2);
    c.params.dilation = c.tparams.dilation = spatial_list(g, nsp, 1, 2);
    c.tparams.output_padding = spatial_list(g, nsp, 0, 1);
    c.params.groups = c.tparams.groups = groups;
    Dims dst;
    if (!formula(tr, src, wei, c.tparams.stride, c.tparams.padding_l, c.tparams.padding_r, c.tparams.dilation,
                 tr ? c.tparams.output_padding : Dims(), groups, &dst)) {
        dst = src;
        dst[1] = tr ? wei[1] * gg : wei[0];
    }
    const int64_t out_c = dst[1];

    // Then one or two things changed: a size of one tensor, a rank, the bias's size.
    Dims sizes[4] = {src, wei, dst, Dims{out_c}};
    if (c.op == bwd_w || c.op == t_bwd_w) sizes[3] = Dims{tr ? wei[1] * gg : wei[0]};
    for (int changes = 0; changes < 4 && g.chance(40); ++changes) {
        Dims& s = sizes[g.byte() % 4];
        if (s.rank() == 0) continue;
        const uint8_t how = g.byte() % 8;
        if (how == 0 && s.rank() < Dims::max_rank) s.push_back(1 + g.byte() % 3);
        else if (how == 1 && s.rank() > 1) s = Dims(std::vector<int64_t>(s.begin(), s.end() - 1));
        else s[g.byte() % s.rank()] = g.chance(128) ? g.small(0, 8) : g.hostile();
    }
    // Backward data has no bias argument.
    const bool with_bias = c.op != bwd_d && c.op != t_bwd_d && g.chance(128);
    c.args.resize(4);
    for (int i = 0; i < 4; ++i) {
        Arg& a = c.args[i];
        a.is_output = outputs_of(c.op, i);
        if (i == 3 && !with_bias) continue;
        const DType dt = g.chance(250) ? c.dt : kDt[g.byte() % 4];
        a.v = TensorView(nullptr, dt, sizes[i], strides_for(g, sizes[i]), g.chance(252) ? Device::cpu() : Device::cuda(0));
    }

    // Post-ops (forward directions; now and then on the others, which must refuse them).
    const bool takes_post_ops = c.op == fwd || c.op == t_fwd || c.op == packed_fwd;
    if (takes_post_ops || g.chance(4)) {
        const int n = g.chance(250) ? g.byte() % 4 : g.byte() % 17;
        for (int i = 0; i < n; ++i) {
            const uint8_t k = g.byte() % 8;
            if (k < 5) {
                c.post_ops.eltwise(static_cast<EltwiseAlg>(g.byte() % 16), g.real(), g.real());
            } else if (k == 5) {
                c.post_ops.sum(g.real());
            } else {
                Dims os = dst;
                const uint8_t shape = g.byte() % 6;  // scalar, per-channel, spatial, full, wrong, other rank
                for (int d = 0; d < os.rank(); ++d) {
                    if (shape == 0 || (shape == 1 && d != 1) || (shape == 2 && d < 2)) os[d] = 1;
                    if (shape == 4 && d == static_cast<int>(g.byte() % os.rank())) os[d] = g.small(0, 9);
                }
                if (shape == 5 && os.rank() > 1) os = Dims(std::vector<int64_t>(os.begin(), os.end() - 1));
                Arg a;
                const DType dt = g.chance(250) ? c.dt : kDt[g.byte() % 4];
                a.v = TensorView(nullptr, dt, os, strides_for(g, os));
                c.args.push_back(std::move(a));
                c.post_ops.binary(static_cast<BinaryAlg>(g.byte() % 6), TensorView());
            }
        }
    }

    // Memory: an arena per tensor, or a view into another's (aliasing), or none (null data).
    uint64_t seed = 1;
    for (std::size_t i = 0; i < c.args.size(); ++i) {
        Arg& a = c.args[i];
        if (!a.v.defined()) continue;
        const int64_t bytes = span_bytes(a.v);
        if (i > 0 && g.chance(12)) {
            const int into = static_cast<int>(g.byte() % i);
            Arg& o = c.args[static_cast<std::size_t>(into)];
            if (o.arena && bytes >= 0 && bytes <= o.arena_bytes) {
                // A view inside the other tensor's memory (which the call must then refuse or only read).
                const int64_t room = o.arena_bytes - bytes;
                const int64_t off = room > 0 ? (g.byte() % (room + 1)) & ~int64_t(7) : 0;
                a.alias_of = into;
                a.v.data = o.arena.get() + off;
                continue;
            }
        }
        if (bytes < 0 || g.chance(3)) continue;  // null data: too large to back, or on purpose
        a.arena_bytes = std::max<int64_t>(bytes, 1);
        a.arena.reset(new uint8_t[static_cast<std::size_t>(a.arena_bytes)]);
        a.v.data = a.arena.get();
        fill(a, seed++, i >= 4);
    }
    std::size_t bi = 0;
    for (std::size_t i = 0; i < c.post_ops.size(); ++i)
        if (c.post_ops[i].kind == PostOp::Kind::binary) c.post_ops[i].operand = c.args[4 + bi++].v;

    bool all_backed = true;
    for (const Arg& a : c.args)
        if (a.v.defined() && !a.v.data && span_bytes(a.v) != 0) all_backed = false;
    if (all_backed && macs(c) > kMaxMacs) return;

    for (Arg& a : c.args)
        if (a.arena) a.before.assign(a.arena.get(), a.arena.get() + a.arena_bytes);
    const std::string fn = kFn[c.op];
    static const bool verbose = std::getenv("CONVKIT_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "%s", describe(c).c_str());
    bool threw = false;
    try {
        invoke(c, c.engine);
    } catch (const Error& err) {
        threw = true;
        const std::string m = err.what();
        const bool named = m.compare(0, fn.size() + 2, fn + ": ") == 0 ||
                           (c.op == packed_fwd && m.compare(0, 21, "convolution_forward: ") == 0);
        // An engine's failure on a validated problem names the engine and the problem instead.
        const bool engine_failure = m.compare(0, 13, "cpu backend: ") == 0;
        if (!named && !engine_failure) fuzz::finding("%s: error message does not start with the function's name: \"%s\"", fn.c_str(), m.c_str());
        if (err.kind() != ErrorKind::invalid_argument && err.kind() != ErrorKind::unsupported)
            fuzz::finding("%s: error of kind %s: %s", fn.c_str(), to_string(err.kind()), m.c_str());
    } catch (const std::exception& err) {
        fuzz::finding("%s threw a non-convkit exception: %s", fn.c_str(), err.what());
    }

    // Memory after the call. An accepted call had no output overlapping another tensor (prepacked
    // weights excepted: they were read into the package before dst is written); each arena then
    // changed only in the bytes of the outputs' elements, and a refused call changed nothing.
    const std::size_t na = c.args.size();
    auto owner = [&](std::size_t i) { return c.args[i].alias_of < 0 ? i : static_cast<std::size_t>(c.args[i].alias_of); };
    auto range = [&](std::size_t i) {
        const TensorView& t = c.args[i].v;
        const int64_t b = t.data ? span_bytes(t) : 0;
        const uint8_t* p = static_cast<const uint8_t*>(t.data);
        return std::make_pair(p, p + std::max<int64_t>(b, 0));
    };
    bool aliasing = false;
    for (std::size_t i = 0; i < na; ++i) {
        aliasing = aliasing || c.args[i].alias_of >= 0;
        if (threw || !c.args[i].is_output || !c.args[i].v.data) continue;
        for (std::size_t j = 0; j < na; ++j) {
            if (j == i || !c.args[j].v.data || (c.op == packed_fwd && j == 1)) continue;
            const auto x = range(i), y = range(j);
            if (x.first < x.second && y.first < y.second && x.first < y.second && y.first < x.second)
                fuzz::finding("%s accepted output %zu %s strides %s overlapping tensor %zu %s strides %s", fn.c_str(), i,
                              c.args[i].v.sizes.str().c_str(), c.args[i].v.strides.str().c_str(), j,
                              c.args[j].v.sizes.str().c_str(), c.args[j].v.strides.str().c_str());
        }
    }
    for (std::size_t i = 0; i < na; ++i) {
        Arg& a = c.args[i];
        if (!a.arena) continue;
        std::vector<bool> may(static_cast<std::size_t>(a.arena_bytes), false);
        if (!threw)
            for (std::size_t j = 0; j < na; ++j)
                if (owner(j) == i && c.args[j].is_output && c.args[j].v.data) mark(c.args[j].v, a.arena.get(), &may);
        for (std::size_t b = 0; b < may.size(); ++b)
            if (!may[b] && a.before[b] != a.arena[b])
                fuzz::finding("%s%s: byte %zu of tensor %zu's memory (%s, an %s) was written", fn.c_str(),
                              threw ? " (refused)" : "", b, i, a.v.sizes.str().c_str(), a.is_output ? "output" : "input");
    }
    if (aliasing) return;

    // The cpu engine against the reference on the same inputs.
    if (threw || c.engine == Engine::ref || !finite_params(c.post_ops)) return;
    std::vector<std::vector<uint8_t>> got;
    for (Arg& a : c.args) {
        got.emplace_back(a.arena ? std::vector<uint8_t>(a.arena.get(), a.arena.get() + a.arena_bytes) : std::vector<uint8_t>());
        if (a.arena) std::memcpy(a.arena.get(), a.before.data(), a.before.size());
    }
    try {
        invoke(c, Engine::ref);
    } catch (const std::exception& err) {
        fuzz::finding("%s: the %s engine accepted a call the reference refuses: %s", fn.c_str(),
                      to_string(c.engine), err.what());
    }
    for (std::size_t i = 0; i < c.args.size(); ++i) {
        Arg& a = c.args[i];
        if (!a.is_output || !a.arena) continue;
        const std::vector<double> want = tools::to_host_f64(a.v);
        std::memcpy(a.arena.get(), got[i].data(), got[i].size());
        std::vector<double> have = tools::to_host_f64(a.v);
        // F14 (docs/robustness.md): where the reference's result is NaN (a post-op made one, e.g.
        // sqrt of a negative sum), oneDNN's max/min-based eltwise ops (relu, clip) may turn it into
        // a number; such elements are not compared.
        for (std::size_t k = 0; k < want.size() && k < have.size(); ++k)
            if (std::isnan(want[k])) have[k] = want[k];
        const tools::CompareResult cr = tools::compare(have, want, a.v.dtype, scale_of(c), test::tolerance(a.v.dtype));
        if (!cr.ok)
            fuzz::finding("%s on %s differs from the reference: output %zu %s %s, %lld bad, max error %g: %s", fn.c_str(),
                          to_string(c.engine), i, a.v.sizes.str().c_str(), to_string(a.v.dtype),
                          static_cast<long long>(cr.bad), cr.max_err, cr.detail.c_str());
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // One OpenMP thread keeps runs reproducible and leaves the second core to the machine's
    // other work; a small plan cache keeps memory flat over millions of shapes.
    set_num_threads(1);
    setenv("CONVKIT_CACHE_CAPACITY", "32", 0);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzedDataProvider f(data, size);
    Gen g(f);
    run_call(g);
    return 0;
}
