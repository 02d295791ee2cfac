// convkit::Error: the one exception type the library throws. The kind lets callers branch
// (bad input vs. missing feature vs. memory vs. a backend failure); the message names the
// argument and the values so a user can act on it without reading the source.
#pragma once
#include "convkit/export.hpp"
#include <stdexcept>
#include <string>

namespace convkit {

enum class ErrorKind { invalid_argument, unsupported, out_of_memory, backend };

inline const char* to_string(ErrorKind k) {
    switch (k) {
        case ErrorKind::invalid_argument: return "invalid_argument";
        case ErrorKind::unsupported: return "unsupported";
        case ErrorKind::out_of_memory: return "out_of_memory";
        case ErrorKind::backend: return "backend";
    }
    return "unknown";
}

class CONVKIT_API Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const noexcept { return kind_; }

private:
    ErrorKind kind_;
};

}  // namespace convkit
