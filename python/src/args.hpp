// Argument normalisation of the functional API, in C++ so that a cached call pays for no Python
// code: int-or-tuple parameters, padding ('same', 'valid', ints, (l, r) pairs, padding_l/_r),
// post-ops (benchdnn strings or (name, *args) tuples), engine names. PyTorch's error texts where
// PyTorch has the same check.
#pragma once
#include <memory>
#include <optional>

#include "common.hpp"

namespace ckpy {

// Binary post-op operands imported for one call (allocated only when a call has one).
struct Operands {
    std::unique_ptr<ArgTensor[]> items;
    int count = 0;
    ArgTensor& next();
};

// Fills params from stride/padding/dilation/groups (+ padding_l/_r). `kernel` holds the weight's
// sizes [OC, IC/g, k...] for padding='same' (rank nsp + 2).
void parse_geometry(convkit::ConvParams& params, const char* fn, int nsp, py::handle stride, py::handle padding,
                    py::handle dilation, py::handle groups, py::handle padding_l, py::handle padding_r,
                    const convkit::Dims& kernel);

// The same for a transposed convolution (PyTorch's conv_transpose argument order): padding as
// parse_geometry's except 'same'/'valid' (a TypeError, as PyTorch), plus output_padding.
void parse_transpose_geometry(convkit::ConvTransposeParams& params, const char* fn, int nsp, py::handle stride,
                              py::handle padding, py::handle output_padding, py::handle groups, py::handle dilation,
                              py::handle padding_l, py::handle padding_r);

// post_ops: None, a '+'-chained benchdnn string, or a list of strings / (name, *args) tuples
// (binary ops take a tensor: ('add', t)). Operands are imported into `operands`.
void parse_post_ops(convkit::PostOps& ops, Operands& operands, py::handle spec, const char* fn, CallStream& cs);
// Right-aligns binary operands of lower rank to `rank` (PyTorch broadcasting: leading 1s).
void broadcast_operands(convkit::PostOps& ops, int rank);

convkit::Engine parse_engine(py::handle h);
std::optional<bool> parse_optional_bool(py::handle h);
// engine= and deterministic= of the convolution functions.
convkit::ConvOptions parse_options(py::handle engine, py::handle deterministic);
// A shape: a sequence of ints (tuple, list, torch.Size).
convkit::Dims parse_shape(py::handle h, const char* fn, const char* what);
bool as_int(py::handle h, int64_t* v);

}  // namespace ckpy
