// Core behaviour around tensors: strided (non-dense) views going through the dense copy, the
// allocator hook, and copy() across layouts and dtypes. (Post-op parsing: test_post_ops.cpp; the
// reference engine: test_reference.cpp; the LRU cache: test_cache.cpp.)
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <vector>

#include "support/conv_tester.hpp"

using namespace convkit;
using namespace convkit::test;

namespace {

TEST(Core, StridedInputMatchesDense) {
    // src a [2,4,6,5] view of a [2,4,6,9] buffer, dst every other element of a twice-as-large
    // one: the dense result, gaps untouched (on the cpu engine: CpuShapes.StridedInputMatchesDense).
    ConvTester().engine(Engine::ref).channels(4, 3).input_size({6, 5}).kernel_size({3, 2}).padding({1, 0}, {1, 1})
        .check_strided_matches_dense();
}

class CountingAllocator : public Allocator {
public:
    std::atomic<int> allocs{0}, frees{0};
    void* allocate(std::size_t bytes, Device, void*) override {
        ++allocs;
        return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    }
    void deallocate(void* p, std::size_t, Device, void*) override {
        ++frees;
        std::free(p);
    }
};

TEST(Core, UserAllocator) {
    auto a = std::make_shared<CountingAllocator>();
    set_allocator(DeviceType::cpu, a);
    {
        Tensor t(DType::f32, {2, 3, 4, 4});
        EXPECT_EQ(a->allocs.load(), 1);
    }
    EXPECT_EQ(a->frees.load(), 1);
    set_allocator(DeviceType::cpu, nullptr);
    Tensor t2(DType::f32, {2, 3});
    EXPECT_EQ(a->allocs.load(), 1);  // back to the default allocator
}

TEST(Core, CopyConvertsLayoutAndDtype) {
    Tensor a(DType::f32, {2, 3, 4, 5});
    fill(a, -1, 1, 12);
    Tensor b(DType::bf16, {2, 3, 4, 5}, Layout::channels_last);
    copy(b, a);
    Tensor c(DType::f32, {2, 3, 4, 5});
    copy(c, b);
    const std::vector<double> va = to_host_f64(a), vc = to_host_f64(c);
    for (size_t i = 0; i < va.size(); ++i) EXPECT_EQ(vc[i], bf16_to_f32(f32_to_bf16(static_cast<float>(va[i])))) << "element " << i;
    Tensor wrong(DType::f32, {2, 3, 4, 6});
    EXPECT_THROW(copy(wrong, a), Error);
}

}  // namespace
