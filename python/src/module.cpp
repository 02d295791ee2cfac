// convkit._convkit: the module, its exception classes (convkit::Error kinds -> Python classes)
// and the global switches.
#include <string>
#include <vector>

#include "args.hpp"
#include "common.hpp"

namespace ckpy {

PyObject* g_error = nullptr;
PyObject* g_invalid = nullptr;
PyObject* g_unsupported = nullptr;
PyObject* g_oom = nullptr;
PyObject* g_backend = nullptr;

namespace {

PyObject* new_exception(py::module_& m, const char* name, PyObject* bases, const char* doc) {
    std::string full = std::string("convkit.") + name;
    PyObject* cls = PyErr_NewExceptionWithDoc(full.c_str(), doc, bases, nullptr);
    if (!cls) throw py::error_already_set();
    m.attr(name) = py::reinterpret_borrow<py::object>(cls);
    return cls;  // the module holds a reference; this one is never released
}

PyObject* pair(PyObject* a, PyObject* b) { return py::make_tuple(py::handle(a), py::handle(b)).release().ptr(); }

void bind_exceptions(py::module_& m) {
    g_error = new_exception(m, "Error", PyExc_Exception, "Base class of the errors convkit raises.");
    g_invalid = new_exception(m, "InvalidArgumentError", pair(g_error, PyExc_ValueError),
                              "An argument is invalid (a shape, a dtype, a parameter); the message names it.");
    g_unsupported = new_exception(m, "UnsupportedError", pair(g_error, PyExc_NotImplementedError),
                                  "Valid, but not supported by this build or engine.");
    g_oom = new_exception(m, "OutOfMemoryError", pair(g_error, PyExc_MemoryError), "An allocation failed.");
    g_backend = new_exception(m, "BackendError", pair(g_error, PyExc_RuntimeError),
                              "oneDNN, CUDA or cuDNN reported a failure.");
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const convkit::Error& e) {
            PyObject* cls = g_backend;
            switch (e.kind()) {
                case convkit::ErrorKind::invalid_argument: cls = g_invalid; break;
                case convkit::ErrorKind::unsupported: cls = g_unsupported; break;
                case convkit::ErrorKind::out_of_memory: cls = g_oom; break;
                case convkit::ErrorKind::backend: cls = g_backend; break;
            }
            PyErr_SetString(cls, e.what());
        }
    });
}

convkit::Engine engine_arg(const std::string& name, bool allow_auto) {
    convkit::Engine e = convkit::engine_from_string(name);
    if (e == convkit::Engine::automatic) {
        if (!allow_auto) invalid("engine must be 'ref', 'cpu' or 'cuda' here, got '" + name + "'");
        e = convkit::best_engine(convkit::Device::cpu());
    }
    return e;
}

void bind_switches(py::module_& m) {
    m.def("set_num_threads", &convkit::set_num_threads, py::arg("n"),
          "Threads used by the CPU engines (OpenMP); the default honours OMP_NUM_THREADS.");
    m.def("get_num_threads", &convkit::num_threads, "Threads the CPU engines use.");
    m.def("set_autotune", &convkit::set_autotune, py::arg("on"),
          "GPU engine choice: time the candidate cuDNN engines on a problem's first call and keep the fastest\n"
          "(as torch.backends.cudnn.benchmark). No effect without the CUDA engine.");
    m.def("autotune", &convkit::autotune, "Whether autotuning is on.");
    m.def("set_tune_file", &convkit::set_tune_file, py::arg("path"),
          "File where tuned choices persist across processes ('' = none).");
    m.def("set_allow_tf32", &convkit::set_allow_tf32, py::arg("on"),
          "TF32 tensor-core math for float32 convolutions on GPUs (on by default, as PyTorch).");
    m.def("allow_tf32", &convkit::allow_tf32, "Whether TF32 is allowed.");
    m.def("set_deterministic", &convkit::set_deterministic, py::arg("on"),
          "Bitwise reproducible results run to run for calls that do not say (deterministic=None); default off.");
    m.def("deterministic", &convkit::deterministic, "The global determinism setting.");
    m.def("set_verbose", &convkit::set_verbose, py::arg("level"),
          "Trace on stderr: 1 one line per executed call, 2 also per plan lookup and engine choice, 0 off\n"
          "(default from CONVKIT_VERBOSE). oneDNN's ONEDNN_VERBOSE layout; each line ends with the\n"
          "`convkit bench` command that runs the same problem.");
    m.def("verbose", &convkit::verbose, "The trace level.");
    m.def(
        "cache_stats",
        [](const std::string& engine) {
            convkit::CacheStats s = convkit::cache_stats(engine_arg(engine, true));
            py::dict d;
            d["hits"] = s.hits;
            d["misses"] = s.misses;
            d["evictions"] = s.evictions;
            d["size"] = s.size;
            d["capacity"] = s.capacity;
            return d;
        },
        py::arg("engine"),
        "Plan-cache counters of an engine ('cpu', 'ref', 'cuda'; 'auto' = the CPU's best):\n"
        "dict(hits, misses, evictions, size, capacity). All zeros for an engine that keeps no cache.");
    m.def("clear_cache", [](const std::string& engine) { convkit::clear_cache(engine_arg(engine, true)); },
          py::arg("engine"), "Drops an engine's cached plans (and its counters).");
    m.def("engine_info", [](const std::string& engine) { return convkit::engine_info(engine_arg(engine, true)); },
          py::arg("engine"),
          "One line on what an engine runs on (for cpu: oneDNN's version, the ISA, threads, how bf16/f16\n"
          "run); '' for an engine not compiled in.");
    m.def(
        "available_engines",
        [] {
            py::list l;
            for (convkit::Engine e : convkit::available_engines()) l.append(convkit::to_string(e));
            return l;
        },
        "Engines compiled into this build that can run here ('cuda' only with a visible GPU).");
}

}  // namespace

}  // namespace ckpy

PYBIND11_MODULE(_convkit, m) {
    m.doc() = "convkit's extension module (use the convkit package, not this module).";
#ifdef CONVKIT_VERSION
    m.attr("__version__") = CONVKIT_VERSION;
#endif
    ckpy::bind_exceptions(m);
    py::class_<ckpy::TensorObj> cls(m, "Tensor");
    ckpy::bind_tensor(m, cls);
    ckpy::bind_dlpack(m, cls);
    ckpy::bind_conv(m);
    ckpy::bind_switches(m);
}
