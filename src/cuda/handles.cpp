// Device properties and the per-device cuDNN handle pool (see handles.hpp). Both are leaked on
// purpose: at process exit the CUDA runtime may already be unloaded (see runtime.cpp).
#include "cuda/handles.hpp"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <vector>

#include "cuda/cuda_util.hpp"

namespace convkit::cuda {
namespace {

template <typename H>
class HandlePool {
public:
    // A pooled handle of `device`, or null when none is free.
    H take(int device) {
        std::lock_guard<std::mutex> lock(mu_);
        std::vector<H>& v = free_[device];
        if (v.empty()) return nullptr;
        H h = v.back();
        v.pop_back();
        return h;
    }
    void put(int device, H h) {
        std::lock_guard<std::mutex> lock(mu_);
        free_[device].push_back(h);
    }

private:
    std::mutex mu_;
    std::map<int, std::vector<H>> free_;
};

HandlePool<cudnnHandle_t>& pool() {
    static auto* p = new HandlePool<cudnnHandle_t>;
    return *p;
}

HandlePool<cublasHandle_t>& blas_pool() {
    static auto* p = new HandlePool<cublasHandle_t>;
    return *p;
}

}  // namespace

const DeviceInfo& device_info(int device) {
    static std::mutex mu;
    static auto* infos = new std::map<int, DeviceInfo>;
    std::lock_guard<std::mutex> lock(mu);
    auto it = infos->find(device);
    if (it != infos->end()) return it->second;
    cudaDeviceProp prop;
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    DeviceInfo d;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    return infos->emplace(device, d).first->second;
}

cudnnHandle_t acquire_handle(int device) {
    if (cudnnHandle_t h = pool().take(device)) return h;
    cudnnHandle_t h;
    check_cudnn(cudnnCreate(&h), "cudnnCreate");
    return h;
}

void release_handle(int device, cudnnHandle_t h) { pool().put(device, h); }

cublasHandle_t acquire_blas_handle(int device) {
    if (cublasHandle_t h = blas_pool().take(device)) return h;
    cublasHandle_t h;
    const cublasStatus_t st = cublasCreate(&h);
    if (st != CUBLAS_STATUS_SUCCESS)
        throw Error(st == CUBLAS_STATUS_ALLOC_FAILED ? ErrorKind::out_of_memory : ErrorKind::backend,
                    std::string("cublasCreate: ") + cublasGetStatusString(st));
    return h;
}

void release_blas_handle(int device, cublasHandle_t h) { blas_pool().put(device, h); }

}  // namespace convkit::cuda
