// The trace (CONVKIT_VERBOSE / set_verbose) and the reproducers errors carry: the fields of each
// line in oneDNN's order, one exec line per call, plan lookups and engine choice at level 2,
// nothing when off, and a `convkit bench` line that parses back to the same problem or fails the
// same way. Replaying whole traces through the CLI: tests/cli/test_trace.py.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "convkit/convkit.h"
#include "convkit/convkit.hpp"
#include "desc.hpp"
#include "support/capture.hpp"

using namespace convkit;
using convkit::test::capture_stderr;

namespace {

std::vector<std::string> lines_with(const std::string& text, const std::string& prefix) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);)
        if (l.rfind(prefix, 0) == 0) out.push_back(l);
    return out;
}

// Fields between separators, empty ones included (a trace line has empty attributes fields).
std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string f; std::getline(in, f, sep);) out.push_back(f);
    if (s.empty() || s.back() == sep) out.emplace_back();
    return out;
}

// A `convkit bench ...` line: its options (name -> value) and its one descriptor.
struct Bench {
    std::vector<std::pair<std::string, std::string>> opts;
    std::string desc;
    std::string opt(const std::string& name) const {
        for (auto& o : opts)
            if (o.first == name) return o.second;
        return "<absent>";
    }
};

Bench parse_bench(const std::string& line) {
    Bench b;
    auto words = split(line, ' ');
    size_t i = 0;
    while (i < words.size() && words[i].find('=') != std::string::npos && words[i].rfind("--", 0) != 0) ++i;  // env
    EXPECT_LT(i + 1, words.size()) << line;
    EXPECT_EQ(words[i], "convkit") << line;
    EXPECT_EQ(words[i + 1], "bench") << line;
    for (i += 2; i < words.size(); ++i) {
        if (words[i].rfind("--", 0) == 0) {
            auto eq = words[i].find('=');
            b.opts.emplace_back(words[i].substr(0, eq), eq == std::string::npos ? "" : words[i].substr(eq + 1));
        } else {
            EXPECT_TRUE(b.desc.empty()) << "two descriptors in " << line;
            b.desc = words[i];
        }
    }
    return b;
}

std::string reproducer_of(const std::string& message) {
    const std::string key = "\nreproduce: ";
    auto at = message.find(key);
    if (at == std::string::npos) return "";
    std::string r = message.substr(at + key.size());
    EXPECT_EQ(r.find('\n'), std::string::npos) << "the reproducer is one line: " << message;
    return r;
}

Error error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e;
    }
    ADD_FAILURE() << "no error thrown";
    return Error(ErrorKind::backend, "");
}

// Sets the level for one test and puts it back.
struct Verbose {
    int old;
    explicit Verbose(int l) : old(verbose()) { set_verbose(l); }
    ~Verbose() { set_verbose(old); }
};

// src [2,4,9,9] NHWC, weights [6,4,3,3], stride 2, padding 1 -> dst [2,6,5,5], bias, relu.
struct Problem {
    Tensor src{DType::f32, {2, 4, 9, 9}, Layout::channels_last};
    Tensor wei{DType::f32, {6, 4, 3, 3}, Layout::channels_last};
    Tensor bias{DType::f32, {6}};
    Tensor dst{DType::f32, {2, 6, 5, 5}, Layout::channels_last};
    ConvParams params;
    Problem() {
        params.stride = {2};
        params.pad({1});
        for (const Tensor* t : {&src, &wei, &bias, &dst}) std::memset(t->data(), 0, t->nbytes());
    }
    void fwd(Engine e) {
        convolution_forward(dst, src, wei, bias, params, PostOps().eltwise(EltwiseAlg::relu), Stream(), {}, {e, {}});
    }
};

TEST(Trace, OffPrintsNothing) {
    Verbose v(0);
    Problem p;
    EXPECT_EQ(capture_stderr([&] { p.fwd(Engine::ref); }), "");
}

TEST(Trace, OneExecLinePerCallInOneDnnsLayout) {
    Verbose v(1);
    Problem p;
    const std::string out = capture_stderr([&] {
        p.fwd(Engine::ref);
        p.fwd(Engine::ref);
    });
    // The header comes once per process, before the first line.
    EXPECT_NE(out.find("convkit_verbose,info,convkit " CONVKIT_VERSION_STRING "\n"), std::string::npos) << out;
    EXPECT_NE(out.find("convkit_verbose,info,prim_template:operation,engine,primitive,implementation,prop_kind,"
                       "memory_descriptors,attributes,auxiliary,problem_desc,exec_time,reproducer\n"),
              std::string::npos)
            << out;
    auto exec = lines_with(out, "convkit_verbose,exec,");
    ASSERT_EQ(exec.size(), 2u) << out;
    EXPECT_TRUE(lines_with(out, "convkit_verbose,create:").empty()) << "plan lines are level 2";
    auto f = split(exec[0], ',');
    ASSERT_EQ(f.size(), 12u) << exec[0];
    EXPECT_EQ(f[2], "cpu");
    EXPECT_EQ(f[3], "convolution");
    EXPECT_EQ(f[4], "ref");
    EXPECT_EQ(f[5], "forward_training");
    EXPECT_EQ(f[6], "src_f32::blocked:acdb:f0 wei_f32::blocked:acdb:f0 bia_f32::blocked:a:f0 dst_f32::blocked:acdb:f0");
    EXPECT_EQ(f[7], "attr-post-ops:eltwise_relu");
    EXPECT_EQ(f[8], "alg:convolution_direct");
    EXPECT_EQ(f[9], "mb2_ic4oc6_ih9oh5kh3sh2dh0ph1_iw9ow5kw3sw2dw0pw1");
    EXPECT_GE(std::stod(f[10]), 0.0);
    Bench b = parse_bench(f[11]);
    EXPECT_EQ(b.opt("--engine"), "ref");
    EXPECT_EQ(b.opt("--dir"), "FWD_B");
    EXPECT_EQ(b.opt("--dt"), "f32");
    EXPECT_EQ(b.opt("--tag"), "nhwc");
    EXPECT_EQ(b.opt("--attr-post-ops"), "relu");
    EXPECT_EQ(b.opt("--driver"), "<absent>");
    tools::ConvDesc d = tools::parse_conv_desc(b.desc);
    EXPECT_EQ(d.mb, 2);
    EXPECT_EQ(d.ic, 4);
    EXPECT_EQ(d.oc, 6);
    EXPECT_EQ(d.in[1], 9);
    EXPECT_EQ(d.out[2], 5);
    EXPECT_EQ(d.k[1], 3);
    EXPECT_EQ(d.stride[2], 2);
    EXPECT_EQ(d.padding_l[1], 1);
    EXPECT_EQ(d.padding_r[2], 1);
}

TEST(Trace, BackwardAndTransposedCallsInTheirOwnTerms) {
    Verbose v(1);
    Problem p;
    ConvTransposeParams tp;
    tp.stride = {2};
    tp.pad({1});
    tp.output_padding = {1};
    Tensor tsrc(DType::f32, {1, 3, 4, 5}), twei(DType::f32, {3, 4, 3, 3}), tdst(DType::f32, {1, 4, 8, 10});
    for (const Tensor* t : {&tsrc, &twei}) std::memset(t->data(), 0, t->nbytes());
    const std::string out = capture_stderr([&] {
        convolution_backward_data(p.src, p.dst, p.wei, p.params, Stream(), {}, {Engine::ref, {}});
        convolution_backward_weights(p.wei, p.bias, p.dst, p.src, p.params, Stream(), {}, {Engine::ref, {}});
        conv_transpose_forward(tdst, tsrc.view(), twei.view(), TensorView(), tp, PostOps(), Stream(), {}, {Engine::ref, {}});
    });
    auto exec = lines_with(out, "convkit_verbose,exec,");
    ASSERT_EQ(exec.size(), 3u) << out;
    auto bd = split(exec[0], ','), bw = split(exec[1], ','), tf = split(exec[2], ',');
    EXPECT_EQ(bd[5], "backward_data");
    EXPECT_EQ(bd[6], "diff_src_f32::blocked:acdb:f0 wei_f32::blocked:acdb:f0 bia_undef::undef::f0 diff_dst_f32::blocked:acdb:f0");
    EXPECT_EQ(parse_bench(bd[11]).opt("--dir"), "BWD_D");
    EXPECT_EQ(bw[5], "backward_weights");
    EXPECT_EQ(bw[6], "src_f32::blocked:acdb:f0 diff_wei_f32::blocked:acdb:f0 diff_bia_f32::blocked:a:f0 diff_dst_f32::blocked:acdb:f0");
    EXPECT_EQ(parse_bench(bw[11]).opt("--dir"), "BWD_WB");
    // The transposed call: its own input (3 channels, 4x5) and output (4 channels, 8x10).
    EXPECT_EQ(tf[3], "deconvolution");
    EXPECT_EQ(tf[5], "forward_training");
    EXPECT_EQ(tf[8], "alg:deconvolution_direct");
    EXPECT_EQ(tf[9], "mb1_ic3oc4_ih4oh8kh3sh2dh0ph1_iw5ow10kw3sw2dw0pw1");
    Bench b = parse_bench(tf[11]);
    EXPECT_EQ(b.opt("--driver"), "deconv");
    EXPECT_EQ(b.opt("--dir"), "FWD_D");
    EXPECT_EQ(b.opt("--tag"), "nchw");
    tools::ConvDesc d = tools::parse_conv_desc(b.desc, tools::DescKind::deconv);
    EXPECT_EQ(d.ic, 3);
    EXPECT_EQ(d.oc, 4);
    EXPECT_EQ(d.out[1], 8);
    EXPECT_EQ(d.out[2], 10);
    EXPECT_EQ(d.padding_r[1], 0);  // output_padding 1 = the derived padding_r 1 - 1
}

#ifdef CONVKIT_WITH_CPU
TEST(Trace, LevelTwoShowsPlanLookupsAndTheEngineChoice) {
    Verbose v(2);
    clear_cache(Engine::cpu);
    Problem p;
    const std::string out = capture_stderr([&] {
        p.fwd(Engine::cpu);
        p.fwd(Engine::cpu);
        p.fwd(Engine::automatic);
    });
    auto create = lines_with(out, "convkit_verbose,create:");
    auto dispatch = lines_with(out, "convkit_verbose,dispatch,");
    auto exec = lines_with(out, "convkit_verbose,exec,");
    ASSERT_EQ(create.size(), 3u) << out;
    ASSERT_EQ(dispatch.size(), 3u) << out;
    ASSERT_EQ(exec.size(), 3u) << out;
    EXPECT_EQ(create[0].rfind("convkit_verbose,create:cache_miss,cpu,convolution,", 0), 0u) << create[0];
    EXPECT_EQ(create[1].rfind("convkit_verbose,create:cache_hit,cpu,convolution,", 0), 0u) << create[1];
    EXPECT_EQ(create[2].rfind("convkit_verbose,create:cache_hit,", 0), 0u) << create[2];
    EXPECT_GT(std::stod(split(create[0], ',')[10]), 0.0) << "a miss reports its build time";
    EXPECT_EQ(split(dispatch[0], ',')[4], "engine:cpu");
    EXPECT_EQ(split(dispatch[0], ',')[10], "asked for");
    EXPECT_EQ(split(dispatch[2], ',')[10], "the first engine that runs the problem");
    // The implementation is oneDNN's (never its naive reference for this NHWC problem).
    const std::string impl = split(exec[0], ',')[4];
    EXPECT_FALSE(impl.empty());
    EXPECT_EQ(impl.find("ref"), std::string::npos) << impl;
    EXPECT_EQ(parse_bench(split(exec[0], ',')[11]).opt("--engine"), "cpu");
    // Tracing does not count its own lookups.
    EXPECT_EQ(cache_stats(Engine::cpu).misses, 1u);
    EXPECT_EQ(cache_stats(Engine::cpu).hits, 2u);
}
#endif

TEST(Reproducer, ShapeErrorsCarryADescriptorThatFailsAlike) {
    Verbose v(0);
    Tensor src(DType::f32, {1, 3, 4, 4}), wei(DType::f32, {2, 3, 7, 7}), dst(DType::f32, {1, 2, 1, 1});
    Error e = error_of([&] { convolution_forward(dst, src, wei, TensorView(), ConvParams()); });
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    const std::string r = reproducer_of(e.what());
    ASSERT_FALSE(r.empty()) << e.what();
    Bench b = parse_bench(r);
    EXPECT_EQ(b.opt("--dt"), "f32");
    Error again = error_of([&] { tools::parse_conv_desc(b.desc); });
    EXPECT_EQ(again.kind(), ErrorKind::invalid_argument) << b.desc;

    // Through output_shape too, and its messages name it (finding F4), with sizes past int64 in full (F13).
    ConvParams huge;
    huge.dilation = {int64_t(1) << 62};
    Error o = error_of([&] { output_shape({1, 1, 8}, {1, 1, 3}, huge); });
    EXPECT_EQ(std::string(o.what()).rfind("output_shape: src size w with padding (8 + 0 + 0 = 8) is smaller than the "
                                          "dilated kernel (4611686018427387904 * (3 - 1) + 1 = 9223372036854775809)", 0),
              0u)
            << o.what();
    const std::string ro = reproducer_of(o.what());
    ASSERT_FALSE(ro.empty()) << o.what();
    EXPECT_EQ(error_of([&] { tools::parse_conv_desc(parse_bench(ro).desc); }).kind(), ErrorKind::invalid_argument);

    // A transposed convolution's, in deconv terms.
    ConvTransposeParams tp;
    tp.stride = {2};
    tp.output_padding = {5};
    Error t = error_of([&] { conv_transpose_output_shape({1, 3, 4, 4}, {3, 2, 3, 3}, tp); });
    const std::string rt = reproducer_of(t.what());
    ASSERT_FALSE(rt.empty()) << t.what();
    Bench bt = parse_bench(rt);
    EXPECT_EQ(bt.opt("--driver"), "deconv");
    EXPECT_EQ(error_of([&] { tools::parse_conv_desc(bt.desc, tools::DescKind::deconv); }).kind(), ErrorKind::invalid_argument);
}

TEST(Reproducer, NonFinitePostOpParameterFailsAlikeInTheBenchSpelling) {
    Verbose v(0);
    Problem p;
    Error e = error_of([&] {
        convolution_forward(p.dst, p.src, p.wei, p.bias, p.params, PostOps().eltwise(EltwiseAlg::clip, -1, INFINITY),
                            Stream(), {}, {Engine::ref, {}});
    });
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    Bench b = parse_bench(reproducer_of(e.what()));
    ASSERT_NE(b.opt("--attr-post-ops"), "<absent>") << e.what();
    EXPECT_EQ(error_of([&] { parse_post_ops(b.opt("--attr-post-ops")); }).kind(), ErrorKind::invalid_argument);
}

TEST(Reproducer, ErrorsInTheCallersBuffersHaveNone) {
    Verbose v(0);
    Problem p;
    Tensor wrong(DType::f32, {2, 6, 4, 4});
    Error e = error_of([&] { convolution_forward(wrong, p.src, p.wei, p.bias, p.params); });
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(std::string(e.what()).find("reproduce:"), std::string::npos) << e.what();
}

// An allocator that refuses everything: the core's temporaries for a strided tensor fail.
class Refusing final : public Allocator {
public:
    void* allocate(std::size_t bytes, Device, void*) override {
        throw Error(ErrorKind::out_of_memory, "test allocator: " + std::to_string(bytes) + " bytes refused");
    }
    void deallocate(void*, std::size_t, Device, void*) override {}
};

#ifdef CONVKIT_WITH_CPU
TEST(Reproducer, OutOfMemoryNamesTheSameProblem) {
    Verbose v(0);
    Problem p;
    // Every other channel of an [2,8,9,9] tensor: strided, so the call copies it first.
    Tensor wide(DType::f32, {2, 8, 9, 9});
    std::memset(wide.data(), 0, wide.nbytes());
    TensorView strided = wide.view();
    strided.sizes = {2, 4, 9, 9};
    strided.strides = {8 * 81, 2 * 81, 9, 1};
    set_allocator(DeviceType::cpu, std::make_shared<Refusing>());
    Error e = error_of([&] {
        convolution_forward(p.dst, strided, p.wei, p.bias, p.params, PostOps(), Stream(), {}, {Engine::cpu, {}});
    });
    set_allocator(DeviceType::cpu, nullptr);
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << e.what();
    const std::string r = reproducer_of(e.what());
    ASSERT_FALSE(r.empty()) << e.what();
    Bench b = parse_bench(r);
    EXPECT_EQ(b.opt("--engine"), "cpu");
    EXPECT_EQ(b.opt("--dir"), "FWD_B");
    tools::ConvDesc d = tools::parse_conv_desc(b.desc);
    EXPECT_EQ(d.mb, 2);
    EXPECT_EQ(d.ic, 4);
    EXPECT_EQ(d.oc, 6);
    EXPECT_EQ(d.out[1], 5);
}
#endif

}  // namespace
