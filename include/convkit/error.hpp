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
    // `reproducer`: for an error of a problem, the `convkit bench` command line that runs the same
    // problem the same way; what() then ends with it on a line of its own ("\nreproduce: ...").
    Error(ErrorKind kind, const std::string& message, const std::string& reproducer = "")
        : std::runtime_error(printable(message) + (reproducer.empty() ? "" : "\nreproduce: " + printable(reproducer))),
          kind_(kind),
          reproducer_(reproducer) {}
    ErrorKind kind() const noexcept { return kind_; }
    const std::string& reproducer() const noexcept { return reproducer_; }

    // Messages quote what the caller passed, which may hold any byte: control bytes are written
    // as escapes (\0, \x0a), since a NUL would end what() there and a line break would make a
    // one-line message two.
    static std::string printable(const std::string& s) {
        static const char kHex[] = "0123456789abcdef";
        std::string out;
        for (char ch : s) {
            const auto c = static_cast<unsigned char>(ch);
            if (c == 0) {
                out += "\\0";
            } else if (c < 0x20 || c == 0x7f) {
                out += "\\x";
                out += kHex[c >> 4];
                out += kHex[c & 15];
            } else {
                out += ch;
            }
        }
        return out;
    }

private:
    ErrorKind kind_;
    std::string reproducer_;
};

}  // namespace convkit
