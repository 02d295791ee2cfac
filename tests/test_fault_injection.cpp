// Allocation failures (issue 18): an allocator that refuses the k-th allocation, for every k that a
// call makes through convkit's allocator (Tensor temporaries, scratchpads, packed weights, host
// and, with a visible GPU, device), each on a cold plan cache (plans built in the call) and on a
// warm one (a cached call). Every such call must throw convkit::Error of kind out_of_memory with
// a message that says memory ran out, leave the caller's outputs byte for byte as they were,
// return every block it took (counted here; ASan's leak check covers the rest), and the next call
// must succeed with the reference engine's result.
//
// The allocator fails in the two ways a framework's allocator does: by throwing convkit::Error
// (out_of_memory) and by throwing std::bad_alloc. Returning nullptr breaks the Allocator contract
// (allocator.hpp: "or throw") and is not tried. oneDNN's own allocations (primitive creation) do
// not go through convkit's allocator and are not reached here.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <typeinfo>

#include "support/conv_tester.hpp"
#include "support/faulty_allocator.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

// One call under test with its own tensors: the outputs it may write, the call, and the check of
// its result against the reference engine's.
struct Call {
    std::vector<TensorView> outputs;
    std::function<void()> run;
    std::function<std::string()> verify;  // "" when the outputs hold the reference's result
    std::shared_ptr<void> keep;           // owns the tensors
};

std::vector<std::vector<double>> snapshot(const std::vector<TensorView>& outputs) {
    std::vector<std::vector<double>> s;
    for (const TensorView& t : outputs) s.push_back(to_host_f64(t));
    return s;
}

// A ConvTester case in direction `dir` on `engine` (its device's tensors), checked against the
// reference engine on the host.
std::function<Call()> tester_call(const ConvTester& t, Dir dir, Engine engine) {
    return [t, dir, engine] {
        struct State {
            ConvTensors x, want;
        };
        auto st = std::make_shared<State>();
        st->want = t.make_tensors(7);
        st->x = ConvTester::copy_tensors(st->want, t.device());
        t.run(dir, st->want, Engine::ref).wait();
        Call c;
        c.keep = st;
        c.outputs.push_back(st->x.output(dir).view());
        if (dir == Dir::bwd_w && st->x.bias.view().defined()) c.outputs.push_back(st->x.bias.view());
        State* s = st.get();
        c.run = [s, t, dir, engine] { t.run(dir, s->x, engine).wait(); };
        c.verify = [s, t, dir] { return t.compare(dir, s->x, s->want); };
        return c;
    };
}

// Forward with a strided src (the first columns of a wider buffer) and a strided dst (every other
// element of a buffer twice its size): the core copies both through dense temporaries.
std::function<Call()> strided_call(Engine engine) {
    return [engine] {
        const ConvTester t = ConvTester().engine(engine).channels(4, 6).spatial(2, 7, 3).padding({1}).bias().post_ops("sum:0.5");
        struct State {
            ConvTensors want, x;
            Tensor src_buf, dst_buf;
            TensorView src, dst;
        };
        auto st = std::make_shared<State>();
        st->want = t.make_tensors(3);
        st->x = ConvTester::copy_tensors(st->want, Device::cpu());
        Dims wide = t.src_dims();
        wide[wide.rank() - 1] += 3;
        st->src_buf = Tensor(DType::f32, wide);
        st->src = TensorView(st->src_buf.data(), DType::f32, t.src_dims(), dense_strides(wide, Layout::channels_first));
        copy(st->src, st->want.src.view());
        const Dims ds = t.dst_dims();
        st->dst_buf = Tensor(DType::f32, Dims{2 * st->want.dst.numel()});
        // Defined values in the gaps: uninitialised memory may hold NaNs, which never compare
        // equal, and the before/after snapshots of the buffer would differ with nothing written.
        fill(st->dst_buf, -1, 1, 5);
        Dims strides = dense_strides(ds, Layout::channels_first);
        for (int i = 0; i < strides.rank(); ++i) strides[i] *= 2;
        st->dst = TensorView(st->dst_buf.data(), DType::f32, ds, strides);
        copy(st->dst, st->want.dst.view());
        t.run(Dir::fwd, st->want, Engine::ref).wait();
        Call c;
        c.keep = st;
        State* s = st.get();
        c.outputs = {st->dst_buf.view()};  // the gaps too
        c.run = [s, t, engine] {
            convolution_forward(s->dst, s->src, s->x.wei, s->x.bias.view(), t.params(), s->x.ops, Stream(), {},
                                {engine, {}}).wait();
        };
        c.verify = [s, t] { return t.compare_values(to_host_f64(s->dst), to_host_f64(s->want.dst), Dir::fwd); };
        return c;
    };
}

// Backward weights over an empty batch: the core zero-fills diff_weights and diff_bias through a
// temporary.
std::function<Call()> empty_batch_call(Engine engine) {
    return [engine] {
        const ConvTester t = ConvTester().engine(engine).mb(0).channels(3, 5).spatial(2, 6, 3).bias();
        auto st = std::make_shared<ConvTensors>(t.make_tensors(5));
        Call c;
        c.keep = st;
        ConvTensors* s = st.get();
        c.outputs = {st->wei.view(), st->bias.view()};
        c.run = [s, t, engine] { t.run(Dir::bwd_w, *s, engine).wait(); };
        c.verify = [s] {
            for (const Tensor* x : {&s->wei, &s->bias})
                for (double v : to_host_f64(x->view()))
                    if (v != 0) return std::string("an empty batch's weight gradient is not zero");
            return std::string();
        };
        return c;
    };
}

// Weights packed ahead of time, then a forward call with them.
std::function<Call()> prepacked_call(Engine engine) {
    return [engine] {
        const ConvTester t = ConvTester().engine(engine).layout(Layout::channels_last).channels(8, 16).spatial(2, 6, 3).padding({1}).bias();
        struct State {
            ConvTensors x, want;
        };
        auto st = std::make_shared<State>();
        st->want = t.make_tensors(9);
        st->x = ConvTester::copy_tensors(st->want, Device::cpu());
        t.run(Dir::fwd, st->want, Engine::ref).wait();
        Call c;
        c.keep = st;
        State* s = st.get();
        c.outputs = {st->x.dst.view()};
        c.run = [s, t, engine] {
            const ConvOptions o{engine, {}};
            PackedWeights pw = prepack_weights(s->x.wei, s->x.src, t.params(), PostOps(), o);
            convolution_forward(s->x.dst, s->x.src, pw, s->x.bias.view(), t.params(), PostOps(), Stream(), {}, o).wait();
        };
        c.verify = [s, t] { return t.compare(Dir::fwd, s->x, s->want); };
        return c;
    };
}

struct Case {
    std::string name;
    Engine engine;
    DeviceType device;
    std::function<Call()> make;
    // Findings not fixed yet (docs/robustness.md), per way of failing: such a pair runs in the
    // DISABLED_KnownBugs instantiation (--gtest_also_run_disabled_tests shows it failing).
    const char* bug_error = nullptr;
    const char* bug_bad_alloc = nullptr;
    const char* bug(Failure f) const { return f == Failure::error ? bug_error : bug_bad_alloc; }
};

std::vector<Case> host_cases() {
    std::vector<Case> cs;
    auto add = [&](const std::string& name, Engine e, std::function<Call()> make, const char* bug_error = nullptr,
                   const char* bug_bad_alloc = nullptr) {
        cs.push_back({name + " on " + convkit::to_string(e), e, DeviceType::cpu, std::move(make), bug_error, bug_bad_alloc});
    };
    std::vector<Engine> engines{Engine::ref};
#ifdef CONVKIT_WITH_CPU
    engines.push_back(Engine::cpu);
#endif
    for (Engine e : engines) {
        // Found by this test, fixed in src/core/conv.cpp: std::bad_alloc from the core's own
        // temporaries (strided copies, the empty batch's zero fill, prepack's plain copy) escaped
        // untranslated (FI1); the empty batch's zero fill wrote diff_weights before it allocated
        // diff_bias's temporary, so a failure there left diff_weights zeroed (FI2).
        add("strided src and dst", e, strided_call(e));
        add("empty batch bwd_w", e, empty_batch_call(e));
        add("prepacked forward", e, prepacked_call(e));
    }
#ifdef CONVKIT_WITH_CPU
    const Engine e = Engine::cpu;
    const ConvTester base = ConvTester().engine(e).channels(8, 16).spatial(2, 7, 3).padding({1}).bias();
    const ConvTester nhwc = ConvTester(base).layout(Layout::channels_last);
    add("fwd f32 nhwc sum+add+relu", e, tester_call(ConvTester(nhwc).post_ops("sum:0.5+add:per_oc+relu"), Dir::fwd, e));
    add("bwd_d f32 nchw", e, tester_call(base, Dir::bwd_d, e));
    add("bwd_w f32 nhwc", e, tester_call(nhwc, Dir::bwd_w, e));
    add("fwd bf16 nhwc", e, tester_call(ConvTester(nhwc).dtype(DType::bf16), Dir::fwd, e));
    add("fwd f16 nchw", e, tester_call(ConvTester(base).dtype(DType::f16), Dir::fwd, e));
    for (Dir d : kDirections) add(std::string(core::to_string(d)) + " f64", e, tester_call(ConvTester(base).dtype(DType::f64), d, e));
    const ConvTester tr = ConvTester(nhwc).stride({2}).transposed({1});
    add("transposed fwd relu", e, tester_call(ConvTester(tr).post_ops("relu"), Dir::fwd, e));
    add("transposed bwd_w", e, tester_call(tr, Dir::bwd_w, e));
    add("transposed fwd bf16", e, tester_call(ConvTester(tr).dtype(DType::bf16), Dir::fwd, e));
    // A reduction over more than 4096 positions: the split plan (src/cpu/split_plan.cpp).
    add("bwd_w long reduction", e, tester_call(ConvTester().engine(e).mb(1).channels(2, 2).spatial(1, 5000, 3).bias(), Dir::bwd_w, e));
#endif
    return cs;
}

// Every allocation of the call refused in turn, on a cold and on a warm plan cache.
void check_every_failure(const Case& cs, Failure how) {
    Installed alloc(cs.device);
    int64_t failures_checked = 0;
    for (bool cold : {true, false}) {
        const std::string state = cs.name + (cold ? " (cold cache)" : " (cached)") + ", allocator throws " + to_string(how);
        // A call with its own tensors, on a cold or a warm cache (warmed by a call of the same
        // problem on other tensors: a sum post-op accumulates into its dst).
        auto fresh = [&] {
            if (cold) {
                clear_cache(cs.engine);
            } else {
                Call w = cs.make();
                w.run();
            }
            return cs.make();
        };
        int64_t n = 0;
        {
            Call w = cs.make();
            w.run();  // once-per-process work (e.g. the cpu engine timing its 16-bit kernels) out of the count
            Call c = fresh();
            alloc->arm(0);
            c.run();
            n = alloc->count();
            ASSERT_EQ(c.verify(), "") << state << ": the call without failures";
        }
        for (int64_t k = 1; k <= n; ++k) {
            const std::string what = state + ", allocation " + std::to_string(k) + " of " + std::to_string(n) + " refused";
            Call c = fresh();
            const auto before = snapshot(c.outputs);
            const std::size_t live = alloc->live();
            alloc->arm(k, how);
            try {
                c.run();
                ADD_FAILURE() << what << ": the call did not throw";
            } catch (const Error& e) {
                EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << what << ": " << e.what();
                const std::string m = e.what();
                EXPECT_TRUE(m.find("memory") != std::string::npos) << what << ": the message does not say memory ran out: " << m;
            } catch (const std::exception& e) {
                ADD_FAILURE() << what << ": threw a " << typeid(e).name() << " (" << e.what()
                              << ") rather than convkit::Error(out_of_memory)";
            }
            alloc->arm(0);
            EXPECT_TRUE(snapshot(c.outputs) == before) << what << ": the outputs were written";
            if (cold) clear_cache(cs.engine);
            EXPECT_EQ(alloc->live(), live) << what << ": blocks not returned to the allocator";
            // The next call succeeds, with the right result.
            try {
                c.run();
                EXPECT_EQ(c.verify(), "") << what << ": the next call";
            } catch (const std::exception& e) {
                ADD_FAILURE() << what << ": the next call threw: " << e.what();
            }
            ++failures_checked;
        }
    }
    std::printf("%s, allocator throws %s: %lld allocations refused one at a time\n", cs.name.c_str(), to_string(how),
                static_cast<long long>(failures_checked));
    EXPECT_EQ(alloc->bad_frees(), 0) << cs.name << ": blocks returned that were not allocated, or with another size";
}

using Param = std::tuple<std::size_t, Failure>;
class FaultInjection : public ::testing::TestWithParam<Param> {};

TEST_P(FaultInjection, EveryAllocationFails) {
    const std::vector<Case> cs = host_cases();
    check_every_failure(cs[std::get<0>(GetParam())], std::get<1>(GetParam()));
}

std::vector<Param> params(bool known_bugs) {
    std::vector<Param> ps;
    const std::vector<Case> cs = host_cases();
    for (std::size_t i = 0; i < cs.size(); ++i)
        for (Failure f : {Failure::error, Failure::bad_alloc})
            if ((cs[i].bug(f) != nullptr) == known_bugs) ps.emplace_back(i, f);
    return ps;
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
    const Case c = host_cases()[std::get<0>(info.param)];
    const Failure f = std::get<1>(info.param);
    std::string n = c.name + (f == Failure::error ? "_error" : "_bad_alloc");
    if (c.bug(f)) n += std::string("_") + c.bug(f);
    for (char& ch : n)
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return n;
}

INSTANTIATE_TEST_SUITE_P(Host, FaultInjection, ::testing::ValuesIn(params(false)), param_name);
INSTANTIATE_TEST_SUITE_P(DISABLED_KnownBugs, FaultInjection, ::testing::ValuesIn(params(true)), param_name);

// The suite is not vacuous: the calls allocate through convkit's allocator.
TEST(FaultInjectionSanity, CallsAllocate) {
    Installed alloc(DeviceType::cpu);
#ifdef CONVKIT_WITH_CPU
    Call c = strided_call(Engine::cpu)();
    c.run();  // once-per-process work first
    c = strided_call(Engine::cpu)();
    alloc->arm(0);
    c.run();
    EXPECT_GE(alloc->count(), 2) << "the cpu engine's dense temporaries for a strided src and dst";
#endif
    Call z = empty_batch_call(Engine::ref)();
    alloc->arm(0);
    z.run();
    EXPECT_GE(alloc->count(), 1) << "the zero fill of an empty batch's weight gradient";
}

#ifdef CONVKIT_WITH_CUDA
bool have_gpu() {
    for (Engine e : available_engines())
        if (e == Engine::cuda) return true;
    return false;
}

std::vector<Case> device_cases() {
    std::vector<Case> cs;
    const Engine e = Engine::cuda;
    const ConvTester base = ConvTester().engine(e).layout(Layout::channels_last).channels(8, 16).spatial(2, 7, 3).padding({1}).bias();
    auto add = [&](const std::string& name, const ConvTester& t, Dir d) {
        cs.push_back({name + " on cuda", e, DeviceType::cuda, tester_call(t, d, e)});
    };
    add("fwd f32 sum+add+relu", ConvTester(base).post_ops("sum:0.5+add:per_oc+relu"), Dir::fwd);
    add("bwd_d f32", base, Dir::bwd_d);
    add("bwd_w f32", base, Dir::bwd_w);
    add("fwd bf16", ConvTester(base).dtype(DType::bf16), Dir::fwd);
    add("fwd f64", ConvTester(base).dtype(DType::f64), Dir::fwd);
    add("transposed fwd relu", ConvTester(base).stride({2}).transposed({1}).post_ops("relu"), Dir::fwd);
    add("transposed bwd_w", ConvTester(base).stride({2}).transposed({1}), Dir::bwd_w);
    return cs;
}

TEST(FaultInjectionDevice, EveryAllocationFails) {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible";
    // Strict f32: the cases compare with f32's tolerance (TF32 rounds the inputs to 11 bits).
    const bool tf32 = allow_tf32();
    set_allow_tf32(false);
    for (const Case& cs : device_cases())
        for (Failure how : {Failure::error, Failure::bad_alloc}) check_every_failure(cs, how);
    set_allow_tf32(tf32);
}
#endif

}  // namespace
