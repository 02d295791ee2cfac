// Reading and writing NumPy .npy files, so that convkit's tools and tests can exchange tensors
// with NumPy (reference results, inputs, dumps) without a Python dependency at run time.
//
// Scope, on purpose narrow: only little-endian floating point ('<f2' IEEE half, '<f4', '<f8'),
// only C order, format versions 1.0 and 2.0 (3.0 only adds UTF-8 field names, which plain
// float arrays never need). Everything else is rejected with a convkit::Error of kind
// invalid_argument whose message names the file and the offending value; the reader never
// trusts a size from the file before checking it against the file's actual size.
//
// Byte-order prefixes: '<' is little-endian; '=' (native) and '|' (not applicable) are
// accepted as little-endian too, because convkit only builds for little-endian hosts (npy.cpp
// refuses to compile otherwise). '>' is rejected as big-endian.
//
// fortran_order True is rejected even for rank <= 1 arrays, where the layouts coincide:
// numpy itself writes False for those, so a True there means the file came from elsewhere.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace convkit::tools {

enum class NpyType { f2, f4, f8 };  // '<f2' (IEEE half), '<f4', '<f8'

int npy_type_size(NpyType);           // 2, 4, 8
const char* npy_type_descr(NpyType);  // "<f2", "<f4", "<f8"

struct NpyArray {
    NpyType type = NpyType::f4;
    std::vector<int64_t> shape;       // empty = 0-d scalar (1 element)
    std::vector<unsigned char> data;  // C order, little-endian, numel()*size bytes
    // Product of shape (1 for 0-d). Throws convkit::Error (invalid_argument) for a negative
    // dimension or a product that does not fit in int64, rather than overflowing.
    int64_t numel() const;
};

// Throws convkit::Error(invalid_argument) for unreadable, malformed or unsupported files.
NpyArray read_npy(const std::string& path);

// Writes to a temporary file in the same directory, then rename()s it over `path`, so a failure
// never leaves a half-written or damaged file at `path` (an existing file stays untouched).
// Throws convkit::Error(invalid_argument) if `a` is inconsistent (negative dims, data size not
// numel()*size) or `path` leads nowhere (a missing directory, a directory), and
// Error(backend) when the file system fails the write (full, read-only, I/O error, size limit).
void write_npy(const std::string& path, const NpyArray& a);

// Convenience for f32 data. Throws if values.size() != product of shape.
NpyArray make_npy_f32(std::vector<int64_t> shape, const std::vector<float>& values);

// Converts f2/f4/f8 to float. f2 is decoded exactly (every half is representable as a float,
// including subnormals, infinities and NaNs, whose payload is kept). f8 is rounded to nearest
// float, so values beyond the float range become +-inf.
std::vector<float> npy_to_f32(const NpyArray& a);

}  // namespace convkit::tools
