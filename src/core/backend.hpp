// The seam between the core and the backends. A Backend runs convolutions of one device type;
// the registry keeps them in preference order (the first that accepts a problem wins, the
// reference last). A DeviceRuntime supplies memory, copies and streams for a device type.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "convkit/allocator.hpp"
#include "convkit/conv.hpp"
#include "core/problem.hpp"

namespace convkit::detail {

class EventImpl {
public:
    virtual ~EventImpl() = default;
    virtual bool completed() const = 0;
    virtual void wait() const = 0;
    virtual Device device() const = 0;
    virtual void* native_handle() const { return nullptr; }  // cudaEvent_t
};

class StreamImpl {
public:
    virtual ~StreamImpl() = default;
    virtual Device device() const = 0;
    virtual void* native_handle() const { return nullptr; }
    virtual Event record() = 0;
    virtual void wait(const Event& e) = 0;
    virtual void synchronize() = 0;
};

}  // namespace convkit::detail

namespace convkit::core {

class Backend {
public:
    virtual ~Backend() = default;
    virtual Engine engine() const = 0;
    virtual DeviceType device_type() const = 0;
    // "" if the backend runs this problem, else the reason it does not (goes into the error).
    virtual std::string check(const ConvProblem& p) const = 0;
    // The reference reads any strides; other backends get dense tensors from the core.
    virtual bool needs_dense() const { return true; }
    // The most elements one activation tensor of `p` may hold in one execute() (INT64_MAX: any);
    // a larger problem runs as tiles (core/tiling.hpp) of tile_limit() elements.
    virtual int64_t max_tensor_elements(const ConvProblem& p) const {
        (void)p;
        return INT64_MAX;
    }
    // Past this many elements the engine cannot index a tensor at all (cuDNN's 2^31 - 1), which
    // even CONVKIT_TILE_ELEMENTS=off keeps tiling.
    virtual int64_t max_indexable_elements() const { return INT64_MAX; }
    // Whether larger problems are tiled at all: the reference engine, the oracle, runs them whole.
    virtual bool tiled() const { return true; }
    virtual Event execute(const ConvProblem& p, const ConvArgs& args, const Stream& stream,
                          const std::vector<Event>& deps) = 0;
    virtual CacheStats cache_stats() const { return {}; }
    virtual void clear_cache() {}
    // Reorders forward weights for problem `p` (p.packed_weights is false here; the forward call
    // that uses the handle will have it true). nullptr = this backend does not prepack, and the
    // core keeps a dense copy of the weights instead.
    virtual std::shared_ptr<void> prepack(const ConvProblem& p, const TensorView& weights) {
        (void)p;
        (void)weights;
        return nullptr;
    }
    // Threads for CPU backends (0 = the OpenMP default).
    virtual void set_num_threads(int n) { (void)n; }
    // What it runs on, in one line (see convkit::engine_info).
    virtual std::string describe() const { return ""; }
    // The implementation that ran the last execute() of `p` on this thread, for the trace (called
    // only when tracing is on, right after that execute()).
    virtual std::string trace_impl(const ConvProblem& p) {
        (void)p;
        return to_string(engine());
    }
};

class DeviceRuntime {
public:
    virtual ~DeviceRuntime() = default;
    virtual DeviceType device_type() const = 0;
    virtual int device_count() const = 0;
    virtual std::shared_ptr<Allocator> default_allocator() = 0;
    // Synchronous copy of `bytes` between any two devices of this runtime or the host.
    virtual void memcpy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes) = 0;
    virtual std::shared_ptr<detail::StreamImpl> create_stream(int device, void* native) = 0;
    virtual Stream default_stream(int device) = 0;
    // What a tiled run needs on the device, each ordered on `s` (core/tiled_run.cpp):
    // `count` blocks of `width` bytes, `spitch` bytes apart in src and `dpitch` in dst;
    virtual void copy_2d(void* dst, std::size_t dpitch, const void* src, std::size_t spitch, std::size_t width,
                         std::size_t count, const Stream& s) = 0;
    // acc[i] = x[i] (first) or acc[i] + x[i], in f64, for n elements of `dt`;
    virtual void accumulate(double* acc, const void* x, DType dt, int64_t n, bool first, const Stream& s) = 0;
    // out[i] = acc[i] rounded once to `dt`;
    virtual void store(void* out, DType dt, const double* acc, int64_t n, const Stream& s) = 0;
    // dst (dense f32) = `count` blocks of `width` elements of `dt`, `pitch` elements apart in src.
    virtual void widen(float* dst, const void* src, DType dt, int64_t width, int64_t pitch, int64_t count,
                       const Stream& s) = 0;
};

// Ordered list of backends compiled in (cpu before ref; cuda).
const std::vector<Backend*>& backends();
Backend* find_backend(Engine e);  // nullptr if not compiled in
DeviceRuntime* runtime(DeviceType t);  // nullptr if not compiled in

// What this build has, in preference order, and the device runtimes. Defined in src/backends.cpp,
// the only file that knows which backends are compiled in; the registry calls it once.
struct BackendSet {
    std::vector<std::unique_ptr<Backend>> backends;
    std::vector<std::unique_ptr<DeviceRuntime>> runtimes;
};
BackendSet compiled_backends();

// The tile size for backend `b` and problem `p` (0: never tiled): CONVKIT_TILE_ELEMENTS where set and below the
// engine's own limit ("0": the engine's own limit; "off": only past max_indexable_elements),
// else 2^31 - 1 or the engine's, the lower.
int64_t tile_limit(const Backend& b, const ConvProblem& p);

// Process-wide settings that the core owns and backends read (see convkit/conv.hpp).
// CONVKIT_CUDA_AUTOTUNE and CONVKIT_CUDA_TUNE_FILE seed them.
std::string tune_file();

// Host-side helpers shared by backends.
void wait_all(const std::vector<Event>& deps);  // blocks the host on each event
// RAII block from the device's allocator.
class Buffer {
public:
    Buffer() = default;
    Buffer(Device device, std::size_t bytes, void* stream = nullptr);
    ~Buffer();
    Buffer(Buffer&& o) noexcept;
    Buffer& operator=(Buffer&& o) noexcept;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    void* data() const { return ptr_; }
    std::size_t size() const { return bytes_; }

private:
    void release();
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
    Device device_;
    void* stream_ = nullptr;
    std::shared_ptr<Allocator> alloc_;
};

}  // namespace convkit::core
