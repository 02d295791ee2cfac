// 1x1 convolutions as oneDNN matmuls: when a problem takes that path and the matmul step of each
// direction, built through the convolution's Builder (dnnl_builder.hpp).
#pragma once
#include "cpu/dnnl_builder.hpp"

namespace convkit::cpu {

// Whether `b`'s problem is a 1x1 worth running as a matrix product (CONVKIT_CPU_MATMUL=0 / 1
// forces off / on).
bool matmul_candidate(const Builder& b);
// Each builds the direction's matmul into b's variant; false (nothing added) where oneDNN offers
// only `ref` or its kernel does not generate.
bool build_matmul_fwd(Builder& b);
bool build_matmul_bwd_d(Builder& b);
bool build_matmul_bwd_w(Builder& b);

}  // namespace convkit::cpu
