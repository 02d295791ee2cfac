// Convolution and deconvolution (transposed convolution) problem descriptors in oneDNN
// benchdnn's text syntax (e.g. `mb32ic64ih56oc64oh56kh3ph1n"res2a_branch2b"`) and batch files
// of them, so convkit's tools and tests can share problem lists with benchdnn and be compared
// to it.
//
// Parsing follows benchdnn's str2desc() (tests/benchdnn/conv/conv_aux.cpp,
// tests/benchdnn/deconv/deconv_aux.cpp) and sanitize_desc(): any descriptor accepted here
// means the same problem it means to benchdnn's conv or deconv driver. Where benchdnn would silently accept something dubious (duplicate entries,
// values it then overwrites, a zero size), this parser rejects it instead; desc.cpp lists
// those cases.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace convkit::tools {

// Which benchdnn driver a descriptor is for. The text is the same; what differs is which side
// is derived: for deconv, ic/i* are the deconvolution's input and oc/o* its output, and
//   out = (in - 1) * stride - padding_l - padding_r + (k - 1) * dilation + 1.
enum class DescKind { conv, deconv };

struct ConvDesc {
    DescKind kind = DescKind::conv;
    int ndims = 2;                 // spatial dims: 1, 2 or 3
    int64_t g = 1, mb = 2, ic = 0, oc = 0;
    // Per spatial dim in (d, h, w) order; only the last `ndims` entries are meaningful
    // (for 2D: index 1 = h, index 2 = w; for 1D: index 2 = w); unused entries are
    // in=out=k=1, stride=1, padding=0, dilation=1.
    std::array<int64_t, 3> in{1, 1, 1}, out{1, 1, 1}, k{1, 1, 1}, stride{1, 1, 1},
            padding_l{0, 0, 0}, padding_r{0, 0, 0};
    // conv: padding_r is always (out - 1) * stride - in + ((k - 1) * dilation + 1) - padding_l,
    // as in benchdnn. It may be negative, down to 1 - stride (oneDNN's own limit): a strided
    // problem whose last window stops before the end of the input, e.g. a 1x1 stride-2
    // convolution over an even-sized input has padding_r = -1.
    // deconv: padding_r is (in - 1) * stride - out + ((k - 1) * dilation + 1) - padding_l, the
    // same relation with in and out swapped. Negative means output rows past the last window,
    // which is PyTorch's output_padding = -padding_r; it must be smaller than the stride or the
    // dilation, as PyTorch and convkit require.
    // 1 = dense, as everywhere in convkit; the text's `d` entries are benchdnn's 0-based values.
    std::array<int64_t, 3> dilation{1, 1, 1};
    std::string name;              // without quotes; "" if none

    // Canonical descriptor that parse_conv_desc() reads back to the same value. It is
    // benchdnn's short form: g/mb/strides/dilations only when not default, w (or h and w)
    // only when they differ from h (or d). padding_r is not written; it follows from out.
    std::string str() const;
    // conv: 2 * mb * oc * prod(out) * (ic/g) * prod(k); deconv: 2 * mb * ic * prod(in) * (oc/g)
    // * prod(k) (each input element meets every tap once). Padding included (benchdnn's own
    // count skips taps that fall into padding). Same value for forward, bwd_d and bwd_w.
    double flops() const;
};

// Throws convkit::Error(ErrorKind::invalid_argument) naming the descriptor and the problem.
ConvDesc parse_conv_desc(const std::string& text, DescKind kind = DescKind::conv);

// One descriptor per line (several whitespace-separated descriptors on a line are also
// fine), '#' starts a comment to end of line, blank lines ignored. A quoted name may contain
// spaces or '#'. Errors name the file and line number.
std::vector<ConvDesc> read_batch_file(const std::string& path, DescKind kind = DescKind::conv);

}  // namespace convkit::tools
