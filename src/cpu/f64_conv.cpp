// f64 convolutions (oneDNN has none): im2col + OpenBLAS dgemm, blocked over output rows so each
// thread's column buffer stays a few MB, with bias and the whole post-op chain applied to each
// block while it is still in cache.
//
//  * The activations' layout picks the formulation. Channels-last: a block of output positions
//    is a [rows, K] matrix with K = (kernel tap, input channel), so dst rows = col x W^T and the
//    weights are read as O(D)HWI. Channels-first: a block is a [K, cols] matrix with
//    K = (input channel, tap), dst = W x col, weights read as OI(D)HW. Weights in the other
//    order are repacked once per call (they are small next to the activations).
//  * 1x1 / stride 1 / no padding needs no im2col: the activations are the gemm operand.
//  * Threads: OpenMP over independent blocks; each thread calls a single-threaded dgemm (the
//    OpenBLAS pool is set to one thread while this runs: two thread pools spinning on the same
//    cores cost more than they give, and concurrent calls from several threads would otherwise
//    serialise inside OpenBLAS).
//  * Backward data scatters each block's columns back (col2im). Blocks are at least as tall as
//    the kernel's reach, so only neighbouring blocks overlap: even blocks run first, then odd
//    ones, which makes the scatter race-free and its summation order independent of the thread
//    count.
//  * Backward weights splits K between threads (each owns a slice of diff_weights and sums over
//    every image and block in a fixed order): no partial copies, no reduction, reproducible.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/checked.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

namespace {

// Column-buffer budget per thread. Large enough that a block has a few hundred rows (OpenBLAS
// repacks the weights on every call, so short blocks pay that copy too often), small enough to
// stay near the L2/L3 caches.
constexpr std::size_t kColBudget = std::size_t(4) << 20;

// OpenBLAS's pthread pool is process-wide; the first f64 call in flight sets it to one thread
// and the last one out restores the caller's setting.
class BlasSingleThreaded {
public:
    BlasSingleThreaded() {
#ifdef OPENBLAS_VERSION
        std::lock_guard<std::mutex> lock(mu());
        if (users()++ == 0) {
            saved() = openblas_get_num_threads();
            if (saved() != 1) openblas_set_num_threads(1);
        }
#endif
    }
    ~BlasSingleThreaded() {
#ifdef OPENBLAS_VERSION
        std::lock_guard<std::mutex> lock(mu());
        if (--users() == 0 && saved() != 1) openblas_set_num_threads(saved());
#endif
    }
    BlasSingleThreaded(const BlasSingleThreaded&) = delete;
    BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

private:
    static std::mutex& mu() {
        static std::mutex m;
        return m;
    }
    static int& users() {
        static int n = 0;
        return n;
    }
    static int& saved() {
        static int n = 1;
        return n;
    }
};

std::size_t align64(std::size_t bytes) { return (bytes + 63) & ~std::size_t(63); }

}  // namespace

class F64Plan {
public:
    ConvProblem p;
    // Spatial geometry padded to (d, h, w) with leading 1s.
    int64_t in[3], out[3], k[3], st[3], pl[3], dl[3];
    int64_t IS = 1, OS = 1, KS = 1;
    int64_t ICg = 0, OCg = 0, K = 0, G = 1;
    int first = 0;        // index of the outermost real spatial dim in the padded arrays
    int64_t P = 1;        // output positions per outer row
    int64_t O0 = 1;       // outer rows
    bool cl = false;      // channels-last formulation (by src layout)
    bool direct = false;  // 1x1, stride 1, no padding: no im2col
    bool wei_native = false;  // the user's weights are already in the formulation's K order
    bool dst_native = false;  // dst (diff_dst) already in the formulation's layout
    int64_t reach_bwd_d = 0;     // input rows shared by neighbouring blocks in backward data
    int64_t min_rows_bwd_d = 1;  // outer rows a backward-data block needs for even/odd scatter

    explicit F64Plan(const ConvProblem& prob) : p(prob) {
        for (int j = 0; j < 3; ++j) in[j] = out[j] = k[j] = st[j] = dl[j] = 1, pl[j] = 0;
        first = 3 - p.nsp;
        for (int i = 0; i < p.nsp; ++i) {
            const int j = first + i;
            in[j] = p.in[i];
            out[j] = p.out[i];
            k[j] = p.k[i];
            st[j] = p.stride[i];
            pl[j] = p.padding_l[i];
            dl[j] = p.dilation[i];
        }
        for (int j = 0; j < 3; ++j) {
            IS = core::checked_mul(IS, in[j], "f64 input size");
            OS = core::checked_mul(OS, out[j], "f64 output size");
            KS = core::checked_mul(KS, k[j], "f64 kernel size");
        }
        G = p.g;
        ICg = p.icg();
        OCg = p.ocg();
        K = core::checked_mul(ICg, KS, "f64 gemm K");
        O0 = out[first];
        P = OS / O0;
        cl = p.src_layout == Layout::channels_last;
        direct = KS == 1;
        for (int j = 0; j < 3; ++j) direct = direct && st[j] == 1 && pl[j] == 0;
        for (int i = 0; i < p.nsp; ++i) direct = direct && p.padding_r[i] == 0;
        const bool wei_cl = p.wei_layout == Layout::channels_last;
        wei_native = wei_cl == cl || KS == 1 || ICg == 1;
        dst_native = (p.dst_layout == Layout::channels_last) == cl || p.oc == 1 || OS == 1;
        // Neighbouring blocks of R outer rows touch input rows that overlap by
        // (k - 1) * dilation + 1 - stride; blocks two apart must not overlap.
        reach_bwd_d = (k[first] - 1) * dl[first] + 1 - st[first];
        min_rows_bwd_d = std::max<int64_t>(1, (reach_bwd_d + st[first] - 1) / st[first]);
    }

    // How the work of one direction is cut: blocks of R outer output rows (nb per image), and
    // the gemm's channel dimension cut into `chunks` of `chunk` channels (output channels for
    // forward, input channels for backward data). OpenBLAS repacks the weights on every call,
    // so where the weights outweigh an image's columns (late layers, small images) threads
    // split channels (each packs only its share of the weights) instead of rows (each would
    // pack all of them).
    struct Split {
        int64_t R = 1, nb = 1, chunks = 1, chunk = 1;
        bool phases = false;  // backward data: even blocks, then odd ones
    };

    // Column elements per output position: `col_fixed` + chunk * `col_per_channel`.
    Split split(int nthr, int64_t channels, int64_t col_fixed, int64_t col_per_channel, bool bwd_d) const {
        Split s;
        const int64_t indep = p.mb * G;
        const double w = static_cast<double>(OCg) * static_cast<double>(K);
        const double col = static_cast<double>(OS) * static_cast<double>(K);
        if (w > col && channels >= 32) s.chunks = std::min<int64_t>(nthr, channels / 16);
        s.chunk = (channels + s.chunks - 1) / s.chunks;
        s.chunks = (channels + s.chunk - 1) / s.chunk;
        const int64_t per_pos = col_fixed + s.chunk * col_per_channel;
        int64_t nb = 1;
        if (!direct) {
            const int64_t bytes = OS * per_pos * static_cast<int64_t>(sizeof(double));
            nb = std::max<int64_t>(1, (bytes + static_cast<int64_t>(kColBudget) - 1) / static_cast<int64_t>(kColBudget));
        }
        const bool overlap = bwd_d && !direct && min_rows_bwd_d > 0 && reach_bwd_d > 0;
        // Enough blocks to keep every thread busy (in each phase when there are two), a multiple
        // of the thread count if it can be.
        const int64_t need = (nthr + indep * s.chunks - 1) / (indep * s.chunks);
        nb = std::max(nb, need);
        if (overlap && nb > 1) nb = std::max(nb, 2 * need);
        while ((nb * indep * s.chunks) % nthr != 0 && nb < O0) ++nb;
        nb = std::min(nb, O0);
        s.R = (O0 + nb - 1) / nb;
        if (overlap) s.R = std::max(s.R, min_rows_bwd_d);
        s.nb = (O0 + s.R - 1) / s.R;
        s.phases = overlap && s.nb > 1;
        return s;
    }
};

namespace {

struct Pos {
    int64_t d, h, w;
};

inline Pos decompose(const F64Plan& f, int64_t pos) {
    Pos q;
    q.w = pos % f.out[2];
    const int64_t t = pos / f.out[2];
    q.h = t % f.out[1];
    q.d = t / f.out[1];
    return q;
}

// col[j][kk] = src at output position pos0 + j and K index k0 + kk; channels-last image `img`.
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
            const int64_t kw = ks % f.k[2], kh = (ks / f.k[2]) % f.k[1], kd = ks / (f.k[2] * f.k[1]);
            const int64_t id = o.d * f.st[0] - f.pl[0] + kd * f.dl[0];
            const int64_t ih = o.h * f.st[1] - f.pl[1] + kh * f.dl[1];
            const int64_t iw = o.w * f.st[2] - f.pl[2] + kw * f.dl[2];
            double* out = row + (kk - k0);
            if (id < 0 || id >= f.in[0] || ih < 0 || ih >= f.in[1] || iw < 0 || iw >= f.in[2]) {
                std::memset(out, 0, static_cast<std::size_t>(len) * sizeof(double));
            } else {
                const double* s = img + ((id * f.in[1] + ih) * f.in[2] + iw) * IC + gi * f.ICg + ic0;
                if (len == 1) *out = *s;
                else std::memcpy(out, s, static_cast<std::size_t>(len) * sizeof(double));
            }
            kk += len;
        }
    }
}

// The [lo, hi) range of output w whose input column iw = ow * st - pl + off is inside [0, IW).
inline void valid_w(const F64Plan& f, int64_t off, int64_t ow0, int64_t ow1, int64_t& lo, int64_t& hi) {
    // iw >= 0  <=>  ow >= ceil((pl - off) / st);  iw < IW  <=>  ow <= floor((IW - 1 + pl - off) / st)
    const int64_t s = f.st[2];
    const int64_t a = f.pl[2] - off, b = f.in[2] - 1 + f.pl[2] - off;
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
        const int64_t ow1 = std::min(f.out[2], o.w + (end - pos));
        fn(o.d, o.h, o.w, ow1, pos - pos0);
        pos += ow1 - o.w;
    }
}

// col[kk][j] for K index k0 + kk = (ic, tap) and position pos0 + j; channels-first image `img`.
void im2col_cf(const F64Plan& f, const double* img, int64_t gi, int64_t pos0, int64_t npos, int64_t k0, int64_t k1,
               double* col, int64_t ldcol) {
    for (int64_t kk = k0; kk < k1; ++kk) {
        const int64_t ic = kk / f.KS, ks = kk % f.KS;
        const int64_t kw = ks % f.k[2], kh = (ks / f.k[2]) % f.k[1], kd = ks / (f.k[2] * f.k[1]);
        const double* plane = img + (gi * f.ICg + ic) * f.IS;
        double* out = col + (kk - k0) * ldcol;
        for_runs(f, pos0, npos, [&](int64_t od, int64_t oh, int64_t ow0, int64_t ow1, int64_t j0) {
            double* o = out + j0;
            const int64_t id = od * f.st[0] - f.pl[0] + kd * f.dl[0];
            const int64_t ih = oh * f.st[1] - f.pl[1] + kh * f.dl[1];
            const int64_t n = ow1 - ow0;
            if (id < 0 || id >= f.in[0] || ih < 0 || ih >= f.in[1]) {
                std::memset(o, 0, static_cast<std::size_t>(n) * sizeof(double));
                return;
            }
            int64_t lo, hi;
            const int64_t off = kw * f.dl[2];
            valid_w(f, off, ow0, ow1, lo, hi);
            const double* row = plane + (id * f.in[1] + ih) * f.in[2] - f.pl[2] + off;
            for (int64_t ow = ow0; ow < lo; ++ow) o[ow - ow0] = 0;
            if (f.st[2] == 1) {
                if (hi > lo) std::memcpy(o + (lo - ow0), row + lo, static_cast<std::size_t>(hi - lo) * sizeof(double));
            } else {
                for (int64_t ow = lo; ow < hi; ++ow) o[ow - ow0] = row[ow * f.st[2]];
            }
            for (int64_t ow = hi; ow < ow1; ++ow) o[ow - ow0] = 0;
        });
    }
}

// diff_src += the block's columns scattered back (the adjoint of im2col_cl / im2col_cf), for
// input channels [ic0, ic0 + icn) of group gi; col rows are [tap][icn] (channels-last) or
// col[(ic - ic0) * taps + tap][pos] (channels-first).
void col2im_cl(const F64Plan& f, double* img, int64_t gi, int64_t ic0, int64_t icn, int64_t pos0, int64_t npos,
               const double* col) {
    const int64_t IC = f.p.ic;
    for (int64_t j = 0; j < npos; ++j) {
        const Pos o = decompose(f, pos0 + j);
        const double* row = col + j * f.KS * icn;
        for (int64_t ks = 0; ks < f.KS; ++ks) {
            const int64_t kw = ks % f.k[2], kh = (ks / f.k[2]) % f.k[1], kd = ks / (f.k[2] * f.k[1]);
            const int64_t id = o.d * f.st[0] - f.pl[0] + kd * f.dl[0];
            const int64_t ih = o.h * f.st[1] - f.pl[1] + kh * f.dl[1];
            const int64_t iw = o.w * f.st[2] - f.pl[2] + kw * f.dl[2];
            if (id < 0 || id >= f.in[0] || ih < 0 || ih >= f.in[1] || iw < 0 || iw >= f.in[2]) continue;
            double* d = img + ((id * f.in[1] + ih) * f.in[2] + iw) * IC + gi * f.ICg + ic0;
            const double* s = row + ks * icn;
            for (int64_t ic = 0; ic < icn; ++ic) d[ic] += s[ic];
        }
    }
}

void col2im_cf(const F64Plan& f, double* img, int64_t gi, int64_t ic0, int64_t icn, int64_t pos0, int64_t npos,
               const double* col) {
    for (int64_t kk = 0; kk < icn * f.KS; ++kk) {
        const int64_t ic = ic0 + kk / f.KS, ks = kk % f.KS;
        const int64_t kw = ks % f.k[2], kh = (ks / f.k[2]) % f.k[1], kd = ks / (f.k[2] * f.k[1]);
        double* plane = img + (gi * f.ICg + ic) * f.IS;
        const double* in = col + kk * npos;
        for_runs(f, pos0, npos, [&](int64_t od, int64_t oh, int64_t ow0, int64_t ow1, int64_t j0) {
            const int64_t id = od * f.st[0] - f.pl[0] + kd * f.dl[0];
            const int64_t ih = oh * f.st[1] - f.pl[1] + kh * f.dl[1];
            if (id < 0 || id >= f.in[0] || ih < 0 || ih >= f.in[1]) return;
            int64_t lo, hi;
            const int64_t off = kw * f.dl[2];
            valid_w(f, off, ow0, ow1, lo, hi);
            double* row = plane + (id * f.in[1] + ih) * f.in[2] - f.pl[2] + off;
            const double* s = in + j0 - ow0;
            if (f.st[2] == 1) {
                for (int64_t ow = lo; ow < hi; ++ow) row[ow] += s[ow];
            } else {
                for (int64_t ow = lo; ow < hi; ++ow) row[ow * f.st[2]] += s[ow];
            }
        });
    }
}

// Weights (or diff_weights) between the user's order and the formulation's: [OC, ICg, taps]
// (channels-first) <-> [OC, taps, ICg] (channels-last).
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

TensorView view_as(const TensorView& like, void* data, Layout layout) {
    return TensorView::with_layout(data, like.dtype, like.sizes, layout, like.device);
}

void forward(const F64Plan& f, const ConvArgs& a) {
    const ConvProblem& p = f.p;
    const int nthr = omp_get_max_threads();
    const Layout form = f.cl ? Layout::channels_last : Layout::channels_first;
    const bool has_sum = p.has_sum();
    const bool epilogue = p.with_bias || p.n_post_ops > 0;
    const F64Plan::Split sp = f.split(nthr, f.OCg, f.K, 0, false);
    const int64_t max_pos = sp.R * f.P;

    const std::size_t col_bytes = f.direct ? 0 : align64(static_cast<std::size_t>(max_pos * f.K) * sizeof(double));
    const std::size_t acc_bytes = has_sum ? align64(static_cast<std::size_t>(max_pos * sp.chunk) * sizeof(double)) : 0;
    const std::size_t per_thread = col_bytes + acc_bytes;
    const std::size_t wei_bytes = f.wei_native ? 0 : align64(a.weights.nbytes());
    const std::size_t dst_bytes = f.dst_native ? 0 : align64(a.dst.nbytes());
    core::Buffer ws(Device::cpu(), per_thread * static_cast<std::size_t>(nthr) + wei_bytes + dst_bytes);
    char* base = static_cast<char*>(ws.data());
    char* shared = base + per_thread * static_cast<std::size_t>(nthr);

    const double* src = a.src.ptr<double>();
    const double* W = a.weights.ptr<double>();
    if (!f.wei_native) {
        double* t = reinterpret_cast<double*>(shared);
        transpose_weights(f, W, t, f.cl);
        W = t;
    }
    double* dst = a.dst.ptr<double>();
    TensorView dst_form;
    if (!f.dst_native) {
        dst = reinterpret_cast<double*>(shared + wei_bytes);
        dst_form = view_as(a.dst, dst, form);
        if (has_sum) copy(dst_form, a.dst);
    }
    Epilogue e;
    if (epilogue) e.init(p, dst, form, a.bias.defined() ? a.bias.data : nullptr, a.post_ops);

    const int64_t IC = p.ic, OC = p.oc, items = p.mb * f.G * sp.nb * sp.chunks;
    BlasSingleThreaded blas1;
#pragma omp parallel num_threads(nthr)
    {
        char* mine = base + per_thread * static_cast<std::size_t>(omp_get_thread_num());
        double* col = reinterpret_cast<double*>(mine);
        double* accb = reinterpret_cast<double*>(mine + col_bytes);
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t cc = it % sp.chunks, b = (it / sp.chunks) % sp.nb, gi = (it / (sp.chunks * sp.nb)) % f.G,
                          n = it / (sp.chunks * sp.nb * f.G);
            const int64_t pos0 = b * sp.R * f.P, npos = std::min(max_pos, f.OS - pos0);
            const int64_t oc0 = cc * sp.chunk, ocn = std::min(sp.chunk, f.OCg - oc0);
            const double* Wc = W + (gi * f.OCg + oc0) * f.K;
            const int64_t c0 = gi * f.OCg + oc0;
            if (f.cl) {
                const double* A;
                int64_t lda;
                if (f.direct) {
                    A = src + (n * f.IS + pos0) * IC + gi * f.ICg;
                    lda = IC;
                } else {
                    im2col_cl(f, src + n * f.IS * IC, gi, pos0, npos, 0, f.K, col, f.K);
                    A = col;
                    lda = f.K;
                }
                double* C = has_sum ? accb : dst + (n * f.OS + pos0) * OC + c0;
                const int64_t ldc = has_sum ? ocn : OC;
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(npos), static_cast<int>(ocn),
                            static_cast<int>(f.K), 1.0, A, static_cast<int>(lda), Wc, static_cast<int>(f.K), 0.0, C,
                            static_cast<int>(ldc));
                if (epilogue) e.tile_f64(n, c0, c0 + ocn, pos0, pos0 + npos, C, 1, ldc);
            } else {
                const double* B;
                int64_t ldb;
                if (f.direct) {
                    B = src + (n * IC + gi * f.ICg) * f.IS + pos0;
                    ldb = f.IS;
                } else {
                    im2col_cf(f, src + n * IC * f.IS, gi, pos0, npos, 0, f.K, col, npos);
                    B = col;
                    ldb = npos;
                }
                double* C = has_sum ? accb : dst + (n * OC + c0) * f.OS + pos0;
                const int64_t ldc = has_sum ? npos : f.OS;
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(ocn), static_cast<int>(npos),
                            static_cast<int>(f.K), 1.0, Wc, static_cast<int>(f.K), B, static_cast<int>(ldb), 0.0, C,
                            static_cast<int>(ldc));
                if (epilogue) e.tile_f64(n, c0, c0 + ocn, pos0, pos0 + npos, C, ldc, 1);
            }
        }
    }
    if (!f.dst_native) copy(a.dst, dst_form);
}

void backward_data(const F64Plan& f, const ConvArgs& a) {
    const ConvProblem& p = f.p;
    const int nthr = omp_get_max_threads();
    const Layout form = f.cl ? Layout::channels_last : Layout::channels_first;
    const F64Plan::Split sp = f.split(nthr, f.ICg, 0, f.KS, true);
    const int64_t max_pos = sp.R * f.P;

    const std::size_t per_thread =
        f.direct ? 0 : align64(static_cast<std::size_t>(max_pos * f.KS * sp.chunk) * sizeof(double));
    // Channels-last with channel chunks: each chunk's weights [OCg][tap][icn] made contiguous
    // once per call, so a block is one gemm instead of one per tap.
    const bool chunk_pack = f.cl && sp.chunks > 1 && !f.direct;
    const std::size_t wei_bytes = f.wei_native ? 0 : align64(a.weights.nbytes());
    const std::size_t dst_bytes = f.dst_native ? 0 : align64(a.dst.nbytes());
    const std::size_t pack_bytes =
        chunk_pack ? align64(static_cast<std::size_t>(f.G * sp.chunks * f.OCg * f.KS * sp.chunk) * sizeof(double)) : 0;
    core::Buffer ws(Device::cpu(), per_thread * static_cast<std::size_t>(nthr) + wei_bytes + dst_bytes + pack_bytes);
    char* base = static_cast<char*>(ws.data());
    char* shared = base + per_thread * static_cast<std::size_t>(nthr);

    const double* W = a.weights.ptr<double>();
    if (!f.wei_native) {
        double* t = reinterpret_cast<double*>(shared);
        transpose_weights(f, W, t, f.cl);
        W = t;
    }
    double* packed = reinterpret_cast<double*>(shared + wei_bytes + dst_bytes);
    if (chunk_pack) {
        const int64_t units = f.G * sp.chunks * f.OCg;
#pragma omp parallel for schedule(static)
        for (int64_t u = 0; u < units; ++u) {
            const int64_t oc = u % f.OCg, cc = (u / f.OCg) % sp.chunks, gi = u / (f.OCg * sp.chunks);
            const int64_t ic0 = cc * sp.chunk, icn = std::min(sp.chunk, f.ICg - ic0);
            const double* from = W + (gi * f.OCg + oc) * f.K + ic0;
            // Rows of a chunk's matrix are KS * icn long (the last chunk may be narrower).
            double* to = packed + (gi * sp.chunks + cc) * f.OCg * f.KS * sp.chunk + oc * f.KS * icn;
            for (int64_t ks = 0; ks < f.KS; ++ks)
                std::memcpy(to + ks * icn, from + ks * f.ICg, static_cast<std::size_t>(icn) * sizeof(double));
        }
    }
    const double* ddst = a.dst.ptr<double>();
    if (!f.dst_native) {
        double* t = reinterpret_cast<double*>(shared + wei_bytes);
        copy(view_as(a.dst, t, form), a.dst);
        ddst = t;
    }
    double* dsrc = a.src.ptr<double>();
    const int64_t IC = p.ic, OC = p.oc, items = p.mb * f.G * sp.nb * sp.chunks;
    const int64_t total_src = p.mb * IC * f.IS;
    BlasSingleThreaded blas1;
#pragma omp parallel num_threads(nthr)
    {
        double* dcol = reinterpret_cast<double*>(base + per_thread * static_cast<std::size_t>(omp_get_thread_num()));
        if (!f.direct) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < total_src; ++i) dsrc[i] = 0;
        }
        for (int phase = 0; phase < (sp.phases ? 2 : 1); ++phase) {
#pragma omp for schedule(static)
            for (int64_t it = 0; it < items; ++it) {
                const int64_t cc = it % sp.chunks, b = (it / sp.chunks) % sp.nb,
                              gi = (it / (sp.chunks * sp.nb)) % f.G, n = it / (sp.chunks * sp.nb * f.G);
                if (sp.phases && b % 2 != phase) continue;
                const int64_t pos0 = b * sp.R * f.P, npos = std::min(max_pos, f.OS - pos0);
                const int64_t ic0 = cc * sp.chunk, icn = std::min(sp.chunk, f.ICg - ic0);
                const double* Wg = W + gi * f.OCg * f.K;
                if (f.cl) {
                    const double* A = ddst + (n * f.OS + pos0) * OC + gi * f.OCg;
                    if (f.direct) {
                        double* C = dsrc + (n * f.IS + pos0) * IC + gi * f.ICg + ic0;
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(npos),
                                    static_cast<int>(icn), static_cast<int>(f.OCg), 1.0, A, static_cast<int>(OC),
                                    Wg + ic0, static_cast<int>(f.K), 0.0, C, static_cast<int>(IC));
                        continue;
                    }
                    // dcol[pos][tap][icn]: the group's weights as they are when the chunk is the
                    // whole group (K's (tap, ic) order is that layout), else the packed chunk.
                    if (icn == f.ICg) {
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(npos),
                                    static_cast<int>(f.K), static_cast<int>(f.OCg), 1.0, A, static_cast<int>(OC), Wg,
                                    static_cast<int>(f.K), 0.0, dcol, static_cast<int>(f.K));
                    } else {
                        const double* Wp = packed + (gi * sp.chunks + cc) * f.OCg * f.KS * sp.chunk;
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(npos),
                                    static_cast<int>(f.KS * icn), static_cast<int>(f.OCg), 1.0, A, static_cast<int>(OC),
                                    Wp, static_cast<int>(f.KS * icn), 0.0, dcol, static_cast<int>(f.KS * icn));
                    }
                    col2im_cl(f, dsrc + n * f.IS * IC, gi, ic0, icn, pos0, npos, dcol);
                } else {
                    const double* B = ddst + (n * OC + gi * f.OCg) * f.OS + pos0;
                    // Rows (ic, tap) of this chunk are contiguous in K's (ic, tap) order.
                    const double* Aw = Wg + ic0 * f.KS;
                    const int64_t rows = icn * f.KS;
                    double* C = f.direct ? dsrc + (n * IC + gi * f.ICg + ic0) * f.IS + pos0 : dcol;
                    const int64_t ldc = f.direct ? f.IS : npos;
                    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(npos),
                                static_cast<int>(f.OCg), 1.0, Aw, static_cast<int>(f.K), B, static_cast<int>(f.OS), 0.0,
                                C, static_cast<int>(ldc));
                    if (!f.direct) col2im_cf(f, dsrc + n * IC * f.IS, gi, ic0, icn, pos0, npos, dcol);
                }
            }
        }
    }
}

void backward_weights(const F64Plan& f, const ConvArgs& a) {
    const ConvProblem& p = f.p;
    const int nthr = omp_get_max_threads();
    const Layout form = f.cl ? Layout::channels_last : Layout::channels_first;
    // Threads split K within each group: as many slices as it takes to give every thread work.
    const int64_t slices = std::min<int64_t>(f.K, std::max<int64_t>(1, (nthr + f.G - 1) / f.G));
    const int64_t kslice = (f.K + slices - 1) / slices;
    // Blocks run over output positions; the column buffer holds npos x kslice.
    int64_t R = f.O0;
    if (!f.direct) {
        const int64_t per_row = f.P * kslice * static_cast<int64_t>(sizeof(double));
        R = std::max<int64_t>(1, std::min<int64_t>(f.O0, static_cast<int64_t>(kColBudget) / std::max<int64_t>(per_row, 1)));
    }
    const int64_t max_pos = R * f.P;
    const int64_t nb = (f.O0 + R - 1) / R;

    const std::size_t per_thread = f.direct ? 0 : align64(static_cast<std::size_t>(max_pos * kslice) * sizeof(double));
    const std::size_t wei_bytes = f.wei_native ? 0 : align64(a.weights.nbytes());
    const std::size_t dst_bytes = f.dst_native ? 0 : align64(a.dst.nbytes());
    core::Buffer ws(Device::cpu(), per_thread * static_cast<std::size_t>(nthr) + wei_bytes + dst_bytes);
    char* base = static_cast<char*>(ws.data());
    char* shared = base + per_thread * static_cast<std::size_t>(nthr);

    double* dW = f.wei_native ? a.weights.ptr<double>() : reinterpret_cast<double*>(shared);
    const double* ddst = a.dst.ptr<double>();
    if (!f.dst_native) {
        double* t = reinterpret_cast<double*>(shared + wei_bytes);
        copy(view_as(a.dst, t, form), a.dst);
        ddst = t;
    }
    const double* src = a.src.ptr<double>();
    const int64_t IC = p.ic, OC = p.oc, items = f.G * slices;
    BlasSingleThreaded blas1;
#pragma omp parallel num_threads(nthr)
    {
        double* col = reinterpret_cast<double*>(base + per_thread * static_cast<std::size_t>(omp_get_thread_num()));
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t gi = it / slices, sl = it % slices;
            const int64_t k0 = sl * kslice, k1 = std::min(f.K, k0 + kslice), nk = k1 - k0;
            if (nk <= 0) continue;
            double* C = dW + gi * f.OCg * f.K + k0;
            double beta = 0.0;
            for (int64_t n = 0; n < p.mb; ++n)
                for (int64_t b = 0; b < nb; ++b) {
                    const int64_t pos0 = b * R * f.P, npos = std::min(max_pos, f.OS - pos0);
                    if (f.cl) {
                        const double* A = ddst + (n * f.OS + pos0) * OC + gi * f.OCg;
                        const double* B;
                        int64_t ldb;
                        if (f.direct) {
                            B = src + (n * f.IS + pos0) * IC + gi * f.ICg + k0;
                            ldb = IC;
                        } else {
                            im2col_cl(f, src + n * f.IS * IC, gi, pos0, npos, k0, k1, col, nk);
                            B = col;
                            ldb = nk;
                        }
                        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(f.OCg),
                                    static_cast<int>(nk), static_cast<int>(npos), 1.0, A, static_cast<int>(OC), B,
                                    static_cast<int>(ldb), beta, C, static_cast<int>(f.K));
                    } else {
                        const double* A = ddst + (n * OC + gi * f.OCg) * f.OS + pos0;
                        const double* B;
                        int64_t ldb;
                        if (f.direct) {
                            B = src + (n * IC + gi * f.ICg + k0) * f.IS + pos0;
                            ldb = f.IS;
                        } else {
                            im2col_cf(f, src + n * IC * f.IS, gi, pos0, npos, k0, k1, col, npos);
                            B = col;
                            ldb = npos;
                        }
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(f.OCg),
                                    static_cast<int>(nk), static_cast<int>(npos), 1.0, A, static_cast<int>(f.OS), B,
                                    static_cast<int>(ldb), beta, C, static_cast<int>(f.K));
                    }
                    beta = 1.0;
                }
        }
        if (a.bias.defined()) {
            // diff_bias: each thread owns a range of channels and sums in a fixed order.
            double* db = a.bias.ptr<double>();
            if (f.cl) {
                const int nt = omp_get_num_threads(), t = omp_get_thread_num();
                const int64_t c0 = OC * t / nt, c1 = OC * (t + 1) / nt;
                for (int64_t c = c0; c < c1; ++c) db[c] = 0;
                for (int64_t n = 0; n < p.mb; ++n)
                    for (int64_t s = 0; s < f.OS; ++s) {
                        const double* row = ddst + (n * f.OS + s) * OC;
                        for (int64_t c = c0; c < c1; ++c) db[c] += row[c];
                    }
            } else {
#pragma omp for schedule(static)
                for (int64_t c = 0; c < OC; ++c) {
                    double acc = 0;
                    for (int64_t n = 0; n < p.mb; ++n) {
                        const double* row = ddst + (n * OC + c) * f.OS;
                        for (int64_t s = 0; s < f.OS; ++s) acc += row[s];
                    }
                    db[c] = acc;
                }
            }
        }
    }
    if (!f.wei_native) transpose_weights(f, dW, a.weights.ptr<double>(), !f.cl);
}

}  // namespace

std::shared_ptr<F64Plan> make_f64_plan(const ConvProblem& p) {
    const int64_t lim = INT32_MAX;  // cblas takes int sizes
    auto f = std::make_shared<F64Plan>(p);
    if (f->K > lim || f->OS * std::max(p.ic, p.oc) > lim || f->IS * std::max(p.ic, p.oc) > lim)
        throw Error(ErrorKind::unsupported, "cpu backend: f64 problem " + p.str() +
                                                " is too large for the BLAS interface (sizes above 2^31)");
    return f;
}

void run_f64_plan(const F64Plan& plan, const ConvProblem& p, const ConvArgs& args) {
    (void)p;
    switch (plan.p.dir) {
        case Direction::fwd: forward(plan, args); break;
        case Direction::bwd_d: backward_data(plan, args); break;
        case Direction::bwd_w: backward_weights(plan, args); break;
    }
}

PlanInfo f64_plan_info(const F64Plan& plan) {
    PlanInfo info;
    info.impl = plan.direct ? "f64:gemm(openblas)" : "f64:im2col+gemm(openblas)";
    info.src_format = info.dst_format = plan.cl ? "channels_last" : "channels_first";
    info.wei_format = plan.cl ? "O(D)HWI" : "OI(D)HW";
    info.own_epilogue = plan.p.n_post_ops > 0 || plan.p.with_bias;
    return info;
}

}  // namespace convkit::cpu
