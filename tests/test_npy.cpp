// Tests for tools/npy.{hpp,cpp}: round trips, the exact on-disk layout, tolerant parsing of
// valid headers, a clear invalid_argument error for every malformed input, atomic writes, and
// interoperability with a real NumPy when /usr/bin/python3 has it.
#include "npy.hpp"

#include <convkit/error.hpp>

#include <gtest/gtest.h>

#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using convkit::Error;
using convkit::ErrorKind;
using namespace convkit::tools;

namespace {

// Checks that fn throws convkit::Error of kind invalid_argument whose message contains every
// substring; reports the actual message otherwise, so a wording change is easy to diagnose.
::testing::AssertionResult ThrowsInvalid(const std::function<void()>& fn,
                                         std::initializer_list<std::string> substrings) {
    try {
        fn();
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::invalid_argument) {
            return ::testing::AssertionFailure()
                   << "kind is " << convkit::to_string(e.kind()) << ", message: " << e.what();
        }
        std::string msg = e.what();
        for (const auto& s : substrings) {
            if (msg.find(s) == std::string::npos) {
                return ::testing::AssertionFailure() << "message lacks \"" << s << "\": " << msg;
            }
        }
        return ::testing::AssertionSuccess() << msg;
    } catch (const std::exception& e) {
        return ::testing::AssertionFailure() << "threw a non-convkit exception: " << e.what();
    }
    return ::testing::AssertionFailure() << "did not throw";
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
}

// Builds an .npy byte string around a literal header, so tests control every byte.
// version 1 uses a 2-byte header length, 2 and 3 a 4-byte one; align=false skips the padding.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1,
                      int minor = 0, bool align = true) {
    const size_t len_bytes = major == 1 ? 2 : 4;
    std::string header = dict;
    if (align) {
        size_t total = 8 + len_bytes + header.size() + 1;
        header.append((64 - total % 64) % 64, ' ');
        header += '\n';
    }
    std::string out = "\x93NUMPY";
    out += static_cast<char>(major);
    out += static_cast<char>(minor);
    for (size_t i = 0; i < len_bytes; ++i)
        out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return out + header + data;
}

std::string f32_bytes(std::initializer_list<float> v) {
    std::string s(v.size() * 4, '\0');
    std::memcpy(&s[0], std::data(v), s.size());
    return s;
}

std::set<std::string> list_dir(const fs::path& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
}

uint32_t float_bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
}

float half_value(uint16_t h) {
    NpyArray a;
    a.type = NpyType::f2;
    a.shape = {1};
    a.data = {static_cast<unsigned char>(h & 0xff), static_cast<unsigned char>(h >> 8)};
    return npy_to_f32(a).at(0);
}

bool numpy_available() {
    return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

class Npy : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/convkit_npy_test.XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    std::string p(const std::string& name) const { return (dir_ / name).string(); }
    // Writes raw bytes to a file and returns its path, for the malformed-input tests.
    std::string file(const std::string& name, const std::string& bytes) {
        write_bytes(p(name), bytes);
        return p(name);
    }
    fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// Basics

TEST(NpyBasics, TypeSizesAndDescrs) {
    EXPECT_EQ(npy_type_size(NpyType::f2), 2);
    EXPECT_EQ(npy_type_size(NpyType::f4), 4);
    EXPECT_EQ(npy_type_size(NpyType::f8), 8);
    EXPECT_STREQ(npy_type_descr(NpyType::f2), "<f2");
    EXPECT_STREQ(npy_type_descr(NpyType::f4), "<f4");
    EXPECT_STREQ(npy_type_descr(NpyType::f8), "<f8");
}

TEST(NpyBasics, Numel) {
    NpyArray a;
    EXPECT_EQ(a.numel(), 1);  // 0-d
    a.shape = {2, 3, 4};
    EXPECT_EQ(a.numel(), 24);
    a.shape = {5, 0, 7};
    EXPECT_EQ(a.numel(), 0);
    // A zero dimension wins even when the other dimensions would overflow together.
    a.shape = {int64_t{1} << 40, int64_t{1} << 40, 0};
    EXPECT_EQ(a.numel(), 0);
    a.shape = {2, -3};
    EXPECT_TRUE(ThrowsInvalid([&] { (void)a.numel(); }, {"(2, -3)", "negative"}));
    a.shape = {int64_t{1} << 32, int64_t{1} << 32};
    EXPECT_TRUE(ThrowsInvalid([&] { (void)a.numel(); }, {"int64"}));
}

TEST(NpyBasics, MakeF32) {
    NpyArray a = make_npy_f32({2, 2}, {1.f, -2.f, 0.5f, 3.25f});
    EXPECT_EQ(a.type, NpyType::f4);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2}));
    ASSERT_EQ(a.data.size(), 16u);
    EXPECT_EQ(npy_to_f32(a), (std::vector<float>{1.f, -2.f, 0.5f, 3.25f}));
    EXPECT_TRUE(ThrowsInvalid(
            [] {
                make_npy_f32({2, 3}, {1.f, 2.f});
            },
            {"6 elements", "2 values"}));
    EXPECT_TRUE(ThrowsInvalid([] { make_npy_f32({-1}, {}); }, {"negative"}));
}

TEST(NpyBasics, NpyToF32RejectsInconsistentSize) {
    NpyArray a;
    a.type = NpyType::f8;
    a.shape = {3};
    a.data.resize(16);
    EXPECT_TRUE(ThrowsInvalid([&] { npy_to_f32(a); }, {"(3,)", "16"}));
}

TEST(NpyBasics, HalfDecoding) {
    EXPECT_EQ(half_value(0x3C00), 1.0f);
    EXPECT_EQ(half_value(0xC000), -2.0f);
    EXPECT_EQ(half_value(0x7BFF), 65504.0f);                         // largest finite
    EXPECT_EQ(half_value(0x0001), std::ldexp(1.0f, -24));            // smallest subnormal
    EXPECT_EQ(half_value(0x03FF), 1023.0f * std::ldexp(1.0f, -24));  // largest subnormal
    EXPECT_EQ(half_value(0x0400), std::ldexp(1.0f, -14));            // smallest normal
    EXPECT_EQ(half_value(0x3555), 0x555 * std::ldexp(1.0f, -12));    // 1/3 rounded to half
    EXPECT_EQ(float_bits(half_value(0x0000)), 0x00000000u);
    EXPECT_EQ(float_bits(half_value(0x8000)), 0x80000000u);  // -0 keeps its sign
    EXPECT_EQ(float_bits(half_value(0x8001)), float_bits(-std::ldexp(1.0f, -24)));
    EXPECT_EQ(half_value(0x7C00), std::numeric_limits<float>::infinity());
    EXPECT_EQ(half_value(0xFC00), -std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(half_value(0x7E00)));
    EXPECT_TRUE(std::isnan(half_value(0x7C01)));  // signalling NaN must not turn into inf
    EXPECT_EQ(float_bits(half_value(0x7E01)), 0x7FC02000u);  // payload kept
    EXPECT_TRUE(std::signbit(half_value(0xFE00)));
}

TEST(NpyBasics, DoubleToF32) {
    NpyArray a;
    a.type = NpyType::f8;
    a.shape = {4};
    const double v[4] = {0.1, -1e300, 1e300, 2.5};
    a.data.resize(sizeof v);
    std::memcpy(a.data.data(), v, sizeof v);
    std::vector<float> f = npy_to_f32(a);
    EXPECT_EQ(f[0], 0.1f);
    EXPECT_EQ(f[1], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(f[2], std::numeric_limits<float>::infinity());
    EXPECT_EQ(f[3], 2.5f);
}

// ---------------------------------------------------------------------------------------------
// Round trips and on-disk layout

TEST_F(Npy, RoundTripAllTypesRanksAndZeroSizes) {
    const std::vector<std::vector<int64_t>> shapes = {
            {},  {7},    {3, 4},    {2, 3, 4},       {1, 2, 3, 2}, {2, 1, 3, 1, 2},  // ranks 0..5
            {0}, {0, 3}, {2, 0, 4}, {1, 2, 0, 3, 1}, {3, 0}};                        // zero-size
    uint32_t seed = 12345;
    int files = 0;
    for (NpyType t : {NpyType::f2, NpyType::f4, NpyType::f8}) {
        for (const auto& shape : shapes) {
            NpyArray a;
            a.type = t;
            a.shape = shape;
            // Arbitrary bit patterns (NaNs, subnormals included): bytes must survive exactly.
            a.data.resize(static_cast<size_t>(a.numel() * npy_type_size(t)));
            for (auto& b : a.data) {
                seed = seed * 1664525u + 1013904223u;
                b = static_cast<unsigned char>(seed >> 24);
            }
            const std::string path = p("rt" + std::to_string(files++) + ".npy");
            write_npy(path, a);
            NpyArray b = read_npy(path);
            EXPECT_EQ(b.type, t) << path;
            EXPECT_EQ(b.shape, shape) << path;
            EXPECT_EQ(b.data, a.data) << path;
            EXPECT_EQ(b.numel(), a.numel()) << path;
        }
    }
    // Only the final files remain: no temporaries were left behind.
    EXPECT_EQ(list_dir(dir_).size(), static_cast<size_t>(files));
}

TEST_F(Npy, RoundTripF32Values) {
    const std::vector<float> v = {
            0.f, -1.5f, 3.4e38f, 1e-45f, std::numeric_limits<float>::infinity(), 7.f};
    write_npy(p("v.npy"), make_npy_f32({3, 2}, v));
    NpyArray a = read_npy(p("v.npy"));
    EXPECT_EQ(npy_to_f32(a), v);
}

TEST_F(Npy, WrittenLayoutMatchesNumpy) {
    write_npy(p("l.npy"), make_npy_f32({2, 3}, {1, 2, 3, 4, 5, 6}));
    const std::string bytes = read_bytes(p("l.npy"));
    ASSERT_GE(bytes.size(), 10u);
    EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
    EXPECT_EQ(bytes[6], '\x01');
    EXPECT_EQ(bytes[7], '\x00');
    const size_t hlen =
            static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    EXPECT_EQ((10 + hlen) % 64, 0u);
    ASSERT_EQ(bytes.size(), 10 + hlen + 24);
    const std::string header = bytes.substr(10, hlen);
    EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u)
            << header;
    EXPECT_EQ(header.back(), '\n');
    EXPECT_EQ(header.find_first_not_of(' ', 59), hlen - 1);  // only spaces, then the newline

    write_npy(p("s.npy"), make_npy_f32({}, {4.f}));
    EXPECT_NE(read_bytes(p("s.npy")).find("'shape': (), }"), std::string::npos);
    write_npy(p("o.npy"), make_npy_f32({5}, {1, 2, 3, 4, 5}));
    EXPECT_NE(read_bytes(p("o.npy")).find("'shape': (5,), }"), std::string::npos);
}

TEST_F(Npy, LongHeaderIsWrittenAsVersion2) {
    // 30000 dimensions of 1 make a header of ~90 KB, beyond the 65535 bytes of version 1.0.
    NpyArray a = make_npy_f32(std::vector<int64_t>(30000, 1), {42.f});
    write_npy(p("big.npy"), a);
    const std::string bytes = read_bytes(p("big.npy"));
    ASSERT_GE(bytes.size(), 12u);
    EXPECT_EQ(bytes[6], '\x02');
    EXPECT_EQ(bytes[7], '\x00');
    uint32_t hlen = 0;
    for (int i = 3; i >= 0; --i) hlen = (hlen << 8) | static_cast<unsigned char>(bytes[8 + i]);
    EXPECT_GT(hlen, 65535u);
    EXPECT_EQ((12 + hlen) % 64, 0u);
    EXPECT_EQ(bytes.size(), 12 + hlen + 4);
    NpyArray b = read_npy(p("big.npy"));
    EXPECT_EQ(b.shape, a.shape);
    EXPECT_EQ(npy_to_f32(b), std::vector<float>{42.f});
}

// ---------------------------------------------------------------------------------------------
// Valid header variants

TEST_F(Npy, ReadsVersion2Header) {
    NpyArray a = read_npy(
            file("v2.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                                     f32_bytes({1.5f, -3.f}), 2, 0)));
    EXPECT_EQ(a.shape, std::vector<int64_t>{2});
    EXPECT_EQ(npy_to_f32(a), (std::vector<float>{1.5f, -3.f}));
}

TEST_F(Npy, ReadsHeaderSpellingVariants) {
    const std::string six = f32_bytes({1, 2, 3, 4, 5, 6});
    const std::vector<std::string> dicts = {
            R"({"descr": "<f4", "fortran_order": False, "shape": (2, 3)})",  // double quotes
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}",     // no trailing comma
            "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4', }",   // reordered
            // mixed quotes, trailing comma inside the tuple
            "{'fortran_order': False, 'descr': \"<f4\", 'shape': (2,3,)}",
            // whitespace everywhere Python allows it
            " \t{ 'descr' :'<f4' ,\n 'fortran_order':False,'shape':( 2 , 3 ) , } \r\n",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",  // Python 2 longs
            "{'descr': '=f4', 'fortran_order': False, 'shape': (2, 3), }",    // native order
            "{'descr': '|f4', 'fortran_order': False, 'shape': (2, 3), }",
    };
    int i = 0;
    for (const auto& d : dicts) {
        for (bool align : {true, false}) {
            const std::string path = p("var" + std::to_string(i++) + ".npy");
            write_bytes(path, npy_bytes(d, six, 1, 0, align));
            NpyArray a;
            ASSERT_NO_THROW(a = read_npy(path)) << d;
            EXPECT_EQ(a.type, NpyType::f4) << d;
            EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3})) << d;
            EXPECT_EQ(npy_to_f32(a), (std::vector<float>{1, 2, 3, 4, 5, 6})) << d;
        }
    }
}

TEST_F(Npy, ReadsScalarOneTupleAndZeroSize) {
    NpyArray s = read_npy(
            file("s.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
                                    std::string("\0\0\0\0\0\0\xf0\x3f", 8))));
    EXPECT_TRUE(s.shape.empty());
    EXPECT_EQ(npy_to_f32(s), std::vector<float>{1.0f});

    NpyArray o = read_npy(
            file("o.npy", npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': (1,), }",
                                    std::string("\x00\x3c", 2))));
    EXPECT_EQ(o.shape, std::vector<int64_t>{1});
    EXPECT_EQ(npy_to_f32(o), std::vector<float>{1.0f});

    NpyArray z = read_npy(file(
            "z.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", "")));
    EXPECT_EQ(z.shape, (std::vector<int64_t>{0, 3}));
    EXPECT_TRUE(z.data.empty());
    EXPECT_TRUE(npy_to_f32(z).empty());
}

// ---------------------------------------------------------------------------------------------
// Malformed files

TEST_F(Npy, RejectsMissingAndNonRegularFiles) {
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(p("nope.npy")); }, {"nope.npy", "cannot open"}));
    fs::create_directory(p("d.npy"));
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(p("d.npy")); }, {"d.npy", "directory"}));
}

TEST_F(Npy, RejectsBadMagicAndTruncatedPrefix) {
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(file("e.npy", "")); },
                              {"e.npy", "empty", "not an .npy file"}));
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(file("t.npy", "hello world, this is text")); },
                              {"t.npy", "not an .npy file"}));
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(file("m.npy", "\x93NUM")); }, {"not an .npy file"}));
    EXPECT_TRUE(
            ThrowsInvalid([&] { read_npy(file("v.npy", "\x93NUMPY")); }, {"truncated", "version"}));
    EXPECT_TRUE(
            ThrowsInvalid([&] { read_npy(file("l.npy", std::string("\x93NUMPY\x01\x00\x10", 9))); },
                          {"truncated", "header length"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] { read_npy(file("l2.npy", std::string("\x93NUMPY\x02\x00\x10\x00", 10))); },
            {"truncated", "header length"}));
}

TEST_F(Npy, RejectsUnsupportedVersions) {
    const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
    EXPECT_TRUE(
            ThrowsInvalid([&] { read_npy(file("v3.npy", npy_bytes(dict, f32_bytes({1}), 3, 0))); },
                          {"v3.npy", "version 3.0", "not supported", "1.0 and 2.0"}));
    EXPECT_TRUE(
            ThrowsInvalid([&] { read_npy(file("v11.npy", npy_bytes(dict, f32_bytes({1}), 1, 1))); },
                          {"version 1.1", "not supported"}));
    EXPECT_TRUE(
            ThrowsInvalid([&] { read_npy(file("v0.npy", npy_bytes(dict, f32_bytes({1}), 0, 0))); },
                          {"version 0.0"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] { read_npy(file("v255.npy", npy_bytes(dict, f32_bytes({1}), 255, 7))); },
            {"version 255.7"}));
}

TEST_F(Npy, RejectsHeaderLongerThanFile) {
    // Version 1.0 claiming 0xffff header bytes, and 2.0 claiming 4 GB: neither may allocate.
    EXPECT_TRUE(ThrowsInvalid(
            [&] { read_npy(file("h1.npy", std::string("\x93NUMPY\x01\x00\xff\xff{'descr'", 17))); },
            {"header is truncated", "65535", "7 bytes follow"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file("h2.npy",
                              std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'", 19)));
            },
            {"header is truncated", "4294967295"}));
}

TEST_F(Npy, RejectsMissingKeys) {
    const std::string d = f32_bytes({1});
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file("a.npy", npy_bytes("{'fortran_order': False, 'shape': (1,), }", d)));
            },
            {"a.npy", "missing the key 'descr'"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] { read_npy(file("b.npy", npy_bytes("{'descr': '<f4', 'shape': (1,), }", d))); },
            {"missing the key 'fortran_order'"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file("c.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False}", d)));
            },
            {"missing the key 'shape'"}));
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(file("e.npy", npy_bytes("{}", d))); },
                              {"missing the key"}));
}

TEST_F(Npy, RejectsUnsupportedDtypes) {
    for (const char* descr : {"<i4", "|u1", "<c8", "|b1", "<f16", "<i8", "float32", "", "<f4 "}) {
        const std::string dict =
                std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (1,), }";
        EXPECT_TRUE(ThrowsInvalid([&] { read_npy(file("x.npy", npy_bytes(dict, f32_bytes({1})))); },
                                  {"x.npy", std::string("dtype '") + descr + "' is not supported",
                                   "'<f2', '<f4', '<f8'"}))
                << descr;
    }
    for (const char* descr : {">f2", ">f4", ">f8"}) {
        const std::string dict =
                std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (2,), }";
        EXPECT_TRUE(ThrowsInvalid(
                [&] { read_npy(file("be.npy", npy_bytes(dict, std::string(16, '\0')))); },
                {"be.npy", std::string("dtype '") + descr + "' is big-endian",
                 "only little-endian"}))
                << descr;
    }
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file("st.npy", npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': "
                                                  "False, 'shape': (1,), }",
                                                  f32_bytes({1}))));
            },
            {"structured"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file("n.npy",
                              npy_bytes("{'descr': 4, 'fortran_order': False, 'shape': (1,), }",
                                        f32_bytes({1}))));
            },
            {"'descr' must be a string"}));
}

TEST_F(Npy, RejectsFortranOrder) {
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(
                        file("f.npy",
                             npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                                       std::string(24, '\0'))));
            },
            {"f.npy", "Fortran order is not supported", "C order"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file("g.npy",
                              npy_bytes("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
                                        f32_bytes({1}))));
            },
            {"True or False"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file("h.npy",
                              npy_bytes("{'descr': '<f4', 'fortran_order': false, 'shape': (1,), }",
                                        f32_bytes({1}))));
            },
            {"True or False"}));
}

TEST_F(Npy, RejectsBadShapes) {
    auto with_shape = [&](const std::string& shape, const std::string& data = "") {
        return [this, shape, data] {
            read_npy(file("s.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': " +
                                                     shape + ", }",
                                             data)));
        };
    };
    EXPECT_TRUE(ThrowsInvalid(with_shape("(2, -3)"), {"s.npy", "(2, -3)", "negative"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(-1,)"), {"negative"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(4294967296, 4294967296, 4294967296)"),
                              {"does not fit in int64"}));
    // Fits in int64 as elements, not as bytes.
    EXPECT_TRUE(ThrowsInvalid(with_shape("(4611686018427387904,)"),
                              {"more bytes than fit in int64", "0 data bytes"}));
    // Plausible-looking but far larger than the file: must fail before allocating 4 EB.
    EXPECT_TRUE(ThrowsInvalid(with_shape("(1000000000, 1000000000)"),
                              {"(1000000000, 1000000000)", "the file has 0 data bytes"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(1000000000,)", f32_bytes({1, 2})),
                              {"the file has 8 data bytes"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(99999999999999999999,)"), {"does not fit in int64"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(-9223372036854775808,)"), {"negative"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(2.5,)"), {"integers"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("('2',)"), {"integers"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(2x,)"), {"integers"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(5)"), {"'(5)'", "(5,)"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("[2, 3]"), {"tuple", "list"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("5"), {"tuple"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(,)"), {"integers"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(2 3)"), {"expected ',' or ')'"}));
    EXPECT_TRUE(ThrowsInvalid(with_shape("(2, 3"), {"integers"}));  // "(2, 3, }"
}

TEST_F(Npy, RejectsDataSizeMismatch) {
    const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    EXPECT_TRUE(
            ThrowsInvalid([&] { read_npy(file("x.npy", npy_bytes(dict, std::string(20, '\0')))); },
                          {"npy file '" + p("x.npy") +
                           "': header says shape (2, 3) = 6 elements of 4 bytes (24 bytes) but the "
                           "file has 20 data bytes"}));
    EXPECT_TRUE(
            ThrowsInvalid([&] { read_npy(file("y.npy", npy_bytes(dict, std::string(28, '\0')))); },
                          {"y.npy", "28 data bytes", "4 extra bytes"}));
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                read_npy(file(
                        "z.npy",
                        npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }",
                                  "x")));
            },
            {"1 extra bytes"}));
}

TEST_F(Npy, RejectsMalformedDictSyntax) {
    const std::string d = f32_bytes({1});
    struct Case {
        std::string dict;
        std::string expect;
    };
    const std::vector<Case> cases = {
            {"", "not a Python dict"},
            {"['descr', '<f4']", "not a Python dict"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } junk",
             "unexpected text after"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }}", "unexpected text after"},
            {"{'descr': '<f4, 'fortran_order': False, 'shape': (1,), }",
             "expected ',' or '}' after the value of 'descr'"},
            {"{'descr': '<f4", "unterminated string"},
            {"{'descr': '<f4\\x', 'fortran_order': False, 'shape': (1,), }", "escape"},
            {"{'descr' '<f4', 'fortran_order': False, 'shape': (1,), }",
             "expected ':' after key 'descr'"},
            {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,), }", "expected ',' or '}'"},
            {"{descr: '<f4', 'fortran_order': False, 'shape': (1,), }", "expected a quoted key"},
            {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
             "duplicate key 'descr'"},
            {"{'descr': '<f4', 'fortran_order': False, 'fortran_order': False, 'shape': (1,), }",
             "duplicate key 'fortran_order'"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'shape': (1,)}",
             "duplicate key 'shape'"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
             "unexpected key 'extra'"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), ,}", "expected a quoted key"},
            {std::string("{'descr': '<f4',") + '\0' + " 'fortran_order': False, 'shape': (1,), }",
             "\\x00"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "expected ',' or '}'"},
    };
    for (const auto& c : cases) {
        EXPECT_TRUE(ThrowsInvalid([&] { read_npy(file("m.npy", npy_bytes(c.dict, d))); },
                                  {"m.npy", c.expect}))
                << c.dict;
    }
}

// Every truncation and many single-byte corruptions of a valid file must yield either a valid
// array or an invalid_argument error: never a crash, hang, other exception or huge allocation.
TEST_F(Npy, TruncationsAndCorruptionsNeverCrash) {
    write_npy(p("ok.npy"), make_npy_f32({2, 3}, {1, 2, 3, 4, 5, 6}));
    const std::string good = read_bytes(p("ok.npy"));
    for (size_t n = 0; n < good.size(); ++n) {
        write_bytes(p("t.npy"), good.substr(0, n));
        EXPECT_TRUE(ThrowsInvalid([&] { read_npy(p("t.npy")); }, {"t.npy"}))
                << "truncated to " << n;
    }
    const unsigned char replacements[] = {0x00, 0xff, '(', ')', '\'', ',', '-', '9', '}', ' '};
    int ok = 0, rejected = 0;
    for (size_t i = 0; i < good.size() - 24; ++i) {
        for (unsigned char r : replacements) {
            std::string bad = good;
            bad[i] = static_cast<char>(r);
            write_bytes(p("c.npy"), bad);
            try {
                NpyArray a = read_npy(p("c.npy"));
                EXPECT_EQ(a.data.size(), static_cast<size_t>(a.numel() * npy_type_size(a.type)));
                ++ok;
            } catch (const Error& e) {
                EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << e.what();
                ++rejected;
            }
        }
    }
    EXPECT_GT(ok, 0);
    EXPECT_GT(rejected, 0);
}

// ---------------------------------------------------------------------------------------------
// Writing: validation and atomic replacement

TEST_F(Npy, WriteRejectsInconsistentArrays) {
    NpyArray a;
    a.type = NpyType::f4;
    a.shape = {2, 3};
    a.data.resize(20);
    EXPECT_TRUE(ThrowsInvalid([&] { write_npy(p("w.npy"), a); },
                              {"w.npy", "(2, 3)", "6 elements", "20 data bytes"}));
    a.shape = {-2};
    EXPECT_TRUE(ThrowsInvalid([&] { write_npy(p("w.npy"), a); }, {"negative"}));
    EXPECT_TRUE(list_dir(dir_).empty());
}

TEST_F(Npy, WriteIntoMissingDirectoryLeavesNothing) {
    const std::string target = p("missing/sub/x.npy");
    EXPECT_TRUE(ThrowsInvalid(
            [&] {
                write_npy(target, make_npy_f32({2}, {1, 2}));
            },
            {"missing/sub/x.npy", "cannot write"}));
    EXPECT_FALSE(fs::exists(p("missing")));
    EXPECT_TRUE(list_dir(dir_).empty());
}

TEST_F(Npy, WriteReplacesExistingFile) {
    const std::string target = p("x.npy");
    write_npy(target, make_npy_f32({3}, {1, 2, 3}));
    write_npy(target, make_npy_f32({2, 2}, {9, 8, 7, 6}));
    NpyArray a = read_npy(target);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(npy_to_f32(a), (std::vector<float>{9, 8, 7, 6}));
    EXPECT_EQ(list_dir(dir_), std::set<std::string>{"x.npy"});

    // A non-npy file at the target is replaced as a whole, not overwritten in place: a hard
    // link to the old inode keeps the old bytes, which proves rename() rather than truncation.
    write_bytes(p("plain.npy"), "old contents that are long enough to notice");
    fs::create_hard_link(p("plain.npy"), p("link"));
    write_npy(p("plain.npy"), make_npy_f32({1}, {5}));
    EXPECT_EQ(read_bytes(p("link")), "old contents that are long enough to notice");
    EXPECT_EQ(npy_to_f32(read_npy(p("plain.npy"))), std::vector<float>{5});
}

TEST_F(Npy, FailedWriteLeavesExistingFilesUntouched) {
    write_npy(p("other.npy"), make_npy_f32({2}, {1, 2}));
    const std::string other = read_bytes(p("other.npy"));

    // Target is a directory: the rename must fail, the directory and its content survive.
    fs::create_directory(p("target.npy"));
    write_bytes(p("target.npy/inside"), "keep me");
    EXPECT_TRUE(ThrowsInvalid([&] { write_npy(p("target.npy"), make_npy_f32({1}, {3})); },
                              {"target.npy", "cannot write"}));
    EXPECT_TRUE(fs::is_directory(p("target.npy")));
    EXPECT_EQ(read_bytes(p("target.npy/inside")), "keep me");
    EXPECT_EQ(list_dir(p("target.npy")), std::set<std::string>{"inside"});

    // An inconsistent array must not touch the existing target either.
    NpyArray bad = make_npy_f32({2}, {7, 8});
    bad.data.pop_back();
    EXPECT_THROW(write_npy(p("other.npy"), bad), Error);

    // Temporary directory missing.
    EXPECT_THROW(write_npy(p("gone/other.npy"), make_npy_f32({1}, {3})), Error);

    EXPECT_EQ(read_bytes(p("other.npy")), other);
    EXPECT_EQ(list_dir(dir_), (std::set<std::string>{"other.npy", "target.npy"}));
}

// Lowers the file-size limit (RLIMIT_FSIZE, soft only: the hard one stays, so it can be raised
// back without privileges) for its lifetime. With SIGXFSZ ignored, a write beyond it fails with
// EFBIG: a file system failure every user can cause, root included (unlike a read-only mode).
class FileSizeLimit {
public:
    explicit FileSizeLimit(rlim_t bytes, bool ignore_sigxfsz) {
        getrlimit(RLIMIT_FSIZE, &old_);
        rlimit lower = old_;
        lower.rlim_cur = bytes;
        ok_ = setrlimit(RLIMIT_FSIZE, &lower) == 0;
        if (ignore_sigxfsz) old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    }
    ~FileSizeLimit() {
        setrlimit(RLIMIT_FSIZE, &old_);
        if (old_handler_ != SIG_ERR) ::signal(SIGXFSZ, old_handler_);
    }
    bool ok() const { return ok_; }

private:
    rlimit old_{};
    bool ok_ = false;
    void (*old_handler_)(int) = SIG_ERR;
};

// F5: an I/O failure is no invalid input; `convkit run` maps invalid_argument to exit status 2
// ("invalid input or usage") and backend to 1 ("other failures", README).
TEST_F(Npy, FileSystemFailureIsABackendErrorNamingFileAndCause) {
    write_npy(p("x.npy"), make_npy_f32({2}, {1, 2}));
    const std::string old = read_bytes(p("x.npy"));
    try {
        FileSizeLimit limit(4096, true);
        ASSERT_TRUE(limit.ok());
        write_npy(p("x.npy"), make_npy_f32({4096}, std::vector<float>(4096, 1.f)));
        FAIL() << "a 16 KiB write under a 4 KiB file-size limit succeeded";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::backend) << e.what();
        const std::string m = e.what();
        EXPECT_NE(m.find("npy file '" + p("x.npy") + "': cannot write: write error in the data"), std::string::npos) << m;
        EXPECT_NE(m.find("File too large"), std::string::npos) << m;
    }
    EXPECT_EQ(read_bytes(p("x.npy")), old);
    EXPECT_EQ(list_dir(dir_), std::set<std::string>{"x.npy"});
    // A name that leads nowhere stays invalid_argument (exit status 2): see the tests above.
}

// F6: a process killed while it writes leaves no file beside the target: the file has no name
// until it is complete (O_TMPFILE). Killed for real, by SIGXFSZ, in a child process.
TEST_F(Npy, ProcessKilledWhileWritingLeavesNoPartialFile) {
    write_npy(p("x.npy"), make_npy_f32({2}, {1, 2}));
    const std::string old = read_bytes(p("x.npy"));
    for (const char* target : {"x.npy", "new.npy"}) {  // replacing a file, and a first write
        const pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {  // nothing may return into gtest from here
            try {
                FileSizeLimit limit(4096, false);
                if (limit.ok()) write_npy(p(target), make_npy_f32({4096}, std::vector<float>(4096, 1.f)));
            } catch (...) {
            }
            _exit(3);  // not killed: the limit did not apply
        }
        int status = 0;
        ASSERT_EQ(waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ) << target << ": status " << status;
        EXPECT_EQ(read_bytes(p("x.npy")), old) << target;
        EXPECT_EQ(list_dir(dir_), std::set<std::string>{"x.npy"}) << target;
    }
}

// ---------------------------------------------------------------------------------------------
// Interoperability with a real NumPy

class NpyNumpy : public Npy {
protected:
    void SetUp() override {
        if (!numpy_available()) GTEST_SKIP() << "/usr/bin/python3 with numpy is not available";
        Npy::SetUp();
    }
    int run_python(const std::string& script) {
        write_bytes(p("script.py"), script);
        const std::string cmd = "/usr/bin/python3 '" + p("script.py") + "' '" + dir_.string() + "'";
        return std::system(cmd.c_str());
    }
};

TEST_F(NpyNumpy, ReadsFilesWrittenByNumpy) {
    ASSERT_EQ(run_python(R"PY(
import sys, numpy as np
d = sys.argv[1] + '/'
np.save(d + 'h.npy', np.array([1.0, -2.0, 65504.0, 2.0**-24, np.inf, -np.inf, 0.5],
                              dtype=np.float16))
np.save(d + 'f.npy', (np.arange(24, dtype=np.float32) / 4 - 2).reshape(2, 3, 4))
np.save(d + 'd.npy', np.array([[0.1], [-1e300], [2.5]], dtype=np.float64))
np.save(d + 'scalar.npy', np.float32(3.5))
np.save(d + 'empty.npy', np.zeros((0, 3), dtype=np.float32))
np.save(d + 'nan.npy', np.array([np.nan], dtype=np.float16))
with open(d + 'v2.npy', 'wb') as f:
    np.lib.format.write_array(f, np.array([7.0, 8.0], dtype=np.float32), version=(2, 0))
with open(d + 'v3.npy', 'wb') as f:
    np.lib.format.write_array(f, np.array([7.0, 8.0], dtype=np.float32), version=(3, 0))
np.save(d + 'fortran.npy', np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
np.save(d + 'big.npy', np.arange(3, dtype='>f4'))
np.save(d + 'int.npy', np.arange(3, dtype=np.int32))
)PY"),
              0);

    EXPECT_EQ(npy_to_f32(read_npy(p("h.npy"))),
              (std::vector<float>{1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24),
                                  std::numeric_limits<float>::infinity(),
                                  -std::numeric_limits<float>::infinity(), 0.5f}));
    EXPECT_EQ(read_npy(p("h.npy")).type, NpyType::f2);

    NpyArray f = read_npy(p("f.npy"));
    EXPECT_EQ(f.type, NpyType::f4);
    EXPECT_EQ(f.shape, (std::vector<int64_t>{2, 3, 4}));
    std::vector<float> fv = npy_to_f32(f);
    ASSERT_EQ(fv.size(), 24u);
    for (int i = 0; i < 24; ++i) EXPECT_EQ(fv[i], i / 4.0f - 2.0f) << i;

    NpyArray dd = read_npy(p("d.npy"));
    EXPECT_EQ(dd.type, NpyType::f8);
    EXPECT_EQ(dd.shape, (std::vector<int64_t>{3, 1}));
    double d0;
    std::memcpy(&d0, dd.data.data(), 8);
    EXPECT_EQ(d0, 0.1);
    EXPECT_EQ(npy_to_f32(dd),
              (std::vector<float>{0.1f, -std::numeric_limits<float>::infinity(), 2.5f}));

    NpyArray s = read_npy(p("scalar.npy"));
    EXPECT_TRUE(s.shape.empty());
    EXPECT_EQ(npy_to_f32(s), std::vector<float>{3.5f});

    NpyArray e = read_npy(p("empty.npy"));
    EXPECT_EQ(e.shape, (std::vector<int64_t>{0, 3}));
    EXPECT_TRUE(e.data.empty());

    EXPECT_TRUE(std::isnan(npy_to_f32(read_npy(p("nan.npy"))).at(0)));
    EXPECT_EQ(npy_to_f32(read_npy(p("v2.npy"))), (std::vector<float>{7.0f, 8.0f}));

    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(p("v3.npy")); }, {"v3.npy", "version 3.0"}));
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(p("fortran.npy")); },
                              {"fortran.npy", "Fortran order is not supported"}));
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(p("big.npy")); },
                              {"big.npy", "dtype '>f4' is big-endian"}));
    EXPECT_TRUE(ThrowsInvalid([&] { read_npy(p("int.npy")); },
                              {"int.npy", "dtype '<i4' is not supported"}));
}

TEST_F(NpyNumpy, NumpyReadsFilesWeWrite) {
    write_npy(p("a.npy"), make_npy_f32({2, 3}, {0.5f, -1.f, 2.f, 3.25f, 1e-45f, 3.4e38f}));
    write_npy(p("s.npy"), make_npy_f32({}, {-7.5f}));
    write_npy(p("z.npy"), make_npy_f32({2, 0, 3}, {}));
    NpyArray h;
    h.type = NpyType::f2;
    h.shape = {4};
    h.data = {0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00};  // 1, -2, 65504, 2^-24
    write_npy(p("h.npy"), h);
    NpyArray d;
    d.type = NpyType::f8;
    d.shape = {1, 1, 1, 1, 2};
    const double dv[2] = {0.1, -1e300};
    d.data.resize(16);
    std::memcpy(d.data.data(), dv, 16);
    write_npy(p("d.npy"), d);
    write_npy(p("v2.npy"), make_npy_f32(std::vector<int64_t>(30000, 1), {4.f}));

    EXPECT_EQ(run_python(R"PY(
import sys, numpy as np
d = sys.argv[1] + '/'
def check(name, dtype, shape, values):
    a = np.load(d + name)
    assert a.dtype == np.dtype(dtype), (name, a.dtype)
    assert a.shape == shape, (name, a.shape)
    assert a.flags['C_CONTIGUOUS']
    assert np.array_equal(a.ravel(), np.array(values, dtype=dtype)), (name, a)
check('a.npy', '<f4', (2, 3), [0.5, -1, 2, 3.25, 1e-45, 3.4e38])
check('s.npy', '<f4', (), [-7.5])
check('z.npy', '<f4', (2, 0, 3), [])
check('h.npy', '<f2', (4,), [1, -2, 65504, 2.0**-24])
check('d.npy', '<f8', (1, 1, 1, 1, 2), [0.1, -1e300])
with open(d + 'v2.npy', 'rb') as f:
    assert np.lib.format.read_magic(f) == (2, 0)
)PY"),
              0);
}

}  // namespace
