// convkit.Tensor's Python face (shape, strides, dtype, device, the array interface) and empty().
#include <string>

#include "common.hpp"

namespace ckpy {

namespace {

py::tuple dims_tuple(const convkit::Dims& d) {
    py::tuple t(d.rank());
    for (int i = 0; i < d.rank(); ++i) PyTuple_SET_ITEM(t.ptr(), i, PyLong_FromLongLong(d[i]));
    return t;
}

convkit::DType parse_dtype(const std::string& s) {
    if (s == "float32" || s == "f32" || s == "float") return convkit::DType::f32;
    if (s == "float64" || s == "f64" || s == "double") return convkit::DType::f64;
    if (s == "float16" || s == "f16" || s == "half") return convkit::DType::f16;
    if (s == "bfloat16" || s == "bf16") return convkit::DType::bf16;
    throw py::type_error("unknown dtype '" + s + "' (expected 'float32', 'float64', 'float16' or 'bfloat16')");
}

convkit::Device parse_device(const std::string& s) {
    if (s == "cpu") return convkit::Device::cpu();
    if (s == "cuda") return convkit::Device::cuda(0);
    if (s.rfind("cuda:", 0) == 0) {
        try {
            std::size_t pos = 0;
            int i = std::stoi(s.substr(5), &pos);
            if (pos == s.size() - 5 && i >= 0) return convkit::Device::cuda(i);
        } catch (const std::exception&) {
        }
    }
    throw py::value_error("unknown device '" + s + "' (expected 'cpu', 'cuda' or 'cuda:N')");
}

const char* typestr(convkit::DType dt) {
    switch (dt) {
        case convkit::DType::f32: return "<f4";
        case convkit::DType::f64: return "<f8";
        case convkit::DType::f16: return "<f2";
        default: return nullptr;
    }
}

}  // namespace

void bind_tensor(py::module_& m, py::class_<TensorObj>& cls) {
    cls.doc() = R"doc(A convkit tensor: either owning memory (the results of convkit's functions) or a
zero-copy view of a caller's object (from_dlpack, out=), which it keeps alive. Exchange it with
numpy.from_dlpack / torch.from_dlpack (no copy).)doc";
    cls.def_property_readonly("shape", [](const TensorObj& t) { return dims_tuple(t.view.sizes); },
                              "Sizes in PyTorch's logical order (N, C, spatial...), a tuple.");
    cls.def("stride", [](const TensorObj& t) { return dims_tuple(t.view.strides); },
            "Strides in elements, a tuple (as torch.Tensor.stride()).");
    cls.def("size", [](const TensorObj& t) { return dims_tuple(t.view.sizes); }, "The shape, as torch.Tensor.size().");
    cls.def_property_readonly("ndim", [](const TensorObj& t) { return t.view.rank(); }, "Number of dimensions.");
    cls.def_property_readonly("dtype", [](const TensorObj& t) { return dtype_name(t.view.dtype); },
                              "'float32', 'float64', 'float16' or 'bfloat16'.");
    cls.def_property_readonly("device", [](const TensorObj& t) { return t.view.device.str(); }, "'cpu' or 'cuda:N'.");
    cls.def("data_ptr", [](const TensorObj& t) { return reinterpret_cast<uintptr_t>(t.view.data); },
            "Address of the first element, an int.");
    cls.def("numel", [](const TensorObj& t) { return t.view.numel(); }, "Number of elements.");
    cls.def_property_readonly("readonly", [](const TensorObj& t) { return t.readonly; },
                              "True for a view of a read-only array (it cannot be an output).");
    cls.def_property_readonly(
        "__array_interface__",
        [](const TensorObj& t) -> py::dict {
            const char* ts = typestr(t.view.dtype);
            if (!t.view.device.is_cpu() || !ts)
                throw py::attribute_error("__array_interface__: only CPU float16/32/64 tensors have one");
            const int64_t item = static_cast<int64_t>(convkit::dtype_size(t.view.dtype));
            py::tuple st(t.view.rank());
            for (int i = 0; i < t.view.rank(); ++i)
                PyTuple_SET_ITEM(st.ptr(), i, PyLong_FromLongLong(t.view.strides[i] * item));
            py::dict d;
            d["version"] = 3;
            d["typestr"] = ts;
            d["shape"] = dims_tuple(t.view.sizes);
            d["strides"] = st;
            d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(t.view.data), t.readonly);
            return d;
        },
        "NumPy's array interface (CPU tensors of float16/32/64): numpy.asarray(t) is a view.");
    cls.def("__repr__", [](const TensorObj& t) {
        std::string s = "convkit.Tensor(shape=(";
        for (int i = 0; i < t.view.rank(); ++i) s += (i ? ", " : "") + std::to_string(t.view.sizes[i]);
        if (t.view.rank() == 1) s += ",";
        s += "), stride=(";
        for (int i = 0; i < t.view.rank(); ++i) s += (i ? ", " : "") + std::to_string(t.view.strides[i]);
        if (t.view.rank() == 1) s += ",";
        s += std::string("), dtype='") + dtype_name(t.view.dtype) + "', device='" + t.view.device.str() + "')";
        return s;
    });

    m.def(
        "_empty",
        [](py::handle shape, const std::string& dtype, const std::string& device, const std::string& memory_format) {
            convkit::Dims sizes;
            py::sequence seq = py::reinterpret_borrow<py::sequence>(shape);
            if (seq.size() < 1 || seq.size() > 5)
                throw py::value_error("empty: shape must have 1 to 5 dimensions, got " + std::to_string(seq.size()));
            for (auto v : seq) {
                int64_t x = v.cast<int64_t>();
                if (x < 0) throw py::value_error("empty: negative size in shape");
                sizes.push_back(x);
            }
            convkit::Layout layout = convkit::Layout::channels_first;
            if (memory_format == "channels_last") {
                if (sizes.rank() < 3)
                    throw py::value_error("empty: memory_format='channels_last' needs a tensor of rank 3 to 5");
                layout = convkit::Layout::channels_last;
            } else if (memory_format != "contiguous") {
                throw py::value_error("empty: memory_format must be 'contiguous' or 'channels_last', got '" +
                                      memory_format + "'");
            }
            auto owned = std::make_shared<convkit::Tensor>(parse_dtype(dtype), sizes, layout, parse_device(device));
            auto* t = new TensorObj;
            t->view = owned->view();
            t->owner = std::move(owned);
            return wrap_tensor(t);
        },
        py::arg("shape"), py::arg("dtype"), py::arg("device"), py::arg("memory_format"));
}

}  // namespace ckpy
