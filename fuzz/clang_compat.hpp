// Force-included into src/cpu/convert.cpp in the fuzz build only (fuzz/CMakeLists.txt), so that
// file builds with clang 14 as the GCC-only code it is today: clang ignores `#pragma GCC target`
// (the file is built with -mavx2 -mf16c -mfma instead) and rejects __builtin_cpu_supports("f16c")
// (an unknown feature string to clang 14), which this asks CPUID instead. The fuzz machine has
// AVX2; the real fix belongs in src/cpu/convert.cpp (docs/robustness.md, "Findings").
#pragma once
#include <cpuid.h>
#include <cstring>

static inline bool convkit_fuzz_cpu_has(const char* feature) {
    unsigned a, b, c, d;
    if (std::strcmp(feature, "f16c") == 0) return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    if (std::strcmp(feature, "avx2") == 0) return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2);
    return false;
}
#define __builtin_cpu_supports(feature) convkit_fuzz_cpu_has(feature)
