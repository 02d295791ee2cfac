// Overflow-checked size arithmetic: every product of sizes goes through here before it is used
// to index or allocate, so a hostile shape becomes an error instead of a wrapped size.
#pragma once
#include <cstdint>
#include <string>

#include "convkit/error.hpp"

namespace convkit::core {

// `fn`: the public function the sizes were given to, which the message then starts with.
[[noreturn]] inline void overflow(const char* what, int64_t a, const char* op, int64_t b, const char* fn) {
    throw Error(ErrorKind::invalid_argument, (fn ? std::string(fn) + ": " : std::string()) + what + " overflows int64 (" +
                                                 std::to_string(a) + " " + op + " " + std::to_string(b) + ")");
}

inline int64_t checked_mul(int64_t a, int64_t b, const char* what, const char* fn = nullptr) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) overflow(what, a, "*", b, fn);
    return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what, const char* fn = nullptr) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) overflow(what, a, "+", b, fn);
    return r;
}

}  // namespace convkit::core
