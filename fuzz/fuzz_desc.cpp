// Fuzzes the benchdnn descriptor parser (tools/desc.cpp). The first byte picks conv or deconv and
// one descriptor or a whole batch file; the rest is the text. Every input either parses or throws
// a convkit::Error of kind invalid_argument that names the descriptor (or the batch file and line).
// A descriptor that parses obeys the relations desc.hpp promises (sizes >= 1, groups divide the
// channels, padding_r derived from the output size, the deconv output_padding limit) and its
// canonical str() reads back to the same value.
#include <exception>
#include <string>

#include "desc.hpp"
#include "fuzz_common.hpp"

using namespace convkit;
using namespace convkit::tools;

namespace {

bool same(const ConvDesc& a, const ConvDesc& b) {
    return a.kind == b.kind && a.ndims == b.ndims && a.g == b.g && a.mb == b.mb && a.ic == b.ic && a.oc == b.oc &&
           a.in == b.in && a.out == b.out && a.k == b.k && a.stride == b.stride && a.padding_l == b.padding_l &&
           a.padding_r == b.padding_r && a.dilation == b.dilation && a.name == b.name;
}

void check(const ConvDesc& d, const std::string& text) {
    const char* t = text.c_str();
    if (d.ndims < 1 || d.ndims > 3) convkit::fuzz::finding("'%s': ndims %d", t, d.ndims);
    if (d.g < 1 || d.mb < 1 || d.ic < 1 || d.oc < 1 || d.ic % d.g || d.oc % d.g)
        convkit::fuzz::finding("'%s': g %lld mb %lld ic %lld oc %lld", t, (long long)d.g, (long long)d.mb,
                               (long long)d.ic, (long long)d.oc);
    for (int x = 3 - d.ndims; x < 3; ++x) {
        if (d.in[x] < 1 || d.out[x] < 1 || d.k[x] < 1 || d.stride[x] < 1 || d.dilation[x] < 1 || d.padding_l[x] < 0)
            convkit::fuzz::finding("'%s': dimension %d has a size, stride, dilation or padding out of range", t, x);
        // The relation of desc.hpp, in __int128 so that it cannot overflow here.
        const __int128 ext = static_cast<__int128>(d.k[x] - 1) * d.dilation[x] + 1;
        const bool deconv = d.kind == DescKind::deconv;
        const __int128 strided = deconv ? d.in[x] : d.out[x], plain = deconv ? d.out[x] : d.in[x];
        const __int128 pr = (strided - 1) * d.stride[x] - plain + ext - d.padding_l[x];
        if (pr != d.padding_r[x]) convkit::fuzz::finding("'%s': padding_r of dimension %d is not the derived one", t, x);
        if (!deconv && pr <= -d.stride[x]) convkit::fuzz::finding("'%s': padding_r %lld <= -stride", t, (long long)d.padding_r[x]);
        if (deconv && pr < 0 && -pr >= d.stride[x] && -pr >= d.dilation[x])
            convkit::fuzz::finding("'%s': output_padding %lld not below stride or dilation", t, (long long)-d.padding_r[x]);
    }
    const std::string canon = d.str();
    ConvDesc back;
    try {
        back = parse_conv_desc(canon, d.kind);
    } catch (const std::exception& e) {
        convkit::fuzz::finding("'%s' parses, but its str() '%s' does not: %s", t, canon.c_str(), e.what());
    }
    if (!same(back, d)) convkit::fuzz::finding("'%s' -> str() '%s' reads back as another problem", t, canon.c_str());
    (void)d.flops();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const DescKind kind = (data[0] & 1) ? DescKind::deconv : DescKind::conv;
    const bool batch = (data[0] & 2) != 0;
    const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    const std::string prefix = kind == DescKind::deconv ? "deconv descriptor '" : "conv descriptor '";
    if (!batch) {
        // One descriptor: what the command line hands over (no newlines, no NUL).
        if (text.find_first_of(std::string("\n\0", 2)) != std::string::npos) return 0;
        try {
            check(parse_conv_desc(text, kind), text);
        } catch (const Error& e) {
            convkit::fuzz::expect_prefix(e, prefix);
        } catch (const std::exception& e) {
            convkit::fuzz::finding("parse_conv_desc threw a non-convkit exception: %s", e.what());
        }
        return 0;
    }
    const std::string& path = convkit::fuzz::scratch_path("batch");
    convkit::fuzz::write_file(path, data + 1, size - 1);
    try {
        for (const ConvDesc& d : read_batch_file(path, kind)) check(d, d.str());
    } catch (const Error& e) {
        convkit::fuzz::expect_prefix(e, "batch file '" + path + "', line ");
    } catch (const std::exception& e) {
        convkit::fuzz::finding("read_batch_file threw a non-convkit exception: %s", e.what());
    }
    return 0;
}
