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
// convolution reads them). The blocked buffer is walked in its own memory order, as nested loops
// over the outer index of each dim and each inner block (outermost first), so the f32 side is
// written (or read) sequentially and the 16-bit side, half the bytes, takes the strided access.
struct BlockedMap {
    struct Loop {
        int64_t count = 1, blocked_stride = 1, mult = 1;  // mult: its step in the logical index
        int dim = 0;
    };
    int ndims = 0;
    int64_t dims[6] = {1, 1, 1, 1, 1, 1};
    int64_t plain_strides[6] = {0, 0, 0, 0, 0, 0};
    std::vector<Loop> loops;          // outermost first; the last has blocked_stride 1
    std::size_t blocked_elems = 0;    // elements of the blocked buffer, padding included
    bool padded = false;              // the blocked buffer has padding that must read as 0
    // The two innermost loops form 8x8 tiles whose blocked side is 64 contiguous floats and
    // whose plain side is 8 rows of 8 contiguous values (AVX2's 8b8a / 8a8b weight blocks over
    // a plain dim of stride 1): converted with vector loads and an 8x8 transpose.
    bool tile8 = false;
    std::vector<Loop> tile_loops;     // loops without the innermost, for walking the tiles
};
// plain_strides: the dense tensor's element strides, per logical dim.
BlockedMap blocked_map(const dnnl_memory_desc_t& blocked, const int64_t* plain_strides);
// 16-bit plain -> f32 blocked (padding zeroed) and f32 blocked -> 16-bit plain, one pass each.
void widen_to_blocked(DType dt, const void* plain, float* blocked, const BlockedMap& m);
void narrow_from_blocked(DType dt, const float* blocked, void* plain, const BlockedMap& m);

}  // namespace convkit::cpu
