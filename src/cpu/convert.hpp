// bf16/f16 <-> f32 conversion of dense buffers over the OpenMP threads (convert.cpp).
#pragma once
#include <cstddef>

#include "convkit/tensor.hpp"

namespace convkit::cpu {

// dt is DType::bf16 or DType::f16; n elements; rounding to nearest even, NaN stays NaN.
void widen_to_f32(DType dt, const void* src, float* dst, std::size_t n);
void narrow_from_f32(DType dt, const float* src, void* dst, std::size_t n);

}  // namespace convkit::cpu
