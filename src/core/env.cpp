// Parsing of CONVKIT_* environment variables (see env.hpp).
#include "core/env.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace convkit::core::env {

const char* text(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
}

bool flag(const char* name, bool dflt) {
    const char* v = text(name);
    return v ? std::strcmp(v, "0") != 0 : dflt;
}

int mode(const char* name, int unset) {
    const char* v = text(name);
    if (!v) return unset;
    if (!std::strcmp(v, "auto")) return -1;
    return std::strcmp(v, "0") != 0 ? 1 : 0;
}

int64_t integer(const char* name, int64_t dflt) {
    const char* v = text(name);
    if (!v) return dflt;
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0') return dflt;
    return static_cast<int64_t>(n);
}

int choice(const char* name, std::initializer_list<const char*> names) {
    const char* v = text(name);
    if (!v) return -1;
    int i = 0;
    for (const char* n : names) {
        if (!std::strcmp(v, n)) return i;
        ++i;
    }
    return -1;
}

}  // namespace convkit::core::env
