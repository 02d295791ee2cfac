// Tests for tools/desc.{hpp,cpp}: benchdnn convolution descriptor parsing (defaults,
// derived output sizes and paddings, dimensionality), str() round trips, flops(), every
// rejected input with its message, batch files, and the batch files shipped in inputs/.
#include "desc.hpp"

#include <convkit/error.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

namespace {

using convkit::Error;
using convkit::ErrorKind;
using convkit::tools::ConvDesc;
using convkit::tools::parse_conv_desc;
using convkit::tools::read_batch_file;
using A = std::array<int64_t, 3>;

void expect_same(const ConvDesc& a, const ConvDesc& b) {
    EXPECT_EQ(a.ndims, b.ndims);
    EXPECT_EQ(a.g, b.g);
    EXPECT_EQ(a.mb, b.mb);
    EXPECT_EQ(a.ic, b.ic);
    EXPECT_EQ(a.oc, b.oc);
    EXPECT_EQ(a.in, b.in);
    EXPECT_EQ(a.out, b.out);
    EXPECT_EQ(a.k, b.k);
    EXPECT_EQ(a.stride, b.stride);
    EXPECT_EQ(a.padding_l, b.padding_l);
    EXPECT_EQ(a.padding_r, b.padding_r);
    EXPECT_EQ(a.dilation, b.dilation);
    EXPECT_EQ(a.name, b.name);
}

// str() must read back to the same value and be a fixed point.
void expect_round_trip(const ConvDesc& d) {
    const std::string s = d.str();
    SCOPED_TRACE("str() = " + s);
    const ConvDesc back = parse_conv_desc(s, d.kind);
    expect_same(d, back);
    EXPECT_EQ(back.str(), s);
}

// ---------------------------------------------------------------------------------------
// Accepted descriptors: every field checked, in (d, h, w) order.

struct GoodCase {
    const char* label;
    std::string text;
    int ndims;
    int64_t g, mb, ic, oc;
    A in, out, k, stride, padding_l, padding_r;
    A dd;  // benchdnn's 0-based dilation, as the text spells it
    std::string name;
    double flops;
    std::string canonical;  // expected str()
};

std::ostream& operator<<(std::ostream& os, const GoodCase& c) { return os << c.text; }

const GoodCase kGood[] = {
        {"resnet_example", R"(mb32ic64ih56oc64oh56kh3ph1n"res2a_branch2b")", 2, 1, 32, 64, 64,
         {1, 56, 56}, {1, 56, 56}, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, {0, 1, 1}, {0, 0, 0},
         "res2a_branch2b", 2.0 * 32 * 64 * 56 * 56 * 64 * 9,
         R"(mb32ic64ih56oc64oh56kh3ph1n"res2a_branch2b")"},
        {"one_d", "ic16iw100oc16ow100kw3pw1", 1, 1, 2, 16, 16, {1, 1, 100}, {1, 1, 100},
         {1, 1, 3}, {1, 1, 1}, {0, 0, 1}, {0, 0, 1}, {0, 0, 0}, "", 2.0 * 2 * 16 * 100 * 16 * 3,
         "ic16iw100oc16ow100kw3pw1"},
        // 3D with only d values: h and w copy all of them (benchdnn's cubic shorthand).
        {"three_d_cubic", "mb1ic4id8oc8kd3sd2pd1", 3, 1, 1, 4, 8, {8, 8, 8}, {4, 4, 4},
         {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, "", 2.0 * 1 * 8 * 64 * 4 * 27,
         "mb1ic4id8oc8od4kd3sd2pd1"},
        {"three_d_not_cubic", "g2ic4id5ih6iw7oc4od3oh3ow4kd3kh3kw3sd2sh2sw2pd1ph1pw1", 3, 2, 2,
         4, 4, {5, 6, 7}, {3, 3, 4}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 0, 1}, {0, 0, 0}, "",
         2.0 * 2 * 4 * 36 * 2 * 27, "g2ic4id5ih6iw7oc4od3oh3ow4kd3kh3kw3sd2sh2sw2pd1ph1pw1"},
        // h == w but d differs: all three have to be written back.
        {"three_d_square_hw", "ic2id3ih5iw5oc2kd1kh3kw3", 3, 1, 2, 2, 2, {3, 5, 5}, {3, 3, 3},
         {1, 3, 3}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, "", 2.0 * 2 * 2 * 27 * 2 * 9,
         "ic2id3ih5iw5oc2od3oh3ow3kd1kh3kw3pd0ph0pw0"},
        {"depthwise", "g32mb1ic32ih112oc32oh112kh3ph1", 2, 32, 1, 32, 32, {1, 112, 112},
         {1, 112, 112}, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, {0, 1, 1}, {0, 0, 0}, "",
         2.0 * 1 * 32 * 112 * 112 * 1 * 9, "g32mb1ic32ih112oc32oh112kh3ph1"},
        {"grouped", "g4ic16ih5oc8kh3ph1", 2, 4, 2, 16, 8, {1, 5, 5}, {1, 5, 5}, {1, 3, 3},
         {1, 1, 1}, {0, 1, 1}, {0, 1, 1}, {0, 0, 0}, "", 2.0 * 2 * 8 * 25 * 4 * 9,
         "g4ic16ih5oc8oh5kh3ph1"},
        // Output given: the end padding is derived and differs from the start padding.
        {"strided_asym_pad", "ic3ih224oc64oh112kh7sh2ph3", 2, 1, 2, 3, 64, {1, 224, 224},
         {1, 112, 112}, {1, 7, 7}, {1, 2, 2}, {0, 3, 3}, {0, 2, 2}, {0, 0, 0}, "",
         2.0 * 2 * 64 * 112 * 112 * 3 * 49, "ic3ih224oc64oh112kh7sh2ph3"},
        // Output computed: benchdnn still derives padding_r from it, so it is 2 here too.
        {"strided_out_computed", "ic3ih224oc64kh7sh2ph3", 2, 1, 2, 3, 64, {1, 224, 224},
         {1, 112, 112}, {1, 7, 7}, {1, 2, 2}, {0, 3, 3}, {0, 2, 2}, {0, 0, 0}, "",
         2.0 * 2 * 64 * 112 * 112 * 3 * 49, "ic3ih224oc64oh112kh7sh2ph3"},
        // ResNet's 1x1 stride-2 downsample: the last input row is never read.
        {"negative_pad_r", "ic256ih56oc512oh28kh1sh2ph0", 2, 1, 2, 256, 512, {1, 56, 56},
         {1, 28, 28}, {1, 1, 1}, {1, 2, 2}, {0, 0, 0}, {0, -1, -1}, {0, 0, 0}, "",
         2.0 * 2 * 512 * 28 * 28 * 256, "ic256ih56oc512oh28kh1sh2ph0"},
        {"dilation", "ic4ih15oc4kh3ph3dh2", 2, 1, 2, 4, 4, {1, 15, 15}, {1, 15, 15}, {1, 3, 3},
         {1, 1, 1}, {0, 3, 3}, {0, 3, 3}, {0, 2, 2}, "", 2.0 * 2 * 4 * 225 * 4 * 9,
         "ic4ih15oc4oh15kh3ph3dh2"},
        {"dilation_strided_1d", "ic8iw32oc8kw3sw2pw2dw1", 1, 1, 2, 8, 8, {1, 1, 32},
         {1, 1, 16}, {1, 1, 3}, {1, 1, 2}, {0, 0, 2}, {0, 0, 1}, {0, 0, 1}, "",
         2.0 * 2 * 8 * 16 * 8 * 3, "ic8iw32oc8ow16kw3sw2pw2dw1"},
        // Output given, pad not: pad = ((o - 1) * s - i + ext) / 2, truncating.
        {"pad_from_out", "ic16ih16oc16oh16kh3", 2, 1, 2, 16, 16, {1, 16, 16}, {1, 16, 16},
         {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, {0, 1, 1}, {0, 0, 0}, "", 2.0 * 2 * 16 * 256 * 16 * 9,
         "ic16ih16oc16oh16kh3ph1"},
        {"pad_from_out_even_kernel", "ic8ih8oc8oh8kh2", 2, 1, 2, 8, 8, {1, 8, 8}, {1, 8, 8},
         {1, 2, 2}, {1, 1, 1}, {0, 0, 0}, {0, 1, 1}, {0, 0, 0}, "", 2.0 * 2 * 8 * 64 * 8 * 4,
         "ic8ih8oc8oh8kh2ph0"},
        {"non_square", "ic3ih8iw10oc5oh8ow5kh2kw3sw2ph0pw1", 2, 1, 2, 3, 5, {1, 8, 10},
         {1, 8, 5}, {1, 2, 3}, {1, 1, 2}, {0, 0, 1}, {0, 1, 0}, {0, 0, 0}, "",
         2.0 * 2 * 5 * 40 * 3 * 6, "ic3ih8iw10oc5oh8ow5kh2kw3sh1sw2ph0pw1"},
        // Padding larger than the kernel (benchdnn's "gemm" shapes).
        {"pad_exceeds_kernel", R"(g1ic16oc16_iw5ow8kw3pw3_n"conv_basic_1d:gemm")", 1, 1, 2,
         16, 16, {1, 1, 5}, {1, 1, 8}, {1, 1, 3}, {1, 1, 1}, {0, 0, 3}, {0, 0, 2}, {0, 0, 0},
         "conv_basic_1d:gemm", 2.0 * 2 * 16 * 8 * 16 * 3,
         R"(ic16iw5oc16ow8kw3pw3n"conv_basic_1d:gemm")"},
        // C++ truncating division, as benchdnn: (2 - 3) / 2 + 1 = 1, then padding_r = 1.
        {"truncating_out", "ic3ih2oc3kh3sh2", 2, 1, 2, 3, 3, {1, 2, 2}, {1, 1, 1}, {1, 3, 3},
         {1, 2, 2}, {0, 0, 0}, {0, 1, 1}, {0, 0, 0}, "", 2.0 * 2 * 3 * 1 * 3 * 9,
         "ic3ih2oc3oh1kh3sh2ph0"},
        // Entries in any order, '_' after any entry, including a trailing one.
        {"any_order_separators", "g2_kh3_oc8ph1_sh2_ih10mb4_ic8_", 2, 2, 4, 8, 8, {1, 10, 10},
         {1, 5, 5}, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, {0, 0, 0}, {0, 0, 0}, "",
         2.0 * 4 * 8 * 25 * 4 * 9, "g2mb4ic8ih10oc8oh5kh3sh2ph1"},
        // Default-valued entries of an unused dimension do not make it used.
        {"unused_dim_defaults", "ic3iw5oc3kw3sd1pd0dd0dh0sh1", 1, 1, 2, 3, 3, {1, 1, 5},
         {1, 1, 3}, {1, 1, 3}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, "",
         2.0 * 2 * 3 * 3 * 3 * 3, "ic3iw5oc3ow3kw3pw0"},
        // A w entry equal to what w copies from h is fine.
        {"copied_dim_agrees", "ic3ih5oc3kh3sh1sw1pw0dw0", 2, 1, 2, 3, 3, {1, 5, 5}, {1, 3, 3},
         {1, 3, 3}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, "", 2.0 * 2 * 3 * 9 * 3 * 9,
         "ic3ih5oc3oh3kh3ph0"},
        {"explicit_defaults", "g1mb2ic3ih5oc3kh3", 2, 1, 2, 3, 3, {1, 5, 5}, {1, 3, 3},
         {1, 3, 3}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, "", 2.0 * 2 * 3 * 9 * 3 * 9,
         "ic3ih5oc3oh3kh3ph0"},
        // benchdnn's "skip compute on kh" regression shape: 3D, dilated, mostly padding.
        {"padding_only_windows", "mb1ic16id1ih1iw1oc16od2oh2ow1kd3kh3kw1dd1dh1ph1pd1", 3, 1,
         1, 16, 16, {1, 1, 1}, {2, 2, 1}, {3, 3, 1}, {1, 1, 1}, {1, 1, 0}, {4, 4, 0},
         {1, 1, 0}, "", 2.0 * 1 * 16 * 4 * 16 * 9,
         "mb1ic16id1ih1iw1oc16od2oh2ow1kd3kh3kw1pd1ph1pw0dd1dh1dw0"},
        {"unquoted_name", "ic3iw5oc3kw3nconv:x*2", 1, 1, 2, 3, 3, {1, 1, 5}, {1, 1, 3},
         {1, 1, 3}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, "conv:x*2",
         2.0 * 2 * 3 * 3 * 3 * 3, R"(ic3iw5oc3ow3kw3pw0n"conv:x*2")"},
        {"quoted_name_with_space", R"(ic3iw5oc3kw3_n"a b#c")", 1, 1, 2, 3, 3, {1, 1, 5},
         {1, 1, 3}, {1, 1, 3}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, "a b#c",
         2.0 * 2 * 3 * 3 * 3 * 3, R"(ic3iw5oc3ow3kw3pw0n"a b#c")"},
        {"empty_name", R"(ic3iw5oc3kw3n"")", 1, 1, 2, 3, 3, {1, 1, 5}, {1, 1, 3}, {1, 1, 3},
         {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, "", 2.0 * 2 * 3 * 3 * 3 * 3,
         "ic3iw5oc3ow3kw3pw0"},
        {"int64_max_size", "mb1ic1iw9223372036854775807oc1kw1", 1, 1, 1, 1, 1,
         {1, 1, INT64_MAX}, {1, 1, INT64_MAX}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0},
         {0, 0, 0}, "", 2.0 * static_cast<double>(INT64_MAX),
         "mb1ic1iw9223372036854775807oc1ow9223372036854775807kw1pw0"},
};

class GoodDesc : public ::testing::TestWithParam<GoodCase> {};

TEST_P(GoodDesc, ParsesToExpectedValues) {
    const GoodCase& c = GetParam();
    const ConvDesc d = parse_conv_desc(c.text);
    EXPECT_EQ(d.ndims, c.ndims);
    EXPECT_EQ(d.g, c.g);
    EXPECT_EQ(d.mb, c.mb);
    EXPECT_EQ(d.ic, c.ic);
    EXPECT_EQ(d.oc, c.oc);
    EXPECT_EQ(d.in, c.in);
    EXPECT_EQ(d.out, c.out);
    EXPECT_EQ(d.k, c.k);
    EXPECT_EQ(d.stride, c.stride);
    EXPECT_EQ(d.padding_l, c.padding_l);
    EXPECT_EQ(d.padding_r, c.padding_r);
    EXPECT_EQ(d.dilation, (A{c.dd[0] + 1, c.dd[1] + 1, c.dd[2] + 1}));  // convkit's is 1-based
    EXPECT_EQ(d.name, c.name);
    EXPECT_DOUBLE_EQ(d.flops(), c.flops);
    EXPECT_EQ(d.str(), c.canonical);
}

TEST_P(GoodDesc, StrRoundTrips) { expect_round_trip(parse_conv_desc(GetParam().text)); }

// padding_r must follow benchdnn's formula in every dimension, however it was obtained.
TEST_P(GoodDesc, PadRightMatchesOutputFormula) {
    const ConvDesc d = parse_conv_desc(GetParam().text);
    for (int x = 3 - d.ndims; x < 3; ++x) {
        const int64_t ext = (d.k[x] - 1) * d.dilation[x] + 1;
        if (d.in[x] > (int64_t{1} << 40)) continue;  // the int64_max case would overflow here
        EXPECT_EQ(d.padding_r[x], (d.out[x] - 1) * d.stride[x] - d.in[x] + ext - d.padding_l[x]) << x;
        EXPECT_EQ((d.in[x] - ext + d.padding_l[x] + d.padding_r[x]) / d.stride[x] + 1, d.out[x]) << x;
        EXPECT_GT(d.padding_r[x] + d.stride[x], 0) << x;
    }
}

INSTANTIATE_TEST_SUITE_P(Desc, GoodDesc, ::testing::ValuesIn(kGood),
                         [](const ::testing::TestParamInfo<GoodCase>& i) { return std::string(i.param.label); });

TEST(Desc, DefaultsMatchBenchdnn) {
    const ConvDesc d = parse_conv_desc("ic3ih5oc3kh3");
    EXPECT_EQ(d.g, 1);
    EXPECT_EQ(d.mb, 2);  // benchdnn's str2desc starts from mb = 2
    EXPECT_EQ(d.stride, (A{1, 1, 1}));
    EXPECT_EQ(d.padding_l, (A{0, 0, 0}));
    EXPECT_EQ(d.dilation, (A{1, 1, 1}));
    EXPECT_EQ(d.out, (A{1, 3, 3}));
    // Unused leading dimension holds the neutral values.
    EXPECT_EQ(d.in[0], 1);
    EXPECT_EQ(d.k[0], 1);
    EXPECT_EQ(d.padding_r[0], 0);
}

TEST(Desc, HandBuiltDescRoundTrips) {
    ConvDesc d;
    d.ndims = 2;
    d.g = 3;
    d.mb = 7;
    d.ic = 6;
    d.oc = 9;
    d.in = {1, 9, 11};
    d.out = {1, 5, 6};
    d.k = {1, 3, 3};
    d.stride = {1, 2, 2};
    d.padding_l = {0, 1, 1};
    d.padding_r = {0, 1, 1};  // (5-1)*2 - 9 + 3 - 1 = 1 and (6-1)*2 - 11 + 3 - 1 = 1
    d.dilation = {1, 1, 1};
    d.name = "hand";
    EXPECT_EQ(d.str(), R"(g3mb7ic6ih9iw11oc9oh5ow6kh3kw3sh2sw2ph1pw1n"hand")");
    expect_same(parse_conv_desc(d.str()), d);
    EXPECT_DOUBLE_EQ(d.flops(), 2.0 * 7 * 9 * 30 * 2 * 9);
}

// ---------------------------------------------------------------------------------------
// Rejected descriptors: each error names the descriptor and what is wrong.

struct BadCase {
    const char* label;
    std::string text;
    std::string message;  // substring of what() after the "conv descriptor '...': " prefix
};

std::ostream& operator<<(std::ostream& os, const BadCase& c) { return os << c.text; }

const BadCase kBad[] = {
        {"empty", "", "empty descriptor"},
        {"zero_size", "ic3ih0oc4", "ih must be >= 1 (got 0)"},
        {"missing_ic", "ih5oc3kh3", "missing ic"},
        {"missing_oc", "ic3ih5kh3", "missing oc"},
        {"zero_ic", "ic0ih5oc3kh3", "ic must be >= 1 (got 0)"},
        {"zero_oc", "ic3ih5oc0kh3", "oc must be >= 1 (got 0)"},
        {"zero_g", "g0ic3ih5oc3kh3", "g must be >= 1 (got 0)"},
        {"zero_mb", "mb0ic3ih5oc3kh3", "mb must be >= 1 (got 0)"},
        {"zero_kernel", "ic3ih5oc3kh0", "kh must be >= 1 (got 0)"},
        {"zero_out", "ic3ih5oc3oh0kh3", "oh must be >= 1 (got 0)"},
        {"zero_stride", "ic3ih5oc3kh3sh0", "sh must be >= 1 (got 0)"},
        {"negative_pad", "ic3ih5oc3kh3ph-1", "ph must be >= 0 (got -1)"},
        {"negative_dil", "ic3iw5oc3kw3dw-2", "dw must be >= 0 (got -2)"},
        {"negative_size", "ic3id-4oc3kd3", "id must be >= 1 (got -4)"},
        {"ic_not_divisible", "g3ic4ih5oc3kh3", "ic 4 is not divisible by g 3"},
        {"oc_not_divisible", "g2ic4ih5oc3kh3", "oc 3 is not divisible by g 2"},
        {"no_spatial", "ic3oc3", "no spatial size"},
        {"missing_kernel", "ic3ih5oc3", "missing kh"},
        {"missing_input", "ic3oc3kh3", "missing ih"},
        {"w_without_input", "ic3ih5oc3ow5kh3", "missing iw"},
        // benchdnn completes w from h only as a whole; kw is not taken from kh.
        {"partial_w", "ic3ih10iw12oc3kh3", "missing kw"},
        {"pad_makes_dim_used", "ic3ih5oc3kh3ph1pw1", "missing iw"},
        {"stride_makes_dim_used", "ic3ih5oc3kh3sh2sw2", "missing iw"},
        {"kernel_too_big", "ic3ih1oc3kh3", "oh would be -1: kernel extent 3 does not fit in ih 1"},
        {"dilated_kernel_too_big", "ic3ih5oc3kh3dh2", "kernel extent 7 does not fit in ih 5"},
        {"derived_pad_negative", "ic3ih10oc3oh5kh1", "ph derived from oh would be negative (-2)"},
        {"out_too_small", "ic3ih10oc3oh3kh1ph0", "oh 3 is too small for ih 10"},
        {"out_too_small_strided", "ic3iw10oc3ow3kw1sw2pw0",
         "the derived end padding would be -5 (must be > -sw)"},
        {"duplicate", "ic3ih5oc3kh3ih6", "duplicate entry 'ih6' (already given as 'ih5')"},
        {"duplicate_ic", "ic3ic3iw5oc3kw3", "duplicate entry 'ic3'"},
        {"overflow_number", "ic3ih99999999999999999999oc3kh3",
         "'ih99999999999999999999' does not fit in int64"},
        {"overflow_derived", "ic3iw9223372036854775807oc3kw1pw1", "overflows int64"},
        {"unknown_entry", "ic3ih5oc3kh3x5", "unrecognized entry 'x5'"},
        {"unknown_char", "ic3ih5oc3kh3,", "unrecognized entry ','"},
        {"uppercase", "IC3ih5oc3kh3", "unrecognized entry 'IC3'"},
        {"trailing_space", "ic3iw5oc3kw3 ", "unrecognized entry ' '"},
        {"number_missing_at_end", "ic3ih5oc3kh", "'kh' must be followed by a number, got the end"},
        {"number_with_plus", "ic3ih5oc3kh+3", "'kh' must be followed by a number, got '+3'"},
        {"underscore_in_entry", "ic3ih5oc3kh_3", "'kh' must be followed by a number, got '_3'"},
        {"leading_underscore", "_ic3iw5oc3kw3", "leading '_'"},
        {"double_underscore", "ic3__iw5oc3kw3", "'_' at position 4 does not follow an entry"},
        {"unterminated_name", R"(ic3iw5oc3kw3n"abc)", "unterminated quoted name"},
        {"text_after_name", R"(ic3iw5oc3kw3n"a"b)", "unexpected text 'b' after the quoted name"},
        {"quote_in_name", R"(ic3iw5oc3kw3na"b)", "contains '\"'"},
        {"three_d_half_hw", "ic3id5ih5oc3kd3kh3",
         "3D descriptor gives h entries but no w entries"},
        {"three_d_half_wh", "ic3id5iw5oc3kd3kw3",
         "3D descriptor gives w entries but no h entries"},
        // benchdnn would silently turn sw1 into sw2 when copying h to w.
        {"copy_conflict_stride", "ic3ih5oc3kh3sh2sw1", "sw1 conflicts with sh2"},
        {"copy_conflict_pad", "ic3id5oc3kd3pd1ph0", "ph0 conflicts with pd1"},
        {"copy_conflict_dil", "ic3ih9oc3kh3dh1dw0", "dw0 conflicts with dh1"},
        // The conflict is with the pad derived from oh, not a written one.
        {"copy_conflict_derived_pad", "ic3ih5oc3oh5kh3pw0", "pw0 conflicts with ph1"},
};

class BadDesc : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadDesc, ThrowsInvalidArgumentNamingTheProblem) {
    const BadCase& c = GetParam();
    try {
        parse_conv_desc(c.text);
        FAIL() << "accepted '" << c.text << "'";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
        const std::string what = e.what();
        const std::string prefix = "conv descriptor '" + c.text + "': ";
        EXPECT_EQ(what.compare(0, prefix.size(), prefix), 0) << what;
        EXPECT_NE(what.find(c.message), std::string::npos) << what;
    }
}

INSTANTIATE_TEST_SUITE_P(Desc, BadDesc, ::testing::ValuesIn(kBad),
                         [](const ::testing::TestParamInfo<BadCase>& i) { return std::string(i.param.label); });

TEST(Desc, ExampleErrorMessageIsExact) {
    try {
        parse_conv_desc("ic3ih0oc4");
        FAIL();
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "conv descriptor 'ic3ih0oc4': ih must be >= 1 (got 0)");
    }
}

// ---------------------------------------------------------------------------------------
// Batch files.

class BatchFile : public ::testing::Test {
protected:
    std::string write(const std::string& name, const std::string& content) {
        const std::string path = ::testing::TempDir() + "convkit_test_desc_" + name;
        std::ofstream(path, std::ios::binary) << content;
        paths_.push_back(path);
        return path;
    }
    void TearDown() override {
        for (const auto& p : paths_) std::remove(p.c_str());
    }
    std::vector<std::string> paths_;
};

std::string error_of(const std::string& path) {
    try {
        read_batch_file(path);
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
        return e.what();
    }
    ADD_FAILURE() << "no error for " << path;
    return "";
}

TEST_F(BatchFile, CommentsBlankLinesAndSeveralPerLine) {
    const std::string path = write("good",
                                   "# header comment\n"
                                   "\n"
                                   "   \t\n"
                                   "ic3ih5oc3kh3n\"first\"   # trailing comment\n"
                                   "  ic3iw5oc3kw3n\"second\"\tic3id5oc3kd3n\"third\"\n"
                                   "#ic3iw5oc3kw3n\"commented out\"\n"
                                   "ic3iw5oc3kw3n\"with space # and hash\" ic3iw7oc3kw3\r\n"
                                   "g2ic4iw5oc4kw3");  // no final newline
    const auto descs = read_batch_file(path);
    ASSERT_EQ(descs.size(), 6u);
    EXPECT_EQ(descs[0].name, "first");
    EXPECT_EQ(descs[0].ndims, 2);
    EXPECT_EQ(descs[1].name, "second");
    EXPECT_EQ(descs[1].ndims, 1);
    EXPECT_EQ(descs[2].name, "third");
    EXPECT_EQ(descs[2].ndims, 3);
    EXPECT_EQ(descs[3].name, "with space # and hash");
    EXPECT_EQ(descs[4].in[2], 7);
    EXPECT_EQ(descs[5].g, 2);
}

TEST_F(BatchFile, StrOutputReadsBack) {
    std::string content;
    for (const auto& c : kGood) content += parse_conv_desc(c.text).str() + "\n";
    const auto descs = read_batch_file(write("roundtrip", content));
    ASSERT_EQ(descs.size(), std::size(kGood));
    for (size_t i = 0; i < descs.size(); ++i) expect_same(descs[i], parse_conv_desc(kGood[i].text));
}

TEST_F(BatchFile, EmptyFileHasNoProblems) {
    EXPECT_TRUE(read_batch_file(write("empty", "")).empty());
    EXPECT_TRUE(read_batch_file(write("comments", "# nothing\n\n# here\n")).empty());
}

TEST_F(BatchFile, BadLineNamesFileAndLine) {
    const std::string path = write("bad",
                                   "# comment\n"
                                   "ic3ih5oc3kh3\n"
                                   "\n"
                                   "ic3iw5oc3kw3 ic3ih0oc4  # second one is bad\n"
                                   "ic3ih5oc3kh3\n");
    EXPECT_EQ(error_of(path),
              "batch file '" + path + "', line 4: conv descriptor 'ic3ih0oc4': ih must be >= 1 (got 0)");
}

TEST_F(BatchFile, UnterminatedQuoteReportsLine) {
    const std::string path = write("quote", "ic3iw5oc3kw3\nic3iw5oc3kw3n\"abc def\n");
    const std::string what = error_of(path);
    EXPECT_NE(what.find("line 2: "), std::string::npos) << what;
    EXPECT_NE(what.find("unterminated quoted name"), std::string::npos) << what;
}

TEST_F(BatchFile, DriverOptionsAreRejected) {
    const std::string path = write("option", "ic3iw5oc3kw3\n--mb=32\n");
    const std::string what = error_of(path);
    EXPECT_NE(what.find("line 2: driver option '--mb=32' is not supported"), std::string::npos) << what;
}

TEST(BatchFileErrors, MissingFile) {
    const std::string path = ::testing::TempDir() + "convkit_test_desc_does_not_exist";
    EXPECT_EQ(error_of(path), "cannot open batch file '" + path + "'");
}

TEST(BatchFileErrors, Directory) {
    const std::string what = error_of(::testing::TempDir());
    EXPECT_NE(what.find("is a directory"), std::string::npos) << what;
}

// ---------------------------------------------------------------------------------------
// The batch files shipped in inputs/.

std::string inputs_dir() {
#ifdef CONVKIT_SOURCE_DIR
    return std::string(CONVKIT_SOURCE_DIR) + "/inputs";
#else
    return "inputs";
#endif
}

std::vector<ConvDesc> input(const std::string& name) { return read_batch_file(inputs_dir() + "/" + name); }

std::string base_name(const std::string& name) { return name.substr(0, name.find('*')); }

TEST(Inputs, EveryFileParsesAndRoundTrips) {
    size_t files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(inputs_dir())) {
        if (!entry.is_regular_file()) continue;
        ++files;
        SCOPED_TRACE(entry.path().string());
        // deconv_*: benchdnn deconvolution descriptors (the transposed convolution's input first).
        const bool deconv = entry.path().filename().string().rfind("deconv_", 0) == 0;
        const auto descs = read_batch_file(entry.path().string(), deconv ? convkit::tools::DescKind::deconv : convkit::tools::DescKind::conv);
        EXPECT_GE(descs.size(), 1u);
        for (const auto& d : descs) expect_round_trip(d);
    }
    EXPECT_GE(files, 7u);
}

TEST(Inputs, ResNet50) {
    struct Layer {
        const char* name;
        int64_t ic, oc, hw, k, s, p;
    };
    const Layer expected[] = {
            {"conv1", 3, 64, 224, 7, 2, 3},          {"res2_1x1a", 64, 64, 56, 1, 1, 0},
            {"res2_3x3", 64, 64, 56, 3, 1, 1},       {"res2_1x1b", 64, 256, 56, 1, 1, 0},
            {"res2_1x1c", 256, 64, 56, 1, 1, 0},     {"res3_1x1a", 256, 128, 56, 1, 1, 0},
            {"res3_3x3s2", 128, 128, 56, 3, 2, 1},   {"res3_1x1b", 128, 512, 28, 1, 1, 0},
            {"res3_ds", 256, 512, 56, 1, 2, 0},      {"res3_1x1c", 512, 128, 28, 1, 1, 0},
            {"res3_3x3", 128, 128, 28, 3, 1, 1},     {"res4_1x1a", 512, 256, 28, 1, 1, 0},
            {"res4_3x3s2", 256, 256, 28, 3, 2, 1},   {"res4_1x1b", 256, 1024, 14, 1, 1, 0},
            {"res4_ds", 512, 1024, 28, 1, 2, 0},     {"res4_1x1c", 1024, 256, 14, 1, 1, 0},
            {"res4_3x3", 256, 256, 14, 3, 1, 1},     {"res5_1x1a", 1024, 512, 14, 1, 1, 0},
            {"res5_3x3s2", 512, 512, 14, 3, 2, 1},   {"res5_1x1b", 512, 2048, 7, 1, 1, 0},
            {"res5_ds", 1024, 2048, 14, 1, 2, 0},    {"res5_1x1c", 2048, 512, 7, 1, 1, 0},
            {"res5_3x3", 512, 512, 7, 3, 1, 1},
    };
    const auto descs = input("resnet_50");
    ASSERT_EQ(descs.size(), std::size(expected));
    for (size_t i = 0; i < descs.size(); ++i) {
        const ConvDesc& d = descs[i];
        const Layer& l = expected[i];
        SCOPED_TRACE(l.name);
        EXPECT_EQ(d.name, l.name);
        EXPECT_EQ(d.ndims, 2);
        EXPECT_EQ(d.g, 1);
        EXPECT_EQ(d.mb, 2);  // left to the default; users pass --mb
        EXPECT_EQ(d.ic, l.ic);
        EXPECT_EQ(d.oc, l.oc);
        const int64_t o = (l.hw + 2 * l.p - l.k) / l.s + 1;
        EXPECT_EQ(d.in, (A{1, l.hw, l.hw}));
        EXPECT_EQ(d.out, (A{1, o, o}));
        EXPECT_EQ(d.k, (A{1, l.k, l.k}));
        EXPECT_EQ(d.stride, (A{1, l.s, l.s}));
        EXPECT_EQ(d.padding_l, (A{0, l.p, l.p}));
    }
    EXPECT_EQ(descs[0].padding_r, (A{0, 2, 2}));
    EXPECT_EQ(descs[8].padding_r, (A{0, -1, -1}));
}

bool is_depthwise(const ConvDesc& d) { return d.g > 1 && d.g == d.ic && d.g == d.oc; }

TEST(Inputs, MobileNets) {
    const auto v1 = input("mobilenet_v1");
    const auto v2 = input("mobilenet_v2");
    const auto v2dw = input("mobilenet_v2_dw");
    EXPECT_EQ(std::count_if(v1.begin(), v1.end(), is_depthwise), 9);
    ASSERT_EQ(v2dw.size(), 10u);
    std::set<std::string> v2_lines;
    for (const auto& d : v2) v2_lines.insert(d.str());
    EXPECT_EQ(v2_lines.size(), v2.size()) << "mobilenet_v2 lists distinct layers";
    EXPECT_EQ(std::count_if(v2.begin(), v2.end(), is_depthwise), 10);
    for (const auto& d : v2dw) {
        SCOPED_TRACE(d.str());
        EXPECT_TRUE(is_depthwise(d));
        EXPECT_EQ(d.k, (A{1, 3, 3}));
        EXPECT_EQ(v2_lines.count(d.str()), 1u);
    }
    // Counting the "*N" repeats gives the whole network: 52 convolutions in MobileNet v2.
    int layers = 0;
    for (const auto& d : v2) {
        const auto star = d.name.find('*');
        layers += star == std::string::npos ? 1 : std::stoi(d.name.substr(star + 1));
    }
    EXPECT_EQ(layers, 52);
    EXPECT_EQ(base_name(v2.front().name), "conv1");
    EXPECT_EQ(v2.back().ic, 320);
    EXPECT_EQ(v2.back().oc, 1280);
}

TEST(Inputs, OtherNetworksHaveTheirDimensionality) {
    for (const auto& d : input("unet_3d")) EXPECT_EQ(d.ndims, 3) << d.str();
    for (const auto& d : input("conv_1d")) EXPECT_EQ(d.ndims, 1) << d.str();
}

TEST(Inputs, SmallIsSmallAndCoversTheFeatures) {
    const auto descs = input("small");
    EXPECT_GE(descs.size(), 12u);
    bool nd[4] = {}, grouped = false, depthwise = false, s2 = false, s3 = false, d1 = false,
         d2 = false, asym = false, one_by_one = false;
    for (const auto& d : descs) {
        SCOPED_TRACE(d.str());
        EXPECT_EQ(d.mb, 2);
        EXPECT_LT(d.flops(), 2e6);
        nd[d.ndims] = true;
        grouped = grouped || (d.g > 1 && !is_depthwise(d));
        depthwise = depthwise || is_depthwise(d);
        bool all_one = true;
        for (int x = 3 - d.ndims; x < 3; ++x) {
            s2 = s2 || d.stride[x] == 2;
            s3 = s3 || d.stride[x] == 3;
            d1 = d1 || d.dilation[x] == 2;  // benchdnn's dh1
            d2 = d2 || d.dilation[x] == 3;  // dh2
            asym = asym || d.padding_l[x] != d.padding_r[x];
            all_one = all_one && d.k[x] == 1;
        }
        one_by_one = one_by_one || all_one;
    }
    EXPECT_TRUE(nd[1] && nd[2] && nd[3]);
    EXPECT_TRUE(grouped);
    EXPECT_TRUE(depthwise);
    EXPECT_TRUE(s2 && s3);
    EXPECT_TRUE(d1 && d2);
    EXPECT_TRUE(asym);
    EXPECT_TRUE(one_by_one);
}

}  // namespace
