// bf16/f16 <-> f32 conversion of dense buffers over the OpenMP threads (convert.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <oneapi/dnnl/dnnl_types.h>
#include <vector>

#include "convkit/tensor.hpp"

namespace convkit::cpu {

// dt is DType::bf16 or DType::f16; n elements; rounding to nearest even, NaN stays NaN.
void widen_to_f32(DType dt, const void* src, float* dst, std::size_t n);
void narrow_from_f32(DType dt, const float* src, void* dst, std::size_t n);


// A dense plain tensor and a oneDNN blocked layout of the same logical dims (weights as the
// convolution reads them): where each element of one lands in the other. A blocked offset is a
// sum of one term per logical dim (outer index times its stride plus its place inside the
// blocks), so one table per dim gives it with a few additions per element.
struct BlockedMap {
    int ndims = 0;
    int64_t dims[6] = {1, 1, 1, 1, 1, 1};
    int order[6] = {0, 1, 2, 3, 4, 5};  // dims by the plain tensor's stride, outermost first
    std::vector<int64_t> table;          // term of dim d at x: table[start[d] + x]
    int64_t start[6] = {0, 0, 0, 0, 0, 0};
    std::size_t blocked_elems = 0;       // elements of the blocked buffer, padding included
    bool padded = false;                 // the blocked buffer has padding that must read as 0
};
// plain_strides: the dense tensor's element strides, per logical dim.
BlockedMap blocked_map(const dnnl_memory_desc_t& blocked, const int64_t* plain_strides);
// 16-bit plain -> f32 blocked (padding zeroed) and f32 blocked -> 16-bit plain, one pass each.
void widen_to_blocked(DType dt, const void* plain, float* blocked, const BlockedMap& m);
void narrow_from_blocked(DType dt, const float* blocked, void* plain, const BlockedMap& m);

}  // namespace convkit::cpu
