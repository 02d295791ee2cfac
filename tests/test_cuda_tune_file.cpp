// The tune file (CONVKIT_CUDA_TUNE_FILE) as a file: entries round-trip with their plan JSON (any
// bytes) and whether they were tuned; a file that is not one, truncated or garbled is reported on
// stderr and never crashes, never makes a huge allocation, and a foreign file is never
// overwritten. Needs no GPU (the file layer only); the plans themselves: test_cuda.cpp.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "convkit/convkit.hpp"
#include "cuda/tune_file.hpp"
#include "support/capture.hpp"

using namespace convkit;
using convkit::cuda::TunedChoice;
using convkit::test::capture_stderr;

namespace {

class TuneFile : public ::testing::Test {
protected:
    std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                ("convkit_tune_test_" + std::to_string(::getpid()) + "_" +
                                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::string path;
    void SetUp() override {
        std::filesystem::create_directories(dir);
        path = (dir / "tune.txt").string();
    }
    void TearDown() override {
        set_tune_file("");
        std::filesystem::remove_all(dir);
    }
    // Points the library at `path` afresh, so the next lookup reads the file again.
    void reopen() {
        set_tune_file(path + ".elsewhere");
        TunedChoice unused;
        cuda::tune_lookup("x", &unused);  // reads the other (missing) file: forgets the entries
        set_tune_file(path);
    }
    void write(const std::string& bytes) {
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f << bytes;
    }
    std::string read() {
        std::ifstream f(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(f), {});
    }
};

TEST_F(TuneFile, EntriesRoundTripWithAnyBytesAndTheTunedMark) {
    set_tune_file(path);
    TunedChoice a;
    a.engine_index = 7;
    a.knobs = {{1, 2}, {3, -4}};
    a.json = std::string("{\"plan\":\n\"K not a key\"\nJ 99\n\0binary", 38);
    TunedChoice b;
    b.engine_index = 2;
    b.json = "{}";
    b.tuned = false;
    cuda::tune_store("key a|with spaces", a);
    cuda::tune_store("key b", b);
    reopen();
    TunedChoice got;
    ASSERT_TRUE(cuda::tune_lookup("key a|with spaces", &got));
    EXPECT_EQ(got.engine_index, 7);
    EXPECT_EQ(got.knobs, a.knobs);
    EXPECT_EQ(got.json, a.json);
    EXPECT_TRUE(got.tuned);
    ASSERT_TRUE(cuda::tune_lookup("key b", &got));
    EXPECT_EQ(got.json, "{}");
    EXPECT_FALSE(got.tuned) << "heuristics' pick stays marked as such";
    EXPECT_FALSE(cuda::tune_lookup("key c", &got));
}

TEST_F(TuneFile, AForeignFileIsReportedAndLeftAlone) {
    const std::string foreign = "my notes\nnot a tune file\n";
    write(foreign);
    reopen();
    TunedChoice got, c;
    c.json = "{}";
    const std::string err = capture_stderr([&] {
        EXPECT_FALSE(cuda::tune_lookup("k", &got));
        cuda::tune_store("k", c);
    });
    EXPECT_NE(err.find("convkit: tune file '" + path + "': not a convkit tune file"), std::string::npos) << err;
    EXPECT_EQ(read(), foreign) << "a file that is not ours is never overwritten";
}

TEST_F(TuneFile, DamageKeepsTheEntriesBeforeItAndWarns) {
    set_tune_file(path);
    TunedChoice a;
    a.engine_index = 1;
    a.json = "{\"a\":1}";
    cuda::tune_store("good", a);
    const std::string intact = read();
    struct Case {
        const char* name;
        std::string tail;
        const char* says;
    } cases[] = {
        {"plan longer than the file", "K cut\nE 1 0\nJ 100\n{\"only a bit", "bytes where"},
        {"absurd plan size", "K huge\nE 1 0\nJ 18446744073709551615\n", "bytes where"},
        {"malformed engine line", "K bad\nE one two\nJ 2\n{}\n", "malformed engine line"},
        {"too many knobs", "K bad\nE 1 99999999999\nJ 2\n{}\n", "malformed engine line"},
        {"plan without a key", "J 2\n{}\n", "without a key"},
        {"unknown line", "Z what\n", "unknown line"},
    };
    for (const Case& c : cases) {
        write(intact + c.tail);
        reopen();
        TunedChoice got;
        std::string err = capture_stderr([&] { EXPECT_TRUE(cuda::tune_lookup("good", &got)) << c.name; });
        EXPECT_EQ(got.json, a.json) << c.name;
        EXPECT_NE(err.find(c.says), std::string::npos) << c.name << ": " << err;
        EXPECT_EQ(err.find("\n"), err.size() - 1) << c.name << ": one line: " << err;
    }
}

TEST_F(TuneFile, EmptyOrMissingFileIsSilent) {
    TunedChoice got;
    set_tune_file(path);  // does not exist yet
    EXPECT_EQ(capture_stderr([&] { EXPECT_FALSE(cuda::tune_lookup("k", &got)); }), "");
    write("");
    reopen();
    EXPECT_EQ(capture_stderr([&] { EXPECT_FALSE(cuda::tune_lookup("k", &got)); }), "");
}

}  // namespace
