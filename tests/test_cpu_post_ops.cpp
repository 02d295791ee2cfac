// Every post-op and a set of chains on the cpu engine, forward, against the reference engine: each
// eltwise alg with its parameters, sum with and without a scale, every binary alg on every operand
// shape, chains beyond what oneDNN 2.6 fuses (two sums, one alg twice); f32, bf16, f16 and f64 in
// both layouts.
#include <gtest/gtest.h>

#include <cctype>
#include <sstream>
#include <string>

#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

const char* const kPostOps[] = {
    "relu",
    "relu:0.1",
    "linear:0.5:-0.25",
    "clip:-0.5:0.7",
    "elu:0.8",
    "swish:1.5",
    "gelu_erf",
    "gelu_tanh",
    "logistic",
    "tanh",
    "hardswish",
    "mish",
    "abs",
    "square",
    "abs+sqrt",
    "linear:0.2:0+exp",
    "abs+linear:1:0.1+log",
    "sum",
    "sum:0.5",
    "add:scalar",
    "mul:per_oc",
    "sub:full",
    "div:per_oc",
    "max:full",
    "min:scalar",
    "add:spatial",
    "add:full_other_layout",
    "mul:full_strided",
    "relu+sum:0.5+tanh",
    "sum+relu",
    "linear:2:1+add:full+relu",
    "mul:per_oc+sum:0.25+clip:-1:1+sub:scalar",
    "sum+sum:0.5+relu",  // two sums: beyond oneDNN, convkit's own pass
    "elu:0.5+elu",       // one alg twice with other parameters: oneDNN 2.6 reuses the first's
    "relu:0.1+linear:2:1+relu:0.3",
    "clip:-1:1+linear:0.5:0.1+clip:-0.2:0.3",
    "gelu_erf+add:full+swish:0.5+mul:per_oc+hardswish+sum:2",
};

class CpuPostOps : public ::testing::TestWithParam<std::tuple<DType, Layout, const char*>> {};

TEST_P(CpuPostOps, MatchesReference) {
    cpu_case(std::get<0>(GetParam()), std::get<1>(GetParam()))
        .channels(8, 16)
        .input_size({6, 7})
        .kernel_size({3, 3})
        .padding({1})
        .post_ops(std::get<2>(GetParam()))
        .check_forward();
}

// "f32_nhwc_linear_2_1_add_relu_30": the chain without its operand shapes, then the index.
std::string case_name(const ::testing::TestParamInfo<CpuPostOps::ParamType>& info) {
    std::string chain, op;
    std::stringstream ops(std::get<2>(info.param));
    while (std::getline(ops, op, '+')) {
        const std::string alg = op.substr(0, op.find(':'));
        const bool binary = alg == "add" || alg == "mul" || alg == "sub" || alg == "div" || alg == "max" || alg == "min";
        chain += (chain.empty() ? "" : "+") + (binary ? alg : op);
    }
    std::string s = param_name(std::get<0>(info.param), std::get<1>(info.param)) + "_";
    for (char c : chain) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    return s + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(Cpu, CpuPostOps,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16, DType::f64),
                                            ::testing::Values(Layout::channels_last, Layout::channels_first),
                                            ::testing::ValuesIn(kPostOps)),
                         case_name);

}  // namespace
