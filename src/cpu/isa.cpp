// What the CPU engine runs on: the instruction set oneDNN dispatches to (its own detection,
// capped by ONEDNN_MAX_CPU_ISA), oneDNN's version and the thread count, for the tables and logs
// that must say which kernels a figure came from; and the policy for 16-bit problems.
#include <omp.h>

#include <atomic>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/env.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {
namespace {

const char* isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
        case dnnl_cpu_isa_sse41: return "sse41";
        case dnnl_cpu_isa_avx: return "avx";
        case dnnl_cpu_isa_avx2: return "avx2";
        case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
        case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
        case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
        case dnnl_cpu_isa_avx512_core: return "avx512_core";
        case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
        case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
        case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
        case dnnl_cpu_isa_all: return "all";
        default: break;
    }
    return "unknown";
}

// Whether oneDNN has a non-ref forward kernel for a 16-bit dtype on this CPU: a small 3x3
// channels-last convolution stands for the rest (the plans decide per problem anyway).
bool native_kernels(dnnl::memory::data_type dt) {
    using mdesc = dnnl::memory::desc;
    using ftag = dnnl::memory::format_tag;
    try {
        const dnnl::memory::dims s{1, 16, 8, 8}, w{16, 16, 3, 3};
        dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                             mdesc(s, dt, ftag::nhwc), mdesc(w, dt, ftag::any),
                                             mdesc(s, dt, ftag::nhwc), {1, 1}, {0, 0}, {1, 1}, {1, 1});
        dnnl::convolution_forward::primitive_desc pd(desc, dnnl::engine(dnnl::engine::kind::cpu, 0), true);
        return pd && !std::strstr(pd.impl_info_str(), "ref");
    } catch (const dnnl::error&) {
        return false;
    }
}

}  // namespace

static std::atomic<int>& policy_slot() {
    static std::atomic<int> slot{[] {
        // Unset, empty or "auto": automatic; "0": never; anything else: always.
        const int m = core::env::mode("CONVKIT_CPU_WIDE", -1);
        return static_cast<int>(m < 0 ? WidePolicy::automatic : m == 0 ? WidePolicy::never : WidePolicy::always);
    }()};
    return slot;
}

WidePolicy wide_policy() { return static_cast<WidePolicy>(policy_slot().load(std::memory_order_relaxed)); }
void set_wide_policy(WidePolicy p) { policy_slot().store(static_cast<int>(p), std::memory_order_relaxed); }

std::string describe() {
    const dnnl_version_t* v = dnnl_version();
    const auto isa = static_cast<dnnl_cpu_isa_t>(dnnl::get_effective_cpu_isa());
    static const bool native_bf16 = native_kernels(dnnl::memory::data_type::bf16);
    static const bool native_f16 = native_kernels(dnnl::memory::data_type::f16);
    auto way = [](bool native, DType dt) {
        if (!native) return "widened to f32";
        return native_16bit_preferred(dt) ? "native (measured faster)" : "widened to f32 (native measured slower)";
    };
    std::string s = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                    std::to_string(v->patch) + ", isa " + isa_name(isa) + ", " +
                    std::to_string(apply_threads()) + " threads, ";
    switch (wide_policy()) {
        case WidePolicy::always: s += "bf16/f16 widened to f32 (CONVKIT_CPU_WIDE=1)"; break;
        case WidePolicy::never: s += "bf16/f16 native only (CONVKIT_CPU_WIDE=0)"; break;
        case WidePolicy::automatic:
            s += std::string("bf16 ") + way(native_bf16, DType::bf16) + ", f16 " + way(native_f16, DType::f16);
            break;
    }
    return s;
}

}  // namespace convkit::cpu
