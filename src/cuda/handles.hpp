// Per-device state of the CUDA backend: the device's name and compute capability (for the tune
// key and describe()), and the pools of cuDNN and cuBLAS handles that calls lease for their
// duration.
#pragma once
#include <cublas_v2.h>
#include <cudnn.h>

#include <string>

namespace convkit::cuda {

struct DeviceInfo {
    std::string name;
    int cc_major = 0, cc_minor = 0;
};
const DeviceInfo& device_info(int device);

// A handle from the device's pool (created when the pool is empty; the caller has made `device`
// current) and its return. A handle serves one call at a time, whatever its thread.
cudnnHandle_t acquire_handle(int device);
void release_handle(int device, cudnnHandle_t h);

// The same for cuBLAS (the f64 GEMM plan), with the same rules.
cublasHandle_t acquire_blas_handle(int device);
void release_blas_handle(int device, cublasHandle_t h);

// cuDNN and cuBLAS handles are not thread-safe; a lease per call lets threads run concurrently
// without one handle per (device, thread) that would outlive its thread.
template <typename H, H (*Acquire)(int), void (*Release)(int, H)>
class Lease {
public:
    explicit Lease(int device) : device_(device), h_(Acquire(device)) {}
    ~Lease() { Release(device_, h_); }
    H get() const { return h_; }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

private:
    int device_;
    H h_;
};
using HandleLease = Lease<cudnnHandle_t, acquire_handle, release_handle>;
using BlasLease = Lease<cublasHandle_t, acquire_blas_handle, release_blas_handle>;

}  // namespace convkit::cuda
