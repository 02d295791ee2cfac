// Concurrency soak (issue 18): eight threads call the cpu engine with a mix of shapes, dtypes,
// layouts, post-ops and all directions (transposed ones too) while the plan cache holds only four
// plans (CONVKIT_CACHE_CAPACITY=4, set before the cache exists), so plans are evicted while other
// threads still run them. Every result is checked against the reference engine's. Meant for the
// ThreadSanitizer build (the `tsan` preset); it runs CONVKIT_SOAK_SECONDS (default 10: bounded in
// CI; 180 or more by hand) and then checks that evictions did happen.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "core/env.hpp"
#include "support/conv_tester.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

// Before main(), so before the first call creates the plan cache.
const bool kCapacitySet = [] { return setenv("CONVKIT_CACHE_CAPACITY", "4", 1) == 0; }();

#ifdef CONVKIT_WITH_CPU
constexpr Engine kEngine = Engine::cpu;
#else
constexpr Engine kEngine = Engine::ref;  // no cache to evict, but the core's paths all the same
#endif

std::vector<ConvTester> shapes() {
    const ConvTester b = ConvTester().engine(kEngine).mb(2);
    const Layout cl = Layout::channels_last, cf = Layout::channels_first;
    return {
        ConvTester(b).layout(cl).channels(8, 16).spatial(2, 8, 3).padding({1}).bias(),
        ConvTester(b).layout(cf).channels(8, 8).spatial(2, 9, 3).stride({2}),
        ConvTester(b).layout(cl).dtype(DType::bf16).channels(16, 16, 16).spatial(2, 8, 3).padding({1}),
        ConvTester(b).layout(cl).channels(16, 32).spatial(2, 6, 1).bias().post_ops("sum:0.5+add:per_oc+relu"),
        ConvTester(b).layout(cl).dtype(DType::f64).channels(4, 8).spatial(2, 7, 3),
        ConvTester(b).layout(cf).channels(4, 8).spatial(1, 12, 3).dilation({2}),
        ConvTester(b).layout(cl).channels(4, 4).spatial(3, 5, 3).padding({1}, {0}),
        ConvTester(b).layout(cl).channels(8, 4).spatial(2, 5, 2).stride({2}).transposed({1}).bias(),
        ConvTester(b).layout(cf).dtype(DType::f16).channels(8, 8, 2).spatial(2, 6, 3).padding({1}),
        ConvTester(b).layout(cl).channels(6, 6, 3).spatial(2, 5, 3).transposed().post_ops("gelu_erf"),
    };
}

TEST(Soak, EightThreadsMixedShapesEvictingCache) {
    ASSERT_TRUE(kCapacitySet);
    const double seconds = static_cast<double>(core::env::integer("CONVKIT_SOAK_SECONDS", 10));
    const std::vector<ConvTester> ts = shapes();
    struct Job {
        const ConvTester* t;
        Dir dir;
        ConvTensors in;
        std::vector<double> want, want_bias;
    };
    std::vector<Job> jobs;
    for (const ConvTester& t : ts)
        for (Dir dir : kDirections) {
            if (dir != Dir::fwd && t.has_post_ops()) continue;
            Job j{&t, dir, t.make_tensors(50 + jobs.size()), {}, {}};
            ConvTensors r = ConvTester::copy_tensors(j.in, Device::cpu());
            t.run(dir, r, Engine::ref).wait();
            j.want = to_host_f64(r.output(dir));
            if (dir == Dir::bwd_w && r.bias.view().defined()) j.want_bias = to_host_f64(r.bias);
            jobs.push_back(std::move(j));
        }
    ASSERT_GT(jobs.size(), 4u) << "more problems than the cache holds";
    clear_cache(kEngine);

    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    std::atomic<int64_t> calls{0};
    std::vector<std::string> errors(8);
    std::vector<std::thread> threads;
    for (std::size_t th = 0; th < errors.size(); ++th)
        threads.emplace_back([&, th] {
            uint64_t s = 0x9E3779B97F4A7C15ull * (th + 1);
            try {
                // At least one pass over the jobs, then until the deadline.
                for (std::size_t n = 0; n < jobs.size() || std::chrono::steady_clock::now() < deadline; ++n) {
                    s ^= s << 13, s ^= s >> 7, s ^= s << 17;  // xorshift: each thread its own order
                    const Job& j = jobs[n < jobs.size() ? (n + th) % jobs.size() : s % jobs.size()];
                    ConvTensors x = ConvTester::copy_tensors(j.in, Device::cpu());
                    j.t->run(j.dir, x, kEngine).wait();
                    std::string diff = j.t->compare_values(to_host_f64(x.output(j.dir)), j.want, j.dir);
                    if (diff.empty() && !j.want_bias.empty())
                        diff = j.t->compare_values(to_host_f64(x.bias), j.want_bias, j.dir);
                    if (!diff.empty()) {
                        errors[th] = j.t->name(j.dir) + ": " + diff;
                        return;
                    }
                    ++calls;
                }
            } catch (const std::exception& e) {
                errors[th] = std::string("exception: ") + e.what();
            }
        });
    for (auto& t : threads) t.join();
    for (std::size_t th = 0; th < errors.size(); ++th) EXPECT_EQ(errors[th], "") << "thread " << th;
    const CacheStats st = cache_stats(kEngine);
    RecordProperty("calls", static_cast<int>(calls.load()));
    RecordProperty("evictions", static_cast<int>(st.evictions));
    std::printf("soak: %lld calls in %.0f s from 8 threads, %llu plan builds, %llu evictions\n",
                static_cast<long long>(calls.load()), seconds, static_cast<unsigned long long>(st.misses),
                static_cast<unsigned long long>(st.evictions));
#ifdef CONVKIT_WITH_CPU
    EXPECT_EQ(st.capacity, 4u);
    EXPECT_GT(st.evictions, 0u) << "plans must be evicted while in use";
    EXPECT_LE(st.size, 4u);
#endif
}

}  // namespace
