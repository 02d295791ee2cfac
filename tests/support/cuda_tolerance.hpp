// The CUDA suites' measure and tolerance table (test_cuda.cpp, test_cuda_streams.cpp), until they
// move to tests/support/tolerance.hpp's measure (that move re-measures the bounds on a GPU).
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "convkit/convkit.hpp"

namespace convkit::test::cuda {

// Tolerances, in one place: max |got - want| over max |want| (the output's scale). f32 strict
// allows for Winograd/FFT engines (~1e-5 relative, times sqrt of the reduction); TF32 rounds
// inputs to 10 mantissa bits; f16/bf16 outputs are rounded once by the reference and up to twice
// by the unfused path (convolution result, then the epilogue).
inline double tolerance(DType dt, bool tf32 = false) {
    switch (dt) {
        case DType::f64: return 1e-11;
        case DType::f32: return tf32 ? 1e-2 : 1e-4;
        case DType::f16: return 4e-3;
        case DType::bf16: return 2e-2;
    }
    return 0;
}

// max |got - want| over max |want|; a NaN where the other side has none is an infinite error.
inline double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
    double scale = 1e-30, err = 0;
    for (double w : want) scale = std::max(scale, std::abs(w));
    for (std::size_t i = 0; i < got.size(); ++i) {
        if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
        if (!std::isnan(got[i])) err = std::max(err, std::abs(got[i] - want[i]));
    }
    return err / scale;
}

}  // namespace convkit::test::cuda
