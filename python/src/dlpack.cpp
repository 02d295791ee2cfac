// DLPack import (any object with __dlpack__, torch tensors through torch's C exporter, read-only
// NumPy arrays through __array_interface__) and export (convkit.Tensor.__dlpack__), and the CUDA
// stream rules of both directions.
#include "dlpack.hpp"

#include <cstdio>
#include <cstring>
#include <string>

namespace ckpy {

namespace {

PyTypeObject* g_tensor_type = nullptr;

// torch, looked up once it has been imported by someone (convkit never imports it itself).
struct TorchApi {
    bool ready = false;
    PyTypeObject* tensor = nullptr;
    PyObject* to_dlpack = nullptr;       // torch._C._to_dlpack: no Python wrapper, no requires_grad check
    PyObject* raw_stream = nullptr;      // torch._C._cuda_getCurrentRawStream(device) (newer torch)
    PyObject* current_stream = nullptr;  // torch.cuda.current_stream (fallback)
};
TorchApi g_torch;
bool g_torch_fast = true;

bool torch_loaded() {
    if (g_torch.ready) return true;
    PyObject* mods = PyImport_GetModuleDict();
    PyObject* torch = PyDict_GetItemString(mods, "torch");  // borrowed
    if (!torch) return false;
    try {
        py::module_ t = py::reinterpret_borrow<py::module_>(torch);
        py::object tensor = t.attr("Tensor");
        py::object c = t.attr("_C");
        py::object to = py::getattr(c, "_to_dlpack", py::none());
        if (to.is_none()) to = py::module_::import("torch.utils.dlpack").attr("to_dlpack");
        py::object raw = py::getattr(c, "_cuda_getCurrentRawStream", py::none());
        g_torch.tensor = reinterpret_cast<PyTypeObject*>(tensor.release().ptr());
        g_torch.to_dlpack = to.release().ptr();
        g_torch.raw_stream = raw.is_none() ? nullptr : raw.release().ptr();
        g_torch.ready = true;
    } catch (py::error_already_set&) {
        return false;  // torch half-imported (e.g. during its own import): treat objects generically
    }
    return true;
}

bool is_torch_tensor(py::handle h) {
    if (!g_torch_fast || !torch_loaded()) return false;
    return PyObject_TypeCheck(h.ptr(), g_torch.tensor);
}

void* torch_current_stream(int device) {
    if (g_torch.raw_stream) {
        py::object r = py::reinterpret_steal<py::object>(
            PyObject_CallFunction(g_torch.raw_stream, "i", device));
        if (!r) throw py::error_already_set();
        return PyLong_AsVoidPtr(r.ptr());
    }
    if (!g_torch.current_stream)
        g_torch.current_stream = py::object(py::module_::import("torch.cuda").attr("current_stream")).release().ptr();
    py::object s = py::reinterpret_borrow<py::object>(g_torch.current_stream)(device);
    return PyLong_AsVoidPtr(s.attr("cuda_stream").ptr());
}

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }

std::string prefix(const char* fn, const char* name) { return std::string(fn) + ": " + name; }

std::string dl_dtype_name(const DLDataType& d) {
    std::string base;
    switch (d.code) {
        case kDLInt: base = "int"; break;
        case kDLUInt: base = "uint"; break;
        case kDLFloat: base = "float"; break;
        case kDLBfloat: base = "bfloat"; break;
        case kDLComplex: base = "complex"; break;
        case 6: return d.lanes == 1 ? "bool" : "bool x" + std::to_string(d.lanes);  // kDLBool (DLPack 0.8)
        default: base = "code" + std::to_string(d.code) + "_"; break;
    }
    base += std::to_string(d.bits);
    if (d.lanes != 1) base += " x" + std::to_string(d.lanes) + " lanes";
    return base;
}

bool dtype_from_dl(const DLDataType& d, convkit::DType* out) {
    if (d.lanes != 1) return false;
    if (d.code == kDLFloat) {
        if (d.bits == 32) { *out = convkit::DType::f32; return true; }
        if (d.bits == 64) { *out = convkit::DType::f64; return true; }
        if (d.bits == 16) { *out = convkit::DType::f16; return true; }
    }
    if (d.code == kDLBfloat && d.bits == 16) { *out = convkit::DType::bf16; return true; }
    return false;
}

[[noreturn]] void bad_dtype(const char* fn, const char* name, const std::string& what) {
    type_error(prefix(fn, name) + " has dtype " + what +
               "; convkit computes in float32, float64, float16 and bfloat16");
}

// Takes the DLManagedTensor out of a "dltensor" capsule (renaming it "used_dltensor" so the
// producer's capsule destructor leaves it alone) and fills `out` from it.
void adopt_capsule(ArgTensor& out, py::handle cap, const char* fn, const char* name) {
    if (!PyCapsule_CheckExact(cap.ptr()))
        type_error(prefix(fn, name) + ": __dlpack__() returned a " + std::string(Py_TYPE(cap.ptr())->tp_name) +
                   ", not a DLPack capsule");
    auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
    if (!mt) {
        PyErr_Clear();
        const char* cname = PyCapsule_GetName(cap.ptr());
        PyErr_Clear();
        type_error(prefix(fn, name) + ": __dlpack__() returned a capsule named '" + (cname ? cname : "") +
                   "' (expected an unconsumed 'dltensor' capsule)");
    }
    if (PyCapsule_SetName(cap.ptr(), "used_dltensor") != 0) throw py::error_already_set();
    out.managed = mt;  // from here on the ArgTensor releases it, also when the checks below throw
    view_from_dltensor(out, mt->dl_tensor, fn, name);
}

// Read-only NumPy arrays (DLPack 0.6 cannot mark a tensor read-only, so NumPy refuses to export
// them): the array interface gives the same pointer; the ArgTensor keeps the array alive.
bool import_array_interface(ArgTensor& out, py::handle obj, const char* fn, const char* name) {
    py::object ai = py::getattr(obj, "__array_interface__", py::none());
    if (!PyDict_Check(ai.ptr())) return false;
    py::dict d = ai.cast<py::dict>();
    if (d.contains("mask") && !d["mask"].is_none()) return false;
    std::string ts = py::str(d["typestr"]);
    convkit::DType dt;
    if (ts == "<f4" || ts == "=f4") dt = convkit::DType::f32;
    else if (ts == "<f8" || ts == "=f8") dt = convkit::DType::f64;
    else if (ts == "<f2" || ts == "=f2") dt = convkit::DType::f16;
    else bad_dtype(fn, name, "'" + ts + "' (NumPy typestr)");
    py::tuple data = d["data"].cast<py::tuple>();
    char* ptr = reinterpret_cast<char*>(PyLong_AsVoidPtr(data[0].ptr()));
    const bool ro = data[1].cast<bool>();
    py::tuple shape = d["shape"].cast<py::tuple>();
    const int nd = static_cast<int>(shape.size());
    if (nd > convkit::Dims::max_rank)
        throw py::value_error(prefix(fn, name) + " has " + std::to_string(nd) + " dimensions (at most 5)");
    int64_t sz[5], st[5];
    for (int i = 0; i < nd; ++i) sz[i] = shape[i].cast<int64_t>();
    const int64_t item = static_cast<int64_t>(convkit::dtype_size(dt));
    py::object strides = d.contains("strides") ? py::object(d["strides"]) : py::object(py::none());
    if (strides.is_none()) {
        int64_t s = 1;
        for (int i = nd - 1; i >= 0; --i) { st[i] = s; s *= std::max<int64_t>(sz[i], 1); }
    } else {
        py::tuple t = strides.cast<py::tuple>();
        for (int i = 0; i < nd; ++i) {
            int64_t b = t[i].cast<int64_t>();
            if (b % item != 0)
                throw py::value_error(prefix(fn, name) + " has a byte stride " + std::to_string(b) +
                                      " that is not a multiple of its element size " + std::to_string(item));
            st[i] = b / item;
        }
    }
    DLTensor t{};
    t.data = ptr;
    t.device = {kDLCPU, 0};
    t.ndim = nd;
    t.dtype = {kDLFloat, static_cast<uint8_t>(item * 8), 1};
    t.shape = sz;
    t.strides = st;
    view_from_dltensor(out, t, fn, name);
    out.keep = py::reinterpret_borrow<py::object>(obj);
    out.readonly = ro;
    return true;
}

void* stream_from_arg(py::handle s) {
    if (PyLong_Check(s.ptr())) {
        void* p = PyLong_AsVoidPtr(s.ptr());
        if (PyErr_Occurred()) throw py::error_already_set();
        return p;
    }
    py::object cs = py::getattr(s, "cuda_stream", py::none());  // torch.cuda.Stream, cupy streams (.ptr below)
    if (cs.is_none()) cs = py::getattr(s, "ptr", py::none());
    if (!PyLong_Check(cs.ptr()))
        type_error(std::string("stream must be an int (a cudaStream_t) or an object with .cuda_stream, got ") +
                   Py_TYPE(s.ptr())->tp_name);
    return PyLong_AsVoidPtr(cs.ptr());
}

// The torch tensor's producer stream is torch's current stream on its device: the call's stream
// waits for it when they differ (what torch's __dlpack__(stream=...) does).
void sync_with_torch(CallStream& cs, int device) {
    if (cs.torch_device != device) {
        cs.torch_current = torch_current_stream(device);
        cs.torch_device = device;
    }
    if (device == cs.device && !same_stream(cs.torch_current, cs.handle))
        resolve_stream(cs, convkit::Device::cuda(device))
            .wait(convkit::Stream::cuda_external(device, cs.torch_current).record());
}

void import_torch(ArgTensor& out, py::handle obj, const char* fn, const char* name, CallStream* cs) {
    out.is_torch = true;
    py::object cap = py::reinterpret_steal<py::object>(PyObject_CallOneArg(g_torch.to_dlpack, obj.ptr()));
    if (!cap) {
        py::error_already_set e;
        // A dtype DLPack (or convkit) has no code for (bool, quantized...): the TypeError of any
        // other unsupported dtype.
        std::string dt = py::str(py::getattr(obj, "dtype", py::str("?")));
        if (dt.rfind("torch.", 0) == 0) dt = dt.substr(6);
        if (dt != "float32" && dt != "float64" && dt != "float16" && dt != "bfloat16") bad_dtype(fn, name, dt);
        throw py::value_error(prefix(fn, name) + ": this torch tensor cannot be viewed through DLPack: " +
                              std::string(py::str(e.value())));
    }
    adopt_capsule(out, cap, fn, name);
    if (out.view.device.is_cuda() && cs) {
        resolve_handle(*cs, out.view.device);
        sync_with_torch(*cs, out.view.device.index);
    }
}

void import_generic(ArgTensor& out, py::handle obj, const char* fn, const char* name, ImportOptions opt,
                    CallStream* cs) {
    py::object dl = py::reinterpret_steal<py::object>(PyObject_GetAttrString(obj.ptr(), "__dlpack__"));
    if (!dl) {
        PyErr_Clear();
        type_error(prefix(fn, name) + " must be a tensor with DLPack support (a NumPy array, a torch tensor or a "
                   "convkit.Tensor), got " + Py_TYPE(obj.ptr())->tp_name);
    }
    int dev_type = kDLCPU, dev_id = 0;
    py::object devf = py::reinterpret_steal<py::object>(PyObject_GetAttrString(obj.ptr(), "__dlpack_device__"));
    if (devf) {
        py::tuple d = devf().cast<py::tuple>();
        dev_type = d[0].cast<int>();
        dev_id = d[1].cast<int>();
    } else {
        PyErr_Clear();
    }
    py::object cap;
    try {
        if (dev_type == kDLCUDA || dev_type == kDLCUDAManaged) {
            intptr_t s = 1;  // DLPack: 1 = the legacy default stream
            if (cs) {
                void* h = resolve_handle(*cs, convkit::Device::cuda(dev_id));
                s = h ? reinterpret_cast<intptr_t>(h) : 1;
            }
            cap = dl(py::arg("stream") = s);
        } else {
            cap = dl();
        }
    } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_BufferError)) throw;
        if (opt.writable)
            throw py::value_error(prefix(fn, name) + " is read-only (" + std::string(py::str(e.value())) +
                                  "); convkit writes its results into it");
        if (import_array_interface(out, obj, fn, name)) return;
        throw;
    }
    adopt_capsule(out, cap, fn, name);
}

}  // namespace

bool is_none(py::handle h) { return h.ptr() == Py_None; }

const char* dtype_name(convkit::DType dt) {
    switch (dt) {
        case convkit::DType::f32: return "float32";
        case convkit::DType::f64: return "float64";
        case convkit::DType::f16: return "float16";
        case convkit::DType::bf16: return "bfloat16";
    }
    return "?";
}

PyTypeObject* tensor_type() { return g_tensor_type; }

void ArgTensor::release() {
    if (managed) {
        DLManagedTensor* m = managed;
        managed = nullptr;
        if (m->deleter) m->deleter(m);
    }
}

ImportOwner::~ImportOwner() {
    if (!managed && !object) return;
#if PY_VERSION_HEX >= 0x030D0000
    if (!Py_IsInitialized() || Py_IsFinalizing()) return;
#else
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
#endif
    PyGILState_STATE g = PyGILState_Ensure();
    if (managed && managed->deleter) managed->deleter(managed);
    Py_XDECREF(object);
    PyGILState_Release(g);
}

void view_from_dltensor(ArgTensor& out, const DLTensor& t, const char* fn, const char* name) {
    convkit::DType dt;
    if (!dtype_from_dl(t.dtype, &dt)) bad_dtype(fn, name, dl_dtype_name(t.dtype));
    convkit::Device dev;
    switch (t.device.device_type) {
        case kDLCPU:
        case kDLCUDAHost:  // pinned host memory: the CPU reads it directly
            dev = convkit::Device::cpu();
            break;
        case kDLCUDA:
        case kDLCUDAManaged:
            dev = convkit::Device::cuda(t.device.device_id);
            break;
        default:
            throw py::value_error(prefix(fn, name) + " is on DLPack device type " +
                                  std::to_string(static_cast<int>(t.device.device_type)) +
                                  "; convkit runs on CPU (1) and CUDA (2) memory");
    }
    if (t.ndim < 0 || t.ndim > convkit::Dims::max_rank)
        throw py::value_error(prefix(fn, name) + " has " + std::to_string(t.ndim) +
                              " dimensions; convkit tensors have at most 5");
    convkit::Dims sizes, strides;
    int64_t s = 1;
    int64_t cst[5];
    for (int i = t.ndim - 1; i >= 0; --i) {
        cst[i] = s;
        s *= std::max<int64_t>(t.shape[i], 1);
    }
    for (int i = 0; i < t.ndim; ++i) {
        sizes.push_back(t.shape[i]);
        strides.push_back(t.strides ? t.strides[i] : cst[i]);
    }
    out.view.data = static_cast<char*>(t.data) + t.byte_offset;
    out.view.dtype = dt;
    out.view.sizes = sizes;
    out.view.strides = strides;
    out.view.device = dev;
    out.ndim = t.ndim;
}

void* resolve_handle(CallStream& cs, convkit::Device device) {
    if (cs.resolved) return cs.handle;
    void* h = nullptr;
    if (cs.user && !is_none(cs.user)) {
        h = stream_from_arg(cs.user);
    } else if (cs.first && is_torch_tensor(cs.first)) {
        h = torch_current_stream(device.index);
        cs.torch_device = device.index;
        cs.torch_current = h;
    }
    cs.handle = h;
    cs.device = device.index;
    cs.resolved = true;
    return h;
}

const convkit::Stream& resolve_stream(CallStream& cs, convkit::Device device) {
    if (!cs.created) {
        resolve_handle(cs, device);
        cs.stream = convkit::Stream::cuda_external(cs.device, cs.handle);
        cs.created = true;
    }
    return cs.stream;
}

void import_tensor(ArgTensor& out, py::handle obj, const char* fn, const char* name, ImportOptions opt,
                   CallStream* cs) {
    PyTypeObject* tp = Py_TYPE(obj.ptr());
    if (tp == g_tensor_type || PyType_IsSubtype(tp, g_tensor_type)) {
        TensorObj* t = py::cast<TensorObj*>(obj);
        if (opt.writable && t->readonly)
            throw py::value_error(prefix(fn, name) + " is read-only (a view of a read-only array); convkit "
                                  "writes its results into it");
        out.view = t->view;
        out.tensor = t;
        out.readonly = t->readonly;
        out.ndim = t->view.rank();
        if (cs && t->view.device.is_cuda() && t->has_stream) {
            resolve_handle(*cs, t->view.device);
            if (t->view.device.index == cs->device && !same_stream(t->stream, cs->handle))
                resolve_stream(*cs, t->view.device).wait(t->ready);
        }
        return;
    }
    if (is_torch_tensor(obj)) return import_torch(out, obj, fn, name, cs);
    import_generic(out, obj, fn, name, opt, cs);
}

py::object wrap_tensor(TensorObj* t) {
    return py::cast(t, py::return_value_policy::take_ownership);
}

py::object tensor_from_arg(ArgTensor& a, py::handle source) {
    if (a.tensor) return py::reinterpret_borrow<py::object>(source);
    auto owner = std::make_shared<ImportOwner>();
    if (a.managed) {
        owner->managed = a.managed;
        a.managed = nullptr;
    } else {
        owner->object = a.keep.release().ptr();
    }
    auto* t = new TensorObj;
    t->view = a.view;
    t->owner = std::move(owner);
    t->readonly = a.readonly;
    return wrap_tensor(t);
}

// ---------------------------------------------------------------------------------------------
// Export.

namespace {

struct ExportCtx {
    DLManagedTensor managed{};
    int64_t shape[convkit::Dims::max_rank]{};
    int64_t strides[convkit::Dims::max_rank]{};
    std::shared_ptr<void> owner;
};

void export_deleter(DLManagedTensor* m) { delete static_cast<ExportCtx*>(m->manager_ctx); }

void capsule_destructor(PyObject* cap) {
    // Consumed capsules are renamed "used_dltensor" and belong to the consumer.
    if (!PyCapsule_IsValid(cap, "dltensor")) return;
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    if (m && m->deleter) m->deleter(m);
}

DLDevice dl_device_of(const convkit::Device& d) {
    return d.is_cuda() ? DLDevice{kDLCUDA, d.index} : DLDevice{kDLCPU, 0};
}

}  // namespace

py::object make_capsule(const TensorObj& t) {
    auto* ctx = new ExportCtx;
    ctx->owner = t.owner;
    const convkit::TensorView& v = t.view;
    for (int i = 0; i < v.rank(); ++i) {
        ctx->shape[i] = v.sizes[i];
        ctx->strides[i] = v.strides[i];
    }
    DLTensor& d = ctx->managed.dl_tensor;
    d.data = v.data;
    d.device = dl_device_of(v.device);
    d.ndim = v.rank();
    switch (v.dtype) {
        case convkit::DType::f32: d.dtype = {kDLFloat, 32, 1}; break;
        case convkit::DType::f64: d.dtype = {kDLFloat, 64, 1}; break;
        case convkit::DType::f16: d.dtype = {kDLFloat, 16, 1}; break;
        case convkit::DType::bf16: d.dtype = {kDLBfloat, 16, 1}; break;
    }
    d.shape = ctx->shape;
    d.strides = ctx->strides;
    d.byte_offset = 0;
    ctx->managed.manager_ctx = ctx;
    ctx->managed.deleter = export_deleter;
    PyObject* cap = PyCapsule_New(&ctx->managed, "dltensor", capsule_destructor);
    if (!cap) {
        delete ctx;
        throw py::error_already_set();
    }
    return py::reinterpret_steal<py::object>(cap);
}

namespace {

py::object tensor_dlpack(TensorObj& t, py::handle stream, py::handle max_version, py::handle dl_device,
                         py::handle copy) {
    (void)max_version;  // always the unversioned "dltensor" capsule (the one DLPack 0.6 defines)
    if (t.readonly)
        throw py::buffer_error("convkit.Tensor: cannot export a read-only tensor through DLPack (an unversioned "
                               "capsule cannot mark it read-only)");
    if (!is_none(dl_device)) {
        py::tuple d = py::reinterpret_borrow<py::object>(dl_device).cast<py::tuple>();
        DLDevice mine = dl_device_of(t.view.device);
        if (d[0].cast<int>() != mine.device_type || d[1].cast<int>() != mine.device_id)
            throw py::buffer_error("convkit.Tensor.__dlpack__: the tensor is on " + t.view.device.str() +
                                   "; convkit does not copy across devices");
    }
    if (t.view.device.is_cuda() && t.has_stream) {
        // The consumer's stream (None = the legacy default stream, -1 = no synchronisation).
        bool sync = true;
        void* consumer = nullptr;
        if (!is_none(stream)) {
            if (!PyLong_Check(stream.ptr())) throw py::type_error("__dlpack__: stream must be an int or None");
            long long s = PyLong_AsLongLong(stream.ptr());
            if (s == -1) sync = false;
            else consumer = PyLong_AsVoidPtr(stream.ptr());
        }
        if (sync && !same_stream(consumer, t.stream)) {
            convkit::Stream cs = convkit::Stream::cuda_external(t.view.device.index, consumer);
            cs.wait(t.ready);
        }
    }
    if (!is_none(copy) && py::reinterpret_borrow<py::object>(copy).cast<bool>()) {
        t.ready.wait();
        auto owned = std::make_shared<convkit::Tensor>(
            t.view.dtype, t.view.sizes,
            t.view.rank() >= 3 && t.view.layout() == convkit::Layout::channels_last ? convkit::Layout::channels_last
                                                                                    : convkit::Layout::channels_first,
            t.view.device);
        {
            py::gil_scoped_release nogil;
            convkit::copy(owned->view(), t.view);
        }
        TensorObj c;
        c.view = owned->view();
        c.owner = owned;
        return make_capsule(c);
    }
    return make_capsule(t);
}

}  // namespace

void bind_dlpack(py::module_& m, py::class_<TensorObj>& cls) {
    g_tensor_type = reinterpret_cast<PyTypeObject*>(cls.ptr());
    cls.def("__dlpack__", &tensor_dlpack, py::arg("stream") = py::none(), py::kw_only(),
            py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(), py::arg("copy") = py::none(),
            "DLPack export: an unversioned 'dltensor' capsule sharing this tensor's memory. For a CUDA result,\n"
            "`stream` (the consumer's cudaStream_t; None = the legacy default stream, -1 = none) waits for\n"
            "the stream the result was produced on.");
    cls.def(
        "__dlpack_device__",
        [](const TensorObj& t) {
            DLDevice d = dl_device_of(t.view.device);
            return py::make_tuple(static_cast<int>(d.device_type), d.device_id);
        },
        "(1, 0) for CPU tensors, (2, N) for tensors on cuda:N.");

    m.def(
        "from_dlpack",
        [](py::handle obj, bool writable) -> py::object {
            ArgTensor a;
            ImportOptions opt;
            opt.writable = writable;
            import_tensor(a, obj, "from_dlpack", "obj", opt, nullptr);
            if (a.tensor) return py::reinterpret_borrow<py::object>(obj);
            if (a.ndim == 0) throw py::value_error("from_dlpack: obj is 0-dimensional; convkit tensors have 1 to 5 dimensions");
            return tensor_from_arg(a, obj);
        },
        py::arg("obj"), py::kw_only(), py::arg("writable") = false,
        R"doc(from_dlpack(obj, *, writable=False) -> Tensor

A zero-copy convkit.Tensor view of `obj`: anything with __dlpack__/__dlpack_device__ (NumPy
arrays, torch tensors on CPU or CUDA) or a convkit.Tensor (returned as is). The view keeps `obj`'s
memory alive. Read-only NumPy arrays (which refuse DLPack export) are viewed through
__array_interface__ when writable=False; with writable=True they raise ValueError.)doc");

    m.def("_set_torch_fast_path", [](bool on) { g_torch_fast = on; }, py::arg("on"),
          "Testing hook: False routes torch tensors through their Python __dlpack__ like any other object.");
}

}  // namespace ckpy
