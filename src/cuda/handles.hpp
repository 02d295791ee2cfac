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

// cuDNN handles are not thread-safe; a lease per call lets threads run concurrently without one
// handle per (device, thread) that would outlive its thread.
class HandleLease {
public:
    explicit HandleLease(int device) : device_(device), h_(acquire_handle(device)) {}
    ~HandleLease() { release_handle(device_, h_); }
    cudnnHandle_t get() const { return h_; }
    HandleLease(const HandleLease&) = delete;
    HandleLease& operator=(const HandleLease&) = delete;

private:
    int device_;
    cudnnHandle_t h_;
};

// The same for cuBLAS (the f64 GEMM plan), with the same rules.
cublasHandle_t acquire_blas_handle(int device);
void release_blas_handle(int device, cublasHandle_t h);

class BlasLease {
public:
    explicit BlasLease(int device) : device_(device), h_(acquire_blas_handle(device)) {}
    ~BlasLease() { release_blas_handle(device_, h_); }
    cublasHandle_t get() const { return h_; }
    BlasLease(const BlasLease&) = delete;
    BlasLease& operator=(const BlasLease&) = delete;

private:
    int device_;
    cublasHandle_t h_;
};

}  // namespace convkit::cuda
