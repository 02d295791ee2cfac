// im2col / col2im over blocks of output positions and the weights' transposes (f64_im2col.hpp).
// Positions run in (d, h, w) order over the plan's right-aligned geometry; channels-first rows
// are visited as runs along w, where the valid range of each tap is computed once per run.
#include "cpu/f64_im2col.hpp"

#include <algorithm>
#include <cstring>

namespace convkit::cpu {
namespace {

struct Pos {
    int64_t d, h, w;
};

inline Pos decompose(const F64Plan& f, int64_t pos) {
    Pos q;
    q.w = pos % f.geo.out[2];
    const int64_t t = pos / f.geo.out[2];
    q.h = t % f.geo.out[1];
    q.d = t / f.geo.out[1];
    return q;
}

// The [lo, hi) range of output w whose input column iw = ow * stride - padding_l + off is inside
// [0, IW).
inline void valid_w(const F64Plan& f, int64_t off, int64_t ow0, int64_t ow1, int64_t& lo, int64_t& hi) {
    // With s = stride, pl = padding_l: iw >= 0  <=>  ow >= ceil((pl - off) / s);
    // iw < IW  <=>  ow <= floor((IW - 1 + pl - off) / s).
    const int64_t s = f.geo.stride[2];
    const int64_t a = f.geo.padding_l[2] - off, b = f.geo.in[2] - 1 + f.geo.padding_l[2] - off;
    int64_t l = a <= 0 ? 0 : (a + s - 1) / s;
    int64_t h = b < 0 ? -1 : b / s;
    lo = std::max(ow0, l);
    hi = std::min(ow1, h + 1);
    if (hi < lo) hi = lo;
}

// Visits the output positions [pos0, pos0 + npos) one (d, h) row run at a time.
template <typename Fn> void for_runs(const F64Plan& f, int64_t pos0, int64_t npos, Fn&& fn) {
    int64_t pos = pos0;
    const int64_t end = pos0 + npos;
    while (pos < end) {
        const Pos o = decompose(f, pos);
        const int64_t ow1 = std::min(f.geo.out[2], o.w + (end - pos));
        fn(o.d, o.h, o.w, ow1, pos - pos0);
        pos += ow1 - o.w;
    }
}

}  // namespace

void im2col_cl(const F64Plan& f, const double* img, int64_t gi, int64_t pos0, int64_t npos, int64_t k0, int64_t k1,
               double* col, int64_t ldcol) {
    const int64_t IC = f.p.ic;
    for (int64_t j = 0; j < npos; ++j) {
        const Pos o = decompose(f, pos0 + j);
        double* row = col + j * ldcol;
        int64_t kk = k0;
        while (kk < k1) {
            const int64_t ks = kk / f.ICg, ic0 = kk % f.ICg;
            const int64_t len = std::min(f.ICg - ic0, k1 - kk);
            const int64_t kw = ks % f.geo.k[2], kh = (ks / f.geo.k[2]) % f.geo.k[1],
                          kd = ks / (f.geo.k[2] * f.geo.k[1]);
            const int64_t id = o.d * f.geo.stride[0] - f.geo.padding_l[0] + kd * f.geo.dilation[0];
            const int64_t ih = o.h * f.geo.stride[1] - f.geo.padding_l[1] + kh * f.geo.dilation[1];
            const int64_t iw = o.w * f.geo.stride[2] - f.geo.padding_l[2] + kw * f.geo.dilation[2];
            double* out = row + (kk - k0);
            if (id < 0 || id >= f.geo.in[0] || ih < 0 || ih >= f.geo.in[1] || iw < 0 || iw >= f.geo.in[2]) {
                std::memset(out, 0, static_cast<std::size_t>(len) * sizeof(double));
            } else {
                const double* s = img + ((id * f.geo.in[1] + ih) * f.geo.in[2] + iw) * IC + gi * f.ICg + ic0;
                if (len == 1) *out = *s;
                else std::memcpy(out, s, static_cast<std::size_t>(len) * sizeof(double));
            }
            kk += len;
        }
    }
}

void im2col_cf(const F64Plan& f, const double* img, int64_t gi, int64_t pos0, int64_t npos, int64_t k0, int64_t k1,
               double* col, int64_t ldcol) {
    for (int64_t kk = k0; kk < k1; ++kk) {
        const int64_t ic = kk / f.KS, ks = kk % f.KS;
        const int64_t kw = ks % f.geo.k[2], kh = (ks / f.geo.k[2]) % f.geo.k[1], kd = ks / (f.geo.k[2] * f.geo.k[1]);
        const double* plane = img + (gi * f.ICg + ic) * f.IS;
        double* out = col + (kk - k0) * ldcol;
        for_runs(f, pos0, npos, [&](int64_t od, int64_t oh, int64_t ow0, int64_t ow1, int64_t j0) {
            double* o = out + j0;
            const int64_t id = od * f.geo.stride[0] - f.geo.padding_l[0] + kd * f.geo.dilation[0];
            const int64_t ih = oh * f.geo.stride[1] - f.geo.padding_l[1] + kh * f.geo.dilation[1];
            const int64_t n = ow1 - ow0;
            if (id < 0 || id >= f.geo.in[0] || ih < 0 || ih >= f.geo.in[1]) {
                std::memset(o, 0, static_cast<std::size_t>(n) * sizeof(double));
                return;
            }
            int64_t lo, hi;
            const int64_t off = kw * f.geo.dilation[2];
            valid_w(f, off, ow0, ow1, lo, hi);
            const double* row = plane + (id * f.geo.in[1] + ih) * f.geo.in[2] - f.geo.padding_l[2] + off;
            for (int64_t ow = ow0; ow < lo; ++ow) o[ow - ow0] = 0;
            if (f.geo.stride[2] == 1) {
                if (hi > lo) std::memcpy(o + (lo - ow0), row + lo, static_cast<std::size_t>(hi - lo) * sizeof(double));
            } else {
                for (int64_t ow = lo; ow < hi; ++ow) o[ow - ow0] = row[ow * f.geo.stride[2]];
            }
            for (int64_t ow = hi; ow < ow1; ++ow) o[ow - ow0] = 0;
        });
    }
}

void col2im_cl(const F64Plan& f, double* img, int64_t gi, int64_t ic0, int64_t icn, int64_t pos0, int64_t npos,
               const double* col) {
    const int64_t IC = f.p.ic;
    for (int64_t j = 0; j < npos; ++j) {
        const Pos o = decompose(f, pos0 + j);
        const double* row = col + j * f.KS * icn;
        for (int64_t ks = 0; ks < f.KS; ++ks) {
            const int64_t kw = ks % f.geo.k[2], kh = (ks / f.geo.k[2]) % f.geo.k[1],
                          kd = ks / (f.geo.k[2] * f.geo.k[1]);
            const int64_t id = o.d * f.geo.stride[0] - f.geo.padding_l[0] + kd * f.geo.dilation[0];
            const int64_t ih = o.h * f.geo.stride[1] - f.geo.padding_l[1] + kh * f.geo.dilation[1];
            const int64_t iw = o.w * f.geo.stride[2] - f.geo.padding_l[2] + kw * f.geo.dilation[2];
            if (id < 0 || id >= f.geo.in[0] || ih < 0 || ih >= f.geo.in[1] || iw < 0 || iw >= f.geo.in[2]) continue;
            double* d = img + ((id * f.geo.in[1] + ih) * f.geo.in[2] + iw) * IC + gi * f.ICg + ic0;
            const double* s = row + ks * icn;
            for (int64_t ic = 0; ic < icn; ++ic) d[ic] += s[ic];
        }
    }
}

void col2im_cf(const F64Plan& f, double* img, int64_t gi, int64_t ic0, int64_t icn, int64_t pos0, int64_t npos,
               const double* col) {
    for (int64_t kk = 0; kk < icn * f.KS; ++kk) {
        const int64_t ic = ic0 + kk / f.KS, ks = kk % f.KS;
        const int64_t kw = ks % f.geo.k[2], kh = (ks / f.geo.k[2]) % f.geo.k[1], kd = ks / (f.geo.k[2] * f.geo.k[1]);
        double* plane = img + (gi * f.ICg + ic) * f.IS;
        const double* in = col + kk * npos;
        for_runs(f, pos0, npos, [&](int64_t od, int64_t oh, int64_t ow0, int64_t ow1, int64_t j0) {
            const int64_t id = od * f.geo.stride[0] - f.geo.padding_l[0] + kd * f.geo.dilation[0];
            const int64_t ih = oh * f.geo.stride[1] - f.geo.padding_l[1] + kh * f.geo.dilation[1];
            if (id < 0 || id >= f.geo.in[0] || ih < 0 || ih >= f.geo.in[1]) return;
            int64_t lo, hi;
            const int64_t off = kw * f.geo.dilation[2];
            valid_w(f, off, ow0, ow1, lo, hi);
            double* row = plane + (id * f.geo.in[1] + ih) * f.geo.in[2] - f.geo.padding_l[2] + off;
            const double* s = in + j0 - ow0;
            if (f.geo.stride[2] == 1) {
                for (int64_t ow = lo; ow < hi; ++ow) row[ow] += s[ow];
            } else {
                for (int64_t ow = lo; ow < hi; ++ow) row[ow * f.geo.stride[2]] += s[ow];
            }
        });
    }
}

void transpose_weights(const F64Plan& f, const double* from, double* to, bool to_cl) {
    const int64_t OC = f.p.oc, ICg = f.ICg, KS = f.KS;
#pragma omp parallel for schedule(static)
    for (int64_t oc = 0; oc < OC; ++oc)
        for (int64_t ic = 0; ic < ICg; ++ic)
            for (int64_t ks = 0; ks < KS; ++ks) {
                const int64_t cf = (oc * ICg + ic) * KS + ks, cl = (oc * KS + ks) * ICg + ic;
                if (to_cl) to[cl] = from[cf];
                else to[cf] = from[cl];
            }
}

}  // namespace convkit::cpu
