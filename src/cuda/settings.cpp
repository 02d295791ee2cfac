// The CUDA backend's environment settings (see settings.hpp) and the run-time switches of
// cuda_api.hpp that they seed.
#include "cuda/settings.hpp"

#include <algorithm>
#include <atomic>

#include "core/env.hpp"
#include "cuda/cuda_api.hpp"

namespace convkit::cuda {
namespace {

std::atomic<int64_t> g_direct_max_macs{-1};  // -1: not yet read from the environment
std::atomic<int> g_split_dgrad{-2};          // -2: not yet read from the environment; else -1 auto, 0, 1
std::atomic<int> g_f64_gemm{-2};             // as g_split_dgrad
std::atomic<int64_t> g_gemm_workspace{-1};   // -1: not yet read from the environment

}  // namespace

bool acc32_enabled() {
    static const bool on = core::env::flag("CONVKIT_CUDA_ACC32", true);
    return on;
}

bool wide_enabled() {
    static const bool on = core::env::flag("CONVKIT_CUDA_WIDE", true);
    return on;
}

// There the widened plan costs little, while on ResNet-50's layers the f32 (TF32) engines run
// 1.5-6x slower than the 16-bit ones, which met every tolerance there.
int64_t wide_bwd_w_max_macs() {
    static const int64_t v = core::env::integer("CONVKIT_CUDA_WIDE_BWD_W_MAX_MACS", int64_t{1} << 24);
    return v;
}

// Default f64 only: an engine that accepted unequal pre/post paddings gave wrong f64
// backward-weights results on the H100 (1D NCHW, pad 0/1, cuDNN 9.19; found by the PyTorch-oracle
// suite).
bool prefer_explicit_padding(const core::ConvProblem& p) {
    static const int mode = [] {
        const char* name = "CONVKIT_CUDA_EXPLICIT_PADDING";
        if (!core::env::text(name)) return -1;
        return core::env::flag(name, true) ? 1 : 0;  // "auto" too means every dtype, as it always did
    }();
    return mode == 1 || (mode == -1 && p.dt == DType::f64);
}

int64_t workspace_limit() {
    static const int64_t limit = [] {
        const int64_t mb = core::env::integer("CONVKIT_CUDA_WORKSPACE_LIMIT_MB", 0);
        // Heuristics' favourite configs occasionally ask for gigabytes (pytorch#49207); 2 GiB keeps
        // every ResNet-scale choice and rules out the pathological ones.
        return (mb > 0 ? mb : 2048) * (int64_t(1) << 20);
    }();
    return limit;
}

void set_direct_max_macs(int64_t m) { g_direct_max_macs = m < 0 ? 0 : m; }

int64_t direct_max_macs() {
    int64_t v = g_direct_max_macs.load();
    if (v < 0) {
        v = std::max<int64_t>(0, core::env::integer("CONVKIT_CUDA_DIRECT_MAX_MACS", int64_t(1) << 20));
        g_direct_max_macs = v;
    }
    return v;
}

void set_split_dgrad(int mode) { g_split_dgrad = mode < 0 ? -1 : mode > 0 ? 1 : 0; }

int split_dgrad() {
    int v = g_split_dgrad.load();
    if (v == -2) {
        v = core::env::mode("CONVKIT_CUDA_SPLIT_DGRAD", 0);  // unset or "0": 0, "auto": -1, else 1
        g_split_dgrad = v;
    }
    return v;
}

void set_f64_gemm(int mode) { g_f64_gemm = mode < 0 ? -1 : mode > 0 ? 1 : 0; }

int f64_gemm() {
    int v = g_f64_gemm.load();
    if (v == -2) {
        v = core::env::mode("CONVKIT_CUDA_F64_GEMM", -1);  // unset or "auto": -1, "0": 0, else 1
        g_f64_gemm = v;
    }
    return v;
}

void set_f64_gemm_workspace(int64_t bytes) { g_gemm_workspace = std::max<int64_t>(bytes, 1); }

int64_t f64_gemm_workspace() {
    int64_t v = g_gemm_workspace.load();
    if (v < 0) {
        const int64_t mb = core::env::integer("CONVKIT_CUDA_F64_GEMM_WORKSPACE_MB", 256);
        v = (mb > 0 ? mb : 256) * (int64_t(1) << 20);
        g_gemm_workspace = v;
    }
    return v;
}

}  // namespace convkit::cuda
