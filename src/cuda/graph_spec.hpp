// From a ConvProblem to the cuDNN graph that computes it: the tensors as cuDNN sees them (dims,
// strides, layouts), the convolution node, and the pointwise chain of a runtime-fusion graph. Also
// the problem facts the plan kinds decide on (asymmetric padding, size in multiply-adds) and the
// normalization of post-padding every plan is built for.
#pragma once
#include <cstdint>
#include <vector>

#include "core/problem.hpp"
#include "cuda/cudnn_graph.hpp"

namespace convkit::cuda {

// What the variant pack binds, slot by slot (GraphPlan turns slots into pointers per call).
enum Slot : int { kSrc, kWei, kDst, kBias, kPaddedSrc, kConvTemp, kOperand0 = 16 };

// The convolution-only graph; `padded` describes the activation with its padding made explicit.
GraphSpec conv_spec(const core::ConvProblem& p, bool padded, int64_t alignment);

// Can the forward problem's bias and post-ops go into a runtime-fusion graph? Appends the chain to
// `g` (from conv_spec) and the slots of its tensors to *slots.
bool fused_spec(const core::ConvProblem& p, GraphSpec* g, std::vector<int>* slots);

// Some spatial dim has padding_l != padding_r.
bool asymmetric(const core::ConvProblem& p);

// f16 or bf16: accumulated in f32, rounded to 16 bits once by the reference.
inline bool is_16bit(DType dt) { return dt == DType::f16 || dt == DType::bf16; }

// A forward (or transposed backward-data) problem with bias or post-ops: a pass over its output
// (ConvProblem::epilogue_view) follows the convolution unless fused.
inline bool has_epilogue(const core::ConvProblem& p) { return p.has_epilogue(); }

// Multiply-adds of the convolution (a double: only compared with thresholds).
double macs(const core::ConvProblem& p);

// The problem with each post-padding that no window reaches made equal to the pre-padding where
// that keeps the output size: the same convolution, in the form cuDNN's engines are fast at.
core::ConvProblem normalized(const core::ConvProblem& p);

}  // namespace convkit::cuda
