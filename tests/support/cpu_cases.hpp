// What the test_cpu_* suites share beyond the ConvTester: a case on the cpu engine, the oneDNN
// implementation its plan picks, the wide (widen 16-bit to f32) policy forced for a test, and
// the prepacked-weights check.
#pragma once
#include <initializer_list>
#include <string>

#include "cpu/cpu_backend.hpp"
#include "support/conv_tester.hpp"

namespace convkit::test {

// A case for the cpu engine: its dtype and layout, with bias (the suites' common case).
inline ConvTester cpu_case(DType dt, Layout l) { return ConvTester().engine(Engine::cpu).dtype(dt).layout(l).bias(); }

inline std::string impl(const ConvTester& t, Dir d) { return cpu::plan_info(t.problem(d)).impl; }

// (dtype, layout) parameters: "f32_nhwc".
struct DtypeLayoutName {
    template <typename Info>
    std::string operator()(const Info& info) const {
        return param_name(std::get<0>(info.param), std::get<1>(info.param));
    }
};

// 16-bit plans widened to f32 even where oneDNN has native kernels, so that path is tested on
// every CPU; plans are rebuilt on the way in and out.
class ForceWide {
public:
    ForceWide() { set(cpu::WidePolicy::always); }
    ~ForceWide() { set(cpu::WidePolicy::automatic); }
    ForceWide(const ForceWide&) = delete;
    ForceWide& operator=(const ForceWide&) = delete;

private:
    static void set(cpu::WidePolicy p) {
        cpu::set_wide_policy(p);
        clear_cache(Engine::cpu);
    }
};

// Forward with weights prepacked (from `t`'s tensors) is bit for bit forward with the plain
// weights, at the batch size packed for and at each of `mbs`.
inline void check_prepacked_equals_unpacked(const ConvTester& t, std::initializer_list<int64_t> mbs) {
    const ConvTensors a = t.make_tensors(7);
    const ConvOptions cpu{Engine::cpu, {}};
    PackedWeights pw = prepack_weights(a.wei, a.src, t.params(), PostOps(), cpu);
    ASSERT_TRUE(pw.defined()) << t.name(Dir::fwd);
    EXPECT_EQ(pw.engine(), Engine::cpu) << t.name(Dir::fwd);
    for (int64_t mb : mbs) {
        ConvTester tb = t;
        tb.mb(mb);
        ConvTensors x = tb.make_tensors(11 + static_cast<uint64_t>(mb));
        copy(x.wei.view(), a.wei.view());
        ConvTensors y = ConvTester::copy_tensors(x, Device::cpu());
        convolution_forward(x.dst, x.src, x.wei, x.bias.view(), t.params(), PostOps(), Stream(), {}, cpu).wait();
        convolution_forward(y.dst, y.src, pw, y.bias.view(), t.params(), PostOps(), Stream(), {}, cpu).wait();
        EXPECT_TRUE(bitwise_equal(x.dst.view(), y.dst.view()))
            << tb.name(Dir::fwd) << " with weights prepacked at mb " << t.src_dims()[0];
    }
}

}  // namespace convkit::test
