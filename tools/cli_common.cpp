// Shared CLI helpers: list parsing, npy <-> tensor conversion, fills and comparison.
#include "cli_common.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace convkit::tools {

Dims parse_list(const std::string& text, const char* what) {
    Dims d;
    std::string cur;
    auto flush = [&](bool last) {
        if (cur.empty())
            throw Error(ErrorKind::invalid_argument, std::string(what) + ": '" + text +
                                                         "' is not a comma-separated list of integers" +
                                                         (last ? "" : " (empty entry)"));
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(cur.c_str(), &end, 10);
        // The end of the entry, not the first NUL, where strtoll stops too ("2\0junk" reads as 2).
        if (end != cur.data() + cur.size() || errno == ERANGE)
            throw Error(ErrorKind::invalid_argument, std::string(what) + ": '" + cur + "' in '" +
                                                         text + "' is not an integer");
        if (d.rank() == Dims::max_rank)
            throw Error(ErrorKind::invalid_argument, std::string(what) + ": '" + text + "' has more than " +
                                                         std::to_string(Dims::max_rank) + " values");
        d.push_back(v);
        cur.clear();
    };
    for (char c : text) {
        if (c == ',') flush(false);
        else cur += c;
    }
    flush(true);
    return d;
}

namespace {

// Visits every element of `t` in logical order, calling f(linear_index, element_offset).
template <typename F> void for_each_offset(const TensorView& t, F f) {
    const int r = t.rank();
    const int64_t n = t.numel();
    int64_t idx[Dims::max_rank] = {0, 0, 0, 0, 0};
    for (int64_t i = 0; i < n; ++i) {
        int64_t off = 0;
        for (int d = 0; d < r; ++d) off += idx[d] * t.strides[d];
        f(i, off);
        for (int d = r - 1; d >= 0; --d) {
            if (++idx[d] < t.sizes[d]) break;
            idx[d] = 0;
        }
    }
}

}  // namespace

std::vector<double> to_host_f64(const TensorView& t) {
    // A logical-order f64 host tensor; copy() does the layout, dtype and device conversion.
    std::vector<double> out(static_cast<std::size_t>(t.numel()));
    if (out.empty()) return out;
    TensorView h(out.data(), DType::f64, t.sizes);
    copy(h, t);
    return out;
}

void from_host_f64(const TensorView& t, const std::vector<double>& values) {
    if (static_cast<int64_t>(values.size()) != t.numel())
        throw Error(ErrorKind::invalid_argument, "from_host_f64: value count mismatch");
    if (values.empty()) return;
    // f64 -> f32 first so that bf16/f16 are rounded from f32 exactly as the library does.
    std::vector<float> f(values.begin(), values.end());
    if (t.dtype == DType::f64) {
        TensorView h(const_cast<double*>(values.data()), DType::f64, t.sizes);
        copy(t, h);
    } else {
        TensorView h(f.data(), DType::f32, t.sizes);
        copy(t, h);
    }
}

Tensor tensor_from_npy(const NpyArray& a, DType dt, Layout layout, Device device) {
    Dims sizes(a.shape);
    Tensor t(dt, sizes, layout, device);
    std::vector<double> v(static_cast<std::size_t>(a.numel()));
    if (a.type == NpyType::f8) {
        std::memcpy(v.data(), a.data.data(), v.size() * 8);
    } else {
        std::vector<float> f = npy_to_f32(a);
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = f[i];
    }
    if (a.type == NpyType::f8 && dt == DType::f64) {
        TensorView h(v.data(), DType::f64, sizes);
        copy(t.view(), h);
    } else {
        from_host_f64(t.view(), v);
    }
    return t;
}

NpyArray npy_from_tensor(const TensorView& t) {
    std::vector<double> v = to_host_f64(t);
    NpyArray a;
    a.shape = t.sizes.vec();
    if (t.dtype == DType::f64) {
        a.type = NpyType::f8;
        a.data.resize(v.size() * 8);
        std::memcpy(a.data.data(), v.data(), a.data.size());
    } else {
        a.type = NpyType::f4;
        a.data.resize(v.size() * 4);
        for (std::size_t i = 0; i < v.size(); ++i) {
            float f = static_cast<float>(v[i]);
            std::memcpy(a.data.data() + i * 4, &f, 4);
        }
    }
    return a;
}

std::vector<double> random_values(int64_t n, double lo, double hi, uint64_t seed, DType dt) {
    std::vector<double> v(static_cast<std::size_t>(n));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    for (auto& x : v) {
        // splitmix64: fast, seedable, and identical on every platform.
        s += 0x9E3779B97F4A7C15ull;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        double u = static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
        double val = lo + (hi - lo) * u;
        if (dt == DType::bf16) val = bf16_to_f32(f32_to_bf16(static_cast<float>(val)));
        else if (dt == DType::f16) val = f16_to_f32(f32_to_f16(static_cast<float>(val)));
        else if (dt == DType::f32) val = static_cast<float>(val);
        x = val;
    }
    return v;
}

// Tolerances, relative to max(|want|, scale) where `scale` is the typical magnitude of an
// output (for a sum of K products of values in [-1, 1], about sqrt(K) / 3), so cancellation in
// one element does not turn a rounding difference into a failure:
//  - f64: both sides accumulate in double; differences come from summation order: ~1e-15 * sqrt(K).
//  - f32: the reference accumulates in double, the backend in f32: error ~ 2^-24 * sqrt(K) per
//    element, under 1e-5 up to a few thousand terms. A backend that sums a longer axis in f32 in
//    one sequence exceeds it (oneDNN over WaveNet's 84k positions: 2.3e-5, U-Net's 1.9M: 1.3e-4);
//    the CPU backend therefore splits long backward reductions (src/cpu/split_plan.cpp) rather
//    than this bound growing with K.
//  - bf16: both accumulate in f32 from identical bf16 inputs, then round to bf16; an f32
//    difference can flip one rounding, i.e. 1 ulp = 2^-8 relative.
//  - f16: the same with 2^-11 (plus f16's narrower range).
double tolerance(DType dt) {
    switch (dt) {
        case DType::f64: return 1e-12;
        case DType::f32: return 1e-5;
        case DType::bf16: return 8e-3;
        case DType::f16: return 2e-3;
    }
    return 0;
}

CompareResult compare(const std::vector<double>& got, const std::vector<double>& want, DType dt, double scale,
                      double tol) {
    CompareResult r;
    if (tol <= 0) tol = tolerance(dt);
    if (got.size() != want.size()) {
        r.ok = false;
        r.detail = "size mismatch";
        return r;
    }
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = got[i], w = want[i];
        double err;
        if (std::isnan(w) || std::isnan(g)) err = (std::isnan(w) && std::isnan(g)) ? 0 : INFINITY;
        else if (std::isinf(w) || std::isinf(g)) err = (g == w) ? 0 : INFINITY;
        else err = std::abs(g - w) / std::max(std::abs(w), scale);
        if (err > r.max_err || r.worst < 0) {
            if (err > r.max_err) r.max_err = err;
            if (r.worst < 0 || err >= r.max_err) r.worst = static_cast<int64_t>(i);
        }
        if (!(err <= tol)) {
            if (r.bad == 0) {
                char buf[160];
                std::snprintf(buf, sizeof buf, "first mismatch at element %zu: got %.9g, want %.9g", i, g, w);
                r.detail = buf;
            }
            ++r.bad;
        }
    }
    r.ok = r.bad == 0;
    return r;
}

}  // namespace convkit::tools
