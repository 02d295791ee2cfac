// Post-ops: an ordered chain applied to `conv(src, weights) + bias` in the forward direction,
// with oneDNN/benchdnn names and semantics so that users of either recognise them.
//   eltwise  relu[:alpha]        x > 0 ? x : alpha * x                (alpha defaults to 0)
//            linear:alpha:beta   alpha * x + beta                     (defaults 1, 0)
//            clip:lo:hi          min(max(x, lo), hi)
//            elu:alpha           x > 0 ? x : alpha * (exp(x) - 1)     (default 1)
//            swish:beta          x * logistic(beta * x)               (default 1)
//            gelu_erf, gelu_tanh, logistic, tanh, hardswish (x * clip(x + 3, 0, 6) / 6),
//            mish (x * tanh(log1p(exp(x)))), abs, square, sqrt, exp, log
//   sum:scale                    x + scale * (dst contents before the call)   (default 1)
//   binary   add/mul/sub/div/max/min with an operand broadcastable to dst: each dimension of the
//            operand is 1 or equal to dst's (scalar, per-channel [1,C,1..], or full).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "convkit/tensor.hpp"

namespace convkit {

enum class EltwiseAlg {
    relu, linear, clip, elu, swish, gelu_erf, gelu_tanh, logistic, tanh, hardswish, mish,
    abs, square, sqrt, exp, log
};
enum class BinaryAlg { add, mul, sub, div, max, min };

CONVKIT_API const char* to_string(EltwiseAlg a);
CONVKIT_API const char* to_string(BinaryAlg a);

struct CONVKIT_API PostOp {
    enum class Kind { eltwise, sum, binary };
    Kind kind = Kind::eltwise;
    EltwiseAlg eltwise = EltwiseAlg::relu;
    BinaryAlg binary = BinaryAlg::add;
    // Scalars are double so an f64 convolution applies exactly the value given (0.1 is not 0.1f);
    // each engine rounds them to the destination's precision (float for f32/bf16/f16 dst).
    double alpha = 0;    // eltwise parameters (relu slope, linear scale, clip low, ...)
    double beta = 0;     // (linear shift, clip high)
    double scale = 1;    // sum scale
    TensorView operand;  // binary operand

    std::string str() const;  // benchdnn spelling; a binary op prints as "add" (the operand is data)
};

class CONVKIT_API PostOps {
public:
    static constexpr std::size_t max_ops = 16;
    PostOps() = default;
    PostOps& eltwise(EltwiseAlg alg, double alpha = 0, double beta = 0);
    PostOps& sum(double scale = 1);
    PostOps& binary(BinaryAlg alg, const TensorView& operand);
    PostOps& append(const PostOp& op);

    std::size_t size() const { return ops_.size(); }
    bool empty() const { return ops_.empty(); }
    const PostOp& operator[](std::size_t i) const { return ops_[i]; }
    PostOp& operator[](std::size_t i) { return ops_[i]; }
    std::vector<PostOp>::const_iterator begin() const { return ops_.begin(); }
    std::vector<PostOp>::const_iterator end() const { return ops_.end(); }
    bool has_sum() const;
    std::string str() const;  // "relu+sum:0.5+add"

private:
    std::vector<PostOp> ops_;
};

// Parses one benchdnn-spelled post-op ("relu:0.1", "sum:0.5", "add:ARG"). For a binary op the
// text after the first ':' is returned in *binary_arg (the caller resolves it to a tensor: a file
// name in the CLI, a broadcast kind in the benchmark) and the operand is left undefined.
CONVKIT_API PostOp parse_post_op(const std::string& text, std::string* binary_arg = nullptr);
// '+'-separated chain of the above. Binary ops get their arguments in *binary_args, in order.
CONVKIT_API PostOps parse_post_ops(const std::string& text, std::vector<std::string>* binary_args = nullptr);

}  // namespace convkit
