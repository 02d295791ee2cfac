// The few elementwise and reduction kernels the data-parallel example needs around convkit's
// convolutions: global average pooling fused with the mean-squared-error loss and its gradient, the
// ReLU backward mask, gradient accumulation over micro-batches, and the SGD update. Every kernel
// takes the activation dtype (f32, f16 or bf16) and accumulates in f32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "convkit/tensor.hpp"

namespace dp {

// x: the last convolution's output, [batch, channels, spatial] with the spatial dimensions
// flattened (both dense layouts keep them in order), element strides sb / sk / ss.
// For every (b, k): y = mean over spatial of x; with a target, d = y - t,
//   sqerr[b, k] = d^2 * loss_scale and dx[b, k, s] = 2 * d * loss_scale / spatial.
// loss_scale is 1 / (global batch * channels): every rank scales its own share by the global
// count, so the all-reduced SUM of the ranks' gradients is the gradient of the global mean.
// Without a target (target == nullptr) only y is written.
struct PoolLossArgs {
    convkit::DType dt = convkit::DType::f32;
    const void* x = nullptr;
    void* dx = nullptr;  // same dtype and strides as x
    int64_t batch = 0, channels = 0, spatial = 0;
    int64_t sb = 0, sk = 0, ss = 0;
    const float* target = nullptr;  // [batch, channels]
    float* y = nullptr;             // [batch, channels]
    float* sqerr = nullptr;         // [batch, channels]
    float loss_scale = 1.f;
};
void launch_pool_loss(const PoolLossArgs& a, cudaStream_t s);

// out[0] = (accumulate ? out[0] : 0) + sum(v[0..n)), in a fixed order (one block), so the loss
// printed is the same bit pattern on every run.
void launch_sum(const float* v, int64_t n, float* out, bool accumulate, cudaStream_t s);

// dz[i] = y[i] > 0 ? dz[i] : 0, where y = relu(z) is the forward output (y > 0 exactly where z > 0).
void launch_relu_backward(convkit::DType dt, void* dz, const void* y, int64_t n, cudaStream_t s);

// acc[i] += v[i]
void launch_accumulate(convkit::DType dt, void* acc, const void* v, int64_t n, cudaStream_t s);

// master[i] -= lr * grad[i]; work[i] = master[i] rounded to dt. master is f32; work and grad have
// dtype dt. work may alias master when dt is f32.
void launch_sgd(convkit::DType dt, float* master, void* work, const void* grad, int64_t n, float lr,
                cudaStream_t s);

}  // namespace dp
