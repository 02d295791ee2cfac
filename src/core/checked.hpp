// Overflow-checked size arithmetic: every product of sizes goes through here before it is used
// to index or allocate, so a hostile shape becomes an error instead of a wrapped size.
#pragma once
#include <cstdint>
#include <string>

#include "convkit/error.hpp"

namespace convkit::core {

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        throw Error(ErrorKind::invalid_argument, std::string(what) + " overflows int64 (" +
                                                     std::to_string(a) + " * " + std::to_string(b) + ")");
    return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        throw Error(ErrorKind::invalid_argument, std::string(what) + " overflows int64 (" +
                                                     std::to_string(a) + " + " + std::to_string(b) + ")");
    return r;
}

}  // namespace convkit::core
