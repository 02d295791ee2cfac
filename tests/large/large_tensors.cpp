// Tensors of 2^31 or more elements, every direction, against cropped runs of the reference
// engine: the first and last rows of a convolution's output depend only on the first and last
// rows of its input, so a crop of a few rows, run whole by the reference engine, gives the
// exact values of those rows. Backward weights gets a diff_dst that is zero except in its first
// and last rows, so its result is the sum of the two crops' results.
//
// Values are multiples of 1/16 (activations) and 1/8 (weights) in [-1, 1]: every f32 sum of a
// window is exact, and TF32 and bf16 inputs hold them exactly; only a 16-bit output rounds.
//
//   large_tensors [--engine=cpu|cuda] [--dt=bf16|f16|f32|f64] [--layout=nchw|nhwc]
//                 [--mb=1 --ic=2 --oc=2 --h=32800 --w=32800 --k=3 --stride=2 --pad=1]
//                 [--dir=fwd,bwd_d,bwd_w]
// Exit status 0 when every direction agrees; one line per direction. The default problem's src
// has 2.15e9 elements (4.3 GB in bf16). ctest runs it as `large_tensors` (label large).
#include <convkit/convkit.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace convkit;

namespace {

struct Opts {
    Engine engine = Engine::cpu;
    DType dt = DType::bf16;
    Layout layout = Layout::channels_first;
    int64_t mb = 1, ic = 2, oc = 2, h = 32800, w = 32800, k = 3, stride = 2, pad = 1;
    std::string dirs = "fwd,bwd_d,bwd_w";
};

uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

// Element i of a tensor with `seed`: a multiple of 1/den in [-1, 1].
double value(uint64_t i, uint64_t seed, int den) {
    return static_cast<double>(static_cast<int64_t>(mix(i * 0x9e3779b97f4a7c15ull + seed) % (2 * den + 1)) - den) / den;
}

// Fills host tensor t (dense, any dtype) in memory order; zero outside rows [lo, hi) of dim 2
// when `rows` is set.
void fill(const Tensor& t, uint64_t seed, int den, bool rows = false, int64_t lo = 0, int64_t hi = 0) {
    const TensorView v = t.view();
    const int64_t n = v.numel();
    const int64_t rs = v.strides[2], rn = v.sizes[2];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        double x = value(static_cast<uint64_t>(i), seed, den);
        if (rows) {
            const int64_t r = (i / rs) % rn;
            if (r >= lo && r < hi) x = 0;
        }
        switch (v.dtype) {
            case DType::f32: static_cast<float*>(v.data)[i] = static_cast<float>(x); break;
            case DType::f64: static_cast<double*>(v.data)[i] = x; break;
            case DType::bf16: static_cast<uint16_t*>(v.data)[i] = static_cast<uint16_t>(f32_to_bf16(static_cast<float>(x))); break;
            case DType::f16: static_cast<uint16_t*>(v.data)[i] = f32_to_f16(static_cast<float>(x)); break;
        }
    }
}

// Rows [r0, r0 + n) of dim 2 of `t`, as a view (same strides).
TensorView rows_of(const TensorView& t, int64_t r0, int64_t n) {
    TensorView v = t;
    v.sizes[2] = n;
    v.data = static_cast<char*>(t.data) + r0 * t.strides[2] * static_cast<int64_t>(dtype_size(t.dtype));
    return v;
}

// A dense copy of `v` in `dt` (the reference runs crops in f32 or f64, so only the tested
// engine's output rounds).
Tensor dense(const TensorView& v, DType dt) {
    Tensor t(dt, v.sizes, Layout::channels_first);
    copy(t.view(), v);
    return t;
}

// Largest error of `got` (any view) against `want`, in units of the tolerance: 1 ulp of the
// dtype at the magnitude of the value, or of `scale` where given (f32/f64: exact sums, a few ulps
// for long bwd_w sums).
double error_units(const TensorView& got, const TensorView& want, DType dt, int64_t* worst, const Tensor* scale = nullptr) {
    const Tensor g = dense(got, DType::f64), w = dense(want, DType::f64);
    const double ulp = dt == DType::bf16 ? 1.0 / 128 : dt == DType::f16 ? 1.0 / 1024 : dt == DType::f32 ? 1e-6 : 1e-13;
    const int64_t n = g.numel();
    double e = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double a = g.ptr<double>()[i], b = w.ptr<double>()[i];
        const double m = scale ? scale->ptr<double>()[i] : std::fabs(b);
        const double u = std::fabs(a - b) / (ulp * std::max(1.0, m));
        if (!(u <= e)) e = u, *worst = i;
    }
    return e;
}

ConvParams params(const Opts& o, int64_t pl_h, int64_t pr_h) {
    ConvParams p;
    p.stride = Dims{o.stride, o.stride};
    p.padding_l = Dims{pl_h, o.pad};
    p.padding_r = Dims{pr_h, o.pad};
    return p;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Host tensor to the engine's device (or itself on the CPU).
Tensor on_device(const Tensor& host, const Opts& o) {
    if (o.engine != Engine::cuda) return host;
    Tensor d(host.view().dtype, host.view().sizes, o.layout, Device::cuda(0));
    copy(d.view(), host.view());
    return d;
}

Tensor to_host(const Tensor& t) {
    if (t.view().device.is_cpu()) return t;
    Tensor h(t.view().dtype, t.view().sizes, t.view().layout());
    copy(h.view(), t.view());
    return h;
}

int run(const Opts& o) {
    const int64_t ext = o.k, s = o.stride, pl = o.pad, pr = o.pad, H = o.h;
    const int64_t oh = (H + pl + pr - ext) / s + 1, ow = (o.w + 2 * o.pad - ext) / s + 1;
    const int64_t crop = 8;  // output rows per crop
    const DType rdt = o.dt == DType::f64 ? DType::f64 : DType::f32;
    const Dims xs{o.mb, o.ic, H, o.w}, ws{o.oc, o.ic, o.k, o.k}, ys{o.mb, o.oc, oh, ow};
    std::printf("large_tensors: %s %s %s src %s (%.3g elements) dst %s (%.3g elements)\n", to_string(o.engine),
                to_string(o.dt), o.layout == Layout::channels_last ? "nhwc" : "nchw", xs.str().c_str(),
                static_cast<double>(H) * o.w * o.ic * o.mb, ys.str().c_str(), static_cast<double>(oh) * ow * o.oc * o.mb);
    Tensor wt(o.dt, ws);
    fill(wt, 7, 8);
    const Tensor wd = on_device(wt, o), wref = dense(wt.view(), rdt);
    ConvOptions eo, ro;
    eo.engine = o.engine;
    ro.engine = Engine::ref;
    // The crops in forward terms: dst rows [0, crop) read src rows [0, (crop - 1) * s - pl + ext);
    // dst rows [oh - crop, oh) read src rows from (oh - crop) * s - pl to the end.
    const int64_t top_in = (crop - 1) * s - pl + ext, bot_in0 = (oh - crop) * s - pl;
    const ConvParams ptop = params(o, pl, 0), pbot = params(o, 0, pr);
    int failures = 0;
    auto report = [&](const char* dir, double e, double secs) {
        const bool ok = e <= 1.0;
        failures += !ok;
        std::printf("large_tensors: %s: %s (largest error %.3g of the tolerance, %.1f s)\n", dir, ok ? "ok" : "MISMATCH", e, secs);
        std::fflush(stdout);
    };
    for (std::size_t at_ = 0; at_ < o.dirs.size();) {
        std::size_t comma = o.dirs.find(',', at_);
        if (comma == std::string::npos) comma = o.dirs.size();
        const std::string dir = o.dirs.substr(at_, comma - at_);
        at_ = comma + 1;
        int64_t worst = 0;
        if (dir == "fwd") {
            Tensor y;
            {
                Tensor x(o.dt, xs, o.layout);
                fill(x, 1, 16);
                const Tensor xd = on_device(x, o);
                Tensor yd(o.dt, ys, o.layout, xd.view().device);
                const auto t0 = std::chrono::steady_clock::now();
                convolution_forward(yd.view(), xd.view(), wd.view(), TensorView(), params(o, pl, pr), PostOps(), Stream(), {}, eo).wait();
                const double secs = seconds_since(t0);
                y = to_host(yd);
                double e = 0;
                for (int bottom = 0; bottom < 2; ++bottom) {
                    const Tensor xc = dense(bottom ? rows_of(x.view(), bot_in0, H - bot_in0) : rows_of(x.view(), 0, top_in), rdt);
                    Tensor yc(rdt, Dims{o.mb, o.oc, crop, ow});
                    convolution_forward(yc.view(), xc.view(), wref.view(), TensorView(), bottom ? pbot : ptop, PostOps(), Stream(), {}, ro).wait();
                    e = std::max(e, error_units(rows_of(y.view(), bottom ? oh - crop : 0, crop), yc.view(), o.dt, &worst));
                }
                report("fwd", e, secs);
            }
        } else if (dir == "bwd_d") {
            Tensor dy(o.dt, ys, o.layout);
            fill(dy, 2, 16);
            const Tensor dyd = on_device(dy, o);
            Tensor dxd(o.dt, xs, o.layout, dyd.view().device);
            const auto t0 = std::chrono::steady_clock::now();
            convolution_backward_data(dxd.view(), dyd.view(), wd.view(), params(o, pl, pr), Stream(), {}, eo).wait();
            const double secs = seconds_since(t0);
            const Tensor dx = to_host(dxd);
            double e = 0;
            // diff_src row i is exact in a crop when every window over it is in the crop: top rows
            // below crop * s - pl; bottom rows from (oh - crop - 1) * s - pl + ext.
            for (int bottom = 0; bottom < 2; ++bottom) {
                const Tensor dyc = dense(rows_of(dy.view(), bottom ? oh - crop : 0, crop), rdt);
                const int64_t r0 = bottom ? bot_in0 : 0, rn = bottom ? H - bot_in0 : top_in;
                Tensor dxc(rdt, Dims{o.mb, o.ic, rn, o.w});
                convolution_backward_data(dxc.view(), dyc.view(), wref.view(), bottom ? pbot : ptop, Stream(), {}, ro).wait();
                const int64_t e0 = bottom ? (oh - crop - 1) * s - pl + ext : 0, e1 = bottom ? H : crop * s - pl;
                e = std::max(e, error_units(rows_of(dx.view(), e0, e1 - e0), rows_of(dxc.view(), e0 - r0, e1 - e0), o.dt, &worst));
            }
            report("bwd_d", e, secs);
        } else if (dir == "bwd_w") {
            Tensor x(o.dt, xs, o.layout), dy(o.dt, ys, o.layout);
            fill(x, 3, 16);
            fill(dy, 4, 16, true, crop, oh - crop);  // zero but for the first and last rows
            const Tensor xd = on_device(x, o), dyd = on_device(dy, o);
            Tensor dwd(o.dt, ws, Layout::channels_first, xd.view().device);
            const auto t0 = std::chrono::steady_clock::now();
            convolution_backward_weights(dwd.view(), TensorView(), dyd.view(), xd.view(), params(o, pl, pr), Stream(), {}, eo).wait();
            const double secs = seconds_since(t0);
            const Tensor dw = to_host(dwd);
            Tensor want(DType::f64, ws), mag(DType::f64, ws);
            std::memset(want.data(), 0, want.view().nbytes());
            std::memset(mag.data(), 0, mag.view().nbytes());
            for (int bottom = 0; bottom < 2; ++bottom) {
                const Tensor xc = dense(bottom ? rows_of(x.view(), bot_in0, H - bot_in0) : rows_of(x.view(), 0, top_in), rdt);
                const Tensor dyc = dense(rows_of(dy.view(), bottom ? oh - crop : 0, crop), rdt);
                Tensor dwc(rdt, ws);
                convolution_backward_weights(dwc.view(), TensorView(), dyc.view(), xc.view(), bottom ? pbot : ptop, Stream(), {}, ro).wait();
                const Tensor d = dense(dwc.view(), DType::f64);
                for (int64_t i = 0; i < want.numel(); ++i) {
                    want.ptr<double>()[i] += d.ptr<double>()[i];
                    mag.ptr<double>()[i] += std::fabs(d.ptr<double>()[i]);
                }
            }
            // A 16-bit result rounds once (the tiles run widened to f32 and sum in f64). f32:
            // rounding over 2 * crop rows of the row width (sqrt growth) at the partial sums'
            // magnitude (the two crops' sums may cancel).
            double e = 0;
            if (o.dt == DType::f32)
                e = error_units(dw.view(), want.view(), o.dt, &worst, &mag) /
                    std::max(1.0, std::sqrt(static_cast<double>(2 * crop * ow)) / 4);
            else
                e = error_units(dw.view(), want.view(), o.dt, &worst);
            report("bwd_w", e, secs);
        } else {
            std::fprintf(stderr, "large_tensors: unknown direction '%s'\n", dir.c_str());
            return 2;
        }
    }
    return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    Opts o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const std::size_t eq = a.find('=');
        const std::string key = a.substr(0, eq), val = eq == std::string::npos ? "" : a.substr(eq + 1);
        auto num = [&] { return std::atoll(val.c_str()); };
        if (key == "--engine") o.engine = engine_from_string(val);
        else if (key == "--dt") o.dt = val == "f32" ? DType::f32 : val == "f64" ? DType::f64 : val == "f16" ? DType::f16 : DType::bf16;
        else if (key == "--layout") o.layout = val == "nhwc" ? Layout::channels_last : Layout::channels_first;
        else if (key == "--mb") o.mb = num();
        else if (key == "--ic") o.ic = num();
        else if (key == "--oc") o.oc = num();
        else if (key == "--h") o.h = num();
        else if (key == "--w") o.w = num();
        else if (key == "--k") o.k = num();
        else if (key == "--stride") o.stride = num();
        else if (key == "--pad") o.pad = num();
        else if (key == "--dir") o.dirs = val;
        else {
            std::fprintf(stderr, "large_tensors: unknown argument '%s'\n", a.c_str());
            return 2;
        }
    }
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "large_tensors: %s\n", e.what());
        return 1;
    }
}
