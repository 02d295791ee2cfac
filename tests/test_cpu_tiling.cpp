// Problems larger than an engine takes run as tiles (src/core/tiling.hpp): groups of whole
// images, or row ranges of one image with their halo rows. This suite lowers the tile size to
// 2000 elements (CONVKIT_TILE_ELEMENTS, set before the first call), so ordinary shapes are cut;
// each case must be tiled (the trace's "+tiles:N") and agree with the reference engine, which
// runs every problem whole. tests/large/large_tensors.cpp runs real 2^31-element tensors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "support/capture.hpp"
#include "support/cpu_cases.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

const bool kTileSize = [] {
    setenv("CONVKIT_TILE_ELEMENTS", "2000", 1);
    return true;
}();

// The number of tiles the cpu engine's run of `dir` was cut into (0: whole), and whether it
// agreed with the reference.
int tiles_of(const ConvTester& t, Dir dir, ::testing::AssertionResult* ok) {
    const int old = verbose();
    set_verbose(1);
    const std::string out = capture_stderr([&] { *ok = t.agrees(dir); });
    set_verbose(old);
    int tiles = 0;
    std::size_t at = 0;
    while ((at = out.find("+tiles:", at)) != std::string::npos) tiles = std::max(tiles, std::atoi(out.c_str() + (at += 7)));
    return tiles;
}

void check_tiled(const ConvTester& t, Dir dir, int min_tiles = 2) {
    ::testing::AssertionResult ok = ::testing::AssertionSuccess();
    const int n = tiles_of(t, dir, &ok);
    EXPECT_TRUE(ok);
    EXPECT_GE(n, min_tiles) << t.name(dir) << ": expected a tiled run";
}

void check_all_tiled(const ConvTester& t, int min_tiles = 2) {
    for (Dir d : {Dir::fwd, Dir::bwd_d, Dir::bwd_w}) check_tiled(t, d, min_tiles);
}

const Layout kLayouts[] = {Layout::channels_first, Layout::channels_last};

TEST(CpuTiling, WholeImages) {
    // 400 elements per image: 5 images per tile, the last tile 1.
    for (Layout l : kLayouts) check_all_tiled(cpu_case(DType::f32, l).mb(6).channels(3, 4).spatial(2, 10, 3).padding({1}));
}

TEST(CpuTiling, Rows2D) {
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f32, l).mb(2).channels(3, 4).input_size({40, 30}).kernel_size({3, 3}).padding({1}));
        // Stride, dilation and asymmetric padding: the first and last tiles get their own.
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 5).input_size({61, 23}).kernel_size({5, 3})
                            .stride({2, 1}).dilation({2, 1}).padding({3, 1}, {1, 2}));
        // Stride larger than the window: rows no window reads (their data gradient is zero).
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(4, 6).input_size({51, 20}).kernel_size({1, 1}).stride({2, 2}));
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(4, 6).input_size({50, 20}).kernel_size({2, 3})
                            .stride({3, 1}).padding({1, 0}, {0, 1}));
    }
}

TEST(CpuTiling, Rows1DAnd3D) {
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f32, l).mb(2).channels(4, 3).input_size({1000}).kernel_size({5}).stride({3}).padding({2}));
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(2, 3).input_size({13, 10, 11}).kernel_size({3, 3, 3})
                            .stride({2, 1, 1}).padding({1}));
    }
}

TEST(CpuTiling, Groups) {
    for (Layout l : kLayouts)
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(4, 6, 2).input_size({30, 24}).kernel_size({3, 3}).padding({1}));
}

TEST(CpuTiling, OtherDtypes) {
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f64, l).mb(1).channels(3, 4).input_size({40, 20}).kernel_size({3, 3}).padding({1}));
        for (DType dt : {DType::bf16, DType::f16})
            check_all_tiled(cpu_case(dt, l).mb(1).channels(3, 4).input_size({40, 20}).kernel_size({3, 3}).padding({1}));
    }
}

TEST(CpuTiling, ForwardPostOps) {
    // Binary operands of dst's full shape follow the tile; per-channel and scalar ones do not;
    // sum reads dst's old values through the channels-first copy.
    for (Layout l : kLayouts) {
        check_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 4).input_size({40, 25}).kernel_size({3, 3}).padding({1})
                        .post_ops("relu+sum:0.5+add:full+mul:per_oc+sub:scalar"),
                    Dir::fwd);
        check_tiled(cpu_case(DType::f32, l).mb(4).channels(3, 4).spatial(2, 12, 3).padding({1}).post_ops("add:full+tanh"),
                    Dir::fwd);
    }
}

TEST(CpuTiling, Transposed) {
    // The transposed forward is a backward-data with bias and post-ops on its output.
    for (Layout l : kLayouts) {
        check_all_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 4).input_size({25, 20}).kernel_size({3, 3})
                            .stride({2, 2}).padding({1}).transposed({1, 1}));
        check_tiled(cpu_case(DType::f32, l).mb(1).channels(3, 4).input_size({25, 20}).kernel_size({4, 4})
                        .stride({2, 2}).padding({1}).transposed().post_ops("add:full+relu"),
                    Dir::fwd);
    }
}

TEST(CpuTiling, SmallProblemsRunWhole) {
    ::testing::AssertionResult ok = ::testing::AssertionSuccess();
    EXPECT_EQ(tiles_of(cpu_case(DType::f32, Layout::channels_last).mb(2).channels(3, 4).spatial(2, 8, 3), Dir::fwd, &ok), 0);
    EXPECT_TRUE(ok);
}

TEST(CpuTiling, WeightsTooLargeAreRefused) {
    // 4 x 250 x 3 x 3 weights cannot be cut: the error names them.
    const ConvTester t = cpu_case(DType::f32, Layout::channels_last).mb(1).channels(250, 4).spatial(2, 8, 3).bias(false);
    const ::testing::AssertionResult r = t.agrees(Dir::fwd);
    ASSERT_FALSE(r);
    EXPECT_NE(std::string(r.message()).find("the weights [4, 250, 3, 3] have more than 2000 elements"), std::string::npos)
        << r.message();
}

// Refuses allocation number `fail_at` (counted from 1) with out_of_memory; counts live blocks.
class FailingAllocator final : public Allocator {
public:
    explicit FailingAllocator(std::shared_ptr<Allocator> base) : base_(std::move(base)) {}
    void arm(int64_t k) {
        std::lock_guard<std::mutex> lock(mu_);
        count_ = 0;
        fail_at_ = k;
    }
    int64_t count() const {
        std::lock_guard<std::mutex> lock(mu_);
        return count_;
    }
    std::size_t live() const {
        std::lock_guard<std::mutex> lock(mu_);
        return live_.size();
    }
    void* allocate(std::size_t bytes, Device device, void* stream) override {
        std::unique_lock<std::mutex> lock(mu_);
        if (++count_ == fail_at_) throw Error(ErrorKind::out_of_memory, "test allocator: out of memory");
        lock.unlock();
        void* p = base_->allocate(bytes, device, stream);
        lock.lock();
        live_[p] = bytes;
        return p;
    }
    void deallocate(void* p, std::size_t bytes, Device device, void* stream) override {
        {
            std::lock_guard<std::mutex> lock(mu_);
            live_.erase(p);
        }
        base_->deallocate(p, bytes, device, stream);
    }

private:
    std::shared_ptr<Allocator> base_;
    mutable std::mutex mu_;
    int64_t count_ = 0, fail_at_ = 0;
    std::map<void*, std::size_t> live_;
};

TEST(CpuTiling, BackwardWeightsOutOfMemoryLeavesOutputs) {
    // A tiled backward-weights writes diff_weights and diff_bias only after its last tile: a
    // refused allocation at any point (the tiler's temporaries, the engine's in any tile) leaves
    // both as they were and returns every block; with none refused it matches the reference.
    for (Layout l : kLayouts) {
        const Dims xs{1, 3, 40, 30}, ws{4, 3, 3, 3}, ys{1, 4, 40, 30};
        Tensor x(DType::f32, xs, l), dy(DType::f32, ys, l);
        fill(x, -1, 1, 1);
        fill(dy, -1, 1, 2);
        ConvParams prm;
        prm.pad(Dims{1});
        ConvOptions ref, cpu;
        ref.engine = Engine::ref;
        cpu.engine = Engine::cpu;
        Tensor want_w(DType::f32, ws), want_b(DType::f32, Dims{4});
        convolution_backward_weights(want_w.view(), want_b.view(), dy.view(), x.view(), prm, Stream(), {}, ref).wait();
        auto alloc = std::make_shared<FailingAllocator>(get_allocator(DeviceType::cpu));
        set_allocator(DeviceType::cpu, alloc);
        Tensor dw(DType::f32, ws), db(DType::f32, Dims{4});
        int64_t refused = 0;
        for (int64_t k = 1; k < 1000; ++k) {
            std::memset(dw.data(), 0x5a, dw.nbytes());
            std::memset(db.data(), 0x5a, db.nbytes());
            clear_cache(Engine::cpu);  // plans built inside the call, so their allocations are reached too
            const std::size_t live = alloc->live();
            alloc->arm(k);
            bool threw = false;
            try {
                convolution_backward_weights(dw.view(), db.view(), dy.view(), x.view(), prm, Stream(), {}, cpu).wait();
            } catch (const Error& e) {
                threw = true;
                EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << "allocation " << k << ": " << e.what();
            }
            alloc->arm(0);
            EXPECT_EQ(alloc->live(), live) << "allocation " << k << ": blocks not returned";
            if (!threw) break;
            ++refused;
            const unsigned char* w = static_cast<const unsigned char*>(dw.data());
            const unsigned char* b = static_cast<const unsigned char*>(db.data());
            bool same = true;
            for (std::size_t i = 0; i < dw.nbytes(); ++i) same = same && w[i] == 0x5a;
            for (std::size_t i = 0; i < db.nbytes(); ++i) same = same && b[i] == 0x5a;
            EXPECT_TRUE(same) << "allocation " << k << " refused: the outputs were written";
        }
        set_allocator(DeviceType::cpu, nullptr);
        EXPECT_GE(refused, 3) << "the tiled call made fewer allocations than its temporaries";
        double worst = 0;
        for (int64_t i = 0; i < dw.numel(); ++i)
            worst = std::max(worst, static_cast<double>(std::fabs(dw.ptr<float>()[i] - want_w.ptr<float>()[i])));
        for (int64_t i = 0; i < db.numel(); ++i)
            worst = std::max(worst, static_cast<double>(std::fabs(db.ptr<float>()[i] - want_b.ptr<float>()[i])));
        EXPECT_LT(worst, 1e-3) << "the call with no allocation refused differs from the reference";
    }
}

}  // namespace
