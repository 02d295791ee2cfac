// Internal helpers of the CUDA backend: turning CUDA and cuDNN status codes into convkit::Error at
// the boundary, and a guard that makes a device current for a scope and restores the caller's
// device afterwards (a library must not leave a framework's thread on another device).
#pragma once
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "convkit/error.hpp"

namespace convkit::cuda {

// Throws Error(backend, "<what>: <CUDA's text>"); an allocation failure becomes out_of_memory.
// The error is also cleared from the runtime's per-thread slot, so a later, unrelated
// cudaGetLastError() does not report it again.
[[noreturn]] void throw_cuda(cudaError_t e, const char* what);
inline void check_cuda(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw_cuda(e, what);
}

[[noreturn]] void throw_cudnn(cudnnStatus_t s, const std::string& what);
inline void check_cudnn(cudnnStatus_t s, const char* what) {
    if (s != CUDNN_STATUS_SUCCESS) throw_cudnn(s, what);
}

class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
        if (prev_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
        else prev_ = -1;
    }
    ~DeviceGuard() {
        if (prev_ >= 0) cudaSetDevice(prev_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int prev_ = -1;
};

// Number of visible devices; 0 (never an exception) without a driver or a device.
int visible_devices();

}  // namespace convkit::cuda
