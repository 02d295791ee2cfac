// NumPy .npy reader/writer for convkit's tools and tests; see npy.hpp for the supported subset.
//
// The reader treats the file as untrusted: every length and shape it declares is checked
// against the real file size (with overflow checks) before anything is allocated, and the
// header dict is parsed by a small recursive-descent parser for the Python literal subset
// numpy emits, so that unusual-but-valid spellings are accepted and everything else gets a
// message that says what was found and where.
#include "npy.hpp"

#include <convkit/error.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <system_error>

// The in-memory layout is defined as little-endian and we copy bytes straight to and from
// native floats; on a big-endian host that would silently produce garbage.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
        (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
#error "convkit/tools/npy.cpp assumes a little-endian host"
#endif

namespace convkit::tools {
namespace {

constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr int64_t kAlign = 64;  // numpy aligns the data start to 64 bytes (since 1.x)

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw Error(ErrorKind::invalid_argument, "npy file '" + path + "': " + what);
}

std::string errno_text(int err) { return std::generic_category().message(err); }

// An OS error while writing. A name that leads nowhere (a missing directory, a file where a
// directory should be, a directory where the file should be) is a wrong argument: invalid_argument,
// so `convkit run` exits 2. The file system refusing or failing the write (full, read-only, no
// permission, an I/O error) is no fault of the input: backend, one of README's "other failures"
// (exit 1).
[[noreturn]] void fail_io(const std::string& path, const std::string& what, int err) {
    const bool bad_name = err == ENOENT || err == ENOTDIR || err == EISDIR || err == ENAMETOOLONG || err == ELOOP;
    throw Error(bad_name ? ErrorKind::invalid_argument : ErrorKind::backend,
                "npy file '" + path + "': cannot write: " + what + ": " + errno_text(err));
}

std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    if (shape.size() == 1) s += ",";  // Python spelling of a 1-tuple, as numpy writes it
    return s + ")";
}

enum class NumelStatus { ok, negative, overflow };

// A zero dimension makes the product 0 regardless of the others, so it is checked first:
// otherwise (2^40, 2^40, 0) would be reported as overflowing although it holds no data.
NumelStatus checked_numel(const std::vector<int64_t>& shape, int64_t* out) {
    bool any_zero = false;
    for (int64_t d : shape) {
        if (d < 0) return NumelStatus::negative;
        if (d == 0) any_zero = true;
    }
    if (any_zero) {
        *out = 0;
        return NumelStatus::ok;
    }
    int64_t n = 1;
    for (int64_t d : shape) {
        if (__builtin_mul_overflow(n, d, &n)) return NumelStatus::overflow;
    }
    *out = n;
    return NumelStatus::ok;
}

// Printable excerpt of a header for error messages: the header comes from an untrusted file
// and may contain control bytes or be megabytes long.
std::string excerpt(const std::string& s, size_t max_len = 160) {
    std::string out;
    for (size_t i = 0; i < s.size() && i < max_len; ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '\n') {
            out += "\\n";
        } else if (c < 0x20 || c >= 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    if (s.size() > max_len) out += "...";
    return out;
}

struct Header {
    std::string descr;
    bool fortran_order = false;
    std::vector<int64_t> shape;
};

// Parses the Python dict literal numpy writes, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// Accepts any key order, either quote style, arbitrary whitespace and trailing commas;
// rejects duplicate or unknown keys, since numpy does too and they hint at a foreign writer.
class HeaderParser {
public:
    HeaderParser(const std::string& path, const std::string& text) : path_(path), s_(text) {}

    Header parse() {
        Header h;
        bool have_descr = false, have_fortran = false, have_shape = false;
        skip_ws();
        if (!eat('{')) error("the header is not a Python dict (expected '{')");
        skip_ws();
        if (!eat('}')) {
            for (;;) {
                skip_ws();
                if (peek() != '\'' && peek() != '"') error("expected a quoted key");
                std::string key = parse_string();
                skip_ws();
                if (!eat(':')) error("expected ':' after key '" + key + "'");
                skip_ws();
                if (key == "descr") {
                    if (have_descr) error("duplicate key 'descr'");
                    have_descr = true;
                    if (peek() == '[') {
                        error("'descr' is a list, i.e. a structured dtype; only little-endian "
                              "'<f2', '<f4', '<f8' are supported");
                    }
                    if (peek() != '\'' && peek() != '"') error("'descr' must be a string");
                    h.descr = parse_string();
                } else if (key == "fortran_order") {
                    if (have_fortran) error("duplicate key 'fortran_order'");
                    have_fortran = true;
                    std::string word = parse_identifier();
                    if (word == "True") {
                        h.fortran_order = true;
                    } else if (word == "False") {
                        h.fortran_order = false;
                    } else {
                        error("'fortran_order' must be True or False");
                    }
                } else if (key == "shape") {
                    if (have_shape) error("duplicate key 'shape'");
                    have_shape = true;
                    h.shape = parse_shape();
                } else {
                    error("unexpected key '" + key +
                          "' (an .npy header has exactly 'descr', 'fortran_order', 'shape')");
                }
                skip_ws();
                if (eat('}')) break;
                if (!eat(',')) error("expected ',' or '}' after the value of '" + key + "'");
                skip_ws();
                if (eat('}')) break;  // trailing comma
            }
        }
        skip_ws();
        if (pos_ != s_.size()) error("unexpected text after the closing '}'");
        if (!have_descr) missing("descr");
        if (!have_fortran) missing("fortran_order");
        if (!have_shape) missing("shape");
        return h;
    }

private:
    const std::string& path_;
    const std::string& s_;
    size_t pos_ = 0;

    [[noreturn]] void error(const std::string& what) const {
        fail(path_, "malformed header at offset " + std::to_string(pos_) + ": " + what +
                            "; header is \"" + excerpt(s_) + "\"");
    }
    [[noreturn]] void missing(const std::string& key) const {
        fail(path_, "header is missing the key '" + key + "'; header is \"" + excerpt(s_) + "\"");
    }

    char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
    bool eat(char c) {
        if (pos_ < s_.size() && s_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    void skip_ws() {
        while (pos_ < s_.size() &&
               (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    static bool is_ident_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_';
    }

    // Escapes never occur in the strings numpy writes for these keys, so rather than
    // half-implement Python's escape rules we refuse them.
    std::string parse_string() {
        char q = s_[pos_++];
        size_t start = pos_;
        while (pos_ < s_.size() && s_[pos_] != q) {
            if (s_[pos_] == '\\') error("escape sequences in strings are not supported");
            if (s_[pos_] == '\n') error("unterminated string");
            ++pos_;
        }
        if (pos_ >= s_.size()) error("unterminated string");
        std::string out = s_.substr(start, pos_ - start);
        ++pos_;
        return out;
    }

    std::string parse_identifier() {
        size_t start = pos_;
        while (pos_ < s_.size() && is_ident_char(s_[pos_])) ++pos_;
        return s_.substr(start, pos_ - start);
    }

    int64_t parse_int() {
        size_t start = pos_;
        bool neg = eat('-');
        if (!(peek() >= '0' && peek() <= '9')) {
            pos_ = start;
            error("shape entries must be integers");
        }
        // Accumulate as negative so that INT64_MIN itself parses without overflow.
        int64_t v = 0;
        while (peek() >= '0' && peek() <= '9') {
            int digit = s_[pos_++] - '0';
            if (__builtin_mul_overflow(v, int64_t{10}, &v) ||
                __builtin_sub_overflow(v, int64_t{digit}, &v)) {
                pos_ = start;
                error("shape entry does not fit in int64");
            }
        }
        if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 numpy wrote long ints as 2L
        if (is_ident_char(peek()) || peek() == '.') {
            pos_ = start;
            error("shape entries must be integers");
        }
        if (!neg) {
            if (v == std::numeric_limits<int64_t>::min()) {
                pos_ = start;
                error("shape entry does not fit in int64");
            }
            v = -v;
        }
        return v;
    }

    std::vector<int64_t> parse_shape() {
        if (peek() == '[') error("'shape' must be a tuple such as (2, 3), not a list");
        if (!eat('(')) error("'shape' must be a tuple such as (2, 3)");
        std::vector<int64_t> dims;
        skip_ws();
        if (eat(')')) return dims;
        bool trailing_comma = false;
        for (;;) {
            skip_ws();
            dims.push_back(parse_int());
            skip_ws();
            trailing_comma = false;
            if (eat(',')) {
                trailing_comma = true;
                skip_ws();
                if (eat(')')) break;
                continue;
            }
            if (eat(')')) break;
            error("expected ',' or ')' in 'shape'");
        }
        if (dims.size() == 1 && !trailing_comma) {
            error("'shape' is '(" + std::to_string(dims[0]) +
                  ")', which is an integer in Python; a 1-d shape is written (" +
                  std::to_string(dims[0]) + ",)");
        }
        return dims;
    }
};

NpyType descr_to_type(const std::string& path, const std::string& descr) {
    static const char* const kSupported = "only little-endian '<f2', '<f4', '<f8' are supported";
    if (descr.size() == 3 && descr[1] == 'f' &&
        (descr[2] == '2' || descr[2] == '4' || descr[2] == '8')) {
        char order = descr[0];
        if (order == '<' || order == '=' || order == '|') {
            switch (descr[2]) {
                case '2': return NpyType::f2;
                case '4': return NpyType::f4;
                default: return NpyType::f8;
            }
        }
        if (order == '>') fail(path, "dtype '" + descr + "' is big-endian; " + kSupported);
    }
    fail(path, "dtype '" + excerpt(descr, 40) + "' is not supported; " + kSupported);
}

uint64_t read_le(const unsigned char* p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

float half_to_float(uint16_t h) {
    uint32_t sign = (h >> 15) & 1u;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        // Zero or subnormal: mant * 2^-24 is exact in float (normal range there).
        float mag = std::ldexp(static_cast<float>(mant), -24);
        std::memcpy(&bits, &mag, 4);
    } else if (exp == 31) {
        bits = 0x7f800000u | (mant << 13);  // inf, or NaN with its payload kept
    } else {
        bits = ((exp + (127 - 15)) << 23) | (mant << 13);
    }
    bits |= sign << 31;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// The file being written: its descriptor, and the temporary name it has, if any. Closes it and
// removes that name unless the write got as far as renaming it over the target.
struct TempFile {
    TempFile() = default;
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile() {
        if (fd >= 0) ::close(fd);
        if (!name.empty() && !committed) ::unlink(name.c_str());
    }
    int fd = -1;
    std::string name;  // empty while the file has no name (O_TMPFILE), or when it is not ours
    bool committed = false;
};

}  // namespace

int npy_type_size(NpyType t) {
    switch (t) {
        case NpyType::f2: return 2;
        case NpyType::f4: return 4;
        case NpyType::f8: return 8;
    }
    throw Error(ErrorKind::invalid_argument,
                "npy_type_size: invalid NpyType value " + std::to_string(static_cast<int>(t)));
}

const char* npy_type_descr(NpyType t) {
    switch (t) {
        case NpyType::f2: return "<f2";
        case NpyType::f4: return "<f4";
        case NpyType::f8: return "<f8";
    }
    throw Error(ErrorKind::invalid_argument,
                "npy_type_descr: invalid NpyType value " + std::to_string(static_cast<int>(t)));
}

int64_t NpyArray::numel() const {
    int64_t n = 0;
    switch (checked_numel(shape, &n)) {
        case NumelStatus::ok: return n;
        case NumelStatus::negative:
            throw Error(ErrorKind::invalid_argument,
                        "NpyArray: shape " + shape_str(shape) + " has a negative dimension");
        case NumelStatus::overflow: break;
    }
    throw Error(ErrorKind::invalid_argument,
                "NpyArray: shape " + shape_str(shape) + " has more elements than fit in int64");
}

NpyArray read_npy(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail(path, "is a directory, not a file");

    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open for reading: " + errno_text(errno));
    in.seekg(0, std::ios::end);
    const std::streamoff file_size = in.tellg();
    in.seekg(0, std::ios::beg);
    if (file_size < 0 || !in) fail(path, "cannot determine the file size");

    unsigned char prefix[12] = {};
    const std::streamoff prefix_avail = std::min<std::streamoff>(file_size, 12);
    in.read(reinterpret_cast<char*>(prefix), prefix_avail);
    if (in.gcount() != prefix_avail) fail(path, "read error in the file prefix");

    const std::streamoff magic_avail = std::min<std::streamoff>(prefix_avail, 6);
    if (magic_avail < 6 || std::memcmp(prefix, kMagic, 6) != 0) {
        if (file_size == 0) fail(path, "is empty, so it is not an .npy file");
        fail(path, "is not an .npy file (it does not start with the magic string \\x93NUMPY)");
    }
    if (file_size < 8) {
        fail(path, "is truncated: only " + std::to_string(file_size) +
                           " bytes, the format version is missing");
    }
    const int major = prefix[6], minor = prefix[7];
    int len_bytes;
    if (major == 1 && minor == 0) {
        len_bytes = 2;
    } else if (major == 2 && minor == 0) {
        len_bytes = 4;
    } else {
        std::string v = std::to_string(major) + "." + std::to_string(minor);
        fail(path, "format version " + v + " is not supported; only versions 1.0 and 2.0 are" +
                           (major == 3 ? " (3.0 exists only for UTF-8 field names of structured "
                                         "dtypes, which this reader does not support)"
                                       : ""));
    }
    const int64_t prefix_len = 8 + len_bytes;
    if (file_size < prefix_len) {
        fail(path, "is truncated: only " + std::to_string(file_size) +
                           " bytes, the header length field is incomplete");
    }
    const int64_t header_len = static_cast<int64_t>(read_le(prefix + 8, len_bytes));
    if (header_len > file_size - prefix_len) {
        fail(path, "header is truncated: the header length field says " +
                           std::to_string(header_len) + " bytes but only " +
                           std::to_string(file_size - prefix_len) + " bytes follow");
    }

    std::string header(static_cast<size_t>(header_len), '\0');
    in.seekg(prefix_len, std::ios::beg);
    in.read(&header[0], header_len);
    if (in.gcount() != header_len) fail(path, "read error in the header");

    Header h = HeaderParser(path, header).parse();
    NpyArray a;
    a.type = descr_to_type(path, h.descr);
    if (h.fortran_order) {
        fail(path,
             "Fortran order is not supported; save the array in C order "
             "(e.g. np.save(path, np.ascontiguousarray(a)))");
    }
    a.shape = std::move(h.shape);

    const int64_t elem = npy_type_size(a.type);
    int64_t n = 0;
    switch (checked_numel(a.shape, &n)) {
        case NumelStatus::ok: break;
        case NumelStatus::negative:
            fail(path, "header has shape " + shape_str(a.shape) + " with a negative dimension");
        case NumelStatus::overflow:
            fail(path, "header has shape " + shape_str(a.shape) +
                               ", whose number of elements does not fit in int64");
    }
    const int64_t data_avail = file_size - prefix_len - header_len;
    const std::string says = "header says shape " + shape_str(a.shape) + " = " + std::to_string(n) +
                             " elements of " + std::to_string(elem) + " bytes";
    int64_t need = 0;
    if (__builtin_mul_overflow(n, elem, &need)) {
        fail(path, says + ", more bytes than fit in int64, but the file has " +
                           std::to_string(data_avail) + " data bytes");
    }
    if (need > data_avail) {
        fail(path, says + " (" + std::to_string(need) + " bytes) but the file has " +
                           std::to_string(data_avail) + " data bytes");
    }
    if (need < data_avail) {
        fail(path, says + " (" + std::to_string(need) + " bytes) but the file has " +
                           std::to_string(data_avail) + " data bytes: " +
                           std::to_string(data_avail - need) + " extra bytes after the array data");
    }

    a.data.resize(static_cast<size_t>(need));
    if (need > 0) {
        in.read(reinterpret_cast<char*>(a.data.data()), need);
        if (in.gcount() != need) fail(path, "read error in the array data");
    }
    return a;
}

void write_npy(const std::string& path, const NpyArray& a) {
    const int64_t elem = npy_type_size(a.type);
    int64_t n = 0;
    switch (checked_numel(a.shape, &n)) {
        case NumelStatus::ok: break;
        case NumelStatus::negative:
            fail(path, "cannot write: shape " + shape_str(a.shape) + " has a negative dimension");
        case NumelStatus::overflow:
            fail(path, "cannot write: shape " + shape_str(a.shape) +
                               " has more elements than fit in int64");
    }
    int64_t need = 0;
    if (__builtin_mul_overflow(n, elem, &need) || static_cast<uint64_t>(need) != a.data.size()) {
        fail(path, "cannot write: shape " + shape_str(a.shape) + " = " + std::to_string(n) +
                           " elements of " + std::to_string(elem) + " bytes does not match the " +
                           std::to_string(a.data.size()) + " data bytes in the array");
    }

    std::string header = std::string("{'descr': '") + npy_type_descr(a.type) +
                         "', 'fortran_order': False, 'shape': " + shape_str(a.shape) + ", }";
    // Pad so the data starts on a 64-byte boundary, as numpy does, which lets readers mmap it
    // with any alignment up to 64. Version 1.0 is preferred because every numpy reads it.
    int len_bytes = 2;
    int64_t total = 8 + len_bytes + static_cast<int64_t>(header.size()) + 1;
    int64_t pad = (kAlign - total % kAlign) % kAlign;
    if (static_cast<int64_t>(header.size()) + 1 + pad > 65535) {
        len_bytes = 4;
        total = 8 + len_bytes + static_cast<int64_t>(header.size()) + 1;
        pad = (kAlign - total % kAlign) % kAlign;
    }
    header.append(static_cast<size_t>(pad), ' ');
    header += '\n';
    const uint64_t hlen = header.size();
    if (len_bytes == 4 && hlen > 0xffffffffu) {
        fail(path, "cannot write: header of " + std::to_string(hlen) + " bytes is too long");
    }

    std::string prefix(reinterpret_cast<const char*>(kMagic), 6);
    prefix += static_cast<char>(len_bytes == 2 ? 1 : 2);
    prefix += static_cast<char>(0);
    for (int i = 0; i < len_bytes; ++i) prefix += static_cast<char>((hlen >> (8 * i)) & 0xff);

    // The file is written next to the target, so the final rename() stays within one file system
    // and is atomic. It is created without a name (O_TMPFILE) and named only when complete: a
    // process killed while writing (a signal, a file-size limit, the OOM killer) leaves nothing
    // behind. Where the file system cannot do that, it is created under a temporary name, which
    // such a kill leaves behind, partial. pid + counter keeps concurrent writers (threads or
    // processes) from colliding on that name.
    static std::atomic<unsigned long> counter{0};
    auto temp_name = [&] {
        return path + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." +
               std::to_string(counter.fetch_add(1));
    };
    std::string dir = std::filesystem::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    TempFile tmp;
    std::string proc_link;  // the unnamed file, for linkat
    tmp.fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    if (tmp.fd >= 0) {
        // Naming it takes /proc (linkat's AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH): without
        // /proc, use a named temporary file.
        proc_link = "/proc/self/fd/" + std::to_string(tmp.fd);
        if (::access(proc_link.c_str(), F_OK) != 0) {
            ::close(tmp.fd);
            tmp.fd = -1;
            proc_link.clear();
        }
    } else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
        // EISDIR: a kernel without O_TMPFILE sees O_DIRECTORY | O_WRONLY. Any other error would
        // be the named file's as well.
        fail_io(path, "cannot create a temporary file in '" + dir + "'", errno);
    }
    // A name that exists already is someone else's (a writer killed before, whose pid was reused):
    // never clobbered, another one is tried.
    constexpr int kNameAttempts = 100;
    if (tmp.fd < 0) {
        for (int attempt = 1;; ++attempt) {
            const std::string name = temp_name();
            tmp.fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (tmp.fd >= 0) {
                tmp.name = name;
                break;
            }
            if (errno != EEXIST || attempt == kNameAttempts)
                fail_io(path, "cannot create the temporary file '" + name + "'", errno);
        }
    }
    const std::string what_tmp = tmp.name.empty() ? "the temporary file in '" + dir + "'" : "'" + tmp.name + "'";
    auto put = [&](const void* p, size_t len, const char* what) {
        const char* c = static_cast<const char*>(p);
        while (len > 0) {
            const ssize_t n = ::write(tmp.fd, c, std::min<size_t>(len, size_t(1) << 30));
            if (n < 0 && errno == EINTR) continue;
            // write() of a regular file returns 0 only where it cannot go on: as good as EIO.
            if (n <= 0) fail_io(path, std::string("write error in the ") + what + " of " + what_tmp, n < 0 ? errno : EIO);
            c += n;
            len -= static_cast<size_t>(n);
        }
    };
    put(prefix.data(), prefix.size(), "prefix");
    put(header.data(), header.size(), "header");
    put(a.data.data(), a.data.size(), "data");
    // fsync before the file gets the target's name: otherwise a crash could leave that name on an
    // empty or partial file, defeating the point of the atomic replace. It also reports any write
    // error left, so the close() in ~TempFile has nothing to report.
    if (::fsync(tmp.fd) != 0) fail_io(path, "flushing " + what_tmp + " failed", errno);
    if (!proc_link.empty()) {
        // Where the target does not exist, the complete file takes its name in one step.
        if (::linkat(AT_FDCWD, proc_link.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0) {
            tmp.committed = true;
            return;
        }
        if (errno != EEXIST) fail_io(path, "cannot give " + what_tmp + " its name", errno);
        // linkat cannot replace a file (Linux has no such flag: AT_LINK_REPLACE was proposed and
        // never merged), so the complete file gets a temporary name and is renamed over the target
        // at once. A kill between those two calls leaves it under that name: complete, the target
        // untouched, but left behind.
        for (int attempt = 1;; ++attempt) {
            const std::string name = temp_name();
            if (::linkat(AT_FDCWD, proc_link.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0) {
                tmp.name = name;
                break;
            }
            if (errno != EEXIST || attempt == kNameAttempts)
                fail_io(path, "cannot link " + what_tmp + " to '" + name + "'", errno);
        }
    }
    if (::rename(tmp.name.c_str(), path.c_str()) != 0)
        fail_io(path, "renaming the temporary file '" + tmp.name + "' over it failed", errno);
    tmp.committed = true;
}

NpyArray make_npy_f32(std::vector<int64_t> shape, const std::vector<float>& values) {
    NpyArray a;
    a.type = NpyType::f4;
    a.shape = std::move(shape);
    const int64_t n = a.numel();
    if (static_cast<uint64_t>(n) != values.size()) {
        throw Error(ErrorKind::invalid_argument,
                    "make_npy_f32: shape " + shape_str(a.shape) + " has " + std::to_string(n) +
                            " elements but " + std::to_string(values.size()) +
                            " values were given");
    }
    a.data.resize(values.size() * sizeof(float));
    if (!values.empty()) std::memcpy(a.data.data(), values.data(), a.data.size());
    return a;
}

std::vector<float> npy_to_f32(const NpyArray& a) {
    const int64_t n = a.numel();
    const int elem = npy_type_size(a.type);
    int64_t need = 0;
    if (__builtin_mul_overflow(n, int64_t{elem}, &need) ||
        static_cast<uint64_t>(need) != a.data.size()) {
        throw Error(ErrorKind::invalid_argument,
                    "npy_to_f32: shape " + shape_str(a.shape) + " of " + npy_type_descr(a.type) +
                            " needs " + std::to_string(n) + " x " + std::to_string(elem) +
                            " bytes but the array holds " + std::to_string(a.data.size()));
    }
    std::vector<float> out(static_cast<size_t>(n));
    const unsigned char* p = a.data.data();
    // memcpy per element: data is a byte vector, so typed loads would be misaligned in theory
    // and would violate strict aliasing in practice.
    for (int64_t i = 0; i < n; ++i, p += elem) {
        switch (a.type) {
            case NpyType::f2: {
                uint16_t h;
                std::memcpy(&h, p, 2);
                out[i] = half_to_float(h);
                break;
            }
            case NpyType::f4: std::memcpy(&out[i], p, 4); break;
            case NpyType::f8: {
                double d;
                std::memcpy(&d, p, 8);
                out[i] = static_cast<float>(d);
                break;
            }
        }
    }
    return out;
}

}  // namespace convkit::tools
