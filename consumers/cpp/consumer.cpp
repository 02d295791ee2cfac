// A C++ program built outside convkit's tree against an installed convkit, found through
// find_package(convkit) (consumers/run.sh). It runs one convolution of every direction, the
// transposed ones included, on the best engine for the host and on the reference engine, fails
// unless they agree, and catches a convkit::Error thrown inside the library by its type (which
// needs the library to export the class's typeinfo).
#include <convkit/convkit.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

using namespace convkit;

namespace {

int failures = 0;

Tensor make(const Dims& sizes, uint64_t seed) {
    Tensor t(DType::f32, sizes, Layout::channels_last);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < t.numel(); ++i) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        t.ptr<float>()[i] = static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2 - 1);
    }
    return t;
}

// The measure of tests/support/tolerance.hpp: |got - want| / max(|want|, scale) <= 1e-5 for f32,
// `scale` the typical magnitude of a sum of K products of values in [-1, 1].
void compare(const char* what, const Tensor& got, const Tensor& want, double K) {
    const double scale = std::max(1.0, std::sqrt(K) / 3);
    double worst = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
        const double g = got.ptr<float>()[i], w = want.ptr<float>()[i];
        const double err = std::fabs(g - w) / std::max(std::fabs(w), scale);
        if (!(err <= worst)) worst = err;
    }
    if (!(worst <= 1e-5)) {
        std::fprintf(stderr, "FAIL %s: largest error %g against the reference engine\n", what, worst);
        ++failures;
    } else {
        std::printf("ok   %-32s %lld values, largest error %.2g\n", what, static_cast<long long>(got.numel()), worst);
    }
}

}  // namespace

int main() {
    const Engine engine = best_engine(Device::cpu());
    std::printf("convkit (C++ API), engine %s: %s\n", to_string(engine), engine_info(engine).c_str());
    ConvOptions ref;
    ref.engine = Engine::ref;

    // src [2, 8, 9, 9], weights [16, 4, 3, 3] in 2 groups, stride 2, pad 1.
    ConvParams p;
    p.stride = {2};
    p.pad({1});
    p.groups = 2;
    Tensor src = make({2, 8, 9, 9}, 1), wei = make({16, 4, 3, 3}, 2), bias = make({16}, 3);
    const Dims dst_sizes = output_shape(src.sizes(), wei.sizes(), p);
    Tensor dst = make(dst_sizes, 4), want = make(dst_sizes, 4);
    const PostOps relu = PostOps().eltwise(EltwiseAlg::relu);
    convolution_forward(dst, src, wei, bias, p, relu).wait();
    convolution_forward(want, src, wei, bias, p, relu, Stream(), {}, ref);
    compare("forward (bias, relu)", dst, want, 4 * 9);

    Tensor dsrc = make(src.sizes(), 5), dsrc_ref = make(src.sizes(), 5);
    convolution_backward_data(dsrc, want, wei, p);
    convolution_backward_data(dsrc_ref, want, wei, p, Stream(), {}, ref);
    compare("backward data", dsrc, dsrc_ref, 8 * 9);

    Tensor dw = make(wei.sizes(), 6), dw_ref = make(wei.sizes(), 6), db = make({16}, 7), db_ref = make({16}, 7);
    convolution_backward_weights(dw, db, want, src, p);
    convolution_backward_weights(dw_ref, db_ref, want, src, p, Stream(), {}, ref);
    compare("backward weights", dw, dw_ref, 2 * 25);
    compare("backward bias", db, db_ref, 2 * 25);

    // Transposed: weights [16, 4, 3, 3] read as [IC, OC/groups, k...], 16 -> 8 channels, 5x5 -> 9x9.
    ConvTransposeParams tp;
    tp.stride = {2};
    tp.pad({1});
    tp.groups = 2;
    Tensor tbias = make({8}, 8);
    if (conv_transpose_output_shape(dst_sizes, wei.sizes(), tp) != src.sizes()) {
        std::fprintf(stderr, "FAIL conv_transpose_output_shape\n");
        return 1;
    }
    conv_transpose_forward(dsrc, want, wei, tbias, tp, relu);
    conv_transpose_forward(dsrc_ref, want, wei, tbias, tp, relu, Stream(), {}, ref);
    compare("transposed forward (bias, relu)", dsrc, dsrc_ref, 8 * 9);
    conv_transpose_backward_data(dst, dsrc_ref, wei, tp);
    conv_transpose_backward_data(want, dsrc_ref, wei, tp, Stream(), {}, ref);
    compare("transposed backward data", dst, want, 4 * 9);
    Tensor tdb = make({8}, 9), tdb_ref = make({8}, 9);
    conv_transpose_backward_weights(dw, tdb, dsrc_ref, want, tp);
    conv_transpose_backward_weights(dw_ref, tdb_ref, dsrc_ref, want, tp, Stream(), {}, ref);
    compare("transposed backward weights", dw, dw_ref, 2 * 81);
    compare("transposed backward bias", tdb, tdb_ref, 2 * 81);

    // Weights prepacked once for inference.
    PackedWeights pw = prepack_weights(wei, src, p);
    convolution_forward(dst, src, pw, bias, p, relu);
    convolution_forward(want, src, wei, bias, p, relu, Stream(), {}, ref);
    compare("forward, prepacked weights", dst, want, 4 * 9);

    // An exception from inside the shared library, caught by type.
    try {
        convolution_forward(dst, wei, src, bias, p);
        std::fprintf(stderr, "FAIL an invalid call did not throw\n");
        ++failures;
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::invalid_argument) ++failures;
        std::printf("%s  invalid call: %s: %s\n", e.kind() == ErrorKind::invalid_argument ? "ok  " : "FAIL",
                    to_string(e.kind()), e.what());
    }

    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("all directions agree with the reference engine\n");
    return 0;
}
