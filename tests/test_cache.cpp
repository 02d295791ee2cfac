// The LRU cache every backend keeps its plans in (src/core/lru_cache.hpp), keyed by a plain int
// and by ConvProblem (the backends' key, through its hash): hit, miss and eviction counters, the
// least recently used entry evicted first, and eight threads sharing one cache. (The cpu engine's
// plan cache through the public API: CpuCache in tests/test_cpu_runtime.cpp.)
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/lru_cache.hpp"
#include "support/conv_tester.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

// Key number i, as each key type spells it.
template <typename Key>
struct Keys;
template <>
struct Keys<int> {
    using Hash = std::hash<int>;
    static int key(int i) { return i; }
};
template <>
struct Keys<core::ConvProblem> {
    using Hash = core::ConvProblemHash;
    // Problems that differ in their output channels only.
    static core::ConvProblem key(int i) {
        return ConvTester().layout(Layout::channels_last).mb(1).channels(8, 8 * (i + 1)).spatial(2, 8, 3).padding({1}).problem(Dir::fwd);
    }
};

template <typename Key>
using Cache = core::LruCache<Key, int, typename Keys<Key>::Hash>;

template <typename Key>
void check_eviction() {
    Cache<Key> c(2);
    int built = 0;
    auto make = [&] { return std::make_shared<int>(++built); };
    auto k = [](int i) { return Keys<Key>::key(i); };
    EXPECT_EQ(*c.get_or_create(k(0), make), 1);  // miss
    EXPECT_EQ(*c.get_or_create(k(0), make), 1);  // hit
    EXPECT_EQ(*c.get_or_create(k(1), make), 2);  // miss
    EXPECT_EQ(*c.get_or_create(k(0), make), 1);  // hit: 0 becomes the most recent
    EXPECT_EQ(*c.get_or_create(k(2), make), 3);  // miss: evicts 1
    CacheStats s = c.stats();
    EXPECT_EQ(s.hits, 2u);
    EXPECT_EQ(s.misses, 3u);
    EXPECT_EQ(s.evictions, 1u);
    EXPECT_EQ(s.size, 2u);
    EXPECT_EQ(s.capacity, 2u);
    EXPECT_EQ(*c.get_or_create(k(0), make), 1);  // still there
    EXPECT_EQ(*c.get_or_create(k(1), make), 4);  // rebuilt: evicts 2
    s = c.stats();
    EXPECT_EQ(s.hits, 3u);
    EXPECT_EQ(s.misses, 4u);
    EXPECT_EQ(s.evictions, 2u);
    EXPECT_EQ(s.size, 2u);
}

// 100 keys through a cache of 64 from eight threads: every lookup gets its key's value.
template <typename Key>
void check_threads() {
    Cache<Key> c(64);
    std::vector<Key> keys;
    for (int k = 0; k < 100; ++k) keys.push_back(Keys<Key>::key(k));
    std::atomic<int> wrong{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                const int k = (i * 7 + t) % 100;
                if (*c.get_or_create(keys[k], [k] { return std::make_shared<int>(k * 3); }) != k * 3) ++wrong;
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_LE(c.stats().size, 64u);
}

TEST(LruCache, EvictsLeastRecentlyUsed) { check_eviction<int>(); }
TEST(LruCache, EvictsLeastRecentlyUsedProblemKeys) { check_eviction<core::ConvProblem>(); }
TEST(LruCache, Threads) { check_threads<int>(); }
TEST(LruCache, ThreadsProblemKeys) { check_threads<core::ConvProblem>(); }

}  // namespace
