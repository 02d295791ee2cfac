// Device code of the data-parallel example (see kernels.hpp): pooling + loss, ReLU backward,
// accumulation, SGD. Elementwise kernels move 16 bytes per thread and iteration where the pointers
// allow it, since at ResNet-50 sizes the ReLU mask runs over every activation of the network.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#include "kernels.hpp"

namespace dp {
namespace {

template <typename T> struct Num;
template <> struct Num<float> {
    __device__ static float load(float v) { return v; }
    __device__ static float store(float v) { return v; }
};
template <> struct Num<__half> {
    __device__ static float load(__half v) { return __half2float(v); }
    __device__ static __half store(float v) { return __float2half_rn(v); }
};
template <> struct Num<__nv_bfloat16> {
    __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

void check_launch(const char* what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

unsigned grid_for(int64_t work, int threads) {
    // Grid-stride loops: a few waves of blocks are enough to fill any current GPU.
    int64_t blocks = (work + threads - 1) / threads;
    if (blocks > 8192) blocks = 8192;
    if (blocks < 1) blocks = 1;
    return static_cast<unsigned>(blocks);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T>
__global__ void pool_loss_kernel(PoolLossArgs a) {
    const int64_t total = a.batch * a.channels;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t b = i / a.channels, k = i % a.channels;
        const T* x = static_cast<const T*>(a.x) + b * a.sb + k * a.sk;
        // One thread per (b, k): consecutive threads are consecutive channels, which in NHWC are
        // consecutive addresses, and the spatial loop stays in a fixed order (reproducible y).
        float acc = 0.f;
        for (int64_t s = 0; s < a.spatial; ++s) acc += Num<T>::load(x[s * a.ss]);
        const float y = acc / static_cast<float>(a.spatial);
        a.y[i] = y;
        if (!a.target) continue;
        const float d = y - a.target[i];
        a.sqerr[i] = d * d * a.loss_scale;
        const T g = Num<T>::store(2.f * d * a.loss_scale / static_cast<float>(a.spatial));
        T* dx = static_cast<T*>(a.dx) + b * a.sb + k * a.sk;
        for (int64_t s = 0; s < a.spatial; ++s) dx[s * a.ss] = g;
    }
}

constexpr int kSumThreads = 1024;

__global__ void sum_kernel(const float* v, int64_t n, float* out, bool accumulate) {
    __shared__ float part[kSumThreads];
    float acc = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += kSumThreads) acc += v[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = kSumThreads / 2; w > 0; w /= 2) {
        if (static_cast<int>(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = (accumulate ? out[0] : 0.f) + part[0];
}

// The elementwise kernels below share one shape: a vector part of 16-byte chunks (when every
// pointer is 16-byte aligned) and a scalar tail, both in one grid-stride loop.
template <typename T> struct Vec {
    static constexpr int n = 16 / sizeof(T);
    T v[n];
};

template <typename T>
__device__ void relu_bwd_one(T& dz, T y) {
    if (!(Num<T>::load(y) > 0.f)) dz = Num<T>::store(0.f);
}

template <typename T>
__global__ void relu_backward_kernel(T* dz, const T* y, int64_t n, bool vec) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    int64_t done = 0;
    if (vec) {
        const int64_t nv = n / Vec<T>::n;
        for (int64_t i = tid; i < nv; i += stride) {
            Vec<T> a = reinterpret_cast<Vec<T>*>(dz)[i];
            const Vec<T> b = reinterpret_cast<const Vec<T>*>(y)[i];
#pragma unroll
            for (int j = 0; j < Vec<T>::n; ++j) relu_bwd_one(a.v[j], b.v[j]);
            reinterpret_cast<Vec<T>*>(dz)[i] = a;
        }
        done = nv * Vec<T>::n;
    }
    for (int64_t i = done + tid; i < n; i += stride) relu_bwd_one(dz[i], y[i]);
}

template <typename T>
__global__ void accumulate_kernel(T* acc, const T* v, int64_t n, bool vec) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    int64_t done = 0;
    if (vec) {
        const int64_t nv = n / Vec<T>::n;
        for (int64_t i = tid; i < nv; i += stride) {
            Vec<T> a = reinterpret_cast<Vec<T>*>(acc)[i];
            const Vec<T> b = reinterpret_cast<const Vec<T>*>(v)[i];
#pragma unroll
            for (int j = 0; j < Vec<T>::n; ++j) a.v[j] = Num<T>::store(Num<T>::load(a.v[j]) + Num<T>::load(b.v[j]));
            reinterpret_cast<Vec<T>*>(acc)[i] = a;
        }
        done = nv * Vec<T>::n;
    }
    for (int64_t i = done + tid; i < n; i += stride) acc[i] = Num<T>::store(Num<T>::load(acc[i]) + Num<T>::load(v[i]));
}

// No __restrict__: work aliases master for f32.
template <typename T>
__global__ void sgd_kernel(float* master, T* work, const T* grad, int64_t n, float lr) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
        const float m = master[i] - lr * Num<T>::load(grad[i]);
        master[i] = m;
        work[i] = Num<T>::store(m);
    }
}

template <template <typename> class F, typename... Args>
void dispatch(convkit::DType dt, const char* what, Args&&... args) {
    switch (dt) {
        case convkit::DType::f32: F<float>::run(args...); break;
        case convkit::DType::f16: F<__half>::run(args...); break;
        case convkit::DType::bf16: F<__nv_bfloat16>::run(args...); break;
        default: throw std::invalid_argument(std::string(what) + ": dtype " + convkit::to_string(dt) +
                                             " is not supported (f32, f16, bf16)");
    }
    check_launch(what);
}

constexpr int kThreads = 256;

template <typename T> struct PoolLoss {
    static void run(const PoolLossArgs& a, cudaStream_t s) {
        pool_loss_kernel<T><<<grid_for(a.batch * a.channels, kThreads), kThreads, 0, s>>>(a);
    }
};
template <typename T> struct ReluBackward {
    static void run(void* dz, const void* y, int64_t n, cudaStream_t s) {
        const bool vec = aligned16(dz) && aligned16(y);
        relu_backward_kernel<T><<<grid_for(vec ? n / Vec<T>::n + 1 : n, kThreads), kThreads, 0, s>>>(
            static_cast<T*>(dz), static_cast<const T*>(y), n, vec);
    }
};
template <typename T> struct Accumulate {
    static void run(void* acc, const void* v, int64_t n, cudaStream_t s) {
        const bool vec = aligned16(acc) && aligned16(v);
        accumulate_kernel<T><<<grid_for(vec ? n / Vec<T>::n + 1 : n, kThreads), kThreads, 0, s>>>(
            static_cast<T*>(acc), static_cast<const T*>(v), n, vec);
    }
};
template <typename T> struct Sgd {
    static void run(float* master, void* work, const void* grad, int64_t n, float lr, cudaStream_t s) {
        sgd_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(master, static_cast<T*>(work),
                                                                  static_cast<const T*>(grad), n, lr);
    }
};

}  // namespace

void launch_pool_loss(const PoolLossArgs& a, cudaStream_t s) {
    if (a.batch * a.channels == 0) return;
    dispatch<PoolLoss>(a.dt, "pool_loss", a, s);
}

void launch_sum(const float* v, int64_t n, float* out, bool accumulate, cudaStream_t s) {
    sum_kernel<<<1, kSumThreads, 0, s>>>(v, n, out, accumulate);
    check_launch("sum");
}

void launch_relu_backward(convkit::DType dt, void* dz, const void* y, int64_t n, cudaStream_t s) {
    if (n == 0) return;
    dispatch<ReluBackward>(dt, "relu_backward", dz, y, n, s);
}

void launch_accumulate(convkit::DType dt, void* acc, const void* v, int64_t n, cudaStream_t s) {
    if (n == 0) return;
    dispatch<Accumulate>(dt, "accumulate", acc, v, n, s);
}

void launch_sgd(convkit::DType dt, float* master, void* work, const void* grad, int64_t n, float lr,
                cudaStream_t s) {
    if (n == 0) return;
    dispatch<Sgd>(dt, "sgd", master, work, grad, n, lr, s);
}

}  // namespace dp
