// Pieces shared by the `convkit run` and `convkit bench` commands: list parsing, tensors made
// from .npy arrays in a chosen dtype/layout/device, random fills and the result comparison.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "convkit/convkit.hpp"
#include "npy.hpp"

namespace convkit::tools {

// "3" or "1,2,3" -> values; `what` names the flag in errors.
Dims parse_list(const std::string& text, const char* what);

// A host f64 copy of any tensor's values in logical (C) order: the common ground for comparing
// and writing results.
std::vector<double> to_host_f64(const TensorView& t);
// Fills `t` (any device, layout, dtype) from logical-order values.
void from_host_f64(const TensorView& t, const std::vector<double>& values);

// A tensor of dtype `dt` in `layout` on `device`, filled from an .npy array (values converted).
Tensor tensor_from_npy(const NpyArray& a, DType dt, Layout layout, Device device);
// An .npy array ('<f8' for f64, '<f4' otherwise) holding the tensor's values in logical order.
NpyArray npy_from_tensor(const TensorView& t);

// Deterministic pseudo-random values in [lo, hi), rounded to what `dt` can hold.
std::vector<double> random_values(int64_t n, double lo, double hi, uint64_t seed, DType dt);

// Comparison against the reference with a tolerance per dtype (see the .cpp for the reasoning).
struct CompareResult {
    bool ok = true;
    int64_t bad = 0;
    double max_err = 0;  // max |got - want| / max(|want|, scale)
    int64_t worst = -1;
    std::string detail;
};
double tolerance(DType dt);
// `tol` 0 = tolerance(dt).
CompareResult compare(const std::vector<double>& got, const std::vector<double>& want, DType dt,
                      double scale, double tol = 0);
// f32 on a GPU with TF32 math: inputs rounded to a 10-bit mantissa (2^-11 relative each, 2^-10
// per product), and the errors of the K products add up like a random walk against an output
// scale of the same growth, so about 2^-10 of the scale; 4x that as the bound.
constexpr double kTf32Tolerance = 4.0 / 1024;

}  // namespace convkit::tools
