// 16-bit floating-point storage on the host, once for the core and the CPU backend: the scalar
// conversions (round to nearest even, NaN kept) and a load/store trait that lets one template
// serve f32, f64, bf16 and f16 buffers. Loads widen exactly; a store rounds once.
#pragma once
#include <cstdint>
#include <cstring>

#include "convkit/tensor.hpp"

namespace convkit::core {

inline float bf16_load(uint16_t v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Branch-free, so loops over it vectorise (cpu/convert.cpp). A NaN stays a (quiet) NaN.
inline uint16_t bf16_store(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    return static_cast<uint16_t>(nan ? (u >> 16) | 0x40u : rounded);
}

// 16-bit element types, told apart by tag so one template serves both.
struct Bf16Bits {
    uint16_t bits;
};
struct F16Bits {
    uint16_t bits;
};

// Scalar<T>::load widens a stored element to its compute type (float, or double for f64);
// Scalar<T>::store narrows a compute value back.
template <typename T> struct Scalar;
template <> struct Scalar<float> {
    static float load(float v) { return v; }
    static float store(float v) { return v; }
};
template <> struct Scalar<double> {
    static double load(double v) { return v; }
    static double store(double v) { return v; }
};
template <> struct Scalar<Bf16Bits> {
    static float load(Bf16Bits v) { return bf16_load(v.bits); }
    static Bf16Bits store(float v) { return {bf16_store(v)}; }
};
template <> struct Scalar<F16Bits> {
    static float load(F16Bits v) { return f16_to_f32(v.bits); }
    static F16Bits store(float v) { return {f32_to_f16(v)}; }
};

}  // namespace convkit::core
