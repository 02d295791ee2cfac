// A thread-safe LRU cache of per-problem plans with hit/miss/eviction counters, shared by the
// backends. The value is built outside the lock (a oneDNN primitive or a cuDNN plan can take
// milliseconds), so two threads that miss on the same key may both build; the first to insert
// wins and the other's copy is dropped, which is cheaper than serialising every build.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "convkit/conv.hpp"
#include "core/env.hpp"
#include "core/trace.hpp"

namespace convkit::core {

// CONVKIT_CACHE_CAPACITY if set to a positive integer, else 1024.
inline std::size_t default_cache_capacity() {
    const int64_t v = env::integer("CONVKIT_CACHE_CAPACITY", 1024);
    return v > 0 ? static_cast<std::size_t>(v) : 1024;
}

template <typename Key, typename Value, typename Hash = std::hash<Key>>
class LruCache {
public:
    explicit LruCache(std::size_t capacity = default_cache_capacity()) : capacity_(capacity ? capacity : 1) {}

    template <typename Factory>
    std::shared_ptr<Value> get_or_create(const Key& key, Factory&& make) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = map_.find(key);
            if (it != map_.end()) {
                ++hits_;
                if (trace::level() >= 2) trace::note_hit();
                order_.splice(order_.begin(), order_, it->second.second);
                return it->second.first;
            }
            ++misses_;
        }
        const bool traced = trace::level() >= 2;
        const double t0 = traced ? trace::now_ms() : 0;
        std::shared_ptr<Value> made = make();
        if (traced) trace::note_miss(trace::now_ms() - t0);
        std::lock_guard<std::mutex> lock(mu_);
        auto it = map_.find(key);
        if (it != map_.end()) return it->second.first;
        order_.push_front(key);
        map_.emplace(key, std::make_pair(made, order_.begin()));
        while (map_.size() > capacity_) {
            map_.erase(order_.back());
            order_.pop_back();
            ++evictions_;
        }
        return made;
    }

    // The cached value or null, leaving the counters and the LRU order alone (for the trace).
    std::shared_ptr<Value> peek(const Key& key) const {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = map_.find(key);
        return it == map_.end() ? nullptr : it->second.first;
    }

    CacheStats stats() const {
        std::lock_guard<std::mutex> lock(mu_);
        CacheStats s;
        s.hits = hits_;
        s.misses = misses_;
        s.evictions = evictions_;
        s.size = map_.size();
        s.capacity = capacity_;
        return s;
    }

    void clear() {
        std::lock_guard<std::mutex> lock(mu_);
        map_.clear();
        order_.clear();
        hits_ = misses_ = evictions_ = 0;
    }

private:
    using Order = std::list<Key>;
    mutable std::mutex mu_;
    std::size_t capacity_;
    Order order_;
    std::unordered_map<Key, std::pair<std::shared_ptr<Value>, typename Order::iterator>, Hash> map_;
    uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace convkit::core
