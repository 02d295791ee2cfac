// The post-op formulas, once, for the fast paths: the CPU epilogue (host) and the CUDA epilogue
// and direct kernels (device). Every formula follows oneDNN's definition, op for op as
// src/reference/reference.cpp writes it; the reference keeps its own copy on purpose, so that the
// oracle does not share a mistake with the code it checks.
//
// Two forms: `eltwise<alg>(x, alpha, beta)` with the algorithm fixed at compile time (for host
// loops that should vectorise: the CPU epilogue picks the op once per chunk through
// `with_eltwise`), and `eltwise(alg, x, alpha, beta)` with a switch per element (device code).
// min/max are std::min/std::max's (b < a ? b : a): a NaN first argument propagates as in the
// reference, not as fminf/fmaxf would.
#pragma once
#include <cmath>
#include <type_traits>

#include "convkit/post_ops.hpp"

#ifdef __CUDACC__
#define CONVKIT_HD __host__ __device__
#else
#define CONVKIT_HD
#endif

namespace convkit::math {

CONVKIT_HD inline float m_exp(float x) { return expf(x); }
CONVKIT_HD inline double m_exp(double x) { return exp(x); }
CONVKIT_HD inline float m_expm1(float x) { return expm1f(x); }
CONVKIT_HD inline double m_expm1(double x) { return expm1(x); }
CONVKIT_HD inline float m_log1p(float x) { return log1pf(x); }
CONVKIT_HD inline double m_log1p(double x) { return log1p(x); }
CONVKIT_HD inline float m_log(float x) { return logf(x); }
CONVKIT_HD inline double m_log(double x) { return log(x); }
CONVKIT_HD inline float m_tanh(float x) { return tanhf(x); }
CONVKIT_HD inline double m_tanh(double x) { return tanh(x); }
CONVKIT_HD inline float m_erf(float x) { return erff(x); }
CONVKIT_HD inline double m_erf(double x) { return erf(x); }
CONVKIT_HD inline float m_sqrt(float x) { return sqrtf(x); }
CONVKIT_HD inline double m_sqrt(double x) { return sqrt(x); }
CONVKIT_HD inline float m_abs(float x) { return fabsf(x); }
CONVKIT_HD inline double m_abs(double x) { return fabs(x); }
template <typename A> CONVKIT_HD inline A m_min(A a, A b) { return b < a ? b : a; }
template <typename A> CONVKIT_HD inline A m_max(A a, A b) { return a < b ? b : a; }

template <EltwiseAlg alg, typename A> CONVKIT_HD inline A eltwise(A x, A alpha, A beta) {
    if constexpr (alg == EltwiseAlg::relu) return x > A(0) ? x : alpha * x;
    if constexpr (alg == EltwiseAlg::linear) return alpha * x + beta;
    if constexpr (alg == EltwiseAlg::clip) return m_min(m_max(x, alpha), beta);
    if constexpr (alg == EltwiseAlg::elu) return x > A(0) ? x : alpha * m_expm1(x);
    if constexpr (alg == EltwiseAlg::swish) return x / (A(1) + m_exp(-alpha * x));
    if constexpr (alg == EltwiseAlg::gelu_erf) return A(0.5) * x * (A(1) + m_erf(x / m_sqrt(A(2))));
    if constexpr (alg == EltwiseAlg::gelu_tanh) {
        const A c = m_sqrt(A(2) / A(3.14159265358979323846));
        return A(0.5) * x * (A(1) + m_tanh(c * (x + A(0.044715) * x * x * x)));
    }
    if constexpr (alg == EltwiseAlg::logistic) return A(1) / (A(1) + m_exp(-x));
    if constexpr (alg == EltwiseAlg::tanh) return m_tanh(x);
    if constexpr (alg == EltwiseAlg::hardswish) return x * m_min(m_max(x + A(3), A(0)), A(6)) / A(6);
    if constexpr (alg == EltwiseAlg::mish) {
        const A sp = x > A(20) ? x : m_log1p(m_exp(x));  // softplus; log1p(exp(x)) == x there
        return x * m_tanh(sp);
    }
    if constexpr (alg == EltwiseAlg::abs) return m_abs(x);
    if constexpr (alg == EltwiseAlg::square) return x * x;
    if constexpr (alg == EltwiseAlg::sqrt) return m_sqrt(x);
    if constexpr (alg == EltwiseAlg::exp) return m_exp(x);
    if constexpr (alg == EltwiseAlg::log) return m_log(x);
    return x;
}

template <BinaryAlg alg, typename A> CONVKIT_HD inline A binary(A x, A y) {
    if constexpr (alg == BinaryAlg::add) return x + y;
    if constexpr (alg == BinaryAlg::mul) return x * y;
    if constexpr (alg == BinaryAlg::sub) return x - y;
    if constexpr (alg == BinaryAlg::div) return x / y;
    if constexpr (alg == BinaryAlg::max) return m_max(x, y);
    if constexpr (alg == BinaryAlg::min) return m_min(x, y);
    return x;
}

template <EltwiseAlg a> using EltwiseTag = std::integral_constant<EltwiseAlg, a>;
template <BinaryAlg a> using BinaryTag = std::integral_constant<BinaryAlg, a>;

// Calls f(EltwiseTag<alg>{}) with the runtime `alg` made a compile-time constant.
template <typename F> CONVKIT_HD inline void with_eltwise(EltwiseAlg alg, F&& f) {
    switch (alg) {
        case EltwiseAlg::relu: f(EltwiseTag<EltwiseAlg::relu>{}); return;
        case EltwiseAlg::linear: f(EltwiseTag<EltwiseAlg::linear>{}); return;
        case EltwiseAlg::clip: f(EltwiseTag<EltwiseAlg::clip>{}); return;
        case EltwiseAlg::elu: f(EltwiseTag<EltwiseAlg::elu>{}); return;
        case EltwiseAlg::swish: f(EltwiseTag<EltwiseAlg::swish>{}); return;
        case EltwiseAlg::gelu_erf: f(EltwiseTag<EltwiseAlg::gelu_erf>{}); return;
        case EltwiseAlg::gelu_tanh: f(EltwiseTag<EltwiseAlg::gelu_tanh>{}); return;
        case EltwiseAlg::logistic: f(EltwiseTag<EltwiseAlg::logistic>{}); return;
        case EltwiseAlg::tanh: f(EltwiseTag<EltwiseAlg::tanh>{}); return;
        case EltwiseAlg::hardswish: f(EltwiseTag<EltwiseAlg::hardswish>{}); return;
        case EltwiseAlg::mish: f(EltwiseTag<EltwiseAlg::mish>{}); return;
        case EltwiseAlg::abs: f(EltwiseTag<EltwiseAlg::abs>{}); return;
        case EltwiseAlg::square: f(EltwiseTag<EltwiseAlg::square>{}); return;
        case EltwiseAlg::sqrt: f(EltwiseTag<EltwiseAlg::sqrt>{}); return;
        case EltwiseAlg::exp: f(EltwiseTag<EltwiseAlg::exp>{}); return;
        case EltwiseAlg::log: f(EltwiseTag<EltwiseAlg::log>{}); return;
    }
}

template <typename F> CONVKIT_HD inline void with_binary(BinaryAlg alg, F&& f) {
    switch (alg) {
        case BinaryAlg::add: f(BinaryTag<BinaryAlg::add>{}); return;
        case BinaryAlg::mul: f(BinaryTag<BinaryAlg::mul>{}); return;
        case BinaryAlg::sub: f(BinaryTag<BinaryAlg::sub>{}); return;
        case BinaryAlg::div: f(BinaryTag<BinaryAlg::div>{}); return;
        case BinaryAlg::max: f(BinaryTag<BinaryAlg::max>{}); return;
        case BinaryAlg::min: f(BinaryTag<BinaryAlg::min>{}); return;
    }
}

// Per-element forms with the algorithm chosen at run time.
template <typename A> CONVKIT_HD inline A eltwise(EltwiseAlg alg, A x, A alpha, A beta) {
    A y = x;
    with_eltwise(alg, [&](auto tag) { y = eltwise<decltype(tag)::value>(x, alpha, beta); });
    return y;
}

template <typename A> CONVKIT_HD inline A binary(BinaryAlg alg, A x, A y) {
    A z = x;
    with_binary(alg, [&](auto tag) { z = binary<decltype(tag)::value>(x, y); });
    return z;
}

}  // namespace convkit::math
