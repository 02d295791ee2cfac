// Shared pieces of the extension: the Python-side tensor object, one imported tensor argument,
// the call's CUDA stream, and the exception classes.
#pragma once
#include <dlpack/dlpack.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>

#include "convkit/convkit.hpp"

namespace py = pybind11;

namespace ckpy {

// convkit.Tensor: a view plus whatever keeps its memory alive (an owning convkit::Tensor's
// storage, or the imported DLPack/array-interface object of a caller).
struct TensorObj {
    convkit::TensorView view;
    std::shared_ptr<void> owner;
    bool readonly = false;
    // CUDA results: the stream they were produced on and an event that completes when they are
    // ready (a consumer on another stream waits for it in __dlpack__).
    bool has_stream = false;
    void* stream = nullptr;
    convkit::Event ready;
};

// One tensor argument of a call, imported for the call's duration. The destructor releases the
// DLPack tensor (with the GIL held: every ArgTensor lives outside the GIL-released region).
struct ArgTensor {
    convkit::TensorView view;
    DLManagedTensor* managed = nullptr;
    py::object keep;            // a Python object owning the memory (array-interface path)
    TensorObj* tensor = nullptr;  // set when the argument is a convkit.Tensor
    bool readonly = false;
    bool is_torch = false;
    int ndim = 0;               // the argument's own rank (view.rank() except for 0-d operands)

    ArgTensor() = default;
    ArgTensor(const ArgTensor&) = delete;
    ArgTensor& operator=(const ArgTensor&) = delete;
    ~ArgTensor() { release(); }
    void release();
    bool defined() const { return view.defined(); }
};

// The CUDA stream of one call, resolved when the first CUDA tensor is met.
struct CallStream {
    py::handle user;            // the stream= argument (None, an int, or an object with .cuda_stream)
    py::handle first;           // the call's first tensor argument (a torch tensor picks torch's stream)
    bool resolved = false;      // handle and device are known
    bool created = false;       // stream wraps handle
    int device = -1;
    void* handle = nullptr;     // cudaStream_t the call runs on
    convkit::Stream stream;     // its convkit wrapper (valid when created)
    int torch_device = -1;      // torch's current stream on torch_device, once looked up
    void* torch_current = nullptr;
};

// Exception classes (created at module init).
extern PyObject* g_error;
extern PyObject* g_invalid;
extern PyObject* g_unsupported;
extern PyObject* g_oom;
extern PyObject* g_backend;

[[noreturn]] inline void invalid(const std::string& msg) {
    throw convkit::Error(convkit::ErrorKind::invalid_argument, msg);
}

const char* dtype_name(convkit::DType dt);  // "float32", ...
bool is_none(py::handle h);

// dlpack.cpp
struct ImportOptions {
    bool writable = false;
};
// Imports `obj` (a convkit.Tensor, a torch tensor, or anything with __dlpack__) as `out`; `fn` and
// `name` name the function and the argument in errors. `cs` may be null (no CUDA tensors expected:
// from_dlpack resolves the stream itself).
void import_tensor(ArgTensor& out, py::handle obj, const char* fn, const char* name, ImportOptions opt,
                   CallStream* cs);
// The cudaStream_t of a call with a tensor on `device` (the user's stream=, torch's current stream
// for a torch first argument, else the legacy default stream); the first CUDA tensor settles it.
void* resolve_handle(CallStream& cs, convkit::Device device);
// Its convkit wrapper (created on first use: it needs the CUDA runtime and the device).
const convkit::Stream& resolve_stream(CallStream& cs, convkit::Device device);
// A Python convkit.Tensor that takes over the imported argument (from_dlpack, out= views).
py::object tensor_from_arg(ArgTensor& a, py::handle source);
py::object wrap_tensor(TensorObj* t);  // takes ownership
py::object make_capsule(const TensorObj& t);
void bind_dlpack(py::module_& m, py::class_<TensorObj>& cls);
PyTypeObject* tensor_type();

// conv.cpp / module.cpp
void bind_conv(py::module_& m);
void bind_tensor(py::module_& m, py::class_<TensorObj>& cls);

}  // namespace ckpy
