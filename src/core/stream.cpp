// Stream and Event front ends, and the CPU stream: synchronous, so work is finished when a call
// returns and every event it hands out is already complete.
#include "convkit/stream.hpp"
#include "core/backend.hpp"

namespace convkit {

namespace {

class CpuStream final : public detail::StreamImpl {
public:
    Device device() const override { return Device::cpu(); }
    Event record() override { return Event(); }
    void wait(const Event& e) override { e.wait(); }
    void synchronize() override {}
};

const std::shared_ptr<detail::StreamImpl>& cpu_stream_impl() {
    static const std::shared_ptr<detail::StreamImpl> s = std::make_shared<CpuStream>();
    return s;
}

core::DeviceRuntime& cuda_runtime(const char* what) {
    core::DeviceRuntime* rt = core::runtime(DeviceType::cuda);
    if (!rt)
        throw Error(ErrorKind::unsupported,
                    std::string(what) + ": this build of convkit has no CUDA backend");
    return *rt;
}

void check_cuda_index(core::DeviceRuntime& rt, int device, const char* what) {
    int n = rt.device_count();
    if (device < 0 || device >= n)
        throw Error(ErrorKind::invalid_argument, std::string(what) + ": device cuda:" +
                                                     std::to_string(device) + " does not exist (" +
                                                     std::to_string(n) + " CUDA device(s) visible)");
}

}  // namespace

bool Event::completed() const { return !impl_ || impl_->completed(); }

void Event::wait() const {
    if (impl_) impl_->wait();
}

Stream::Stream() : impl_(cpu_stream_impl()) {}

Stream Stream::cpu() { return Stream(); }

Stream Stream::cuda(int device) {
    auto& rt = cuda_runtime("Stream::cuda");
    check_cuda_index(rt, device, "Stream::cuda");
    return Stream(rt.create_stream(device, nullptr));
}

Stream Stream::cuda_external(int device, void* cuda_stream) {
    auto& rt = cuda_runtime("Stream::cuda_external");
    check_cuda_index(rt, device, "Stream::cuda_external");
    return Stream(rt.create_stream(device, cuda_stream));
}

Device Stream::device() const { return impl_->device(); }
void* Stream::native_handle() const { return impl_->native_handle(); }
Event Stream::record() const { return impl_->record(); }
void Stream::wait(const Event& e) const { impl_->wait(e); }
void Stream::synchronize() const { impl_->synchronize(); }
bool Stream::is_default_cpu() const { return impl_ == cpu_stream_impl(); }

namespace core {

void wait_all(const std::vector<Event>& deps) {
    for (const auto& e : deps) e.wait();
}

}  // namespace core
}  // namespace convkit
