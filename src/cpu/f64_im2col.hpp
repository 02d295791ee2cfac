// The data movement around the f64 path's gemms (f64_conv.cpp): one block of output positions
// between an image and its column matrix (im2col, and its adjoint col2im for backward data), and
// weights between the two K orders.
#pragma once
#include <cstdint>

#include "cpu/f64_plan.hpp"

namespace convkit::cpu {

// col[j][kk] = src at output position pos0 + j and K index k0 + kk; channels-last image `img`.
void im2col_cl(const F64Plan& f, const double* img, int64_t gi, int64_t pos0, int64_t npos, int64_t k0, int64_t k1,
               double* col, int64_t ldcol);
// col[kk][j] for K index k0 + kk = (ic, tap) and position pos0 + j; channels-first image `img`.
void im2col_cf(const F64Plan& f, const double* img, int64_t gi, int64_t pos0, int64_t npos, int64_t k0, int64_t k1,
               double* col, int64_t ldcol);
// diff_src += the block's columns scattered back (the adjoint of im2col_cl / im2col_cf), for
// input channels [ic0, ic0 + icn) of group gi; col rows are [tap][icn] (channels-last) or
// col[(ic - ic0) * taps + tap][pos] (channels-first).
void col2im_cl(const F64Plan& f, double* img, int64_t gi, int64_t ic0, int64_t icn, int64_t pos0, int64_t npos,
               const double* col);
void col2im_cf(const F64Plan& f, double* img, int64_t gi, int64_t ic0, int64_t icn, int64_t pos0, int64_t npos,
               const double* col);
// Weights (or diff_weights) between the user's order and the formulation's: [OC, ICg, taps]
// (channels-first) <-> [OC, taps, ICg] (channels-last).
void transpose_weights(const F64Plan& f, const double* from, double* to, bool to_cl);

}  // namespace convkit::cpu
