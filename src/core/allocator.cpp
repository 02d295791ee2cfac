// The default host allocator and the allocator registry. Freed host blocks are kept in
// power-of-two size classes and handed out again, so steady-state convolution calls (scratchpads,
// dense temporaries) do no malloc/free; the cache is bounded so a one-off huge call does not pin
// memory forever.
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "convkit/allocator.hpp"
#include "core/backend.hpp"
#include "core/block_cache.hpp"

namespace convkit {

namespace {

class CachingHostAllocator final : public Allocator {
public:
    ~CachingHostAllocator() override {
        for (auto& kb : cache_.drain([](std::size_t) { return true; }, [](std::size_t cls) { return cls; }))
            std::free(kb.second);
    }

    void* allocate(std::size_t bytes, Device, void*) override {
        const std::size_t cls = size_class(bytes);
        if (void* p = cache_.take(cls, cls)) return p;
        void* p = std::aligned_alloc(64, cls);
        if (!p)
            throw Error(ErrorKind::out_of_memory,
                        "host allocation of " + std::to_string(bytes) + " bytes failed");
        return p;
    }

    void deallocate(void* p, std::size_t bytes, Device, void*) override {
        if (!p) return;
        const std::size_t cls = size_class(bytes);
        if (!cache_.put(cls, p, cls)) std::free(p);
    }

private:
    static std::size_t size_class(std::size_t bytes) {
        std::size_t c = 64;
        while (c < bytes) {
            if (c > (std::size_t(1) << 62))
                throw Error(ErrorKind::out_of_memory,
                            "host allocation of " + std::to_string(bytes) + " bytes is too large");
            c <<= 1;
        }
        return c;
    }
    core::BlockCache<std::size_t> cache_{std::size_t(1) << 30};  // a one-off huge call does not pin memory forever
};

std::mutex g_alloc_mu;
std::shared_ptr<Allocator> g_user_alloc[2];

std::shared_ptr<Allocator> default_allocator(DeviceType t) {
    if (t == DeviceType::cpu) {
        static std::shared_ptr<Allocator> host = std::make_shared<CachingHostAllocator>();
        return host;
    }
    core::DeviceRuntime* rt = core::runtime(t);
    if (!rt) throw Error(ErrorKind::unsupported, "this build of convkit has no CUDA backend");
    return rt->default_allocator();
}

}  // namespace

void set_allocator(DeviceType type, std::shared_ptr<Allocator> allocator) {
    std::lock_guard<std::mutex> lock(g_alloc_mu);
    g_user_alloc[static_cast<int>(type)] = std::move(allocator);
}

std::shared_ptr<Allocator> get_allocator(DeviceType type) {
    {
        std::lock_guard<std::mutex> lock(g_alloc_mu);
        if (auto& a = g_user_alloc[static_cast<int>(type)]) return a;
    }
    return default_allocator(type);
}

namespace core {

Buffer::Buffer(Device device, std::size_t bytes, void* stream)
    : bytes_(bytes), device_(device), stream_(stream), alloc_(get_allocator(device.type)) {
    ptr_ = bytes ? alloc_->allocate(bytes, device, stream) : nullptr;
}

Buffer::~Buffer() { release(); }

void Buffer::release() {
    if (ptr_) alloc_->deallocate(ptr_, bytes_, device_, stream_);
    ptr_ = nullptr;
}

Buffer::Buffer(Buffer&& o) noexcept
    : ptr_(o.ptr_), bytes_(o.bytes_), device_(o.device_), stream_(o.stream_), alloc_(std::move(o.alloc_)) {
    o.ptr_ = nullptr;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
    if (this != &o) {
        release();
        ptr_ = o.ptr_;
        bytes_ = o.bytes_;
        device_ = o.device_;
        stream_ = o.stream_;
        alloc_ = std::move(o.alloc_);
        o.ptr_ = nullptr;
    }
    return *this;
}

}  // namespace core
}  // namespace convkit
