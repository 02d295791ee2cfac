// Core behaviour beyond validation: post-op parsing and printing, strided (non-dense) tensors
// going through the dense copy, zero-size batches, the LRU cache, the allocator hook,
// PackedWeights on the reference engine, and copy() across layouts and dtypes.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "convkit/convkit.hpp"
#include "core/lru_cache.hpp"

using namespace convkit;

namespace {

const ConvOptions kRef{Engine::ref, {}};

void fill(const Tensor& t, unsigned seed) {
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> u(-1, 1);
    for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = u(g);
}

// Logical-order values of any f32 tensor.
std::vector<float> values(const TensorView& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    copy(TensorView(v.data(), DType::f32, t.sizes), t);
    return v;
}

TEST(PostOps, ParseAndPrint) {
    std::vector<std::string> args;
    PostOps ops = parse_post_ops("relu:0.5+linear:2:-1+clip:0:6+sum:0.25+add:f.npy+gelu_erf", &args);
    ASSERT_EQ(ops.size(), 6u);
    EXPECT_EQ(ops[0].eltwise, EltwiseAlg::relu);
    EXPECT_FLOAT_EQ(ops[0].alpha, 0.5f);
    EXPECT_FLOAT_EQ(ops[1].alpha, 2.f);
    EXPECT_FLOAT_EQ(ops[1].beta, -1.f);
    EXPECT_EQ(ops[3].kind, PostOp::Kind::sum);
    EXPECT_FLOAT_EQ(ops[3].scale, 0.25f);
    EXPECT_EQ(ops[4].kind, PostOp::Kind::binary);
    ASSERT_EQ(args.size(), 1u);
    EXPECT_EQ(args[0], "f.npy");
    EXPECT_EQ(ops.str(), "relu:0.5+linear:2:-1+clip:0:6+sum:0.25+add+gelu_erf");
    EXPECT_TRUE(ops.has_sum());
    // Defaults.
    PostOps d = parse_post_ops("relu+linear+elu+swish+sum");
    EXPECT_FLOAT_EQ(d[0].alpha, 0.f);
    EXPECT_FLOAT_EQ(d[1].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[2].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[3].alpha, 1.f);
    EXPECT_FLOAT_EQ(d[4].scale, 1.f);
}

TEST(Core, StridedInputMatchesDense) {
    // src as a [2,4,6,5] view of a larger [2,4,6,9] buffer (columns 0..4), and a transposed-
    // strides weight view: both must give the dense result on every engine.
    Tensor big(DType::f32, {2, 4, 6, 9});
    fill(big, 1);
    TensorView src_view(big.data(), DType::f32, {2, 4, 6, 5}, {216, 54, 9, 1});
    ASSERT_EQ(src_view.layout(), Layout::strided);
    Tensor src(DType::f32, {2, 4, 6, 5});
    copy(src, src_view);
    Tensor wei(DType::f32, {3, 4, 3, 2});
    fill(wei, 2);
    ConvParams p;
    p.padding_l = {1, 0};
    p.padding_r = {1, 1};
    Dims ds = output_shape(src.sizes(), wei.sizes(), p);
    for (Engine e : available_engines()) {
        if (e == Engine::cuda) continue;
        ConvOptions o{e, {}};
        Tensor d1(DType::f32, ds), d2(DType::f32, ds);
        convolution_forward(d1, src, wei, {}, p, {}, {}, {}, o).wait();
        convolution_forward(d2, src_view, wei, {}, p, {}, {}, {}, o).wait();
        EXPECT_EQ(values(d1), values(d2)) << to_string(e);
        // Strided output: every second element of a wider buffer; the gaps stay untouched.
        std::vector<float> wide(static_cast<size_t>(d1.numel() * 2), 42.f);
        Dims st = dense_strides(ds, Layout::channels_first);
        for (int i = 0; i < st.rank(); ++i) st[i] *= 2;
        TensorView dv(wide.data(), DType::f32, ds, st);
        convolution_forward(dv, src, wei, {}, p, {}, {}, {}, o).wait();
        EXPECT_EQ(values(dv), values(d1)) << to_string(e);
        for (size_t i = 1; i < wide.size(); i += 2) ASSERT_EQ(wide[i], 42.f);
    }
}

TEST(Core, ZeroBatch) {
    Tensor src(DType::f32, {0, 4, 5, 5}), wei(DType::f32, {3, 4, 3, 3}), dst(DType::f32, {0, 3, 3, 3});
    fill(wei, 3);
    convolution_forward(dst, src, wei, {}, ConvParams{}, {}, {}, {}, kRef).wait();
    // The weight gradient of an empty batch is zero, bias gradient too.
    Tensor dw(DType::f32, {3, 4, 3, 3}), db(DType::f32, {3});
    fill(dw, 4);
    fill(db, 5);
    convolution_backward_weights(dw, db, dst, src, ConvParams{}, {}, {}, kRef).wait();
    for (float v : values(dw)) ASSERT_EQ(v, 0.f);
    for (float v : values(db)) ASSERT_EQ(v, 0.f);
}

TEST(Core, SumPostOpReadsPriorDst) {
    Tensor src(DType::f32, {1, 2, 4, 4}), wei(DType::f32, {2, 2, 1, 1}), dst(DType::f32, {1, 2, 4, 4});
    fill(src, 6);
    fill(wei, 7);
    fill(dst, 8);
    std::vector<float> prior = values(dst);
    Tensor plain(DType::f32, {1, 2, 4, 4});
    convolution_forward(plain, src, wei, {}, ConvParams{}, {}, {}, {}, kRef).wait();
    PostOps po;
    po.sum(0.5f);
    convolution_forward(dst, src, wei, {}, ConvParams{}, po, {}, {}, kRef).wait();
    std::vector<float> got = values(dst), conv = values(plain);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], conv[i] + 0.5f * prior[i]);
}

TEST(Core, KnownValues) {
    // 1x1x3x3 input 1..9, 2x2 kernel of ones, no padding: each output is the sum of a 2x2 window.
    float s[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 1, 1, 1}, b[1] = {0.5f}, d[4] = {};
    convolution_forward(TensorView(d, DType::f32, {1, 1, 2, 2}), TensorView(s, DType::f32, {1, 1, 3, 3}),
                        TensorView(w, DType::f32, {1, 1, 2, 2}), TensorView(b, DType::f32, {1}), ConvParams{},
                        parse_post_ops("linear:2:1"), {}, {}, kRef)
        .wait();
    // (1+2+4+5 + 0.5) * 2 + 1 = 26, (2+3+5+6+.5)*2+1 = 34, (4+5+7+8+.5)*2+1 = 50, (5+6+8+9+.5)*2+1 = 58
    EXPECT_EQ(std::vector<float>(d, d + 4), (std::vector<float>{26, 34, 50, 58}));
    // Backward data of a ones kernel: each input counts the outputs it feeds.
    float dd[4] = {1, 1, 1, 1}, ds[9] = {};
    convolution_backward_data(TensorView(ds, DType::f32, {1, 1, 3, 3}), TensorView(dd, DType::f32, {1, 1, 2, 2}),
                              TensorView(w, DType::f32, {1, 1, 2, 2}), ConvParams{}, {}, {}, kRef)
        .wait();
    EXPECT_EQ(std::vector<float>(ds, ds + 9), (std::vector<float>{1, 2, 1, 2, 4, 2, 1, 2, 1}));
}

TEST(Core, LruCacheCounters) {
    core::LruCache<int, int> c(2);
    int built = 0;
    auto make = [&] { ++built; return std::make_shared<int>(built); };
    EXPECT_EQ(*c.get_or_create(1, make), 1);
    EXPECT_EQ(*c.get_or_create(1, make), 1);
    EXPECT_EQ(*c.get_or_create(2, make), 2);
    EXPECT_EQ(*c.get_or_create(1, make), 1);  // 1 is now most recent
    EXPECT_EQ(*c.get_or_create(3, make), 3);  // evicts 2
    EXPECT_EQ(*c.get_or_create(2, make), 4);  // rebuilt
    CacheStats s = c.stats();
    EXPECT_EQ(s.hits, 2u);
    EXPECT_EQ(s.misses, 4u);
    EXPECT_EQ(s.evictions, 2u);
    EXPECT_EQ(s.size, 2u);
    EXPECT_EQ(s.capacity, 2u);
}

TEST(Core, LruCacheThreads) {
    core::LruCache<int, int> c(64);
    std::atomic<int> wrong{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                int k = (i * 7 + t) % 100;
                if (*c.get_or_create(k, [k] { return std::make_shared<int>(k * 3); }) != k * 3) ++wrong;
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_LE(c.stats().size, 64u);
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

TEST(Core, PackedWeightsOnReference) {
    Tensor src(DType::f32, {2, 3, 6, 6}), wei(DType::f32, {4, 3, 3, 3});
    fill(src, 9);
    fill(wei, 10);
    ConvParams p;
    p.pad({1});
    PackedWeights pw = prepack_weights(wei, src, p, {}, kRef);
    EXPECT_EQ(pw.engine(), Engine::ref);
    EXPECT_EQ(pw.sizes(), wei.sizes());
    Tensor d1(DType::f32, {2, 4, 6, 6}), d2(DType::f32, {2, 4, 6, 6});
    convolution_forward(d1, src, wei, {}, p, {}, {}, {}, kRef).wait();
    fill(wei, 11);  // the packed copy must not see later changes to the caller's weights
    convolution_forward(d2, src, pw, {}, p).wait();
    EXPECT_EQ(values(d1), values(d2));
}

TEST(Core, CopyConvertsLayoutAndDtype) {
    Tensor a(DType::f32, {2, 3, 4, 5});
    fill(a, 12);
    Tensor b(DType::bf16, {2, 3, 4, 5}, Layout::channels_last);
    copy(b, a);
    Tensor c(DType::f32, {2, 3, 4, 5});
    copy(c, b);
    std::vector<float> va = values(a), vc = values(c);
    for (size_t i = 0; i < va.size(); ++i) EXPECT_EQ(vc[i], bf16_to_f32(f32_to_bf16(va[i])));
    Tensor wrong(DType::f32, {2, 3, 4, 6});
    EXPECT_THROW(copy(wrong, a), Error);
}

TEST(Core, DeterministicReference) {
    Tensor src(DType::f32, {2, 8, 9, 9}), wei(DType::f32, {8, 8, 3, 3}), d(DType::f32, {2, 8, 9, 9});
    fill(src, 13);
    fill(d, 14);
    ConvParams p;
    p.pad({1});
    Tensor w1(DType::f32, {8, 8, 3, 3}), w2(DType::f32, {8, 8, 3, 3});
    convolution_backward_weights(w1, {}, d, src, p, {}, {}, kRef).wait();
    convolution_backward_weights(w2, {}, d, src, p, {}, {}, kRef).wait();
    EXPECT_EQ(std::memcmp(w1.data(), w2.data(), w1.nbytes()), 0);
}

}  // namespace
