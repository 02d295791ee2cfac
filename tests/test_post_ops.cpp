// Post-ops apart from any backend: parsing benchdnn's spelling (parameters, defaults, binary
// operand arguments) and printing it back, and the reference engine's `sum`, which accumulates
// into what dst held before the call; the comma-separated lists of the command line. Printed
// chains must parse back to the same values, for any finite parameter (findings F1, F2 of
// docs/robustness.md), and a NUL byte inside a field is refused, not read as its end (F3).
// (Every post-op on the cpu engine: test_cpu_post_ops.cpp; parse errors: test_validation.cpp.)
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "cli_common.hpp"
#include "support/conv_tester.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

TEST(PostOps, ParseAndPrint) {
    std::vector<std::string> args;
    PostOps ops = parse_post_ops("relu:0.5+linear:2:-1+clip:0:6+sum:0.25+add:f.npy+gelu_erf", &args);
    ASSERT_EQ(ops.size(), 6u);
    EXPECT_EQ(ops[0].eltwise, EltwiseAlg::relu);
    EXPECT_FLOAT_EQ(ops[0].alpha, 0.5f);
    EXPECT_FLOAT_EQ(ops[1].alpha, 2.f);
    EXPECT_FLOAT_EQ(ops[1].beta, -1.f);
    EXPECT_EQ(ops[3].kind, PostOp::Kind::sum);
    EXPECT_FLOAT_EQ(ops[3].scale, 0.25f);
    EXPECT_EQ(ops[4].kind, PostOp::Kind::binary);
    ASSERT_EQ(args.size(), 1u);
    EXPECT_EQ(args[0], "f.npy");
    EXPECT_EQ(ops.str(), "relu:0.5+linear:2:-1+clip:0:6+sum:0.25+add+gelu_erf");
    EXPECT_TRUE(ops.has_sum());
    // Defaults.
    PostOps d = parse_post_ops("relu+linear+elu+swish+sum");
    EXPECT_FLOAT_EQ(d[0].alpha, 0.f);
    EXPECT_FLOAT_EQ(d[1].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[2].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[3].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[4].scale, 1.f);
}

// f throws Error(invalid_argument) whose message holds every part (and so was not cut short).
::testing::AssertionResult refused(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
    } catch (const Error& e) {
        const std::string m = e.what();
        if (e.kind() != ErrorKind::invalid_argument)
            return ::testing::AssertionFailure() << "kind " << to_string(e.kind()) << ": " << m;
        for (const auto& part : parts)
            if (m.find(part) == std::string::npos) return ::testing::AssertionFailure() << "no \"" << part << "\" in: " << m;
        return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "accepted";
}

// str() of `ops`, parsed back, has the same parameters bit for bit (-0 and 0 aside).
::testing::AssertionResult reads_back(const PostOps& ops) {
    const std::string text = ops.str();
    PostOps back;
    try {
        back = parse_post_ops(text);
    } catch (const Error& e) {
        return ::testing::AssertionFailure() << "'" << text << "' does not parse: " << e.what();
    }
    if (back.size() != ops.size()) return ::testing::AssertionFailure() << "'" << text << "' gave " << back.size() << " post-ops";
    for (std::size_t i = 0; i < ops.size(); ++i)
        if (back[i].kind != ops[i].kind || back[i].alpha != ops[i].alpha || back[i].beta != ops[i].beta ||
            back[i].scale != ops[i].scale)
            return ::testing::AssertionFailure() << "'" << text << "': post-op " << i << " reads back as " << back[i].str();
    return ::testing::AssertionSuccess();
}

// F1: %g writes "1e+30", and '+' separates the post-ops of a chain.
TEST(PostOps, LargeAndSmallParametersPrintWithoutPlusAndReadBack) {
    const PostOps clip = PostOps().eltwise(EltwiseAlg::clip, -1e30, 1e30);
    EXPECT_EQ(clip.str(), "clip:-1e30:1e30");
    EXPECT_TRUE(reads_back(clip));
    PostOps ops;
    ops.eltwise(EltwiseAlg::linear, 1e300, -1.5e-300).sum(DBL_MAX).eltwise(EltwiseAlg::relu, 123456789012345678.0);
    ops.eltwise(EltwiseAlg::elu, -DBL_MAX).eltwise(EltwiseAlg::swish, 1e100);
    EXPECT_EQ(ops.str(), "linear:1e300:-1.5e-300+sum:1.7976931348623157e308+relu:1.2345678901234568e17+"
                         "elu:-1.7976931348623157e308+swish:1e100");
    EXPECT_TRUE(reads_back(ops));
}

// F1, the other half: a user can write the '+' of an exponent, in decimal or hex.
TEST(PostOps, ExponentPlusSignIsPartOfTheNumber) {
    PostOps ops = parse_post_ops("linear:1e+3:2.5E+1+sum:0x1p+2+relu:.5e+1+clip:-1e+30:1e+30");
    ASSERT_EQ(ops.size(), 4u) << ops.str();
    EXPECT_EQ(ops[0].alpha, 1000.0);
    EXPECT_EQ(ops[0].beta, 25.0);
    EXPECT_EQ(ops[1].scale, 4.0);
    EXPECT_EQ(ops[2].alpha, 5.0);
    EXPECT_EQ(ops[3].alpha, -1e30);
    EXPECT_EQ(ops[3].beta, 1e30);
    // Every other '+' still separates, also after a name or an operand ending in 'e'.
    std::vector<std::string> args;
    ops = parse_post_ops("square+exp+add:some_file+relu+mul:cube+tanh", &args);
    ASSERT_EQ(ops.size(), 6u);
    EXPECT_EQ(args, (std::vector<std::string>{"some_file", "cube"}));
    EXPECT_TRUE(refused([] { parse_post_ops("relu+1e+3"); }, {"unknown post-op '1e+3'"}));
}

// F2: strtod sets ERANGE for a subnormal it has to round, such as the shortest decimal that
// str() prints for one ("4.94066e-324"), which parse_number used to refuse.
TEST(PostOps, SubnormalParametersReadBack) {
    const double tiny = std::numeric_limits<double>::denorm_min();
    PostOps exact = parse_post_ops("relu:0x1p-1074");
    ASSERT_EQ(exact.size(), 1u);
    EXPECT_EQ(exact[0].alpha, tiny);
    EXPECT_EQ(exact.str(), "relu:4.94066e-324");
    EXPECT_TRUE(reads_back(exact));
    EXPECT_EQ(parse_post_ops("relu:4.94066e-324")[0].alpha, tiny);
    EXPECT_EQ(parse_post_ops("relu:3e-324")[0].alpha, tiny);  // rounds up to the smallest
    EXPECT_EQ(parse_post_ops("sum:1e-310")[0].scale, 1e-310);
    for (double v : {tiny, -tiny, 3 * tiny, 1e-310, -2.5e-320, DBL_MIN - tiny, DBL_MIN, std::nextafter(DBL_MIN, 0.0)}) {
        EXPECT_TRUE(reads_back(PostOps().eltwise(EltwiseAlg::linear, v, -v).sum(v))) << v;
        EXPECT_TRUE(reads_back(PostOps().eltwise(EltwiseAlg::clip, -std::abs(v), std::abs(v)))) << v;
    }
    // Nonzero text that no double holds: refused, saying so (not "not a finite number").
    EXPECT_TRUE(refused([] { parse_post_ops("relu:1e-400"); }, {"alpha '1e-400' is too small for a double"}));
    EXPECT_TRUE(refused([] { parse_post_ops("sum:-2e-324"); }, {"sum scale '-2e-324' is too small"}));
    EXPECT_TRUE(refused([] { parse_post_ops("relu:1e400"); }, {"alpha '1e400' is not a finite number"}));
    EXPECT_EQ(parse_post_ops("relu:0e-400")[0].alpha, 0.0);  // exactly 0 is no underflow
}

// F1 and F2 over all of double's range: random bit patterns, every exponent equally likely.
TEST(PostOps, AnyFiniteParameterReadsBack) {
    std::mt19937_64 rng(18);
    int checked = 0;
    for (int i = 0; i < 5000; ++i) {
        double v[3];
        for (double& x : v) {
            const uint64_t bits = rng();
            std::memcpy(&x, &bits, sizeof x);
            if (!std::isfinite(x)) x = 0.5;
        }
        PostOps ops;
        ops.eltwise(EltwiseAlg::linear, v[0], v[1]).sum(v[2]).eltwise(EltwiseAlg::elu, v[1]);
        ops.eltwise(EltwiseAlg::clip, std::min(v[0], v[2]), std::max(v[0], v[2]));
        ASSERT_TRUE(reads_back(ops)) << "values " << v[0] << " " << v[1] << " " << v[2];
        ++checked;
    }
    EXPECT_EQ(checked, 5000);
}

// F3: strtod stops at a NUL as at the end of the text, so "linear:2\0junk" read as linear:2.
// Only the C++ API can pass one (argv cannot).
TEST(PostOps, NulByteInsideAFieldIsRefused) {
    EXPECT_TRUE(refused([] { parse_post_ops(std::string("linear:2\0junk", 13)); },
                        {"post-op 'linear:2\\0junk': alpha '2\\0junk' has a NUL byte at offset 1"}));
    EXPECT_TRUE(refused([] { parse_post_ops(std::string("clip:0:6\0", 9)); }, {"beta '6\\0' has a NUL byte at offset 1"}));
    EXPECT_TRUE(refused([] { parse_post_ops(std::string("relu+sum:\0" "1", 11)); }, {"sum scale '\\01' has a NUL byte at offset 0"}));
    // A binary operand argument is a file name to the CLI: a NUL would name another file.
    EXPECT_TRUE(refused([] { parse_post_ops(std::string("add:r.npy\0.bak", 14)); },
                        {"the operand argument 'r.npy\\0.bak' has a NUL byte at offset 5"}));
    // The fuzzer's reproducers (fuzz/regressions/post_ops/F3_nul_in_number, F2_F3_subnormal_and_nul;
    // their first byte picks the parser).
    EXPECT_TRUE(refused([] { parse_post_ops(std::string("linear:11\0\0" "13:01+clip:0:0x1p-1074", 33)); }, {"NUL byte"}));
    // Other control bytes are escaped in the message too.
    EXPECT_TRUE(refused([] { parse_post_ops("relu:1\n2"); }, {"alpha '1\\x0a2' is not a finite number"}));
}

// F3 in the command line's lists (tools/cli_common.cpp): "1,2\09" read as [1, 2], "\0" as [0].
TEST(PostOpsParseList, NulByteInsideAnEntryIsRefused) {
    EXPECT_TRUE(refused([] { tools::parse_list(std::string("1,2\0" "9", 5), "--stride"); },
                        {"--stride: '2\\09' in '1,2\\09' is not an integer"}));
    EXPECT_TRUE(refused([] { tools::parse_list(std::string("\0", 1), "--pad-l"); }, {"--pad-l: '\\0' in '\\0' is not an integer"}));
    EXPECT_TRUE(refused([] { tools::parse_list(std::string("3\0", 2), "--dilation"); }, {"'3\\0'"}));
    EXPECT_EQ(tools::parse_list("1,-2,3", "--stride"), (Dims{1, -2, 3}));
    EXPECT_TRUE(refused([] { tools::parse_list("1,x", "--stride"); }, {"--stride: 'x' in '1,x' is not an integer"}));
}

TEST(PostOps, SumPostOpReadsPriorDst) {
    Tensor src(DType::f32, {1, 2, 4, 4}), wei(DType::f32, {2, 2, 1, 1}), dst(DType::f32, {1, 2, 4, 4});
    fill(src, -1, 1, 6);
    fill(wei, -1, 1, 7);
    fill(dst, -1, 1, 8);
    const std::vector<double> prior = to_host_f64(dst);
    Tensor plain(DType::f32, {1, 2, 4, 4});
    const ConvOptions ref{Engine::ref, {}};
    convolution_forward(plain, src, wei, {}, ConvParams{}, {}, {}, {}, ref).wait();
    PostOps po;
    po.sum(0.5f);
    convolution_forward(dst, src, wei, {}, ConvParams{}, po, {}, {}, ref).wait();
    const std::vector<double> got = to_host_f64(dst), conv = to_host_f64(plain);
    for (size_t i = 0; i < got.size(); ++i)
        EXPECT_FLOAT_EQ(static_cast<float>(got[i]), static_cast<float>(conv[i]) + 0.5f * static_cast<float>(prior[i])) << "element " << i;
}

}  // namespace
