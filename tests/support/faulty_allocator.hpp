// An allocator that refuses one chosen allocation, for the tests of what a call leaves when memory
// runs out (test_fault_injection.cpp, test_cpu_tiling.cpp): it counts allocations, keeps the live
// blocks, and notices blocks returned that it never handed out.
#pragma once
#include <convkit/convkit.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>

namespace convkit::test {

enum class Failure { error, bad_alloc };
inline const char* to_string(Failure f) { return f == Failure::error ? "Error(out_of_memory)" : "std::bad_alloc"; }

class FaultyAllocator final : public Allocator {
public:
    explicit FaultyAllocator(std::shared_ptr<Allocator> base) : base_(std::move(base)) {}

    // From now on count allocations from 1 and refuse number `k` (0: none).
    void arm(int64_t k, Failure how = Failure::error) {
        std::lock_guard<std::mutex> lock(mu_);
        count_ = 0;
        fail_at_ = k;
        how_ = how;
    }
    int64_t count() const {
        std::lock_guard<std::mutex> lock(mu_);
        return count_;
    }
    std::size_t live() const {
        std::lock_guard<std::mutex> lock(mu_);
        return live_.size();
    }
    // Blocks returned that this allocator never handed out, or with another size than asked for.
    int64_t bad_frees() const {
        std::lock_guard<std::mutex> lock(mu_);
        return bad_frees_;
    }

    void* allocate(std::size_t bytes, Device device, void* stream) override {
        std::unique_lock<std::mutex> lock(mu_);
        if (++count_ == fail_at_) {
            const int64_t k = count_;
            lock.unlock();
            if (how_ == Failure::bad_alloc) throw std::bad_alloc();
            throw Error(ErrorKind::out_of_memory, "test allocator: allocation " + std::to_string(k) + " of " +
                                                      std::to_string(bytes) + " bytes refused (out of memory)");
        }
        lock.unlock();
        void* p = base_->allocate(bytes, device, stream);
        lock.lock();
        live_[p] = bytes;
        return p;
    }
    void deallocate(void* p, std::size_t bytes, Device device, void* stream) override {
        std::unique_lock<std::mutex> lock(mu_);
        auto it = live_.find(p);
        if (it == live_.end() || it->second != bytes) {
            ++bad_frees_;
            return;
        }
        live_.erase(it);
        lock.unlock();
        base_->deallocate(p, bytes, device, stream);
    }

private:
    std::shared_ptr<Allocator> base_;
    mutable std::mutex mu_;
    int64_t count_ = 0, fail_at_ = 0, bad_frees_ = 0;
    Failure how_ = Failure::error;
    std::map<void*, std::size_t> live_;
};

// Installs a FaultyAllocator for one device type for the scope's lifetime.
class Installed {
public:
    explicit Installed(DeviceType type)
        : type_(type), alloc_(std::make_shared<FaultyAllocator>(get_allocator(type))) {
        set_allocator(type, alloc_);
    }
    ~Installed() { set_allocator(type_, nullptr); }
    FaultyAllocator& operator*() const { return *alloc_; }
    FaultyAllocator* operator->() const { return alloc_.get(); }

private:
    DeviceType type_;
    std::shared_ptr<FaultyAllocator> alloc_;
};

}  // namespace convkit::test
