// The one file that knows which backends this build has (CMake's CONVKIT_WITH_* definitions).
// It creates them in preference order: cuDNN for GPU tensors; for host tensors oneDNN before the
// reference, which accepts every problem and so comes last. A new backend is one factory
// declaration and one line below; the core sees only core::Backend and core::DeviceRuntime.
#include "core/backend.hpp"

namespace convkit::core {

// Each factory is defined in its backend's folder.
std::unique_ptr<Backend> make_reference_backend();
#ifdef CONVKIT_WITH_CPU
std::unique_ptr<Backend> make_cpu_backend();
#endif
#ifdef CONVKIT_WITH_CUDA
std::unique_ptr<Backend> make_cuda_backend();
std::unique_ptr<DeviceRuntime> make_cuda_runtime();
#endif

BackendSet compiled_backends() {
    BackendSet s;
#ifdef CONVKIT_WITH_CUDA
    s.runtimes.push_back(make_cuda_runtime());
    s.backends.push_back(make_cuda_backend());
#endif
#ifdef CONVKIT_WITH_CPU
    s.backends.push_back(make_cpu_backend());
#endif
    s.backends.push_back(make_reference_backend());
    return s;
}

}  // namespace convkit::core
