// Streams and events: the in-order execution model. Work submitted to a Stream starts after the
// events it depends on complete and after earlier work on the same stream; each call returns an
// Event that completes when that work ends. On CPU the convkit stream is synchronous (work is done
// when the call returns, so its events are born complete). A CUDA stream wraps a cudaStream_t,
// either created by convkit or handed in by a framework; events wrap cudaEvent_t.
#pragma once
#include <memory>

#include "convkit/tensor.hpp"

namespace convkit {

namespace detail {
class EventImpl;
class StreamImpl;
}  // namespace detail

class CONVKIT_API Event {
public:
    Event() = default;  // an event that is already complete
    explicit Event(std::shared_ptr<detail::EventImpl> impl) : impl_(std::move(impl)) {}
    bool completed() const;  // non-blocking query
    void wait() const;       // blocks the calling host thread until complete
    const std::shared_ptr<detail::EventImpl>& impl() const { return impl_; }

private:
    std::shared_ptr<detail::EventImpl> impl_;
};

class CONVKIT_API Stream {
public:
    Stream();  // the CPU stream; for CUDA tensors calls with this stream use their device's default convkit stream
    static Stream cpu();
    // A stream created and owned by convkit on cuda:device.
    static Stream cuda(int device = 0);
    // Wraps a framework's cudaStream_t (passed as void* so this header needs no CUDA headers);
    // convkit never destroys it.
    static Stream cuda_external(int device, void* cuda_stream);

    Device device() const;
    void* native_handle() const;  // cudaStream_t for CUDA streams, nullptr on CPU
    Event record() const;         // an event that completes when the work submitted so far ends
    void wait(const Event& e) const;  // later work on this stream waits for e (no host blocking on CUDA)
    void synchronize() const;     // blocks the host until all submitted work has ended
    bool is_default_cpu() const;
    const std::shared_ptr<detail::StreamImpl>& impl() const { return impl_; }
    explicit Stream(std::shared_ptr<detail::StreamImpl> impl) : impl_(std::move(impl)) {}

private:
    std::shared_ptr<detail::StreamImpl> impl_;
};

}  // namespace convkit
