// Fuzzes the .npy reader (tools/npy.cpp) with whole files: every input either reads, or throws a
// convkit::Error of kind invalid_argument whose message names the file; nothing else (no other
// exception, no crash, no allocation the file's real size does not back, no hang). An array that
// reads is consistent (its data is exactly numel * element size bytes), converts to f32, and
// survives a write_npy / read_npy round trip byte for byte.
#include <cstring>
#include <exception>

#include "fuzz_common.hpp"
#include "npy.hpp"

using namespace convkit;
using namespace convkit::tools;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string& path = fuzz::scratch_path("npy_in");
    fuzz::write_file(path, data, size);
    NpyArray a;
    try {
        a = read_npy(path);
    } catch (const Error& e) {
        fuzz::expect_prefix(e, "npy file '" + path + "': ");
        return 0;
    } catch (const std::exception& e) {
        fuzz::finding("read_npy threw a non-convkit exception: %s", e.what());
    }
    int64_t n = a.numel();
    if (static_cast<uint64_t>(n) * static_cast<uint64_t>(npy_type_size(a.type)) != a.data.size())
        fuzz::finding("read_npy returned %zu data bytes for %lld elements of %d bytes", a.data.size(),
                      static_cast<long long>(n), npy_type_size(a.type));
    if (a.data.size() > size) fuzz::finding("read_npy returned more data bytes (%zu) than the file has (%zu)", a.data.size(), size);
    if (static_cast<int64_t>(npy_to_f32(a).size()) != n) fuzz::finding("npy_to_f32 returned the wrong element count");

    const std::string out = fuzz::scratch_path("npy_out");
    try {
        write_npy(out, a);
        NpyArray b = read_npy(out);
        if (b.type != a.type || b.shape != a.shape || b.data != a.data)
            fuzz::finding("write_npy / read_npy round trip changed the array");
    } catch (const std::exception& e) {
        fuzz::finding("an array read_npy accepted does not round-trip through write_npy: %s", e.what());
    }
    return 0;
}
