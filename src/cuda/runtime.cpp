// The CUDA DeviceRuntime: device discovery, the caching device allocator, synchronous copies, and
// streams and events over cudaStream_t / cudaEvent_t.
//
// Allocator safety across streams: a block freed with a stream goes back to that stream's free
// list and is only handed out again for the same stream, where stream order already serialises the
// old use before the new one. A block freed without a stream (an owning Tensor, whose users are not
// known) synchronizes the device first, which is what cudaFree itself would have done.
//
// Objects that live until process exit (the runtime, default streams, pooled events) are never
// destroyed: at exit the CUDA runtime may already be unloaded, and calling into it from static
// destructors is a classic source of crashes at shutdown.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/backend.hpp"
#include "core/block_cache.hpp"
#include "cuda/cuda_api.hpp"
#include "cuda/cuda_util.hpp"
#include "cuda/kernels.hpp"

namespace convkit::cuda {

[[noreturn]] void throw_cuda(cudaError_t e, const char* what) {
    (void)cudaGetLastError();  // clear the sticky per-thread error of a non-fatal failure
    ErrorKind kind = e == cudaErrorMemoryAllocation ? ErrorKind::out_of_memory : ErrorKind::backend;
    throw Error(kind, std::string(what) + ": " + cudaGetErrorString(e));
}

[[noreturn]] void throw_cudnn(cudnnStatus_t s, const std::string& what) {
    std::string msg = what + ": " + cudnnGetErrorString(s);
    char detail[512] = {0};
    cudnnGetLastErrorString(detail, sizeof detail);
    if (detail[0]) msg += std::string(" (") + detail + ")";
    ErrorKind kind = s == CUDNN_STATUS_ALLOC_FAILED ? ErrorKind::out_of_memory : ErrorKind::backend;
    throw Error(kind, msg);
}

int visible_devices() {
    static const int n = [] {
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        return count;
    }();
    return n;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Events: pooled per device, because cudaEventCreate costs a microsecond or two on a path whose
// whole budget (a cached tiny convolution) is a few microseconds.

class EventPool {
public:
    cudaEvent_t get(int device) {
        if (cudaEvent_t e = free_.take(device)) return e;
        DeviceGuard g(device);
        cudaEvent_t e;
        check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        return e;
    }
    void put(int device, cudaEvent_t e) { free_.put(device, e); }

private:
    core::BlockCache<int, cudaEvent_t> free_;
};

EventPool& event_pool() {
    static EventPool* p = new EventPool;  // never destroyed (see the file comment)
    return *p;
}

class CudaEvent final : public detail::EventImpl {
public:
    CudaEvent(int device, cudaEvent_t e) : device_(device), e_(e) {}
    // Re-recording a pooled event later is safe: a cudaStreamWaitEvent already issued waits for
    // the recording that was current when it was issued.
    ~CudaEvent() override { event_pool().put(device_, e_); }
    bool completed() const override {
        cudaError_t r = cudaEventQuery(e_);
        if (r == cudaSuccess) return true;
        if (r == cudaErrorNotReady) {
            (void)cudaGetLastError();
            return false;
        }
        throw_cuda(r, "cudaEventQuery");
    }
    void wait() const override { check_cuda(cudaEventSynchronize(e_), "cudaEventSynchronize"); }
    Device device() const override { return Device::cuda(device_); }
    void* native_handle() const override { return e_; }

private:
    int device_;
    cudaEvent_t e_;
};

class CudaStream final : public detail::StreamImpl {
public:
    CudaStream(int device, cudaStream_t s, bool owned) : device_(device), s_(s), owned_(owned) {}
    ~CudaStream() override {
        if (owned_) {
            cudaStreamDestroy(s_);  // no device switch needed: destroy works from any device
            (void)cudaGetLastError();
        }
    }
    Device device() const override { return Device::cuda(device_); }
    void* native_handle() const override { return s_; }
    Event record() override {
        cudaEvent_t e = event_pool().get(device_);
        cudaError_t r = cudaEventRecord(e, s_);
        if (r != cudaSuccess) {
            event_pool().put(device_, e);
            throw_cuda(r, "cudaEventRecord");
        }
        return Event(std::make_shared<CudaEvent>(device_, e));
    }
    void wait(const Event& e) override {
        const auto& impl = e.impl();
        if (!impl) return;
        if (impl->device().is_cuda() && impl->native_handle()) {
            check_cuda(cudaStreamWaitEvent(s_, static_cast<cudaEvent_t>(impl->native_handle()), 0),
                       "cudaStreamWaitEvent");
        } else {
            impl->wait();  // a host event: CPU work is synchronous, so this returns at once
        }
    }
    void synchronize() override { check_cuda(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

private:
    int device_;
    cudaStream_t s_;
    bool owned_;
};

// ---------------------------------------------------------------------------------------------
// Caching device allocator.

class CachingDeviceAllocator final : public Allocator {
public:
    void* allocate(std::size_t bytes, Device device, void* stream) override {
        if (!device.is_cuda())
            throw Error(ErrorKind::invalid_argument, "CUDA allocator: asked for memory on " + device.str());
        const std::size_t cls = size_class(bytes);
        if (void* p = cache_.take(Key{device.index, stream, cls}, cls)) return p;
        DeviceGuard g(device.index);
        void* p = nullptr;
        cudaError_t r = cudaMalloc(&p, cls);
        if (r == cudaErrorMemoryAllocation) {
            // Give the cached blocks of this device back and try once more.
            (void)cudaGetLastError();
            release(device.index);
            r = cudaMalloc(&p, cls);
        }
        if (r != cudaSuccess) {
            (void)cudaGetLastError();
            ErrorKind kind = r == cudaErrorMemoryAllocation ? ErrorKind::out_of_memory : ErrorKind::backend;
            throw Error(kind, "cudaMalloc of " + std::to_string(bytes) + " bytes on " + device.str() + ": " +
                                  cudaGetErrorString(r));
        }
        return p;
    }

    void deallocate(void* p, std::size_t bytes, Device device, void* stream) override {
        if (!p) return;
        if (!stream) {
            DeviceGuard g(device.index);
            check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (freeing a tensor)");
        }
        const std::size_t cls = size_class(bytes);
        cache_.put(Key{device.index, stream, cls}, p, cls);  // unbounded: OOM releases it (allocate)
    }

    // Frees every cached block of `device` (-1: all devices).
    void release(int device) {
        const auto blocks = cache_.drain([device](const Key& k) { return device < 0 || std::get<0>(k) == device; },
                                         [](const Key& k) { return std::get<2>(k); });
        for (auto& b : blocks) {
            DeviceGuard g(std::get<0>(b.first));
            cudaFree(b.second);  // synchronizes the device: pending work on a block ends first
        }
        (void)cudaGetLastError();
    }

private:
    using Key = std::tuple<int, void*, std::size_t>;
    // Small blocks in 512-byte steps, large ones in 2 MiB steps: bounded waste, few classes.
    static std::size_t size_class(std::size_t bytes) {
        if (bytes == 0) bytes = 1;
        const std::size_t small = 512, large = std::size_t(2) << 20;
        if (bytes > (std::size_t(1) << 62))
            throw Error(ErrorKind::out_of_memory, "CUDA allocation of " + std::to_string(bytes) + " bytes is too large");
        if (bytes < (std::size_t(1) << 20)) return (bytes + small - 1) / small * small;
        return (bytes + large - 1) / large * large;
    }
    core::BlockCache<Key> cache_;
};

std::shared_ptr<CachingDeviceAllocator>& device_allocator() {
    static auto* a = new std::shared_ptr<CachingDeviceAllocator>(std::make_shared<CachingDeviceAllocator>());
    return *a;
}

class CudaRuntime final : public core::DeviceRuntime {
public:
    DeviceType device_type() const override { return DeviceType::cuda; }
    int device_count() const override { return visible_devices(); }

    std::shared_ptr<Allocator> default_allocator() override { return device_allocator(); }

    void memcpy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes) override {
        if (bytes == 0) return;
        const int dev = dst_dev.is_cuda() ? dst_dev.index : src_dev.index;
        DeviceGuard g(dev);
        // cudaMemcpyDefault: unified addressing tells host from device pointers. The legacy default
        // stream orders the copy after work on convkit's (blocking) streams, and the final
        // synchronize makes device-to-device copies synchronous too, as the interface promises.
        check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), "cudaMemcpy");
        check_cuda(cudaStreamSynchronize(cudaStreamLegacy), "cudaStreamSynchronize");
    }

    void copy_2d(void* dst, std::size_t dpitch, const void* src, std::size_t spitch, std::size_t width,
                 std::size_t count, const Stream& s) override {
        if (width == 0 || count == 0) return;
        DeviceGuard g(s.device().index);
        auto st = static_cast<cudaStream_t>(s.native_handle());
        // cudaMemcpy2D takes pitches up to the device's maximum (2^31 - 1 bytes here); past it,
        // one copy per block.
        const std::size_t max_pitch = INT32_MAX;
        if (dpitch <= max_pitch && spitch <= max_pitch && width <= max_pitch) {
            check_cuda(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, count, cudaMemcpyDefault, st), "cudaMemcpy2DAsync");
            return;
        }
        for (std::size_t i = 0; i < count; ++i)
            check_cuda(cudaMemcpyAsync(static_cast<char*>(dst) + i * dpitch, static_cast<const char*>(src) + i * spitch,
                                       width, cudaMemcpyDefault, st),
                       "cudaMemcpyAsync");
    }

    void accumulate(double* acc, const void* x, DType dt, int64_t n, bool first, const Stream& s) override {
        DeviceGuard g(s.device().index);
        launch_accumulate(acc, x, dt, n, first, s.native_handle());
    }

    void store(void* out, DType dt, const double* acc, int64_t n, const Stream& s) override {
        DeviceGuard g(s.device().index);
        launch_store(out, dt, acc, n, s.native_handle());
    }

    void widen(float* dst, const void* src, DType dt, int64_t width, int64_t pitch, int64_t count, const Stream& s) override {
        DeviceGuard g(s.device().index);
        launch_widen_blocks(dst, src, dt, width, pitch, count, s.native_handle());
    }

    std::shared_ptr<detail::StreamImpl> create_stream(int device, void* native) override {
        if (native) return std::make_shared<CudaStream>(device, static_cast<cudaStream_t>(native), false);
        DeviceGuard g(device);
        cudaStream_t s;
        // A blocking stream (not cudaStreamNonBlocking), so that plain cudaMemcpy calls on the legacy
        // stream (convkit::copy, most framework code) stay ordered with convkit's work.
        check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamDefault), "cudaStreamCreateWithFlags");
        return std::make_shared<CudaStream>(device, s, true);
    }

    Stream default_stream(int device) override {
        if (device < 0 || device >= visible_devices())
            throw Error(ErrorKind::invalid_argument, "device cuda:" + std::to_string(device) + " does not exist (" +
                                                         std::to_string(visible_devices()) + " CUDA device(s) visible)");
        std::lock_guard<std::mutex> lock(mu_);
        if (defaults_.size() <= static_cast<std::size_t>(device)) defaults_.resize(static_cast<std::size_t>(device) + 1);
        auto& slot = defaults_[static_cast<std::size_t>(device)];
        if (!slot) slot = new Stream(create_stream(device, nullptr));  // never destroyed (file comment)
        return *slot;
    }

private:
    std::mutex mu_;
    std::vector<Stream*> defaults_;
};

}  // namespace

void empty_cache() { device_allocator()->release(-1); }

void* create_raw_stream(int device) {
    DeviceGuard g(device);
    cudaStream_t s;
    check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    return s;
}

void destroy_raw_stream(int device, void* stream) {
    DeviceGuard g(device);
    check_cuda(cudaStreamDestroy(static_cast<cudaStream_t>(stream)), "cudaStreamDestroy");
}

void spin(void* stream, double ms) {
    int dev = 0, khz = 0;
    check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev), "cudaDeviceGetAttribute");
    launch_spin(stream, ms, khz);
}

}  // namespace convkit::cuda

namespace convkit::core {
std::unique_ptr<DeviceRuntime> make_cuda_runtime() { return std::make_unique<cuda::CudaRuntime>(); }
}  // namespace convkit::core
