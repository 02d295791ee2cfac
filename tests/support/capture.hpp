// Captures what a piece of code writes to stderr (the trace, warnings), for tests.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>

namespace convkit::test {

// Everything written to stderr (fd 2) while `fn` runs.
inline std::string capture_stderr(const std::function<void()>& fn) {
    std::fflush(stderr);
    const int saved = dup(2);
    FILE* tmp = std::tmpfile();
    dup2(fileno(tmp), 2);
    try {
        fn();
    } catch (...) {
        std::fflush(stderr);
        dup2(saved, 2);
        close(saved);
        std::fclose(tmp);
        throw;
    }
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::string out;
    std::rewind(tmp);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, tmp)) > 0) out.append(buf, n);
    std::fclose(tmp);
    return out;
}

}  // namespace convkit::test
