// Fuzzes the two small text parsers of `convkit run`: the post-op chain (parse_post_ops,
// src/core/post_ops.cpp, benchdnn's spelling) and the comma-separated lists of --stride, --pad-l,
// --src-shape... (parse_list, tools/cli_common.cpp). The first byte picks which. Every input
// parses or throws a convkit::Error of kind invalid_argument naming the text; a chain that parses
// has at most PostOps::max_ops entries, one operand argument per binary op, finite parameters, and
// its str() reads back to the same chain.
#include <cmath>
#include <exception>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "fuzz_common.hpp"

using namespace convkit;

namespace {

bool same(const PostOp& a, const PostOp& b) {
    if (a.kind != b.kind) return false;
    switch (a.kind) {
        case PostOp::Kind::sum: return a.scale == b.scale;
        case PostOp::Kind::binary: return a.binary == b.binary;
        case PostOp::Kind::eltwise: return a.eltwise == b.eltwise && a.alpha == b.alpha && a.beta == b.beta;
    }
    return false;
}

void chain(const std::string& text) {
    std::vector<std::string> args;
    PostOps ops;
    try {
        ops = parse_post_ops(text, &args);
    } catch (const Error& e) {
        // A chain that is too long is refused by PostOps::append ("post_ops: ...").
        const std::string m = e.what();
        if (m.compare(0, 9, "post-op '") != 0 && m.compare(0, 10, "post_ops: ") != 0)
            fuzz::finding("unexpected message for '%s': %s", text.c_str(), m.c_str());
        if (e.kind() != ErrorKind::invalid_argument) fuzz::finding("error kind %s for '%s'", to_string(e.kind()), text.c_str());
        return;
    } catch (const std::exception& e) {
        fuzz::finding("parse_post_ops threw a non-convkit exception: %s", e.what());
    }
    if (ops.size() > PostOps::max_ops) fuzz::finding("'%s' gave %zu post-ops", text.c_str(), ops.size());
    std::size_t binaries = 0;
    for (const PostOp& op : ops) {
        binaries += op.kind == PostOp::Kind::binary;
        if (!std::isfinite(op.alpha) || !std::isfinite(op.beta) || !std::isfinite(op.scale))
            fuzz::finding("'%s' gave a non-finite parameter", text.c_str());
        if (op.kind == PostOp::Kind::eltwise && op.eltwise == EltwiseAlg::clip && op.alpha > op.beta)
            fuzz::finding("'%s' gave clip with lo > hi", text.c_str());
    }
    if (binaries != args.size()) fuzz::finding("'%s': %zu binary ops but %zu arguments", text.c_str(), binaries, args.size());
    // A NUL byte inside a field is refused (F3: it used to end a number early).
    if (text.find('\0') != std::string::npos) fuzz::finding("'%s' (with a NUL byte in it) parsed", text.c_str());
    // Every parsed chain prints to text that parses back to it, subnormal and huge parameters
    // included (F1, F2).
    const std::string canon = ops.str();
    PostOps back;
    try {
        back = parse_post_ops(canon);
    } catch (const std::exception& e) {
        fuzz::finding("'%s' parses but its str() '%s' does not: %s", text.c_str(), canon.c_str(), e.what());
    }
    if (back.size() != ops.size()) fuzz::finding("'%s' -> '%s' changed the length", text.c_str(), canon.c_str());
    for (std::size_t i = 0; i < ops.size(); ++i)
        if (!same(ops[i], back[i])) fuzz::finding("'%s' -> '%s' changed post-op %zu", text.c_str(), canon.c_str(), i);
}

void list(const std::string& text) {
    Dims d;
    try {
        d = tools::parse_list(text, "--stride");
    } catch (const Error& e) {
        fuzz::expect_prefix(e, "--stride: ");
        return;
    } catch (const std::exception& e) {
        fuzz::finding("parse_list threw a non-convkit exception: %s", e.what());
    }
    if (text.find('\0') != std::string::npos)  // refused, as in the chain (F3)
        fuzz::finding("'%s' (with a NUL byte in it) parsed", text.c_str());
    if (d.rank() < 1 || d.rank() > Dims::max_rank) fuzz::finding("'%s' gave %d values", text.c_str(), d.rank());
    // Written back with commas, the values read back the same.
    std::string canon;
    for (int i = 0; i < d.rank(); ++i) canon += (i ? "," : "") + std::to_string(d[i]);
    if (tools::parse_list(canon, "--stride") != d) fuzz::finding("'%s' -> '%s' reads back differently", text.c_str(), canon.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    if (data[0] & 1) list(text);
    else chain(text);
    return 0;
}
