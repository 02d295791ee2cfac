// The gemm kind: f64 convolutions as cuBLAS DGEMM over im2col columns, which runs Hopper's f64
// tensor cores where cuDNN's f64 engines do not (docs/cuda.md, "f64 through DGEMM"). A 1x1
// stride-1 unpadded layer multiplies the tensors in place (no columns) where its form allows.
//
// Per group and per chunk (kernels.hpp's ColChunk; whole images while the columns fit
// f64_gemm_workspace(), else output positions of one image), in cuBLAS's column-major terms with
// the weights as [oc][K] (K = icg * taps, ordered as the columns' rows), M the chunk's positions:
//   channels-first (columns k-major; each image's output a (positions x oc) matrix whose ld is its
//   channel stride; a strided batch over the chunk's images):
//     fwd    dst_n (m x ocg) = col_n (m x K) * W (K x ocg)
//     bwd_d  col_n (m x K)   = dy_n (m x ocg) * W^T, then the col2im gather
//     bwd_w  part_n (K x ocg) = col_n^T * dy_n, summed over n in order (images of >= oc
//            positions), else dW = col^T (K x M) * dy' (M x ocg), dy' = diff_dst copied [oc][n][m]
//   images of <= kFlatMaxPositions positions: fwd and bwd_d as one GEMM over M through an
//   [oc][n][m] copy of the result or of diff_dst.
//   channels-last (columns position-major; positions of whole images are contiguous, one GEMM):
//     fwd    dst (ocg x M) = W^T (ocg x K) * col (K x M)
//     bwd_d  col (K x M)   = W (K x ocg) * dy (ocg x M), then the col2im gather
//     bwd_w  dW  (K x ocg) += col (K x M) * dy^T (M x ocg)
// Weights in the other layout are reordered into (or, bwd_w, out of) a temporary. Bias and
// post-ops: the epilogue kernel after the GEMMs (a temporary result when `sum` reads the old
// output); diff_bias: the deterministic bias-gradient pass. Every temporary is allocated before
// the first write to an output.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <optional>

#include "cuda/cuda_api.hpp"
#include "cuda/cuda_util.hpp"
#include "cuda/graph_spec.hpp"
#include "cuda/handles.hpp"
#include "cuda/plan.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

void check_blas(cublasStatus_t st, const char* what) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    throw Error(st == CUBLAS_STATUS_ALLOC_FAILED ? ErrorKind::out_of_memory : ErrorKind::backend,
                std::string("cuda: ") + what + ": " + cublasGetStatusString(st));
}

int to_int(int64_t v, const char* what) {
    if (v > INT_MAX) throw Error(ErrorKind::unsupported, std::string("cuda: DGEMM ") + what + " " + std::to_string(v) + " exceeds 2^31 - 1");
    return static_cast<int>(v);
}

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

// C (m x n) = op(A) op(B) + beta C, column-major; `batch` > 1 strides A, B and C.
struct Gemm {
    cublasHandle_t h;
    void operator()(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* A, int64_t lda, const double* B,
                    int64_t ldb, double beta, double* C, int64_t ldc, int64_t batch = 1, int64_t sa = 0, int64_t sb = 0,
                    int64_t sc = 0) const {
        const double one = 1;
        if (batch == 1) {
            check_blas(cublasDgemm(h, op(ta), op(tb), to_int(m, "m"), to_int(n, "n"), to_int(k, "k"), &one, A,
                                   to_int(lda, "lda"), B, to_int(ldb, "ldb"), &beta, C, to_int(ldc, "ldc")),
                       "cublasDgemm");
        } else {
            check_blas(cublasDgemmStridedBatched(h, op(ta), op(tb), to_int(m, "m"), to_int(n, "n"), to_int(k, "k"), &one, A,
                                                 to_int(lda, "lda"), sa, B, to_int(ldb, "ldb"), sb, &beta, C,
                                                 to_int(ldc, "ldc"), sc, to_int(batch, "batch")),
                       "cublasDgemmStridedBatched");
        }
    }
};

// cuBLAS's workspace per call: NVIDIA's documented recommendation for Hopper is 32 MiB.
constexpr std::size_t kBlasWorkspace = std::size_t(32) << 20;

// Channels-first images of at most this many output positions run as one GEMM per chunk
// (measured, H200, ResNet-50 f64 mb 8: 7x7 images gained 15-25%; 14x14 and larger lost 5-30% to
// the copies).
constexpr int64_t kFlatMaxPositions = 64;

bool pointwise(const ConvProblem& p) {
    for (int i = 0; i < p.nsp; ++i)
        if (p.k[i] != 1 || p.stride[i] != 1 || p.padding_l[i] != 0 || p.padding_r[i] != 0) return false;
    return true;
}

class GemmPlan final : public Plan {
public:
    explicit GemmPlan(const ConvProblem& p) : Plan(p) {
        const core::Spatial3 s3 = p.spatial3();
        for (int j = 0; j < 3; ++j) {
            geo_.in[j] = s3.in[j];
            geo_.out[j] = s3.out[j];
            geo_.k[j] = s3.k[j];
            geo_.stride[j] = s3.stride[j];
            geo_.pad[j] = s3.padding_l[j];
            geo_.dilation[j] = s3.dilation[j];
        }
        geo_.icg = p.icg();
        geo_.k_major = p.src_layout == Layout::channels_first;
        K_ = geo_.icg * geo_.k[0] * geo_.k[1] * geo_.k[2];
        ohw_ = geo_.out[0] * geo_.out[1] * geo_.out[2];
        // Channels-first with small images: one GEMM over the chunk's images (result or diff_dst
        // through an [oc][n][m] copy) instead of a batch of thin ones (res5_3x3 f64 fwd, 7x7
        // positions per image, ran at 21 TFLOP/s batched on the H200).
        flat_ = geo_.k_major && p.dir != Direction::bwd_w && p.mb > 1 && ohw_ <= kFlatMaxPositions && !pointwise(p);
        // Channels-first backward-weights: one GEMM per image into per-image partial sums where
        // images are large beside the channels (no diff_dst copy, no columns for 1x1: the copies
        // cost res3_1x1a 2.3x cuDNN's time), else diff_dst copied [oc][n][m] for one long GEMM.
        per_image_ = geo_.k_major && p.dir == Direction::bwd_w && ohw_ >= p.oc;
        direct_ = pointwise(p) && !(geo_.k_major && (flat_ || (p.dir == Direction::bwd_w && !per_image_)));
        // The outermost output dimension with more than one position: a chunk of part of an image
        // covers a range of it, and its backward-data gather the input rows that range reads.
        outer_ = 2;
        for (int j = 0; j < 3; ++j)
            if (geo_.out[j] > 1) {
                outer_ = j;
                break;
            }
        inner_ = 1;
        for (int j = outer_ + 1; j < 3; ++j) inner_ *= geo_.out[j];

        const bool dy_copy = geo_.k_major && ((p.dir == Direction::bwd_w && !per_image_) || flat_);
        const int64_t per_position = (direct_ ? 0 : K_) + (dy_copy ? p.oc : 0);  // doubles
        const int64_t budget = f64_gemm_workspace() / int64_t(sizeof(double));
        const int64_t positions = per_position == 0 ? p.mb * ohw_ : std::max<int64_t>(1, budget / per_position);
        if (positions >= ohw_) {
            nb_ = std::min<int64_t>(p.mb, positions / ohw_);
            mlen_ = ohw_;
        } else {
            nb_ = 1;
            mlen_ = positions;
        }
        if (nb_ == 1 && flat_) {  // one image a chunk: the batch is one GEMM anyway
            flat_ = false;
            direct_ = pointwise(p);
        }
        col_elems_ = direct_ ? 0 : K_ * nb_ * mlen_;
        dyt_elems_ = dy_copy && nb_ > 1 ? p.oc * nb_ * mlen_ : 0;  // [oc][n][m]: diff_dst, or fwd's result
        wei_tmp_elems_ = p.wei_layout == p.src_layout ? 0 : p.oc * K_;
        if (wei_tmp_elems_ > 0) {  // the reordered weights: [oc][K] in the columns' row order
            const int64_t taps = geo_.k[0] * geo_.k[1] * geo_.k[2];
            const int64_t sizes[kMaxRank] = {p.oc, geo_.icg, geo_.k[0], geo_.k[1], geo_.k[2]};
            const int64_t first[kMaxRank] = {K_, taps, geo_.k[1] * geo_.k[2], geo_.k[2], 1};
            const int64_t last[kMaxRank] = {K_, 1, geo_.k[1] * geo_.k[2] * geo_.icg, geo_.k[2] * geo_.icg, geo_.icg};
            std::copy(sizes, sizes + kMaxRank, wsizes_);
            std::copy(geo_.k_major ? first : last, (geo_.k_major ? first : last) + kMaxRank, canon_);
        }
        if (per_image_ && nb_ > 1) part_elems_ = nb_ * p.oc * K_;
        epilogue_ = p.has_epilogue();
        if (epilogue_) {
            fill_epilogue_template(p, &epi_);
            if (p.has_sum())
                temp_elems_ = static_cast<int64_t>(dense_bytes(p.epilogue_view().dst_dims(), DType::f64) / sizeof(double));
        }
        bias_grad_ = p.dir == Direction::bwd_w && p.with_bias;

        info_.found = true;
        info_.gemm = true;
        info_.engine_name = direct_ ? "convkit DGEMM" : "convkit im2col+DGEMM";
        if (nb_ * mlen_ < p.mb * ohw_)
            info_.engine_name += " (" + std::to_string((p.mb * ohw_ + nb_ * mlen_ - 1) / (nb_ * mlen_)) + " chunks)";
        info_.workspace = (col_elems_ + dyt_elems_ + wei_tmp_elems_ + temp_elems_ + part_elems_) * int64_t(sizeof(double)) +
                          int64_t(kBlasWorkspace);
    }

    void run(const ConvArgs& a, cudaStream_t s) const override {
        const ConvProblem& p = problem_;
        BlasLease h(p.device.index);
        check_blas(cublasSetStream(h.get(), s), "cublasSetStream");
        // The handle goes back to the pool while its GEMMs may still be queued, and another call
        // may take it for another stream: its own default workspace would then be shared by two
        // streams at once. A workspace from the stream-ordered allocator is this call's alone.
        core::Buffer blas_ws = make_buffer(p.device, kBlasWorkspace, s, "cuBLAS workspace");
        check_blas(cublasSetWorkspace(h.get(), blas_ws.data(), kBlasWorkspace), "cublasSetWorkspace");
        const Gemm gemm{h.get()};
        auto buffer = [&](int64_t elems, const char* what) {
            return elems > 0 ? make_buffer(p.device, static_cast<std::size_t>(elems) * sizeof(double), s, what) : core::Buffer();
        };
        core::Buffer col = buffer(col_elems_, "im2col columns"), dyt = buffer(dyt_elems_, "diff_dst copy"),
                     wtmp = buffer(wei_tmp_elems_, "reordered weights"), temp = buffer(temp_elems_, "convolution result temporary"),
                     part = buffer(part_elems_, "per-image partial sums");
        std::optional<BiasGradPass> bias_grad;
        if (bias_grad_) bias_grad.emplace(p, a, s);

        int64_t sizes[kMaxRank], sst[kMaxRank], dst_st[kMaxRank], wst[kMaxRank];
        core::spatial3_view(a.src, p.nsp, sizes, sst);
        core::spatial3_view(a.dst, p.nsp, sizes, dst_st);
        core::spatial3_view(a.weights, p.nsp, sizes, wst);
        double* W = static_cast<double*>(a.weights.data);
        if (wtmp.data()) {
            if (p.dir != Direction::bwd_w) launch_copy_window(wtmp.data(), canon_, a.weights.data, wst, wsizes_, 8, s);
            W = static_cast<double*>(wtmp.data());
        }
        const double* src = static_cast<const double*>(a.src.data);
        const double* dy = static_cast<const double*>(a.dst.data);
        double* colp = static_cast<double*>(col.data());
        // Channels-last: elements between positions of diff_dst / dst; channels-first: between channels.
        const int64_t d_ld = geo_.k_major ? dst_st[1] : dst_st[4];
        const int64_t icg = geo_.icg, ocg = p.ocg();

        bool first = true;
        for (int64_t n0 = 0; n0 < p.mb; n0 += nb_) {
            for (int64_t m0 = 0; m0 < ohw_; m0 += mlen_) {
                ColChunk ch;
                ch.n0 = n0;
                ch.nb = std::min(nb_, p.mb - n0);
                ch.m0 = m0;
                ch.mlen = std::min(mlen_, ohw_ - m0);
                const int64_t M = ch.nb * ch.mlen;
                const int64_t pos0 = n0 * ohw_ + m0;  // channels-last: the chunk's first position
                switch (p.dir) {
                    case Direction::fwd: {
                        double* out = static_cast<double*>(temp.data() ? temp.data() : a.dst.data);
                        for (int64_t g = 0; g < p.g; ++g) {
                            const Operand A = columns(ch, g, src, sst, colp, s);
                            const double* Wg = W + g * ocg * K_;
                            if (flat_)
                                gemm(false, false, M, ocg, K_, A.p, A.ld, Wg, K_, 0, static_cast<double*>(dyt.data()) + g * ocg * M, M);
                            else if (geo_.k_major)
                                gemm(false, false, ch.mlen, ocg, K_, A.p, A.ld, Wg, K_, 0, out + n0 * dst_st[0] + g * ocg * d_ld + m0, d_ld,
                                     ch.nb, A.image, 0, dst_st[0]);
                            else
                                gemm(true, false, ocg, M, K_, Wg, K_, A.p, A.ld, 0, out + pos0 * d_ld + g * ocg, d_ld);
                        }
                        if (flat_) permute(static_cast<const double*>(dyt.data()), out + n0 * dst_st[0], dst_st, ch, false, s);
                        break;
                    }
                    case Direction::bwd_d: {
                        double* out = static_cast<double*>(temp.data() ? temp.data() : a.src.data);
                        const bool partial = !direct_ && ch.mlen < ohw_;
                        if (partial && m0 == 0) {
                            // The image's own elements (a tile's view keeps the whole tensor's image stride).
                            const std::size_t image = static_cast<std::size_t>(p.ic * geo_.in[0] * geo_.in[1] * geo_.in[2]);
                            check_cuda(cudaMemsetAsync(out + n0 * sst[0], 0, image * sizeof(double), s), "cudaMemsetAsync");
                        }
                        const double* dyp = dy;
                        if (flat_) {
                            permute(dy + n0 * dst_st[0], static_cast<double*>(dyt.data()), dst_st, ch, true, s);
                            dyp = static_cast<const double*>(dyt.data());
                        }
                        int64_t lo = 0, hi = geo_.in[outer_] - 1;
                        if (partial) {
                            const int o = outer_;
                            lo = std::max<int64_t>(0, (m0 / inner_) * geo_.stride[o] - geo_.pad[o]);
                            hi = std::min<int64_t>(hi, ((m0 + ch.mlen - 1) / inner_) * geo_.stride[o] - geo_.pad[o] +
                                                           (geo_.k[o] - 1) * geo_.dilation[o]);
                        }
                        for (int64_t g = 0; g < p.g; ++g) {
                            // The result: diff_src itself (1x1 stride 1), else the columns' gradient.
                            const Place C = direct_ ? in_place(sst, ch, g) : column_matrix(ch);
                            double* Cp = (direct_ ? out : colp) + C.offset;
                            const double* Wg = W + g * ocg * K_;
                            if (flat_)
                                gemm(false, true, M, K_, ocg, dyp + g * ocg * M, M, Wg, K_, 0, Cp, C.ld);
                            else if (geo_.k_major)
                                gemm(false, true, ch.mlen, K_, ocg, dy + n0 * dst_st[0] + g * ocg * d_ld + m0, d_ld, Wg, K_, 0, Cp, C.ld,
                                     ch.nb, dst_st[0], 0, C.image);
                            else
                                gemm(false, false, K_, M, ocg, Wg, K_, dy + pos0 * d_ld + g * ocg, d_ld, 0, Cp, C.ld);
                            if (!direct_) launch_col2im(geo_, ch, colp, out, sst, g * icg, outer_, lo, hi, partial, s);
                        }
                        break;
                    }
                    case Direction::bwd_w: {
                        const double* dyp = dy;
                        int64_t dy_ld = d_ld;
                        if (dyt.data()) {
                            // diff_dst of the chunk's images as [oc][n][m]: one GEMM sums over all of them.
                            permute(dy + n0 * dst_st[0], static_cast<double*>(dyt.data()), dst_st, ch, true, s);
                            dyp = static_cast<const double*>(dyt.data());
                            dy_ld = M;
                        } else if (geo_.k_major) {
                            dyp = dy + n0 * dst_st[0] + m0;
                        } else {
                            dyp = dy + pos0 * d_ld;
                        }
                        const bool partials = per_image_ && ch.nb > 1;
                        for (int64_t g = 0; g < p.g; ++g) {
                            const Operand A = columns(ch, g, src, sst, colp, s);
                            const double* B = geo_.k_major ? dyp + g * ocg * dy_ld : dyp + g * ocg;
                            if (partials) {  // image n's sum to part + n * oc * K
                                const int64_t pst = p.oc * K_;
                                gemm(true, false, K_, ocg, ch.mlen, A.p, A.ld, B, dy_ld, 0, static_cast<double*>(part.data()) + g * ocg * K_,
                                     K_, ch.nb, A.image, dst_st[0], pst);
                                continue;
                            }
                            double* dW = W + g * ocg * K_;
                            const double beta = first ? 0 : 1;
                            if (geo_.k_major) gemm(true, false, K_, ocg, M, A.p, A.ld, B, dy_ld, beta, dW, K_);
                            else gemm(false, true, K_, ocg, M, A.p, A.ld, B, dy_ld, beta, dW, K_);
                        }
                        if (partials)
                            launch_sum_slices(W, static_cast<const double*>(part.data()), p.oc * K_, static_cast<int>(ch.nb), first, s);
                        break;
                    }
                }
                first = false;
            }
        }
        if (p.dir == Direction::bwd_w && wtmp.data())
            launch_copy_window(a.weights.data, wst, wtmp.data(), canon_, wsizes_, 8, s);
        if (epilogue_) {
            const TensorView& out = core::epilogue_tensor(p, a);
            EpilogueArgs e = epilogue_args(epi_, a, out);
            if (temp.data()) e.in = temp.data();
            launch_epilogue(e, s);
        }
        if (bias_grad) bias_grad->run(s);
    }

private:
    // Where a GEMM operand lies, in elements: offset (from a tensor or the columns), leading
    // dimension, and the stride between the images of a channels-first batch.
    struct Place {
        int64_t offset, ld, image;
    };
    // Group g's channels of the chunk in a 1x1 stride-1 layer's activation of strides `st`, which
    // the GEMM reads or writes in place of the columns.
    Place in_place(const int64_t* st, const ColChunk& ch, int64_t g) const {
        const int64_t icg = geo_.icg;
        if (geo_.k_major) return {ch.n0 * st[0] + g * icg * st[1] + ch.m0, st[1], st[0]};
        return {(ch.n0 * ohw_ + ch.m0) * st[4] + g * icg, st[4], st[0]};
    }
    Place column_matrix(const ColChunk& ch) const { return {0, geo_.k_major ? ch.nb * ch.mlen : K_, ch.mlen}; }
    // The GEMM operand of group g's input windows in chunk `ch`: src itself (direct_) or the
    // columns im2col writes into `col`.
    struct Operand {
        const double* p;
        int64_t ld, image;
    };
    Operand columns(const ColChunk& ch, int64_t g, const double* src, const int64_t* sst, double* col, cudaStream_t s) const {
        if (direct_) {
            const Place at = in_place(sst, ch, g);
            return {src + at.offset, at.ld, at.image};
        }
        launch_im2col(geo_, ch, src, sst, g * geo_.icg, col, s);
        const Place at = column_matrix(ch);
        return {col, at.ld, at.image};
    }

    // Copies between a chunk of whole channels-first images (at its first image, strides `st`)
    // and the [oc][n][m] matrix: into the matrix when `to_flat`, else back.
    void permute(const double* from, double* to, const int64_t* st, const ColChunk& ch, bool to_flat, cudaStream_t s) const {
        const int64_t sizes[kMaxRank] = {ch.nb, problem_.oc, 1, 1, ch.mlen};
        const int64_t im[kMaxRank] = {st[0], st[1], 0, 0, 1};
        const int64_t fl[kMaxRank] = {ch.mlen, ch.nb * ch.mlen, 0, 0, 1};
        launch_copy_window(to, to_flat ? fl : im, from, to_flat ? im : fl, sizes, 8, s);
    }

    ColGeometry geo_;
    int64_t K_ = 1, ohw_ = 1, nb_ = 1, mlen_ = 1;
    int outer_ = 2;
    int64_t inner_ = 1;
    bool direct_ = false, flat_ = false, per_image_ = false, epilogue_ = false, bias_grad_ = false;
    int64_t col_elems_ = 0, dyt_elems_ = 0, wei_tmp_elems_ = 0, temp_elems_ = 0, part_elems_ = 0;
    int64_t wsizes_[kMaxRank] = {}, canon_[kMaxRank] = {};  // the weights and their reordered strides
    EpilogueArgs epi_;
};

}  // namespace

bool gemm_applies(const ConvProblem& p) {
    return p.dt == DType::f64 && !p.packed_weights && p.src_layout == p.dst_layout && f64_gemm() != 0;
}

std::shared_ptr<const Plan> build_gemm_plan(const ConvProblem& p) { return std::make_shared<GemmPlan>(p); }

bool gemm_preferred(const ConvProblem& p) {
    // Provisional: every layer but the tiny ones (the direct kernel's) and 1x1 stride-1 layers.
    if (p.dir == Direction::fwd && macs(p) <= static_cast<double>(direct_max_macs())) return false;
    return !pointwise(p);
}

}  // namespace convkit::cuda
