/* convkit's C API (C99): the same library as the C++ API in convkit.hpp, for C programs and for
 * languages that bind to C (an FFI needs plain structs and status codes, not exceptions).
 *
 * Conventions
 * - Every function that can fail returns a convkit_status; CONVKIT_SUCCESS is 0. The message of
 *   the last call made on the calling thread is convkit_last_error(): the text a C++
 *   convkit::Error carries for the same mistake (it names the argument and the values), "" after a
 *   call that succeeded. No C++ exception leaves this API.
 * - Tensors are convkit_tensor values: a data pointer, a dtype, sizes and strides in elements in
 *   PyTorch's logical order (N, C, spatial... for activations; OC, IC/groups, k... for weights), and
 *   a device. convkit never owns their memory. convkit_tensor_init fills dense strides.
 * - Optional arguments are NULL pointers: no bias, no post-ops, default execution (the CPU stream,
 *   or the device's default convkit stream for CUDA tensors; no dependencies; the auto engine).
 * - Handles (streams, events, packed weights) are created by convkit_*_create / returned by calls
 *   and released with the matching convkit_*_destroy, which accepts NULL.
 *
 * Stability (this header is the stable interface of libconvkit.so.0)
 * - While the SONAME stays libconvkit.so.0: no function is removed or changes its signature, no
 *   enumerator changes its value, no struct changes its layout, and statuses keep their meaning.
 *   New functions and new enumerators (appended) may come in minor versions. Anything else bumps
 *   the SONAME, and the major version with it once it reaches 1.
 * - Message texts (convkit_last_error, convkit_engine_info) are for people, not for parsing.
 * - The C++ API (convkit.hpp) is source-compatible across patch versions only, and binary
 *   compatible only with the same compiler ABI; use this header where an ABI must hold. */
#ifndef CONVKIT_CONVKIT_H
#define CONVKIT_CONVKIT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define CONVKIT_C_API __attribute__((visibility("default")))
#else
#define CONVKIT_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version (CMakeLists.txt reads the project's version from these three lines) ---- */
#define CONVKIT_VERSION_MAJOR 0
#define CONVKIT_VERSION_MINOR 1
#define CONVKIT_VERSION_PATCH 0
#define CONVKIT_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, as returned by convkit_version(). */
#define CONVKIT_VERSION (CONVKIT_VERSION_MAJOR * 10000 + CONVKIT_VERSION_MINOR * 100 + CONVKIT_VERSION_PATCH)

/* The version of the library actually loaded (compare with CONVKIT_VERSION, the header's). */
CONVKIT_C_API int convkit_version(void);
CONVKIT_C_API const char* convkit_version_string(void);

/* ---- Status and errors ---- */
typedef enum convkit_status {
    CONVKIT_SUCCESS = 0,
    CONVKIT_INVALID_ARGUMENT = 1, /* shapes, dtypes, devices, parameters, NULL pointers */
    CONVKIT_UNSUPPORTED = 2,      /* valid, but no engine of this build runs it here */
    CONVKIT_OUT_OF_MEMORY = 3,    /* host or device memory, an allocator that returned NULL */
    CONVKIT_BACKEND_ERROR = 4,    /* oneDNN, cuDNN or CUDA failed; their text is in the message */
    CONVKIT_INTERNAL_ERROR = 5    /* anything else (a C++ allocator that threw a foreign exception) */
} convkit_status;

/* The message of the last call on this thread ("" if it succeeded). Valid until the next call
 * on this thread. */
CONVKIT_C_API const char* convkit_last_error(void);
/* "success", "invalid_argument", "unsupported", "out_of_memory", "backend", "internal"; "unknown"
 * for any other value. */
CONVKIT_C_API const char* convkit_status_string(convkit_status status);

/* ---- Tensors ---- */
#define CONVKIT_MAX_RANK 5
#define CONVKIT_MAX_SPATIAL 3

typedef enum convkit_dtype { CONVKIT_F32 = 0, CONVKIT_F64 = 1, CONVKIT_F16 = 2, CONVKIT_BF16 = 3 } convkit_dtype;
typedef enum convkit_device_type { CONVKIT_DEVICE_CPU = 0, CONVKIT_DEVICE_CUDA = 1 } convkit_device_type;
typedef struct convkit_device {
    convkit_device_type type;
    int index; /* CUDA device ordinal; ignored for the CPU */
} convkit_device;

/* Dense layouts for convkit_tensor_init: channels-first is PyTorch's contiguous NC(D)(H)W (OI(D)(H)W
 * for weights), channels-last N(D)(H)WC (O(D)(H)WI). */
typedef enum convkit_layout { CONVKIT_CHANNELS_FIRST = 0, CONVKIT_CHANNELS_LAST = 1 } convkit_layout;

typedef struct convkit_tensor {
    void* data;
    convkit_dtype dtype;
    int rank; /* 0 = no tensor (e.g. no bias); convolutions take 3 to 5 */
    int64_t sizes[CONVKIT_MAX_RANK];
    int64_t strides[CONVKIT_MAX_RANK]; /* in elements, not bytes */
    convkit_device device;
} convkit_tensor;

/* Fills *tensor with `rank` sizes and the dense strides of `layout`. */
CONVKIT_C_API convkit_status convkit_tensor_init(convkit_tensor* tensor, void* data, convkit_dtype dtype, int rank,
                                                 const int64_t* sizes, convkit_layout layout, convkit_device device);
/* Bytes per element: 4, 8, 2, 2. */
CONVKIT_C_API convkit_status convkit_dtype_size(convkit_dtype dtype, size_t* size);

/* ---- Parameters ---- */
/* A per-spatial-dimension list (d, h, w order): count 0 = the default (stride 1, padding 0,
 * dilation 1, output_padding 0), 1 = one value for every spatial dimension, else one per dimension. */
typedef struct convkit_dims {
    int count;
    int64_t values[CONVKIT_MAX_SPATIAL];
} convkit_dims;

typedef struct convkit_conv_params {
    convkit_dims stride;
    convkit_dims padding_l; /* front / top / left */
    convkit_dims padding_r; /* back / bottom / right (may differ: asymmetric padding) */
    convkit_dims dilation;  /* 1 = dense, as in PyTorch */
    int64_t groups;         /* >= 1; convkit_conv_params_init sets 1 */
} convkit_conv_params;

/* PyTorch's conv_transpose: weights [IC, OC/groups, k...];
 * out = (in - 1) * stride - padding_l - padding_r + dilation * (k - 1) + output_padding + 1. */
typedef struct convkit_conv_transpose_params {
    convkit_dims stride;
    convkit_dims padding_l;
    convkit_dims padding_r;
    convkit_dims dilation;
    convkit_dims output_padding; /* < stride or < dilation, as in PyTorch */
    int64_t groups;
} convkit_conv_transpose_params;

/* The defaults: every list empty, groups 1. */
CONVKIT_C_API convkit_status convkit_conv_params_init(convkit_conv_params* params);
CONVKIT_C_API convkit_status convkit_conv_transpose_params_init(convkit_conv_transpose_params* params);

/* dst sizes of a forward (transposed) convolution, validated as the call itself would validate
 * them; *dst_rank = src_rank, dst_sizes holds at least CONVKIT_MAX_RANK values. */
CONVKIT_C_API convkit_status convkit_output_shape(const int64_t* src_sizes, int src_rank, const int64_t* weights_sizes,
                                                  int weights_rank, const convkit_conv_params* params,
                                                  int64_t* dst_sizes, int* dst_rank);
CONVKIT_C_API convkit_status convkit_conv_transpose_output_shape(const int64_t* src_sizes, int src_rank,
                                                                 const int64_t* weights_sizes, int weights_rank,
                                                                 const convkit_conv_transpose_params* params,
                                                                 int64_t* dst_sizes, int* dst_rank);

/* ---- Post-ops (applied in order to conv + bias on the forward direction; see post_ops.hpp) ---- */
typedef enum convkit_post_op_kind {
    CONVKIT_POST_OP_ELTWISE = 0,
    CONVKIT_POST_OP_SUM = 1,   /* x + scale * (dst before the call) */
    CONVKIT_POST_OP_BINARY = 2 /* x (op) operand, the operand broadcast to dst */
} convkit_post_op_kind;

typedef enum convkit_eltwise_alg {
    CONVKIT_ELTWISE_RELU = 0, /* alpha: negative slope */
    CONVKIT_ELTWISE_LINEAR,   /* alpha * x + beta */
    CONVKIT_ELTWISE_CLIP,     /* [alpha, beta] */
    CONVKIT_ELTWISE_ELU,
    CONVKIT_ELTWISE_SWISH,
    CONVKIT_ELTWISE_GELU_ERF,
    CONVKIT_ELTWISE_GELU_TANH,
    CONVKIT_ELTWISE_LOGISTIC,
    CONVKIT_ELTWISE_TANH,
    CONVKIT_ELTWISE_HARDSWISH,
    CONVKIT_ELTWISE_MISH,
    CONVKIT_ELTWISE_ABS,
    CONVKIT_ELTWISE_SQUARE,
    CONVKIT_ELTWISE_SQRT,
    CONVKIT_ELTWISE_EXP,
    CONVKIT_ELTWISE_LOG
} convkit_eltwise_alg;

typedef enum convkit_binary_alg {
    CONVKIT_BINARY_ADD = 0,
    CONVKIT_BINARY_MUL,
    CONVKIT_BINARY_SUB,
    CONVKIT_BINARY_DIV,
    CONVKIT_BINARY_MAX,
    CONVKIT_BINARY_MIN
} convkit_binary_alg;

typedef struct convkit_post_op {
    convkit_post_op_kind kind;
    convkit_eltwise_alg eltwise; /* kind ELTWISE */
    convkit_binary_alg binary;   /* kind BINARY */
    double alpha, beta;          /* eltwise parameters */
    double scale;                /* kind SUM */
    convkit_tensor operand;      /* kind BINARY */
} convkit_post_op;

/* At most 16 ops. */
typedef struct convkit_post_ops {
    const convkit_post_op* ops;
    int count;
} convkit_post_ops;

/* ---- Engines ---- */
typedef enum convkit_engine {
    CONVKIT_ENGINE_AUTO = 0, /* the best engine compiled in for the tensors' device */
    CONVKIT_ENGINE_REF = 1,  /* direct loops: the oracle */
    CONVKIT_ENGINE_CPU = 2,  /* oneDNN */
    CONVKIT_ENGINE_CUDA = 3  /* cuDNN */
} convkit_engine;

/* "auto", "ref", "cpu", "cuda" ("?" for another value), and back. */
CONVKIT_C_API const char* convkit_engine_name(convkit_engine engine);
CONVKIT_C_API convkit_status convkit_engine_from_name(const char* name, convkit_engine* engine);
/* Engines compiled in and able to run here (cuda needs a visible device), best first for each
 * device. Writes at most `capacity` of them; *count is how many there are. */
CONVKIT_C_API convkit_status convkit_available_engines(convkit_engine* engines, int capacity, int* count);
/* The engine CONVKIT_ENGINE_AUTO picks for tensors on `device`. */
CONVKIT_C_API convkit_status convkit_best_engine(convkit_device device, convkit_engine* engine);
/* One line on what an engine runs on ("" for one not compiled in), written as snprintf does: at
 * most capacity - 1 characters and a NUL; *length (if not NULL) is the full length. */
CONVKIT_C_API convkit_status convkit_engine_info(convkit_engine engine, char* buffer, size_t capacity, size_t* length);

/* ---- Streams and events ---- */
typedef struct convkit_stream_s* convkit_stream;
typedef struct convkit_event_s* convkit_event;

/* The CPU stream: synchronous, work is done when a call returns. */
CONVKIT_C_API convkit_status convkit_stream_create_cpu(convkit_stream* stream);
/* A CUDA stream created and owned by convkit on cuda:device. */
CONVKIT_C_API convkit_status convkit_stream_create_cuda(int device, convkit_stream* stream);
/* Wraps a framework's cudaStream_t (void* here, so no CUDA header is needed); never destroyed by convkit. */
CONVKIT_C_API convkit_status convkit_stream_wrap_cuda(int device, void* cuda_stream, convkit_stream* stream);
CONVKIT_C_API convkit_status convkit_stream_destroy(convkit_stream stream);
CONVKIT_C_API convkit_status convkit_stream_device(convkit_stream stream, convkit_device* device);
/* The cudaStream_t of a CUDA stream; NULL for the CPU stream. */
CONVKIT_C_API convkit_status convkit_stream_native_handle(convkit_stream stream, void** handle);
/* An event that completes when the work submitted so far ends. */
CONVKIT_C_API convkit_status convkit_stream_record(convkit_stream stream, convkit_event* event);
/* Later work on the stream waits for the event (no host blocking on CUDA). */
CONVKIT_C_API convkit_status convkit_stream_wait_event(convkit_stream stream, convkit_event event);
CONVKIT_C_API convkit_status convkit_stream_synchronize(convkit_stream stream);
/* *completed = 1 if done, else 0 (does not block). */
CONVKIT_C_API convkit_status convkit_event_query(convkit_event event, int* completed);
CONVKIT_C_API convkit_status convkit_event_wait(convkit_event event);
CONVKIT_C_API convkit_status convkit_event_destroy(convkit_event event);

/* ---- How a call runs ---- */
typedef enum convkit_determinism {
    CONVKIT_DETERMINISM_GLOBAL = 0, /* the global switch (convkit_set_deterministic) */
    CONVKIT_DETERMINISM_OFF = 1,
    CONVKIT_DETERMINISM_ON = 2      /* bitwise reproducible run to run */
} convkit_determinism;

typedef struct convkit_options {
    convkit_engine engine;
    convkit_determinism deterministic;
} convkit_options;

/* A zero-initialised convkit_exec is the default: CPU stream (or the device's default stream),
 * no dependencies, auto engine, global determinism. */
typedef struct convkit_exec {
    convkit_stream stream;     /* NULL = the default */
    const convkit_event* deps; /* the call's work starts after these complete */
    int n_deps;
    convkit_options options;
} convkit_exec;

/* ---- Convolutions ----
 * `exec` may be NULL (defaults). `done` may be NULL; otherwise it receives an event that completes
 * when the call's work ends (already complete on CPU), to be released with convkit_event_destroy.
 * On failure *done is set to NULL and no output has been written. */

/* dst = post_ops(conv(src, weights) + bias); bias [OC] or NULL. */
CONVKIT_C_API convkit_status convkit_convolution_forward(const convkit_tensor* dst, const convkit_tensor* src,
                                                         const convkit_tensor* weights, const convkit_tensor* bias,
                                                         const convkit_conv_params* params,
                                                         const convkit_post_ops* post_ops, const convkit_exec* exec,
                                                         convkit_event* done);
CONVKIT_C_API convkit_status convkit_convolution_backward_data(const convkit_tensor* diff_src,
                                                               const convkit_tensor* diff_dst,
                                                               const convkit_tensor* weights,
                                                               const convkit_conv_params* params,
                                                               const convkit_exec* exec, convkit_event* done);
/* diff_bias [OC] or NULL (no bias gradient). */
CONVKIT_C_API convkit_status convkit_convolution_backward_weights(const convkit_tensor* diff_weights,
                                                                  const convkit_tensor* diff_bias,
                                                                  const convkit_tensor* diff_dst,
                                                                  const convkit_tensor* src,
                                                                  const convkit_conv_params* params,
                                                                  const convkit_exec* exec, convkit_event* done);

/* Transposed convolution: src [N, IC, in...], weights [IC, OC/groups, k...], dst [N, OC, out...]. */
CONVKIT_C_API convkit_status convkit_conv_transpose_forward(const convkit_tensor* dst, const convkit_tensor* src,
                                                            const convkit_tensor* weights,
                                                            const convkit_tensor* bias,
                                                            const convkit_conv_transpose_params* params,
                                                            const convkit_post_ops* post_ops,
                                                            const convkit_exec* exec, convkit_event* done);
CONVKIT_C_API convkit_status convkit_conv_transpose_backward_data(const convkit_tensor* diff_src,
                                                                  const convkit_tensor* diff_dst,
                                                                  const convkit_tensor* weights,
                                                                  const convkit_conv_transpose_params* params,
                                                                  const convkit_exec* exec, convkit_event* done);
CONVKIT_C_API convkit_status convkit_conv_transpose_backward_weights(const convkit_tensor* diff_weights,
                                                                     const convkit_tensor* diff_bias,
                                                                     const convkit_tensor* diff_dst,
                                                                     const convkit_tensor* src,
                                                                     const convkit_conv_transpose_params* params,
                                                                     const convkit_exec* exec, convkit_event* done);

/* ---- Prepacked weights (inference: weights reordered once for an engine's forward kernels) ---- */
typedef struct convkit_packed_weights_s* convkit_packed_weights;

/* `src` lends only its sizes, dtype, layout and device (its data may be NULL); `options` may be NULL. */
CONVKIT_C_API convkit_status convkit_prepack_weights(const convkit_tensor* weights, const convkit_tensor* src,
                                                     const convkit_conv_params* params,
                                                     const convkit_post_ops* post_ops,
                                                     const convkit_options* options,
                                                     convkit_packed_weights* packed);
CONVKIT_C_API convkit_status convkit_packed_weights_destroy(convkit_packed_weights packed);
/* The weights' sizes [OC, IC/groups, k...] (sizes holds CONVKIT_MAX_RANK values), dtype and engine;
 * any output pointer may be NULL. */
CONVKIT_C_API convkit_status convkit_packed_weights_describe(convkit_packed_weights packed, int* rank,
                                                             int64_t* sizes, convkit_dtype* dtype,
                                                             convkit_engine* engine);
CONVKIT_C_API convkit_status convkit_convolution_forward_packed(const convkit_tensor* dst, const convkit_tensor* src,
                                                                convkit_packed_weights weights,
                                                                const convkit_tensor* bias,
                                                                const convkit_conv_params* params,
                                                                const convkit_post_ops* post_ops,
                                                                const convkit_exec* exec, convkit_event* done);

/* ---- Global switches (see conv.hpp) ---- */
CONVKIT_C_API convkit_status convkit_set_deterministic(int on);
CONVKIT_C_API convkit_status convkit_get_deterministic(int* on);
CONVKIT_C_API convkit_status convkit_set_allow_tf32(int on);
CONVKIT_C_API convkit_status convkit_get_allow_tf32(int* on);
CONVKIT_C_API convkit_status convkit_set_autotune(int on);
CONVKIT_C_API convkit_status convkit_get_autotune(int* on);
/* "" = no tune file. */
CONVKIT_C_API convkit_status convkit_set_tune_file(const char* path);
/* CPU engines' threads, n >= 1. */
CONVKIT_C_API convkit_status convkit_set_num_threads(int n);
CONVKIT_C_API convkit_status convkit_get_num_threads(int* n);

/* ---- Plan caches ---- */
typedef struct convkit_cache_stats {
    uint64_t hits, misses, evictions, size, capacity;
} convkit_cache_stats;
/* All zeros for an engine that keeps no cache or is not compiled in. */
CONVKIT_C_API convkit_status convkit_get_cache_stats(convkit_engine engine, convkit_cache_stats* stats);
CONVKIT_C_API convkit_status convkit_clear_cache(convkit_engine engine);

/* ---- Memory ----
 * Memory for temporaries and workspaces on one device type. allocate returns memory aligned to at
 * least 64 bytes, or NULL (the call then fails with CONVKIT_OUT_OF_MEMORY); `stream` is the native
 * stream the memory is used on (cudaStream_t, or NULL). The callbacks must not unwind (no C++
 * exceptions, no longjmp out of them). */
typedef struct convkit_allocator {
    void* (*allocate)(void* user_data, size_t bytes, convkit_device device, void* stream);
    void (*deallocate)(void* user_data, void* ptr, size_t bytes, convkit_device device, void* stream);
    void* user_data;
} convkit_allocator;
/* Copies *allocator; NULL restores convkit's default (caching) allocator. Blocks handed out keep
 * going back to the allocator that gave them. */
CONVKIT_C_API convkit_status convkit_set_allocator(convkit_device_type type, const convkit_allocator* allocator);

#ifdef __cplusplus
}
#endif

#endif /* CONVKIT_CONVKIT_H */
