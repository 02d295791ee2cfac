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
//
// Files: f64_plan (geometry, formulation, work split), f64_im2col (im2col / col2im, weight
// transposes), this one (the gemms of each direction, threads, per-call workspace).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "cpu/cpu_internal.hpp"
#include "cpu/f64_im2col.hpp"
#include "cpu/f64_plan.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

namespace {

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

void run_f64_plan(const F64Plan& plan, const ConvProblem& p, const ConvArgs& args) {
    (void)p;
    switch (plan.p.dir) {
        case Direction::fwd: forward(plan, args); break;
        case Direction::bwd_d: backward_data(plan, args); break;
        case Direction::bwd_w: backward_weights(plan, args); break;
    }
}

}  // namespace convkit::cpu
