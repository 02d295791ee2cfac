// The cpu engine across calls: its plan cache's counters (hits, misses, clear), eight threads
// sharing that cache and each getting the reference's results, the thread-count override, and
// backward passes bitwise reproducible run to run. (The cache's own eviction and locking:
// tests/test_cache.cpp.)
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

TEST(CpuCache, CountsHitsAndMisses) {
    const ConvTester t = cpu_case(DType::f32, Layout::channels_last).mb(3).channels(24, 40).spatial(2, 5, 3);
    ConvTensors a = t.make_tensors(3);
    const CacheStats s0 = cache_stats(Engine::cpu);
    t.run(Dir::fwd, a, Engine::cpu).wait();
    const CacheStats s1 = cache_stats(Engine::cpu);
    EXPECT_EQ(s1.misses, s0.misses + 1);
    EXPECT_EQ(s1.hits, s0.hits);
    for (int i = 0; i < 3; ++i) t.run(Dir::fwd, a, Engine::cpu).wait();
    const CacheStats s2 = cache_stats(Engine::cpu);
    EXPECT_EQ(s2.misses, s1.misses);
    EXPECT_EQ(s2.hits, s1.hits + 3);
    EXPECT_GE(s2.size, 1u);
    EXPECT_GE(s2.capacity, s2.size);
    // Another direction is another problem.
    t.run(Dir::bwd_d, a, Engine::cpu).wait();
    EXPECT_EQ(cache_stats(Engine::cpu).misses, s2.misses + 1);
    clear_cache(Engine::cpu);
    const CacheStats s3 = cache_stats(Engine::cpu);
    EXPECT_EQ(s3.size, 0u);
    EXPECT_EQ(s3.hits, 0u);
    t.run(Dir::fwd, a, Engine::cpu).wait();
    EXPECT_EQ(cache_stats(Engine::cpu).misses, 1u);
}

TEST(CpuThreads, EightThreadsShareTheCache) {
    const ConvTester shapes[] = {
        cpu_case(DType::f32, Layout::channels_last).channels(8, 16).spatial(2, 8, 3).padding({1}),
        cpu_case(DType::f32, Layout::channels_first).channels(8, 8).spatial(2, 9, 3).stride({2}),
        cpu_case(DType::bf16, Layout::channels_last).channels(16, 16, 16).spatial(2, 8, 3).padding({1}),
        cpu_case(DType::f32, Layout::channels_last).channels(16, 32).spatial(2, 6, 1).post_ops("relu"),
        cpu_case(DType::f64, Layout::channels_last).channels(8, 8).spatial(2, 7, 3),
        cpu_case(DType::f32, Layout::channels_last).channels(4, 8).spatial(1, 12, 3).dilation({2}),
    };
    // Each (shape, direction) once on the reference, then on the cpu engine from every thread.
    struct Job {
        const ConvTester* t;
        Dir dir;
        ConvTensors in;
        std::vector<double> want;
    };
    std::vector<Job> jobs;
    for (const ConvTester& s : shapes)
        for (Dir dir : kDirections) {
            if (dir != Dir::fwd && s.has_post_ops()) continue;
            Job j{&s, dir, s.make_tensors(100 + jobs.size()), {}};
            ConvTensors r = ConvTester::copy_tensors(j.in, Device::cpu());
            s.run(dir, r, Engine::ref).wait();
            j.want = to_host_f64(r.output(dir));
            jobs.push_back(std::move(j));
        }
    std::vector<std::string> errors(8);
    std::vector<std::thread> threads;
    for (std::size_t th = 0; th < errors.size(); ++th)
        threads.emplace_back([&, th] {
            try {
                for (int rep = 0; rep < 4; ++rep)
                    for (std::size_t k = 0; k < jobs.size(); ++k) {
                        const Job& j = jobs[(k + th) % jobs.size()];
                        ConvTensors x = ConvTester::copy_tensors(j.in, Device::cpu());
                        j.t->run(j.dir, x, Engine::cpu).wait();
                        const std::string diff = j.t->compare_values(to_host_f64(x.output(j.dir)), j.want, j.dir);
                        if (!diff.empty()) errors[th] = j.t->name(j.dir) + ": " + diff;
                    }
            } catch (const std::exception& e) {
                errors[th] = std::string("exception: ") + e.what();
            }
        });
    for (auto& t : threads) t.join();
    for (std::size_t th = 0; th < errors.size(); ++th) EXPECT_EQ(errors[th], "") << "thread " << th;
}

TEST(CpuThreads, SetNumThreadsOverride) {
    const ConvTester t = cpu_case(DType::f32, Layout::channels_last).channels(16, 16).spatial(2, 10, 3).padding({1});
    const int before = num_threads();
    set_num_threads(1);
    EXPECT_EQ(num_threads(), 1);
    t.check_all();
    set_num_threads(before);
    t.check_all();
}

TEST(CpuDeterminism, BackwardBitwiseReproducible) {
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
        for (Layout l : {Layout::channels_last, Layout::channels_first}) {
            const ConvTester t = cpu_case(dt, l).mb(4).channels(32, 32).spatial(2, 14, 3).padding({1});
            for (Dir dir : {Dir::bwd_d, Dir::bwd_w}) {
                ConvTensors a = t.make_tensors(5);
                t.run(dir, a, Engine::cpu).wait();
                const Tensor first = copy_of(a.output(dir), Device::cpu());
                const Tensor first_bias = dir == Dir::bwd_w ? copy_of(a.bias, Device::cpu()) : Tensor();
                for (int run = 1; run < 10; ++run) {
                    fill(a.output(dir), -1, 1, 99 + static_cast<uint64_t>(run));  // poison
                    t.run(dir, a, Engine::cpu).wait();
                    EXPECT_TRUE(bitwise_equal(a.output(dir).view(), first.view())) << t.name(dir) << " run " << run;
                    if (dir == Dir::bwd_w) {
                        EXPECT_TRUE(bitwise_equal(a.bias.view(), first_bias.view())) << t.name(dir) << " diff_bias run " << run;
                    }
                }
            }
        }
}

}  // namespace
