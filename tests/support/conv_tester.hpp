// One convolution case described by chained setters, after XNNPACK's
// test/convolution-operator-tester.h, so that each test case reads as one line of the shape it
// checks:
//
//   ConvTester().spatial(2, 11, 3).channels(8, 8, 2).stride({2}).padding({1}).dilation({2})
//       .dtype(DType::bf16).layout(Layout::channels_last).post_ops("relu").engine(Engine::cpu)
//       .check_forward();
//
// A check builds the tensors on the host from fixed seeds, copies them to the device of the engine
// under test (convkit::copy, the public API), runs that engine and the reference engine on the same
// values, copies the result back and compares it with the one tolerance table
// (support/tolerance.hpp). A failure is one assertion whose message names the case: direction,
// dtype, layouts, the benchdnn descriptor (`convkit bench` reads it back), bias, post-ops, engine.
//
// Binary post-op operands take their shape from the text after the op's colon: add:scalar,
// add:per_oc ([1, oc, 1...]), add:spatial ([1, 1, spatial...]), add:full (dst's shape and layout),
// add:full_other_layout (dst's shape in the other layout), add:full_strided (every other element
// of a buffer twice as wide in the last dimension). Operands are filled with values in
// [0.5, 1.5], so div and log/sqrt chains stay defined.
//
// Tests that check more than agreement (bitwise reproducibility, the plan chosen, the cache) use
// the pieces: problem(), make_tensors(), copy_tensors(), run(), compare().
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "convkit/convkit.hpp"
#include "core/problem.hpp"
#include "desc.hpp"
#include "support/tolerance.hpp"

namespace convkit::test {

using Dir = core::Direction;
inline constexpr Dir kDirections[] = {Dir::fwd, Dir::bwd_d, Dir::bwd_w};

// benchdnn's --tag for an activation layout of `nsp` spatial dims: nchw, nhwc, ncw, ndhwc...
inline std::string tag(Layout l, int nsp) {
    static const char* kSpatial[] = {"w", "hw", "dhw"};
    const std::string sp = kSpatial[nsp - 1];
    return l == Layout::channels_last ? "n" + sp + "c" : "nc" + sp;
}

// "f32_nhwc": the name of a (dtype, layout) test parameter.
inline std::string param_name(DType dt, Layout l) {
    return std::string(to_string(dt)) + (l == Layout::channels_last ? "_nhwc" : "_nchw");
}

// The values of any tensor, host or device (through convkit::copy), in logical order, as f64.
using tools::to_host_f64;

// Same bytes: for dense host tensors of one layout, and for value lists (NaN equals NaN).
inline bool bitwise_equal(const TensorView& a, const TensorView& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}
inline bool bitwise_equal(const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

inline void fill(const Tensor& t, double lo, double hi, uint64_t seed) {
    tools::from_host_f64(t.view(), tools::random_values(t.numel(), lo, hi, seed, t.dtype()));
}

// A dense copy of `t` in the same layout on `device` (undefined stays undefined).
inline Tensor copy_of(const Tensor& t, Device device) {
    if (!t.view().defined()) return Tensor();
    const Layout l = t.view().layout() == Layout::channels_last ? Layout::channels_last : Layout::channels_first;
    Tensor y(t.dtype(), t.sizes(), l, device);
    copy(y.view(), t.view());
    return y;
}

// The tensors of one call. src/dst hold diff_src/diff_dst in the backward directions, wei holds
// diff_weights and bias diff_bias in backward weights.
struct ConvTensors {
    Tensor src, wei, bias, dst;   // bias undefined without ConvTester::bias()
    std::vector<Tensor> operands;  // storage of the binary post-ops' operands, in chain order
    PostOps ops;                   // the parsed chain, operands bound
    const Tensor& output(Dir d) const { return d == Dir::fwd ? dst : d == Dir::bwd_d ? src : wei; }
};

class ConvTester {
public:
    // ---- the problem ----
    ConvTester& mb(int64_t v) { mb_ = v; return *this; }
    ConvTester& channels(int64_t ic, int64_t oc, int64_t groups = 1) {
        ic_ = ic, oc_ = oc, prm_.groups = groups;
        return *this;
    }
    // `n` spatial dims, each of input size `size` and kernel size `kernel`.
    ConvTester& spatial(int n, int64_t size, int64_t kernel) {
        in_ = k_ = Dims();
        for (int i = 0; i < n; ++i) in_.push_back(size), k_.push_back(kernel);
        return *this;
    }
    ConvTester& input_size(Dims spatial_sizes) { in_ = spatial_sizes; return *this; }
    ConvTester& kernel_size(Dims spatial_sizes) { k_ = spatial_sizes; return *this; }
    // One value applies to every spatial dim, as in ConvParams.
    ConvTester& stride(Dims v) { prm_.stride = v; return *this; }
    ConvTester& dilation(Dims v) { prm_.dilation = v; return *this; }
    ConvTester& padding(Dims both) { return padding(both, both); }
    ConvTester& padding(Dims l, Dims r) { prm_.padding_l = l, prm_.padding_r = r; return *this; }
    ConvTester& bias(bool on = true) { bias_ = on; return *this; }
    // benchdnn's spelling, '+' between ops; binary operands as described at the top.
    ConvTester& post_ops(std::string text) { post_ops_ = std::move(text); return *this; }
    // A transposed convolution (conv_transpose_*) of the same sizes: src [mb, ic, size...],
    // weights [ic, oc / groups, kernel...], dst the transposed output; post-ops on its forward.
    ConvTester& transposed(Dims output_padding = {}) {
        transposed_ = true;
        output_padding_ = output_padding;
        return *this;
    }

    // ---- the data ----
    ConvTester& dtype(DType v) { dt_ = v; return *this; }
    // src, weights and dst (diff_src, diff_weights, diff_dst) alike; the two below override.
    ConvTester& layout(Layout v) { src_layout_ = wei_layout_ = dst_layout_ = v; return *this; }
    ConvTester& weights_layout(Layout v) { wei_layout_ = v; return *this; }
    ConvTester& dst_layout(Layout v) { dst_layout_ = v; return *this; }
    ConvTester& seed(uint64_t v) { seed_ = v; return *this; }

    // ---- where it runs ----
    // The engine under test (the reference engine computes what it is compared with).
    ConvTester& engine(Engine v) { engine_ = v; return *this; }
    // Where the engine under test finds its tensors; default: cuda:0 for Engine::cuda, else the host.
    ConvTester& device(Device v) { device_ = v; return *this; }
    ConvTester& stream(Stream v) { stream_ = std::move(v); return *this; }
    // allow_tf32() while the engine under test runs (restored after); TF32's row of the table.
    ConvTester& tf32(bool on = true) { tf32_ = on; return *this; }

    // ---- checks: the engine under test against the reference ----
    void check_forward() const { check(Dir::fwd); }
    void check_backward_data() const { check(Dir::bwd_d); }
    void check_backward_weights() const { check(Dir::bwd_w); }
    // Every direction; with post-ops (forward only) just the forward one.
    void check_all() const {
        for (Dir d : kDirections)
            if (d == Dir::fwd || post_ops_.empty()) check(d);
    }
    void check(Dir dir) const { EXPECT_TRUE(agrees(dir)); }

    ::testing::AssertionResult agrees(Dir dir) const {
        if (dir != Dir::fwd && !post_ops_.empty())
            return ::testing::AssertionFailure() << name(dir) << ": post-ops are forward only";
        try {
            ConvTensors want = make_tensors(seed_);
            ConvTensors got = copy_tensors(want, device());
            run(dir, got, engine_).wait();
            run(dir, want, Engine::ref).wait();
            const std::string diff = compare(dir, got, want);
            if (diff.empty()) return ::testing::AssertionSuccess();
            return ::testing::AssertionFailure() << name(dir) << ": " << diff;
        } catch (const std::exception& e) {
            return ::testing::AssertionFailure() << name(dir) << ": " << e.what();
        }
    }

    // The engine under test on strided views gives bit for bit what it gives on dense channels-first
    // tensors of the same values (the core copies a strided tensor into a dense channels-first
    // temporary), and writes nothing between a strided dst's elements: src is the first columns of a
    // buffer 4 wider in the last dimension, dst every other element of a buffer twice as large.
    // Forward; host tensors only (strided device tensors are refused).
    void check_strided_matches_dense() const { EXPECT_TRUE(strided_matches_dense()); }
    ::testing::AssertionResult strided_matches_dense() const {
        const std::string what = name(Dir::fwd) + " (strided src and dst)";
        try {
            ConvTensors t = make_tensors(seed_);
            for (Tensor* x : {&t.src, &t.dst}) {
                Tensor cf(dt_, x->sizes(), Layout::channels_first);
                copy(cf, *x);
                *x = cf;
            }
            ConvTensors dense = copy_tensors(t, Device::cpu());
            run(Dir::fwd, dense, engine_).wait();
            const std::vector<double> want = to_host_f64(dense.dst);
            // src as a view of a wider buffer.
            Dims wide = t.src.sizes();
            wide[wide.rank() - 1] += 4;
            Tensor big(dt_, wide, Layout::channels_first);
            fill(big, -1, 1, seed_ + 20);
            ConvTensors a = copy_tensors(t, Device::cpu());
            a.src = Tensor();
            const TensorView src_view(big.data(), dt_, t.src.sizes(), dense_strides(wide, Layout::channels_first));
            copy(src_view, t.src);
            convolution_forward(a.dst, src_view, a.wei, a.bias.view(), params(), a.ops, stream_, {}, {engine_, {}}).wait();
            if (!bitwise_equal(to_host_f64(a.dst), want))
                return ::testing::AssertionFailure() << what << ": strided src differs from dense";
            // dst as every other element of a buffer twice as large; the gaps keep their values.
            const Dims ds = t.dst.sizes();
            Tensor gaps(dt_, Dims{2 * t.dst.numel()});
            fill(gaps, -1, 1, seed_ + 21);
            const std::vector<double> before = to_host_f64(gaps);
            Dims st = dense_strides(ds, Layout::channels_first);
            for (int i = 0; i < st.rank(); ++i) st[i] *= 2;
            const TensorView dst_view(gaps.data(), dt_, ds, st);
            copy(dst_view, t.dst);  // a sum post-op reads it
            ConvTensors b = copy_tensors(t, Device::cpu());
            convolution_forward(dst_view, b.src, b.wei, b.bias.view(), params(), b.ops, stream_, {}, {engine_, {}}).wait();
            if (!bitwise_equal(to_host_f64(dst_view), want))
                return ::testing::AssertionFailure() << what << ": strided dst differs from dense";
            const std::vector<double> after = to_host_f64(gaps);
            for (std::size_t i = 1; i < after.size(); i += 2)
                if (std::memcmp(&after[i], &before[i], sizeof(double)) != 0)
                    return ::testing::AssertionFailure() << what << ": element " << i << " between dst's elements was written";
            return ::testing::AssertionSuccess();
        } catch (const std::exception& e) {
            return ::testing::AssertionFailure() << what << ": " << e.what();
        }
    }

    // ---- pieces ----
    DType dtype() const { return dt_; }
    Engine engine() const { return engine_; }
    Device device() const { return device_ ? *device_ : engine_ == Engine::cuda ? Device::cuda(0) : Device::cpu(); }
    bool has_post_ops() const { return !post_ops_.empty(); }

    const ConvParams& params() const { return prm_; }
    bool is_transposed() const { return transposed_; }
    ConvTransposeParams transposed_params() const {
        ConvTransposeParams t;
        t.stride = prm_.stride, t.padding_l = prm_.padding_l, t.padding_r = prm_.padding_r;
        t.dilation = prm_.dilation, t.groups = prm_.groups, t.output_padding = output_padding_;
        return t;
    }
    Dims src_dims() const { return with_spatial(Dims{mb_, ic_}, in_); }
    Dims wei_dims() const {
        return transposed_ ? with_spatial(Dims{ic_, oc_ / prm_.groups}, k_) : with_spatial(Dims{oc_, ic_ / prm_.groups}, k_);
    }
    Dims dst_dims() const {
        return transposed_ ? conv_transpose_output_shape(src_dims(), wei_dims(), transposed_params())
                           : output_shape(src_dims(), wei_dims(), params());
    }

    // The problem as the core describes it to a backend, without post-ops (for plan queries).
    core::ConvProblem problem(Dir dir) const {
        core::ConvProblem p;
        p.dir = dir;
        p.dt = dt_;
        p.nsp = in_.rank();
        p.mb = mb_;
        p.ic = ic_;
        p.oc = oc_;
        p.g = prm_.groups;
        const Dims out = dst_dims();
        for (int i = 0; i < p.nsp; ++i) {
            p.in[i] = in_[i];
            p.k[i] = k_[i];
            p.out[i] = out[i + 2];
            p.stride[i] = at(prm_.stride, i, 1);
            p.padding_l[i] = at(prm_.padding_l, i, 0);
            p.padding_r[i] = at(prm_.padding_r, i, 0);
            p.dilation[i] = at(prm_.dilation, i, 1);
        }
        p.src_layout = src_layout_;
        p.wei_layout = wei_layout_;
        p.dst_layout = dst_layout_;
        p.with_bias = bias_ && dir != Dir::bwd_d;
        p.allow_tf32 = tf32_.value_or(allow_tf32());
        return p;
    }

    // "bwd_w bf16 nhwc g2mb1ic8ih11oc8oh5kh3sh2ph1dh1 bias on cpu"
    std::string name(Dir dir) const {
        const int nsp = in_.rank();
        std::string s = std::string(core::to_string(dir)) + " " + to_string(dt_) + " ";
        if (src_layout_ == wei_layout_ && src_layout_ == dst_layout_) s += tag(src_layout_, nsp);
        else s += "src:" + tag(src_layout_, nsp) + " wei:" + tag(wei_layout_, nsp) + " dst:" + tag(dst_layout_, nsp);
        tools::ConvDesc d;
        d.ndims = nsp;
        d.g = prm_.groups, d.mb = mb_, d.ic = ic_, d.oc = oc_;
        const Dims out = dst_dims();
        // benchdnn derives padding_r from the output size; name it where the call's differs.
        Dims padding_r;
        bool padding_r_implied = true;
        for (int i = 0; i < nsp; ++i) {
            const int x = 3 - nsp + i;
            d.in[x] = in_[i], d.out[x] = out[i + 2], d.k[x] = k_[i];
            d.stride[x] = at(prm_.stride, i, 1), d.dilation[x] = at(prm_.dilation, i, 1);
            d.padding_l[x] = at(prm_.padding_l, i, 0);
            const int64_t implied = (d.out[x] - 1) * d.stride[x] - d.in[x] + (d.k[x] - 1) * d.dilation[x] + 1 - d.padding_l[x];
            padding_r.push_back(at(prm_.padding_r, i, 0));
            padding_r_implied = padding_r_implied && implied == padding_r[i];
        }
        s += " " + d.str();
        if (!padding_r_implied && !transposed_) s += " padding_r" + padding_r.str();
        if (transposed_) {
            s += " transposed padding_r" + padding_r.str();
            if (!output_padding_.empty()) s += " output_padding" + output_padding_.str();
        }
        if (bias_) s += " bias";
        if (!post_ops_.empty()) s += " post-ops " + post_ops_;
        if (tf32_) s += *tf32_ ? " tf32" : " no-tf32";
        s += std::string(" on ") + to_string(engine_);
        if (device() != Device::cpu()) s += " " + device().str();
        return s;
    }

    // Host tensors of this case, every one filled from `seed` (outputs too: a sum post-op reads
    // dst, and a stale output must not pass for a computed one).
    ConvTensors make_tensors(uint64_t seed) const {
        ConvTensors t;
        const Dims o = dst_dims();
        t.src = Tensor(dt_, src_dims(), src_layout_);
        t.wei = Tensor(dt_, wei_dims(), wei_layout_);
        t.dst = Tensor(dt_, o, dst_layout_);
        fill(t.src, -1, 1, seed + 1);
        fill(t.wei, -1, 1, seed + 2);
        fill(t.dst, -1, 1, seed + 3);
        if (bias_) {
            t.bias = Tensor(dt_, Dims{oc_});
            fill(t.bias, -1, 1, seed + 4);
        }
        std::vector<std::string> shapes;
        t.ops = parse_post_ops(post_ops_, &shapes);
        std::size_t bi = 0;
        for (std::size_t i = 0; i < t.ops.size(); ++i) {
            if (t.ops[i].kind != PostOp::Kind::binary) continue;
            const std::string& shape = shapes[bi++];
            Dims od = o;
            Layout ol = src_layout_;
            if (shape == "scalar") {
                for (int k = 0; k < od.rank(); ++k) od[k] = 1;
            } else if (shape == "per_oc") {
                for (int k = 0; k < od.rank(); ++k)
                    if (k != 1) od[k] = 1;
            } else if (shape == "spatial") {
                od[0] = od[1] = 1;
            } else if (shape == "full_other_layout") {
                ol = src_layout_ == Layout::channels_last ? Layout::channels_first : Layout::channels_last;
            } else if (shape == "full_strided") {
                Dims wide = od;
                wide[wide.rank() - 1] *= 2;
                t.operands.emplace_back(dt_, wide);
                fill(t.operands.back(), 0.5, 1.5, seed + 10 + i);
                Dims st = dense_strides(wide, Layout::channels_first);
                st[st.rank() - 1] = 2;
                t.ops[i].operand = TensorView(t.operands.back().data(), dt_, od, st);
                continue;
            } else if (shape != "full") {
                throw std::invalid_argument("ConvTester: post-op " + std::to_string(i) + " of '" + post_ops_ +
                                            "' needs an operand shape (scalar, per_oc, spatial, full, "
                                            "full_other_layout, full_strided), got '" + shape + "'");
            }
            t.operands.emplace_back(dt_, od, ol);
            fill(t.operands.back(), 0.5, 1.5, seed + 10 + i);
            t.ops[i].operand = t.operands.back().view();
        }
        return t;
    }
    ConvTensors make_tensors() const { return make_tensors(seed_); }

    // The same values in new memory on `device`; operands keep their strides.
    static ConvTensors copy_tensors(const ConvTensors& a, Device device) {
        ConvTensors t;
        t.src = copy_of(a.src, device);
        t.wei = copy_of(a.wei, device);
        t.bias = copy_of(a.bias, device);
        t.dst = copy_of(a.dst, device);
        t.ops = a.ops;
        std::size_t bi = 0;
        for (std::size_t i = 0; i < t.ops.size(); ++i) {
            if (t.ops[i].kind != PostOp::Kind::binary) continue;
            t.operands.push_back(copy_of(a.operands[bi++], device));
            const TensorView& v = a.ops[i].operand;
            t.ops[i].operand = TensorView(t.operands.back().data(), v.dtype, v.sizes, v.strides, device);
        }
        return t;
    }

    // One call of direction `dir` on `engine`, on the tester's stream.
    Event run(Dir dir, ConvTensors& t, Engine engine) const {
        const ConvOptions o{engine, {}};
        struct Tf32 {  // set for this call only, restored on every way out
            std::optional<bool> old;
            explicit Tf32(std::optional<bool> on) {
                if (on) old = allow_tf32(), set_allow_tf32(*on);
            }
            ~Tf32() {
                if (old) set_allow_tf32(*old);
            }
        } tf32(engine == Engine::ref ? std::nullopt : tf32_);
        const ConvParams& p = prm_;
        const Stream& s = engine == Engine::ref ? Stream() : stream_;
        if (transposed_) {
            const ConvTransposeParams tp = transposed_params();
            switch (dir) {
                case Dir::fwd: return conv_transpose_forward(t.dst, t.src, t.wei, t.bias.view(), tp, t.ops, s, {}, o);
                case Dir::bwd_d: return conv_transpose_backward_data(t.src, t.dst, t.wei, tp, s, {}, o);
                case Dir::bwd_w: return conv_transpose_backward_weights(t.wei, t.bias.view(), t.dst, t.src, tp, s, {}, o);
            }
        }
        switch (dir) {
            case Dir::fwd: return convolution_forward(t.dst, t.src, t.wei, t.bias.view(), p, t.ops, s, {}, o);
            case Dir::bwd_d: return convolution_backward_data(t.src, t.dst, t.wei, p, s, {}, o);
            case Dir::bwd_w: return convolution_backward_weights(t.wei, t.bias.view(), t.dst, t.src, p, s, {}, o);
        }
        return Event();
    }

    // The `scale` of the tolerance measure for this case's outputs in direction `dir`.
    double scale(Dir dir) const {
        const int64_t g = prm_.groups;
        double K = dir == Dir::fwd ? static_cast<double>(ic_ / g) : dir == Dir::bwd_d ? static_cast<double>(oc_ / g)
                                                                                      : static_cast<double>(mb_);
        const Dims o = dst_dims();
        if (transposed_ && dir == Dir::bwd_w) {
            // The reduction runs over the transposed input's positions (at most the kernel's taps
            // per output in the other directions: the bound below holds for both).
            for (int64_t v : in_) K *= static_cast<double>(v);
            return output_scale(K);
        }
        if (dir == Dir::bwd_w)
            for (int i = 2; i < o.rank(); ++i) K *= static_cast<double>(o[i]);
        else
            for (int64_t v : k_) K *= static_cast<double>(v);
        return output_scale(K);
    }

    // "" when `got`'s output of `dir` (and diff_bias) agree with `want`'s within the table's
    // bound; otherwise what differs. Either side may be on a device.
    std::string compare(Dir dir, const ConvTensors& got, const ConvTensors& want) const {
        std::string diff = compare_values(to_host_f64(got.output(dir)), to_host_f64(want.output(dir)), dir);
        if (dir == Dir::bwd_w && bias_) {
            const std::string b = compare_values(to_host_f64(got.bias), to_host_f64(want.bias), dir);
            if (!b.empty()) diff += (diff.empty() ? "" : "; ") + ("diff_bias: " + b);
        }
        return diff;
    }
    std::string compare_values(const std::vector<double>& got, const std::vector<double>& want, Dir dir) const {
        const double tol = tolerance(dt_, tf32_.value_or(false));
        const tools::CompareResult r = tools::compare(got, want, dt_, scale(dir), tol);
        if (r.ok) return "";
        char buf[160];
        std::snprintf(buf, sizeof buf, " (%lld of %zu elements beyond %.3g, largest error %.3g)",
                      static_cast<long long>(r.bad), want.size(), tol, r.max_err);
        return r.detail + buf;
    }

private:
    static Dims with_spatial(Dims d, const Dims& spatial) {
        for (int64_t v : spatial) d.push_back(v);
        return d;
    }
    // Value i of a per-dim list that may be empty (default) or hold one value for every dim.
    static int64_t at(const Dims& d, int i, int64_t dflt) { return d.empty() ? dflt : d.rank() == 1 ? d[0] : d[i]; }

    int64_t mb_ = 2, ic_ = 8, oc_ = 16;
    Dims in_{8, 8}, k_{3, 3};
    ConvParams prm_;  // stride, dilation, padding and groups as the call gets them
    bool transposed_ = false;
    Dims output_padding_;
    bool bias_ = false;
    std::string post_ops_;
    DType dt_ = DType::f32;
    Layout src_layout_ = Layout::channels_first, wei_layout_ = Layout::channels_first,
           dst_layout_ = Layout::channels_first;
    uint64_t seed_ = 1234;
    Engine engine_ = Engine::cpu;
    std::optional<Device> device_;
    Stream stream_;
    std::optional<bool> tf32_;
};

}  // namespace convkit::test
