// PostOps building, printing and parsing in benchdnn's spelling.
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cmath>
#include <cstdlib>

#include "convkit/post_ops.hpp"

namespace convkit {

const char* to_string(EltwiseAlg a) {
    switch (a) {
        case EltwiseAlg::relu: return "relu";
        case EltwiseAlg::linear: return "linear";
        case EltwiseAlg::clip: return "clip";
        case EltwiseAlg::elu: return "elu";
        case EltwiseAlg::swish: return "swish";
        case EltwiseAlg::gelu_erf: return "gelu_erf";
        case EltwiseAlg::gelu_tanh: return "gelu_tanh";
        case EltwiseAlg::logistic: return "logistic";
        case EltwiseAlg::tanh: return "tanh";
        case EltwiseAlg::hardswish: return "hardswish";
        case EltwiseAlg::mish: return "mish";
        case EltwiseAlg::abs: return "abs";
        case EltwiseAlg::square: return "square";
        case EltwiseAlg::sqrt: return "sqrt";
        case EltwiseAlg::exp: return "exp";
        case EltwiseAlg::log: return "log";
    }
    return "?";
}

const char* to_string(BinaryAlg a) {
    switch (a) {
        case BinaryAlg::add: return "add";
        case BinaryAlg::mul: return "mul";
        case BinaryAlg::sub: return "sub";
        case BinaryAlg::div: return "div";
        case BinaryAlg::max: return "max";
        case BinaryAlg::min: return "min";
    }
    return "?";
}

// Shortest text that reads back as the same double, so a printed chain (a reproducer, a log
// line) parses to the same problem. The exponent goes without its '+' ("1e30", which strtod
// reads): '+' separates the post-ops of a chain, and parsers before the one below split "1e+30".
// A subnormal prints as its shortest decimal too ("4.94066e-324"); parse_number takes it back.
static std::string num(double v) {
    char buf[40];
    for (int prec = 6; prec <= 17; ++prec) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    std::string s = buf;
    const auto plus = s.find("e+");
    if (plus != std::string::npos) s.erase(plus + 1, 1);
    return s;
}

std::string PostOp::str() const {
    switch (kind) {
        case Kind::sum: return "sum:" + num(scale);
        case Kind::binary: return to_string(binary);
        case Kind::eltwise: break;
    }
    std::string s = to_string(eltwise);
    switch (eltwise) {
        case EltwiseAlg::relu:
            return alpha == 0 ? s : s + ":" + num(alpha);
        case EltwiseAlg::linear:
        case EltwiseAlg::clip:
            return s + ":" + num(alpha) + ":" + num(beta);
        case EltwiseAlg::elu:
        case EltwiseAlg::swish:
            return s + ":" + num(alpha);
        default:
            return s;
    }
}

PostOps& PostOps::append(const PostOp& op) {
    if (ops_.size() >= max_ops)
        throw Error(ErrorKind::invalid_argument,
                    "post_ops: at most " + std::to_string(max_ops) + " post-ops are supported");
    ops_.push_back(op);
    return *this;
}

PostOps& PostOps::eltwise(EltwiseAlg alg, double alpha, double beta) {
    PostOp op;
    op.kind = PostOp::Kind::eltwise;
    op.eltwise = alg;
    op.alpha = alpha;
    op.beta = beta;
    return append(op);
}

PostOps& PostOps::sum(double scale) {
    PostOp op;
    op.kind = PostOp::Kind::sum;
    op.scale = scale;
    return append(op);
}

PostOps& PostOps::binary(BinaryAlg alg, const TensorView& operand) {
    PostOp op;
    op.kind = PostOp::Kind::binary;
    op.binary = alg;
    op.operand = operand;
    return append(op);
}

bool PostOps::has_sum() const {
    for (const auto& op : ops_)
        if (op.kind == PostOp::Kind::sum) return true;
    return false;
}

std::string PostOps::str() const {
    std::string s;
    for (const auto& op : ops_) {
        if (!s.empty()) s += "+";
        s += op.str();
    }
    return s;
}

namespace {

[[noreturn]] void bad(const std::string& text, const std::string& why) {
    throw Error(ErrorKind::invalid_argument, "post-op '" + text + "': " + why);
}

double parse_number(const std::string& text, const std::string& field, const char* what) {
    if (field.empty()) bad(text, std::string(what) + " is empty");
    // strtod stops at a NUL as at the end: "2\0junk" would read as 2.
    const auto nul = field.find('\0');
    if (nul != std::string::npos)
        bad(text, std::string(what) + " '" + field + "' has a NUL byte at offset " + std::to_string(nul));
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(field.c_str(), &end);
    if (end != field.data() + field.size() || !std::isfinite(v))
        bad(text, std::string(what) + " '" + field + "' is not a finite number");
    // ERANGE also flags an inexact subnormal result, e.g. the shortest decimal of one (what
    // num() prints): that is the nearest double, as for any rounded decimal. An overflow is inf,
    // refused above; what is left to refuse is a nonzero number that rounds to 0.
    if (errno == ERANGE && v == 0)
        bad(text, std::string(what) + " '" + field + "' is too small for a double: it would read as 0 "
                                                    "(the smallest nonzero double is 4.94066e-324)");
    return v;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == sep) {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    out.push_back(cur);
    return out;
}

// A '+' after an exponent letter that follows a mantissa character, and before a digit, is the
// exponent's sign ("linear:1e+3", "sum:0x1p+2"), not a separator. No post-op name starts with a
// digit, so keeping such a '+' never joins two post-ops that would parse apart.
bool exponent_sign(const std::string& s, std::size_t i) {
    if (i < 2 || i + 1 >= s.size()) return false;
    const auto mantissa = static_cast<unsigned char>(s[i - 2]), digit = static_cast<unsigned char>(s[i + 1]);
    const char e = s[i - 1];
    return (e == 'e' || e == 'E' || e == 'p' || e == 'P') && (std::isxdigit(mantissa) || mantissa == '.') &&
           std::isdigit(digit);
}

std::vector<std::string> split_chain(const std::string& s) {
    std::vector<std::string> out;
    std::string cur;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+' && !exponent_sign(s, i)) {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += s[i];
        }
    }
    out.push_back(cur);
    return out;
}

struct EltwiseSpec {
    const char* name;
    EltwiseAlg alg;
    int max_params;
    int min_params;
    double default_alpha, default_beta;
};

const EltwiseSpec kEltwise[] = {
    {"relu", EltwiseAlg::relu, 1, 0, 0.f, 0.f},
    {"linear", EltwiseAlg::linear, 2, 0, 1.f, 0.f},
    {"clip", EltwiseAlg::clip, 2, 2, 0.f, 0.f},
    {"elu", EltwiseAlg::elu, 1, 0, 1.f, 0.f},
    {"swish", EltwiseAlg::swish, 1, 0, 1.f, 0.f},
    {"gelu_erf", EltwiseAlg::gelu_erf, 0, 0, 0.f, 0.f},
    {"gelu_tanh", EltwiseAlg::gelu_tanh, 0, 0, 0.f, 0.f},
    {"logistic", EltwiseAlg::logistic, 0, 0, 0.f, 0.f},
    {"tanh", EltwiseAlg::tanh, 0, 0, 0.f, 0.f},
    {"hardswish", EltwiseAlg::hardswish, 0, 0, 0.f, 0.f},
    {"mish", EltwiseAlg::mish, 0, 0, 0.f, 0.f},
    {"abs", EltwiseAlg::abs, 0, 0, 0.f, 0.f},
    {"square", EltwiseAlg::square, 0, 0, 0.f, 0.f},
    {"sqrt", EltwiseAlg::sqrt, 0, 0, 0.f, 0.f},
    {"exp", EltwiseAlg::exp, 0, 0, 0.f, 0.f},
    {"log", EltwiseAlg::log, 0, 0, 0.f, 0.f},
};

const struct {
    const char* name;
    BinaryAlg alg;
} kBinary[] = {{"add", BinaryAlg::add}, {"mul", BinaryAlg::mul}, {"sub", BinaryAlg::sub},
               {"div", BinaryAlg::div}, {"max", BinaryAlg::max}, {"min", BinaryAlg::min}};

}  // namespace

PostOp parse_post_op(const std::string& text, std::string* binary_arg) {
    if (text.empty()) bad(text, "empty post-op");
    auto colon = text.find(':');
    std::string name = text.substr(0, colon);
    std::string rest = colon == std::string::npos ? std::string() : text.substr(colon + 1);
    PostOp op;
    if (name == "sum") {
        op.kind = PostOp::Kind::sum;
        if (colon != std::string::npos) {
            auto f = split(rest, ':');
            if (f.size() > 1) bad(text, "sum takes one parameter (scale)");
            op.scale = parse_number(text, f[0], "sum scale");
        }
        return op;
    }
    for (const auto& b : kBinary) {
        if (name == b.name) {
            op.kind = PostOp::Kind::binary;
            op.binary = b.alg;
            // The caller resolves the argument through C strings (a file name in the CLI): a NUL
            // would cut it short and name another file.
            const auto nul = rest.find('\0');
            if (nul != std::string::npos)
                bad(text, "the operand argument '" + rest + "' has a NUL byte at offset " + std::to_string(nul));
            if (binary_arg) *binary_arg = rest;
            return op;
        }
    }
    for (const auto& e : kEltwise) {
        if (name != e.name) continue;
        op.kind = PostOp::Kind::eltwise;
        op.eltwise = e.alg;
        op.alpha = e.default_alpha;
        op.beta = e.default_beta;
        std::vector<std::string> f;
        if (colon != std::string::npos) f = split(rest, ':');
        if (static_cast<int>(f.size()) > e.max_params)
            bad(text, name + " takes at most " + std::to_string(e.max_params) + " parameter(s), got " +
                          std::to_string(f.size()));
        if (static_cast<int>(f.size()) < e.min_params)
            bad(text, name + " needs " + std::to_string(e.min_params) + " parameters (e.g. clip:0:6)");
        if (f.size() >= 1) op.alpha = parse_number(text, f[0], "alpha");
        if (f.size() >= 2) op.beta = parse_number(text, f[1], "beta");
        if (e.alg == EltwiseAlg::clip && op.alpha > op.beta)
            bad(text, "clip lower bound " + num(op.alpha) + " is above the upper bound " + num(op.beta));
        return op;
    }
    std::string known;
    for (const auto& e : kEltwise) known += std::string(e.name) + " ";
    bad(text, "unknown post-op '" + name + "' (known: " + known +
                  "sum add mul sub div max min)");
}

PostOps parse_post_ops(const std::string& text, std::vector<std::string>* binary_args) {
    PostOps ops;
    if (text.empty()) return ops;
    for (const auto& tok : split_chain(text)) {
        std::string arg;
        PostOp op = parse_post_op(tok, &arg);
        if (op.kind == PostOp::Kind::binary && binary_args) binary_args->push_back(arg);
        ops.append(op);
    }
    return ops;
}

}  // namespace convkit
