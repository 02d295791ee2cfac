// CUDA-backend switches and introspection that the public headers do not (yet) expose, plus a few
// helpers for tests and benchmarks. Declared without CUDA types (streams are void*), so that code
// built without the CUDA headers on its include path can call them. Only defined in builds with
// CONVKIT_WITH_CUDA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace convkit::cuda {

// Autotuning and the tune file are the core's settings (convkit::set_autotune, set_tune_file).

// Forward problems of at most this many multiply-adds run on convkit's own direct kernel (bias
// and post-ops fused, one launch) instead of cuDNN, whose per-call host cost dominates there.
// Default: CONVKIT_CUDA_DIRECT_MAX_MACS, else 2^20; 0 disables. Cached plans keep their choice.
void set_direct_max_macs(int64_t macs);
int64_t direct_max_macs();

// Backward-data of strided layers as stride-1 sub-convolutions, one per phase of diff_src (the
// positions i with (i + padding_l) % stride alike, each reached by its own subset of kernel taps):
// no multiply by the zeros that a stride-s dgrad otherwise inserts. Applies to f32 without TF32
// and f64, dilation 1, where every phase's padding is a valid stride-1 padding.
//    0 (default; CONVKIT_CUDA_SPLIT_DGRAD unset or 0): never. Measured on the H100 (ResNet-50,
//      f32 NCHW, mb 32): autotuning timed it against cuDNN's plans on every strided layer and
//      it won none, while it costs ~0.25 s of first call per strided layer.
//   -1 ("auto"): with autotuning, timed against the best single plan and the faster kept (the
//      decision goes to the tune file); without autotuning, not used.
//    1: whenever applicable.
// Cached plans keep their choice (clear_cache first).
void set_split_dgrad(int mode);
int split_dgrad();

// f64 convolutions as im2col (or the tensor itself, for 1x1 stride-1 unpadded layers) and
// cuBLAS DGEMM, which runs Hopper's f64 tensor cores (gemm_plan.cpp); every direction, groups,
// 1D/2D/3D, transposed, bias and post-ops through convkit's epilogue and bias-gradient passes.
//    -1 (default; CONVKIT_CUDA_F64_GEMM unset or "auto"): with autotuning, timed against cuDNN's
//      plan and the faster kept (the decision goes to the tune file); without, a rule from
//      measurements (docs/cuda.md, "f64 through DGEMM").
//     0: never (cuDNN's f64 engines).  1: wherever it applies.
// Cached plans keep their choice (clear_cache first).
void set_f64_gemm(int mode);
int f64_gemm();
// The most bytes of the GEMM plan's column buffer (and, channels-first backward-weights, its
// copy of diff_dst): a problem that needs more runs in chunks of whole images, or of output
// positions of one image. Default: CONVKIT_CUDA_F64_GEMM_WORKSPACE_MB, else 256 MiB. Read when a
// plan is built.
void set_f64_gemm_workspace(int64_t bytes);
int64_t f64_gemm_workspace();

// What the backend chose for the most recent plan built or found for a problem (for logs and tests).
struct PlanInfo {
    bool found = false;
    bool fused = false;           // bias / post-ops inside the cuDNN graph
    bool direct = false;          // convkit's direct kernel, no cuDNN
    bool explicit_padding = false;  // asymmetric padding done by a padded temporary
    bool from_tune_file = false;
    bool autotuned = false;
    bool split_dgrad = false;     // phase-split backward-data (engine_name lists the phases' engines)
    bool gemm = false;            // f64 as im2col + cuBLAS DGEMM (set_f64_gemm)
    int phases = 0;               // split_dgrad: sub-convolutions run (phases no tap reaches are zero-filled)
    int64_t engine_index = -1;    // cuDNN engine global index
    int64_t workspace = 0;        // bytes
    std::string engine_name;      // "eng<index>" plus knobs, as cuDNN's logs spell it
};
// Counters of how plans were obtained since the last clear_cache(Engine::cuda).
struct PlanCounters {
    // Phase-split plans count once in `split`; each phase's sub-plan counts as an unfused plan too.
    uint64_t fused = 0, unfused = 0, direct = 0, explicit_padding = 0, tuned = 0, loaded = 0, split = 0, gemm = 0;
};
PlanCounters plan_counters();
// The plan used by the last convolution call on this thread.
PlanInfo last_plan();

// Returns cached device memory of the default allocator to the driver.
void empty_cache();

// Test helpers: a raw cudaStream_t created outside convkit (as a framework would), and a kernel
// that keeps a stream busy for about `ms` milliseconds (to make ordering bugs visible).
void* create_raw_stream(int device);
void destroy_raw_stream(int device, void* stream);
void spin(void* stream, double ms);

}  // namespace convkit::cuda
