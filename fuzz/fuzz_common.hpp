// What the harnesses share: how a broken property is reported (a message, then abort(), which
// libFuzzer records as a crash with the input that caused it), and a per-process scratch file for
// the readers that take a path.
#pragma once
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "convkit/error.hpp"

namespace convkit::fuzz {

[[noreturn]] inline void finding(const char* fmt, ...) {
    std::va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "\n==convkit fuzz finding== ");
    std::vfprintf(stderr, fmt, ap);
    std::fprintf(stderr, "\n");
    va_end(ap);
    std::abort();
}

// A finding already reported (docs/robustness.md names it) is skipped while fuzzing, so the run
// goes on to find the next one; CONVKIT_FUZZ_STRICT=1 (scripts/fuzz.sh --replay, over
// fuzz/regressions/) reports it again, until the fix lands.
inline bool skip_known(const char* id) {
    static const bool strict = [] {
        const char* v = std::getenv("CONVKIT_FUZZ_STRICT");
        return v && *v && *v != '0';
    }();
    if (strict) return false;
    static int reported = 0;
    if (reported++ < 3) std::fprintf(stderr, "convkit fuzz: skipping known finding %s\n", id);
    return true;
}

// The same name for every input of one process (several fuzzers may run side by side); in /dev/shm
// when there is one, so the file system is not what the run measures.
inline const std::string& scratch_path(const char* what) {
    static const std::string path = [what] {
        const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        return std::string(dir) + "/convkit_fuzz_" + what + "." + std::to_string(::getpid());
    }();
    return path;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) finding("cannot create the scratch file %s", path.c_str());
    if (size && std::fwrite(data, 1, size, f) != size) finding("cannot write the scratch file %s", path.c_str());
    std::fclose(f);
}

// Every message names where it comes from ("npy file '...': ", "conv descriptor '...': "): a
// message without that prefix is a message a user cannot act on.
inline void expect_prefix(const Error& e, const std::string& prefix) {
    const std::string m = e.what();
    if (m.compare(0, prefix.size(), prefix) != 0)
        finding("error message does not start with \"%s\": \"%s\"", prefix.c_str(), m.c_str());
    if (e.kind() != ErrorKind::invalid_argument)
        finding("error of kind %s (expected invalid_argument): %s", to_string(e.kind()), m.c_str());
}

}  // namespace convkit::fuzz
