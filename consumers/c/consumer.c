/* A C program built outside convkit's tree against an installed convkit, found through
 * pkg-config (consumers/run.sh):
 *     cc -std=c99 $(pkg-config --cflags convkit) consumer.c $(pkg-config --libs convkit) -lm
 * It runs one convolution of every direction, the transposed ones included, on the best engine
 * for the host and again on the reference engine, and fails unless they agree. The test suite
 * also builds it as a C99 test against the library in the build tree (ctest: c_api_c99). */
#include <convkit/convkit.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                                    \
    do {                                                                                               \
        convkit_status st_ = (call);                                                                   \
        if (st_ != CONVKIT_SUCCESS) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, convkit_status_string(st_), \
                    convkit_last_error());                                                             \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

static int failures = 0;

/* A host f32 tensor in channels-last layout with fixed-seed values in [-1, 1]. */
static float* make(convkit_tensor* t, int rank, const int64_t* sizes, unsigned seed) {
    const convkit_device cpu = {CONVKIT_DEVICE_CPU, 0};
    size_t n = 1;
    int i;
    float* data;
    unsigned long long x = seed * 2654435761ull + 1;
    for (i = 0; i < rank; ++i) n *= (size_t)sizes[i];
    data = (float*)malloc(n * sizeof(float));
    if (!data) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (i = 0; i < (int)n; ++i) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        data[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2 - 1);
    }
    CHECK(convkit_tensor_init(t, data, CONVKIT_F32, rank, sizes, rank > 1 ? CONVKIT_CHANNELS_LAST : CONVKIT_CHANNELS_FIRST, cpu));
    return data;
}

static size_t numel(const convkit_tensor* t) {
    size_t n = 1;
    int i;
    for (i = 0; i < t->rank; ++i) n *= (size_t)t->sizes[i];
    return n;
}

/* Both results must agree to f32 accuracy: |got - want| <= 1e-5 * max(|want|, scale), where
 * `scale` is the typical magnitude of a sum of K products of values in [-1, 1] (tests/support/
 * tolerance.hpp explains the measure). */
static void compare(const char* what, const float* got, const float* want, size_t n, double K) {
    double scale = sqrt(K) / 3 > 1 ? sqrt(K) / 3 : 1, worst = 0;
    size_t i;
    for (i = 0; i < n; ++i) {
        double ref = fabs(want[i]) > scale ? fabs(want[i]) : scale;
        double err = fabs((double)got[i] - want[i]) / ref;
        if (err > worst || err != err) worst = err;
    }
    if (!(worst <= 1e-5)) {
        fprintf(stderr, "FAIL %s: largest error %g against the reference engine\n", what, worst);
        ++failures;
    } else {
        printf("ok   %-32s %zu values, largest error %.2g\n", what, n, worst);
    }
}

int main(void) {
    /* A ResNet-like strided layer: src [2, 8, 9, 9], weights [16, 4, 3, 3] in 2 groups, stride 2, pad 1. */
    const int64_t src_sizes[] = {2, 8, 9, 9}, wei_sizes[] = {16, 4, 3, 3}, bias_sizes[] = {16};
    const int64_t tbias_sizes[] = {8};
    int64_t dst_sizes[CONVKIT_MAX_RANK];
    int dst_rank = 0;
    convkit_conv_params p;
    convkit_conv_transpose_params tp;
    convkit_exec best, ref;
    convkit_engine engine;
    convkit_tensor src, wei, bias, dst, want, dsrc, dsrc_ref, dw, dw_ref, db, db_ref, tbias;
    convkit_post_op relu;
    convkit_post_ops post;
    char info[256];
    const convkit_device host = {CONVKIT_DEVICE_CPU, 0};
    float *buf[16];
    int nbuf = 0, i;
    double k = 3 * 3;

    if (convkit_version() != CONVKIT_VERSION) {
        fprintf(stderr, "FAIL header version %s, library %s\n", CONVKIT_VERSION_STRING, convkit_version_string());
        return 1;
    }
    CHECK(convkit_best_engine(host, &engine));
    CHECK(convkit_engine_info(engine, info, sizeof info, NULL));
    printf("convkit %s (C API), engine %s: %s\n", convkit_version_string(), convkit_engine_name(engine), info);

    CHECK(convkit_conv_params_init(&p));
    p.stride.count = 1;
    p.stride.values[0] = 2;
    p.padding_l.count = p.padding_r.count = 1;
    p.padding_l.values[0] = p.padding_r.values[0] = 1;
    p.groups = 2;
    CHECK(convkit_output_shape(src_sizes, 4, wei_sizes, 4, &p, dst_sizes, &dst_rank));

    memset(&best, 0, sizeof best); /* default stream, no dependencies, auto engine */
    memset(&ref, 0, sizeof ref);
    ref.options.engine = CONVKIT_ENGINE_REF;
    memset(&relu, 0, sizeof relu);
    relu.kind = CONVKIT_POST_OP_ELTWISE;
    relu.eltwise = CONVKIT_ELTWISE_RELU;
    post.ops = &relu;
    post.count = 1;

    buf[nbuf++] = make(&src, 4, src_sizes, 1);
    buf[nbuf++] = make(&wei, 4, wei_sizes, 2);
    buf[nbuf++] = make(&bias, 1, bias_sizes, 3);
    buf[nbuf++] = make(&dst, dst_rank, dst_sizes, 4);
    buf[nbuf++] = make(&want, dst_rank, dst_sizes, 4);
    buf[nbuf++] = make(&dsrc, 4, src_sizes, 5);
    buf[nbuf++] = make(&dsrc_ref, 4, src_sizes, 5);
    buf[nbuf++] = make(&dw, 4, wei_sizes, 6);
    buf[nbuf++] = make(&dw_ref, 4, wei_sizes, 6);
    buf[nbuf++] = make(&db, 1, bias_sizes, 7);
    buf[nbuf++] = make(&db_ref, 1, bias_sizes, 7);
    buf[nbuf++] = make(&tbias, 1, tbias_sizes, 8);

    /* Convolution: dst = relu(conv(src) + bias); then both gradients, with dst as diff_dst. */
    CHECK(convkit_convolution_forward(&dst, &src, &wei, &bias, &p, &post, &best, NULL));
    CHECK(convkit_convolution_forward(&want, &src, &wei, &bias, &p, &post, &ref, NULL));
    compare("forward (bias, relu)", dst.data, want.data, numel(&dst), 4 * k);
    CHECK(convkit_convolution_backward_data(&dsrc, &want, &wei, &p, &best, NULL));
    CHECK(convkit_convolution_backward_data(&dsrc_ref, &want, &wei, &p, &ref, NULL));
    compare("backward data", dsrc.data, dsrc_ref.data, numel(&dsrc), 8 * k);
    CHECK(convkit_convolution_backward_weights(&dw, &db, &want, &src, &p, &best, NULL));
    CHECK(convkit_convolution_backward_weights(&dw_ref, &db_ref, &want, &src, &p, &ref, NULL));
    compare("backward weights", dw.data, dw_ref.data, numel(&dw), 2 * 25);
    compare("backward bias", db.data, db_ref.data, numel(&db), 2 * 25);

    /* The transposed convolution that maps dst's shape back to src's: weights [16, 4, 3, 3] are
     * [IC, OC/groups, k...] there, so 16 -> 8 channels; output_padding 0 gives 9x9 back. */
    CHECK(convkit_conv_transpose_params_init(&tp));
    tp.stride = p.stride;
    tp.padding_l = p.padding_l;
    tp.padding_r = p.padding_r;
    tp.groups = 2;
    CHECK(convkit_conv_transpose_forward(&dsrc, &want, &wei, &tbias, &tp, &post, &best, NULL));
    CHECK(convkit_conv_transpose_forward(&dsrc_ref, &want, &wei, &tbias, &tp, &post, &ref, NULL));
    compare("transposed forward (bias, relu)", dsrc.data, dsrc_ref.data, numel(&dsrc), 8 * k);
    CHECK(convkit_conv_transpose_backward_data(&dst, &dsrc_ref, &wei, &tp, &best, NULL));
    CHECK(convkit_conv_transpose_backward_data(&want, &dsrc_ref, &wei, &tp, &ref, NULL));
    compare("transposed backward data", dst.data, want.data, numel(&dst), 4 * k);
    CHECK(convkit_conv_transpose_backward_weights(&dw, &tbias, &dsrc_ref, &want, &tp, &best, NULL));
    CHECK(convkit_conv_transpose_backward_weights(&dw_ref, &tbias, &dsrc_ref, &want, &tp, &ref, NULL));
    compare("transposed backward weights", dw.data, dw_ref.data, numel(&dw), 2 * 81);

    /* An invalid call: a status and the message, no crash, nothing thrown through C. */
    {
        convkit_status st = convkit_convolution_forward(&dst, &wei, &src, NULL, &p, NULL, NULL, NULL);
        if (st != CONVKIT_INVALID_ARGUMENT || !strstr(convkit_last_error(), "convolution_forward: ")) {
            fprintf(stderr, "FAIL invalid call: status %s, message '%s'\n", convkit_status_string(st),
                    convkit_last_error());
            ++failures;
        } else {
            printf("ok   invalid call: %s\n", convkit_last_error());
        }
    }

    for (i = 0; i < nbuf; ++i) free(buf[i]);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all directions agree with the reference engine\n");
    return 0;
}
