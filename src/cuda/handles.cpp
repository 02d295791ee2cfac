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

class HandlePool {
public:
    // A pooled handle of `device`, or null when none is free.
    cudnnHandle_t take(int device) {
        std::lock_guard<std::mutex> lock(mu_);
        std::vector<cudnnHandle_t>& v = free_[device];
        if (v.empty()) return nullptr;
        cudnnHandle_t h = v.back();
        v.pop_back();
        return h;
    }
    void put(int device, cudnnHandle_t h) {
        std::lock_guard<std::mutex> lock(mu_);
        free_[device].push_back(h);
    }

private:
    std::mutex mu_;
    std::map<int, std::vector<cudnnHandle_t>> free_;
};

HandlePool& pool() {
    static auto* p = new HandlePool;
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

}  // namespace convkit::cuda
