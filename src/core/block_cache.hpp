// The free list under both caching allocators (host: core/allocator.cpp, CUDA: cuda/runtime.cpp):
// freed blocks kept by key (a size class, and for device memory the device and stream too) and
// handed out again, so steady-state calls do no malloc/cudaMalloc. The owner allocates, frees and
// picks the size classes; this only keeps the blocks, with a bound on the bytes it holds. Pooled
// handles (CUDA events, cuDNN handles) use it too, with `Item` their type and no byte counts.
#pragma once
#include <cstddef>
#include <limits>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace convkit::core {

template <typename Key, typename Item = void*> class BlockCache {
public:
    explicit BlockCache(std::size_t max_bytes = std::numeric_limits<std::size_t>::max()) : max_(max_bytes) {}

    // A cached block of `bytes` under `key`, or Item{} (nullptr) when there is none.
    Item take(const Key& key, std::size_t bytes = 0) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = free_.find(key);
        if (it == free_.end() || it->second.empty()) return Item{};
        Item p = it->second.back();
        it->second.pop_back();
        held_ -= bytes;
        return p;
    }

    // Keeps the block; false when that would exceed the bound (the caller frees it then).
    bool put(const Key& key, Item p, std::size_t bytes = 0) {
        std::lock_guard<std::mutex> lock(mu_);
        if (held_ + bytes > max_) return false;
        free_[key].push_back(p);
        held_ += bytes;
        return true;
    }

    // Removes every block whose key satisfies `pred` and returns them with their keys, for the
    // owner to free outside the lock. `bytes_of(key)` is the size each block of the key was held as.
    template <typename Pred, typename BytesOf>
    std::vector<std::pair<Key, Item>> drain(Pred pred, BytesOf bytes_of) {
        std::vector<std::pair<Key, Item>> out;
        std::lock_guard<std::mutex> lock(mu_);
        for (auto it = free_.begin(); it != free_.end();) {
            if (!pred(it->first)) {
                ++it;
                continue;
            }
            for (Item p : it->second) out.emplace_back(it->first, p);
            held_ -= bytes_of(it->first) * it->second.size();
            it = free_.erase(it);
        }
        return out;
    }

private:
    std::mutex mu_;
    std::map<Key, std::vector<Item>> free_;
    std::size_t held_ = 0;
    const std::size_t max_;
};

}  // namespace convkit::core
