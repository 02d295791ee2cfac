// The C API (include/convkit/convkit.h) over the C++ one. Each entry point converts its plain
// structs to C++ values, calls the C++ function, and turns whatever it throws into a status and a
// thread-local message, so that no exception unwinds into C frames (undefined behaviour there).
// Checks here cover only what C can get wrong and C++ cannot (NULL pointers, out-of-range enums
// and counts); everything else is left to the C++ validation, so both APIs give the same message.
#include "convkit/convkit.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "convkit/convkit.hpp"

struct convkit_stream_s {
    convkit::Stream stream;
};
struct convkit_event_s {
    convkit::Event event;
};
struct convkit_packed_weights_s {
    convkit::PackedWeights weights;
};

namespace convkit {
namespace {

// The C enums are the C++ ones by value, so conversions are casts after a range check.
static_assert(CONVKIT_BF16 == static_cast<int>(DType::bf16) && CONVKIT_F16 == static_cast<int>(DType::f16) &&
              CONVKIT_F64 == static_cast<int>(DType::f64) && CONVKIT_F32 == static_cast<int>(DType::f32));
static_assert(CONVKIT_DEVICE_CUDA == static_cast<int>(DeviceType::cuda));
static_assert(CONVKIT_ENGINE_AUTO == static_cast<int>(Engine::automatic) &&
              CONVKIT_ENGINE_REF == static_cast<int>(Engine::ref) && CONVKIT_ENGINE_CPU == static_cast<int>(Engine::cpu) &&
              CONVKIT_ENGINE_CUDA == static_cast<int>(Engine::cuda));
static_assert(CONVKIT_ELTWISE_LOG == static_cast<int>(EltwiseAlg::log) &&
              CONVKIT_ELTWISE_MISH == static_cast<int>(EltwiseAlg::mish) &&
              CONVKIT_ELTWISE_GELU_ERF == static_cast<int>(EltwiseAlg::gelu_erf));
static_assert(CONVKIT_BINARY_MIN == static_cast<int>(BinaryAlg::min) && CONVKIT_BINARY_DIV == static_cast<int>(BinaryAlg::div));
static_assert(CONVKIT_MAX_RANK == Dims::max_rank);
static_assert(CONVKIT_MAX_RANK == CONVKIT_MAX_SPATIAL + 2);

// The message of the last call. If storing a message itself runs out of memory, `fallback`
// says so instead (the string cannot grow then).
struct LastError {
    std::string text;
    const char* fallback = nullptr;
};
thread_local LastError t_error;

convkit_status set_error(convkit_status s, const char* message) noexcept {
    try {
        t_error.text.assign(message);
        t_error.fallback = nullptr;
    } catch (...) {
        t_error.text.clear();
        t_error.fallback = "out of memory while storing the error message";
    }
    return s;
}

convkit_status status_of(ErrorKind k) {
    switch (k) {
        case ErrorKind::invalid_argument: return CONVKIT_INVALID_ARGUMENT;
        case ErrorKind::unsupported: return CONVKIT_UNSUPPORTED;
        case ErrorKind::out_of_memory: return CONVKIT_OUT_OF_MEMORY;
        case ErrorKind::backend: return CONVKIT_BACKEND_ERROR;
    }
    return CONVKIT_INTERNAL_ERROR;
}

// Runs one entry point's body: the only place exceptions stop.
template <typename Fn> convkit_status guarded(Fn&& fn) noexcept {
    try {
        fn();
        t_error.text.clear();
        t_error.fallback = nullptr;
        return CONVKIT_SUCCESS;
    } catch (const Error& e) {
        return set_error(status_of(e.kind()), e.what());
    } catch (const std::bad_alloc&) {
        return set_error(CONVKIT_OUT_OF_MEMORY, "out of host memory (std::bad_alloc)");
    } catch (const std::exception& e) {
        try {
            return set_error(CONVKIT_INTERNAL_ERROR, (std::string("unexpected exception: ") + e.what()).c_str());
        } catch (...) {
            return set_error(CONVKIT_INTERNAL_ERROR, "unexpected exception");
        }
    } catch (...) {
        return set_error(CONVKIT_INTERNAL_ERROR, "unexpected exception that is not a std::exception");
    }
}

// The value a C caller stored in an enum, read as the int it is: C may pass any int there, and
// in C++ merely loading an enum object that holds a value outside its enumerators' range is
// undefined (UBSan's -fsanitize=enum reports it), so no range check could be written on the enum.
template <typename E> int raw(const E& e) {
    static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
    int v;
    std::memcpy(&v, &e, sizeof v);
    return v;
}

[[noreturn]] void invalid(const char* fn, const std::string& msg) {
    throw Error(ErrorKind::invalid_argument, std::string(fn) + ": " + msg);
}

template <typename T> void need(const T* p, const char* fn, const char* name) {
    if (!p) invalid(fn, std::string(name) + " is NULL");
}

DType to_dtype(int v, const char* fn, const std::string& name) {
    if (v < CONVKIT_F32 || v > CONVKIT_BF16)
        invalid(fn, name + " is " + std::to_string(v) +
                        " (expected CONVKIT_F32, CONVKIT_F64, CONVKIT_F16 or CONVKIT_BF16)");
    return static_cast<DType>(v);
}

Device to_device(const convkit_device& d, const char* fn, const std::string& name) {
    const int type = raw(d.type);
    if (type != CONVKIT_DEVICE_CPU && type != CONVKIT_DEVICE_CUDA)
        invalid(fn, name + ".type is " + std::to_string(type) +
                        " (expected CONVKIT_DEVICE_CPU or CONVKIT_DEVICE_CUDA)");
    if (type == CONVKIT_DEVICE_CPU) return Device::cpu();
    if (d.index < 0) invalid(fn, name + ".index is " + std::to_string(d.index) + " (expected >= 0)");
    return Device::cuda(d.index);
}

convkit_device to_c(Device d) {
    convkit_device out;
    out.type = d.is_cuda() ? CONVKIT_DEVICE_CUDA : CONVKIT_DEVICE_CPU;
    out.index = d.is_cuda() ? d.index : 0;
    return out;
}

Engine to_engine(int v, const char* fn, const char* name) {
    if (v < CONVKIT_ENGINE_AUTO || v > CONVKIT_ENGINE_CUDA)
        invalid(fn, std::string(name) + " is " + std::to_string(v) +
                        " (expected CONVKIT_ENGINE_AUTO, _REF, _CPU or _CUDA)");
    return static_cast<Engine>(v);
}

Dims sizes_of(const int64_t* values, int rank, const char* fn, const char* name) {
    if (rank < 0 || rank > CONVKIT_MAX_RANK)
        invalid(fn, std::string(name) + " rank is " + std::to_string(rank) + " (expected 0 to " +
                        std::to_string(CONVKIT_MAX_RANK) + ")");
    if (rank > 0 && !values) invalid(fn, std::string(name) + " is NULL but its rank is " + std::to_string(rank));
    Dims d;
    for (int i = 0; i < rank; ++i) d.push_back(values[i]);
    return d;
}

// NULL and rank 0 are "no tensor": an optional one is then absent, and a required one gets the
// C++ validation's message for an undefined tensor.
TensorView to_view(const convkit_tensor* t, const char* fn, const std::string& name) {
    if (!t) return TensorView();
    if (t->rank < 0 || t->rank > CONVKIT_MAX_RANK)
        invalid(fn, name + ".rank is " + std::to_string(t->rank) + " (expected 0 for no tensor, or 1 to " +
                        std::to_string(CONVKIT_MAX_RANK) + ")");
    if (t->rank == 0) return TensorView();
    TensorView v;
    v.data = t->data;
    v.dtype = to_dtype(raw(t->dtype), fn, name + ".dtype");
    v.device = to_device(t->device, fn, name + ".device");
    for (int i = 0; i < t->rank; ++i) {
        v.sizes.push_back(t->sizes[i]);
        v.strides.push_back(t->strides[i]);
    }
    return v;
}

TensorView required(const convkit_tensor* t, const char* fn, const char* name) {
    need(t, fn, name);
    return to_view(t, fn, name);
}

Dims to_dims(const convkit_dims& d, const char* fn, const char* name) {
    if (d.count < 0 || d.count > CONVKIT_MAX_SPATIAL)
        invalid(fn, std::string("params.") + name + ".count is " + std::to_string(d.count) + " (expected 0 to " +
                        std::to_string(CONVKIT_MAX_SPATIAL) + ")");
    Dims out;
    for (int i = 0; i < d.count; ++i) out.push_back(d.values[i]);
    return out;
}

ConvParams to_params(const convkit_conv_params* p, const char* fn) {
    ConvParams out;
    if (!p) return out;
    out.stride = to_dims(p->stride, fn, "stride");
    out.padding_l = to_dims(p->padding_l, fn, "padding_l");
    out.padding_r = to_dims(p->padding_r, fn, "padding_r");
    out.dilation = to_dims(p->dilation, fn, "dilation");
    out.groups = p->groups;
    return out;
}

ConvTransposeParams to_params(const convkit_conv_transpose_params* p, const char* fn) {
    ConvTransposeParams out;
    if (!p) return out;
    out.stride = to_dims(p->stride, fn, "stride");
    out.padding_l = to_dims(p->padding_l, fn, "padding_l");
    out.padding_r = to_dims(p->padding_r, fn, "padding_r");
    out.dilation = to_dims(p->dilation, fn, "dilation");
    out.output_padding = to_dims(p->output_padding, fn, "output_padding");
    out.groups = p->groups;
    return out;
}

PostOps to_post_ops(const convkit_post_ops* p, const char* fn) {
    PostOps out;
    if (!p || p->count == 0) return out;
    if (p->count < 0) invalid(fn, "post_ops.count is " + std::to_string(p->count) + " (expected >= 0)");
    if (!p->ops) invalid(fn, "post_ops.ops is NULL but post_ops.count is " + std::to_string(p->count));
    for (int i = 0; i < p->count; ++i) {
        const convkit_post_op& op = p->ops[i];
        const std::string name = "post_ops.ops[" + std::to_string(i) + "]";
        switch (raw(op.kind)) {
            case CONVKIT_POST_OP_ELTWISE:
                if (raw(op.eltwise) < CONVKIT_ELTWISE_RELU || raw(op.eltwise) > CONVKIT_ELTWISE_LOG)
                    invalid(fn, name + ".eltwise is " + std::to_string(raw(op.eltwise)) +
                                    " (expected CONVKIT_ELTWISE_RELU to CONVKIT_ELTWISE_LOG)");
                out.eltwise(static_cast<EltwiseAlg>(raw(op.eltwise)), op.alpha, op.beta);
                break;
            case CONVKIT_POST_OP_SUM: out.sum(op.scale); break;
            case CONVKIT_POST_OP_BINARY:
                if (raw(op.binary) < CONVKIT_BINARY_ADD || raw(op.binary) > CONVKIT_BINARY_MIN)
                    invalid(fn, name + ".binary is " + std::to_string(raw(op.binary)) +
                                    " (expected CONVKIT_BINARY_ADD to CONVKIT_BINARY_MIN)");
                out.binary(static_cast<BinaryAlg>(raw(op.binary)), to_view(&op.operand, fn, name + ".operand"));
                break;
            default:
                invalid(fn, name + ".kind is " + std::to_string(raw(op.kind)) +
                                " (expected CONVKIT_POST_OP_ELTWISE, _SUM or _BINARY)");
        }
    }
    return out;
}

ConvOptions to_options(const convkit_options& o, const char* fn, const char* name) {
    ConvOptions out;
    out.engine = to_engine(raw(o.engine), fn, (std::string(name) + ".engine").c_str());
    switch (raw(o.deterministic)) {
        case CONVKIT_DETERMINISM_GLOBAL: break;
        case CONVKIT_DETERMINISM_OFF: out.deterministic = false; break;
        case CONVKIT_DETERMINISM_ON: out.deterministic = true; break;
        default:
            invalid(fn, std::string(name) + ".deterministic is " + std::to_string(raw(o.deterministic)) +
                            " (expected CONVKIT_DETERMINISM_GLOBAL, _OFF or _ON)");
    }
    return out;
}

struct Exec {
    Stream stream;
    std::vector<Event> deps;
    ConvOptions options;
};

Exec to_exec(const convkit_exec* e, const char* fn) {
    Exec out;
    if (!e) return out;
    if (e->stream) out.stream = e->stream->stream;
    if (e->n_deps < 0) invalid(fn, "exec.n_deps is " + std::to_string(e->n_deps) + " (expected >= 0)");
    if (e->n_deps > 0 && !e->deps) invalid(fn, "exec.deps is NULL but exec.n_deps is " + std::to_string(e->n_deps));
    for (int i = 0; i < e->n_deps; ++i) {
        if (!e->deps[i]) invalid(fn, "exec.deps[" + std::to_string(i) + "] is NULL");
        out.deps.push_back(e->deps[i]->event);
    }
    out.options = to_options(e->options, fn, "exec.options");
    return out;
}

// Hands out the event of a finished call. The holder is allocated before the work runs, so
// running out of memory for it cannot report a failure after the outputs were written.
class DoneSlot {
public:
    explicit DoneSlot(convkit_event* done) : done_(done) {
        if (done_) {
            *done_ = nullptr;
            holder_.reset(new convkit_event_s);
        }
    }
    void set(Event e) {
        if (!done_) return;
        holder_->event = std::move(e);
        *done_ = holder_.release();
    }

private:
    convkit_event* done_;
    std::unique_ptr<convkit_event_s> holder_;
};

// A C allocator behind convkit::Allocator: a NULL from it becomes the out-of-memory Error the
// default allocators throw, which is what the caller of the failing call then sees.
class CAllocator final : public Allocator {
public:
    explicit CAllocator(const convkit_allocator& a) : a_(a) {}
    void* allocate(std::size_t bytes, Device device, void* stream) override {
        void* p = a_.allocate(a_.user_data, bytes, to_c(device), stream);
        if (!p)
            throw Error(ErrorKind::out_of_memory, "the allocator set with convkit_set_allocator returned NULL for " +
                                                      std::to_string(bytes) + " bytes on " + device.str());
        if (reinterpret_cast<std::uintptr_t>(p) % 64 != 0) {
            a_.deallocate(a_.user_data, p, bytes, to_c(device), stream);
            throw Error(ErrorKind::invalid_argument,
                        "the allocator set with convkit_set_allocator returned memory that is not 64-byte aligned "
                        "for " + std::to_string(bytes) + " bytes on " + device.str());
        }
        return p;
    }
    void deallocate(void* ptr, std::size_t bytes, Device device, void* stream) override {
        a_.deallocate(a_.user_data, ptr, bytes, to_c(device), stream);
    }

private:
    convkit_allocator a_;
};

void write_shape(const Dims& d, int64_t* sizes, int* rank) {
    for (int i = 0; i < d.rank(); ++i) sizes[i] = d[i];
    *rank = d.rank();
}

void set_flag(int* out, bool v, const char* fn) {
    need(out, fn, "on");
    *out = v ? 1 : 0;
}

}  // namespace
}  // namespace convkit

using namespace convkit;

extern "C" {

int convkit_version(void) { return CONVKIT_VERSION; }
const char* convkit_version_string(void) { return CONVKIT_VERSION_STRING; }

const char* convkit_last_error(void) { return t_error.fallback ? t_error.fallback : t_error.text.c_str(); }

const char* convkit_status_string(convkit_status status) {
    switch (raw(status)) {
        case CONVKIT_SUCCESS: return "success";
        case CONVKIT_INVALID_ARGUMENT: return "invalid_argument";
        case CONVKIT_UNSUPPORTED: return "unsupported";
        case CONVKIT_OUT_OF_MEMORY: return "out_of_memory";
        case CONVKIT_BACKEND_ERROR: return "backend";
        case CONVKIT_INTERNAL_ERROR: return "internal";
    }
    return "unknown";
}

convkit_status convkit_tensor_init(convkit_tensor* tensor, void* data, convkit_dtype dtype, int rank,
                                   const int64_t* sizes, convkit_layout layout, convkit_device device) {
    const char* fn = "convkit_tensor_init";
    return guarded([&] {
        need(tensor, fn, "tensor");
        Dims d = sizes_of(sizes, rank, fn, "sizes");
        DType dt = to_dtype(raw(dtype), fn, "dtype");
        Device dev = to_device(device, fn, "device");
        const int lay = raw(layout);
        if (lay != CONVKIT_CHANNELS_FIRST && lay != CONVKIT_CHANNELS_LAST)
            invalid(fn, "layout is " + std::to_string(lay) +
                            " (expected CONVKIT_CHANNELS_FIRST or CONVKIT_CHANNELS_LAST)");
        Dims strides = rank ? dense_strides(d, lay == CONVKIT_CHANNELS_LAST ? Layout::channels_last
                                                                             : Layout::channels_first)
                            : Dims();
        convkit_tensor t;
        std::memset(&t, 0, sizeof t);
        t.data = data;
        t.dtype = static_cast<convkit_dtype>(dt);
        t.rank = rank;
        for (int i = 0; i < rank; ++i) {
            t.sizes[i] = d[i];
            t.strides[i] = strides[i];
        }
        t.device = to_c(dev);
        *tensor = t;
    });
}

convkit_status convkit_dtype_size(convkit_dtype dtype, size_t* size) {
    const char* fn = "convkit_dtype_size";
    return guarded([&] {
        need(size, fn, "size");
        *size = dtype_size(to_dtype(raw(dtype), fn, "dtype"));
    });
}

convkit_status convkit_conv_params_init(convkit_conv_params* params) {
    return guarded([&] {
        need(params, "convkit_conv_params_init", "params");
        std::memset(params, 0, sizeof *params);
        params->groups = 1;
    });
}

convkit_status convkit_conv_transpose_params_init(convkit_conv_transpose_params* params) {
    return guarded([&] {
        need(params, "convkit_conv_transpose_params_init", "params");
        std::memset(params, 0, sizeof *params);
        params->groups = 1;
    });
}

convkit_status convkit_output_shape(const int64_t* src_sizes, int src_rank, const int64_t* weights_sizes,
                                    int weights_rank, const convkit_conv_params* params, int64_t* dst_sizes,
                                    int* dst_rank) {
    const char* fn = "convkit_output_shape";
    return guarded([&] {
        Dims s = sizes_of(src_sizes, src_rank, fn, "src_sizes");
        Dims w = sizes_of(weights_sizes, weights_rank, fn, "weights_sizes");
        need(dst_sizes, fn, "dst_sizes");
        need(dst_rank, fn, "dst_rank");
        write_shape(output_shape(s, w, to_params(params, fn)), dst_sizes, dst_rank);
    });
}

convkit_status convkit_conv_transpose_output_shape(const int64_t* src_sizes, int src_rank,
                                                   const int64_t* weights_sizes, int weights_rank,
                                                   const convkit_conv_transpose_params* params, int64_t* dst_sizes,
                                                   int* dst_rank) {
    const char* fn = "convkit_conv_transpose_output_shape";
    return guarded([&] {
        Dims s = sizes_of(src_sizes, src_rank, fn, "src_sizes");
        Dims w = sizes_of(weights_sizes, weights_rank, fn, "weights_sizes");
        need(dst_sizes, fn, "dst_sizes");
        need(dst_rank, fn, "dst_rank");
        write_shape(conv_transpose_output_shape(s, w, to_params(params, fn)), dst_sizes, dst_rank);
    });
}

const char* convkit_engine_name(convkit_engine engine) {
    const int e = raw(engine);
    if (e < CONVKIT_ENGINE_AUTO || e > CONVKIT_ENGINE_CUDA) return "?";
    return to_string(static_cast<Engine>(e));
}

convkit_status convkit_engine_from_name(const char* name, convkit_engine* engine) {
    const char* fn = "convkit_engine_from_name";
    return guarded([&] {
        need(name, fn, "name");
        need(engine, fn, "engine");
        *engine = static_cast<convkit_engine>(engine_from_string(name));
    });
}

convkit_status convkit_available_engines(convkit_engine* engines, int capacity, int* count) {
    const char* fn = "convkit_available_engines";
    return guarded([&] {
        if (capacity < 0) invalid(fn, "capacity is " + std::to_string(capacity) + " (expected >= 0)");
        if (capacity > 0) need(engines, fn, "engines");
        need(count, fn, "count");
        std::vector<Engine> all = available_engines();
        for (std::size_t i = 0; i < all.size() && static_cast<int>(i) < capacity; ++i)
            engines[i] = static_cast<convkit_engine>(all[i]);
        *count = static_cast<int>(all.size());
    });
}

convkit_status convkit_best_engine(convkit_device device, convkit_engine* engine) {
    const char* fn = "convkit_best_engine";
    return guarded([&] {
        need(engine, fn, "engine");
        *engine = static_cast<convkit_engine>(best_engine(to_device(device, fn, "device")));
    });
}

convkit_status convkit_engine_info(convkit_engine engine, char* buffer, size_t capacity, size_t* length) {
    const char* fn = "convkit_engine_info";
    return guarded([&] {
        if (capacity > 0) need(buffer, fn, "buffer");
        std::string s = engine_info(to_engine(raw(engine), fn, "engine"));
        if (capacity > 0) {
            std::size_t n = s.size() < capacity - 1 ? s.size() : capacity - 1;
            std::memcpy(buffer, s.data(), n);
            buffer[n] = '\0';
        }
        if (length) *length = s.size();
    });
}

convkit_status convkit_stream_create_cpu(convkit_stream* stream) {
    return guarded([&] {
        need(stream, "convkit_stream_create_cpu", "stream");
        *stream = nullptr;
        *stream = new convkit_stream_s{Stream::cpu()};
    });
}

convkit_status convkit_stream_create_cuda(int device, convkit_stream* stream) {
    return guarded([&] {
        need(stream, "convkit_stream_create_cuda", "stream");
        *stream = nullptr;
        auto holder = std::make_unique<convkit_stream_s>();
        holder->stream = Stream::cuda(device);
        *stream = holder.release();
    });
}

convkit_status convkit_stream_wrap_cuda(int device, void* cuda_stream, convkit_stream* stream) {
    return guarded([&] {
        need(stream, "convkit_stream_wrap_cuda", "stream");
        *stream = nullptr;
        auto holder = std::make_unique<convkit_stream_s>();
        holder->stream = Stream::cuda_external(device, cuda_stream);
        *stream = holder.release();
    });
}

convkit_status convkit_stream_destroy(convkit_stream stream) {
    return guarded([&] { delete stream; });
}

convkit_status convkit_stream_device(convkit_stream stream, convkit_device* device) {
    const char* fn = "convkit_stream_device";
    return guarded([&] {
        need(stream, fn, "stream");
        need(device, fn, "device");
        *device = to_c(stream->stream.device());
    });
}

convkit_status convkit_stream_native_handle(convkit_stream stream, void** handle) {
    const char* fn = "convkit_stream_native_handle";
    return guarded([&] {
        need(stream, fn, "stream");
        need(handle, fn, "handle");
        *handle = stream->stream.native_handle();
    });
}

convkit_status convkit_stream_record(convkit_stream stream, convkit_event* event) {
    const char* fn = "convkit_stream_record";
    return guarded([&] {
        need(stream, fn, "stream");
        need(event, fn, "event");
        DoneSlot slot(event);
        slot.set(stream->stream.record());
    });
}

convkit_status convkit_stream_wait_event(convkit_stream stream, convkit_event event) {
    const char* fn = "convkit_stream_wait_event";
    return guarded([&] {
        need(stream, fn, "stream");
        need(event, fn, "event");
        stream->stream.wait(event->event);
    });
}

convkit_status convkit_stream_synchronize(convkit_stream stream) {
    return guarded([&] {
        need(stream, "convkit_stream_synchronize", "stream");
        stream->stream.synchronize();
    });
}

convkit_status convkit_event_query(convkit_event event, int* completed) {
    const char* fn = "convkit_event_query";
    return guarded([&] {
        need(event, fn, "event");
        need(completed, fn, "completed");
        *completed = event->event.completed() ? 1 : 0;
    });
}

convkit_status convkit_event_wait(convkit_event event) {
    return guarded([&] {
        need(event, "convkit_event_wait", "event");
        event->event.wait();
    });
}

convkit_status convkit_event_destroy(convkit_event event) {
    return guarded([&] { delete event; });
}

convkit_status convkit_convolution_forward(const convkit_tensor* dst, const convkit_tensor* src,
                                           const convkit_tensor* weights, const convkit_tensor* bias,
                                           const convkit_conv_params* params, const convkit_post_ops* post_ops,
                                           const convkit_exec* exec, convkit_event* done) {
    const char* fn = "convkit_convolution_forward";
    return guarded([&] {
        DoneSlot slot(done);
        Exec x = to_exec(exec, fn);
        slot.set(convolution_forward(required(dst, fn, "dst"), required(src, fn, "src"),
                                     required(weights, fn, "weights"), to_view(bias, fn, "bias"),
                                     to_params(params, fn), to_post_ops(post_ops, fn), x.stream, x.deps,
                                     x.options));
    });
}

convkit_status convkit_convolution_backward_data(const convkit_tensor* diff_src, const convkit_tensor* diff_dst,
                                                 const convkit_tensor* weights, const convkit_conv_params* params,
                                                 const convkit_exec* exec, convkit_event* done) {
    const char* fn = "convkit_convolution_backward_data";
    return guarded([&] {
        DoneSlot slot(done);
        Exec x = to_exec(exec, fn);
        slot.set(convolution_backward_data(required(diff_src, fn, "diff_src"), required(diff_dst, fn, "diff_dst"),
                                           required(weights, fn, "weights"), to_params(params, fn), x.stream,
                                           x.deps, x.options));
    });
}

convkit_status convkit_convolution_backward_weights(const convkit_tensor* diff_weights,
                                                    const convkit_tensor* diff_bias, const convkit_tensor* diff_dst,
                                                    const convkit_tensor* src, const convkit_conv_params* params,
                                                    const convkit_exec* exec, convkit_event* done) {
    const char* fn = "convkit_convolution_backward_weights";
    return guarded([&] {
        DoneSlot slot(done);
        Exec x = to_exec(exec, fn);
        slot.set(convolution_backward_weights(required(diff_weights, fn, "diff_weights"),
                                              to_view(diff_bias, fn, "diff_bias"), required(diff_dst, fn, "diff_dst"),
                                              required(src, fn, "src"), to_params(params, fn), x.stream, x.deps,
                                              x.options));
    });
}

convkit_status convkit_conv_transpose_forward(const convkit_tensor* dst, const convkit_tensor* src,
                                              const convkit_tensor* weights, const convkit_tensor* bias,
                                              const convkit_conv_transpose_params* params,
                                              const convkit_post_ops* post_ops, const convkit_exec* exec,
                                              convkit_event* done) {
    const char* fn = "convkit_conv_transpose_forward";
    return guarded([&] {
        DoneSlot slot(done);
        Exec x = to_exec(exec, fn);
        slot.set(conv_transpose_forward(required(dst, fn, "dst"), required(src, fn, "src"),
                                        required(weights, fn, "weights"), to_view(bias, fn, "bias"),
                                        to_params(params, fn), to_post_ops(post_ops, fn), x.stream, x.deps,
                                        x.options));
    });
}

convkit_status convkit_conv_transpose_backward_data(const convkit_tensor* diff_src, const convkit_tensor* diff_dst,
                                                    const convkit_tensor* weights,
                                                    const convkit_conv_transpose_params* params,
                                                    const convkit_exec* exec, convkit_event* done) {
    const char* fn = "convkit_conv_transpose_backward_data";
    return guarded([&] {
        DoneSlot slot(done);
        Exec x = to_exec(exec, fn);
        slot.set(conv_transpose_backward_data(required(diff_src, fn, "diff_src"),
                                              required(diff_dst, fn, "diff_dst"), required(weights, fn, "weights"),
                                              to_params(params, fn), x.stream, x.deps, x.options));
    });
}

convkit_status convkit_conv_transpose_backward_weights(const convkit_tensor* diff_weights,
                                                       const convkit_tensor* diff_bias,
                                                       const convkit_tensor* diff_dst, const convkit_tensor* src,
                                                       const convkit_conv_transpose_params* params,
                                                       const convkit_exec* exec, convkit_event* done) {
    const char* fn = "convkit_conv_transpose_backward_weights";
    return guarded([&] {
        DoneSlot slot(done);
        Exec x = to_exec(exec, fn);
        slot.set(conv_transpose_backward_weights(required(diff_weights, fn, "diff_weights"),
                                                 to_view(diff_bias, fn, "diff_bias"),
                                                 required(diff_dst, fn, "diff_dst"), required(src, fn, "src"),
                                                 to_params(params, fn), x.stream, x.deps, x.options));
    });
}

convkit_status convkit_prepack_weights(const convkit_tensor* weights, const convkit_tensor* src,
                                       const convkit_conv_params* params, const convkit_post_ops* post_ops,
                                       const convkit_options* options, convkit_packed_weights* packed) {
    const char* fn = "convkit_prepack_weights";
    return guarded([&] {
        need(packed, fn, "packed");
        *packed = nullptr;
        auto holder = std::make_unique<convkit_packed_weights_s>();
        ConvOptions o = options ? to_options(*options, fn, "options") : ConvOptions();
        holder->weights = prepack_weights(required(weights, fn, "weights"), required(src, fn, "src"),
                                          to_params(params, fn), to_post_ops(post_ops, fn), o);
        *packed = holder.release();
    });
}

convkit_status convkit_packed_weights_destroy(convkit_packed_weights packed) {
    return guarded([&] { delete packed; });
}

convkit_status convkit_packed_weights_describe(convkit_packed_weights packed, int* rank, int64_t* sizes,
                                               convkit_dtype* dtype, convkit_engine* engine) {
    return guarded([&] {
        need(packed, "convkit_packed_weights_describe", "packed");
        const PackedWeights& w = packed->weights;
        if (rank) *rank = w.sizes().rank();
        if (sizes)
            for (int i = 0; i < w.sizes().rank(); ++i) sizes[i] = w.sizes()[i];
        if (dtype) *dtype = static_cast<convkit_dtype>(w.dtype());
        if (engine) *engine = static_cast<convkit_engine>(w.engine());
    });
}

convkit_status convkit_convolution_forward_packed(const convkit_tensor* dst, const convkit_tensor* src,
                                                  convkit_packed_weights weights, const convkit_tensor* bias,
                                                  const convkit_conv_params* params, const convkit_post_ops* post_ops,
                                                  const convkit_exec* exec, convkit_event* done) {
    const char* fn = "convkit_convolution_forward_packed";
    return guarded([&] {
        need(weights, fn, "weights");
        DoneSlot slot(done);
        Exec x = to_exec(exec, fn);
        slot.set(convolution_forward(required(dst, fn, "dst"), required(src, fn, "src"), weights->weights,
                                     to_view(bias, fn, "bias"), to_params(params, fn), to_post_ops(post_ops, fn),
                                     x.stream, x.deps, x.options));
    });
}

convkit_status convkit_set_deterministic(int on) {
    return guarded([&] { set_deterministic(on != 0); });
}
convkit_status convkit_get_deterministic(int* on) {
    return guarded([&] { set_flag(on, deterministic(), "convkit_get_deterministic"); });
}
convkit_status convkit_set_allow_tf32(int on) {
    return guarded([&] { set_allow_tf32(on != 0); });
}
convkit_status convkit_get_allow_tf32(int* on) {
    return guarded([&] { set_flag(on, allow_tf32(), "convkit_get_allow_tf32"); });
}
convkit_status convkit_set_autotune(int on) {
    return guarded([&] { set_autotune(on != 0); });
}
convkit_status convkit_get_autotune(int* on) {
    return guarded([&] { set_flag(on, autotune(), "convkit_get_autotune"); });
}

convkit_status convkit_set_tune_file(const char* path) {
    return guarded([&] {
        need(path, "convkit_set_tune_file", "path");
        set_tune_file(path);
    });
}

convkit_status convkit_set_num_threads(int n) {
    return guarded([&] { set_num_threads(n); });
}

convkit_status convkit_get_num_threads(int* n) {
    return guarded([&] {
        need(n, "convkit_get_num_threads", "n");
        *n = num_threads();
    });
}

convkit_status convkit_get_cache_stats(convkit_engine engine, convkit_cache_stats* stats) {
    const char* fn = "convkit_get_cache_stats";
    return guarded([&] {
        need(stats, fn, "stats");
        CacheStats s = cache_stats(to_engine(raw(engine), fn, "engine"));
        stats->hits = s.hits;
        stats->misses = s.misses;
        stats->evictions = s.evictions;
        stats->size = s.size;
        stats->capacity = s.capacity;
    });
}

convkit_status convkit_clear_cache(convkit_engine engine) {
    return guarded([&] { clear_cache(to_engine(raw(engine), "convkit_clear_cache", "engine")); });
}

convkit_status convkit_set_allocator(convkit_device_type type, const convkit_allocator* allocator) {
    const char* fn = "convkit_set_allocator";
    return guarded([&] {
        const int t = raw(type);
        if (t != CONVKIT_DEVICE_CPU && t != CONVKIT_DEVICE_CUDA)
            invalid(fn, "type is " + std::to_string(t) + " (expected CONVKIT_DEVICE_CPU or CONVKIT_DEVICE_CUDA)");
        if (allocator && (!allocator->allocate || !allocator->deallocate))
            invalid(fn, std::string("allocator->") + (allocator->allocate ? "deallocate" : "allocate") +
                            " is NULL (pass a NULL allocator to restore the default)");
        set_allocator(static_cast<DeviceType>(t),
                      allocator ? std::make_shared<CAllocator>(*allocator) : std::shared_ptr<Allocator>());
    });
}

}  // extern "C"
