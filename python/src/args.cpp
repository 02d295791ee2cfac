// Argument normalisation (see args.hpp).
#include "args.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace ckpy {

namespace {

std::string list_str(const std::vector<int64_t>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
}

bool is_seq(py::handle h) { return PyTuple_Check(h.ptr()) || PyList_Check(h.ptr()); }

[[noreturn]] void not_ints(const char* fn, const char* what, py::handle h) {
    throw py::type_error(std::string(fn) + "(): argument '" + what + "' must be an int or a tuple of ints, not " +
                         Py_TYPE(h.ptr())->tp_name);
}

// Ints of a sequence; false when an element is not an int.
bool seq_ints(py::handle h, std::vector<int64_t>& out, const char* fn, const char* what) {
    PyObject* fast = PySequence_Fast(h.ptr(), "expected a sequence");
    if (!fast) throw py::error_already_set();
    py::object keep = py::reinterpret_steal<py::object>(fast);
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject** items = PySequence_Fast_ITEMS(fast);
    out.clear();
    for (Py_ssize_t i = 0; i < n; ++i) {
        int64_t v;
        if (!as_int(items[i], &v)) {
            if (is_seq(items[i])) return false;
            throw py::type_error(std::string(fn) + "(): argument '" + what +
                                 "' must be tuple of ints, but found element of type " + Py_TYPE(items[i])->tp_name +
                                 " at pos " + std::to_string(i));
        }
        out.push_back(v);
    }
    return true;
}

// int, or 1 or nsp ints -> nsp values (PyTorch's expand_param_if_needed).
void int_param(py::handle h, const char* fn, const char* what, int nsp, int64_t* out) {
    int64_t v;
    if (as_int(h, &v)) {
        for (int i = 0; i < nsp; ++i) out[i] = v;
        return;
    }
    if (!is_seq(h)) not_ints(fn, what, h);
    std::vector<int64_t> vals;
    if (!seq_ints(h, vals, fn, what)) not_ints(fn, what, h);
    if (vals.size() == 1) {
        for (int i = 0; i < nsp; ++i) out[i] = vals[0];
    } else if (static_cast<int>(vals.size()) == nsp) {
        for (int i = 0; i < nsp; ++i) out[i] = vals[i];
    } else {
        invalid(std::string("expected ") + what + " to be a single integer value or a list of " + std::to_string(nsp) +
                " values to match the convolution dimensions, but got " + what + "=" + list_str(vals));
    }
}

convkit::Dims dims_of(const int64_t* v, int n) {
    convkit::Dims d;
    bool same = true;
    for (int i = 1; i < n; ++i) same = same && v[i] == v[0];
    if (same) {
        d.push_back(v[0]);  // one value applies to every spatial dimension
        return d;
    }
    for (int i = 0; i < n; ++i) d.push_back(v[i]);
    return d;
}

std::string fmt_double(double x) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    return buf;
}

}  // namespace

bool as_int(py::handle h, int64_t* v) {
    PyObject* o = h.ptr();
    if (PyLong_Check(o)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow) throw py::value_error("integer argument out of the int64 range");
        *v = x;
        return true;
    }
    if (PyFloat_Check(o) || PyUnicode_Check(o) || PyTuple_Check(o) || PyList_Check(o)) return false;
    if (PyIndex_Check(o)) {  // NumPy integers, 0-d integer tensors
        PyObject* i = PyNumber_Index(o);
        if (!i) {
            PyErr_Clear();
            return false;
        }
        py::object keep = py::reinterpret_steal<py::object>(i);
        return as_int(keep, v);
    }
    return false;
}

convkit::Dims parse_shape(py::handle h, const char* fn, const char* what) {
    if (!PySequence_Check(h.ptr()) || PyUnicode_Check(h.ptr()))
        throw py::type_error(std::string(fn) + ": " + what + " must be a sequence of ints, not " +
                             Py_TYPE(h.ptr())->tp_name);
    std::vector<int64_t> v;
    if (!seq_ints(h, v, fn, what))
        throw py::type_error(std::string(fn) + ": " + what + " must be a sequence of ints");
    if (v.size() > static_cast<std::size_t>(convkit::Dims::max_rank))
        invalid(std::string(fn) + ": " + what + " " + list_str(v) + " has more than 5 dimensions");
    return convkit::Dims(v);
}

void parse_geometry(convkit::ConvParams& params, const char* fn, int nsp, py::handle stride, py::handle padding,
                    py::handle dilation, py::handle groups, py::handle padding_l, py::handle padding_r,
                    const convkit::Dims& kernel) {
    int64_t st[3], di[3], pl[3], pr[3];
    int_param(stride, fn, "stride", nsp, st);
    int_param(dilation, fn, "dilation", nsp, di);
    int64_t g;
    if (!as_int(groups, &g))
        throw py::type_error(std::string(fn) + "(): argument 'groups' must be int, not " + Py_TYPE(groups.ptr())->tp_name);
    for (int i = 0; i < nsp; ++i) {
        if (st[i] <= 0) invalid("non-positive stride is not supported");
        if (di[i] <= 0) invalid("non-positive dilation is not supported");
    }
    if (g <= 0) invalid("non-positive groups is not supported");

    const bool sides = !is_none(padding_l) || !is_none(padding_r);
    int64_t p;
    bool same = false;
    if (PyUnicode_Check(padding.ptr())) {
        const char* s = PyUnicode_AsUTF8(padding.ptr());
        if (!s) throw py::error_already_set();
        if (std::strcmp(s, "valid") == 0) {
            for (int i = 0; i < nsp; ++i) pl[i] = pr[i] = 0;
        } else if (std::strcmp(s, "same") == 0) {
            same = true;
        } else {
            invalid(std::string("Invalid padding string: '") + s + "'");
        }
        if (sides)
            invalid(std::string(fn) + ": padding_l/padding_r cannot be combined with padding='" + s + "'");
    } else if (as_int(padding, &p)) {
        for (int i = 0; i < nsp; ++i) pl[i] = pr[i] = p;
    } else if (is_seq(padding)) {
        std::vector<int64_t> vals;
        if (seq_ints(padding, vals, fn, "padding")) {
            if (vals.size() == 1) {
                for (int i = 0; i < nsp; ++i) pl[i] = pr[i] = vals[0];
            } else if (static_cast<int>(vals.size()) == nsp) {
                for (int i = 0; i < nsp; ++i) pl[i] = pr[i] = vals[i];
            } else {
                invalid("expected padding to be a single integer value or a list of " + std::to_string(nsp) +
                        " values to match the convolution dimensions, but got padding=" + list_str(vals));
            }
        } else {
            // ((l, r), ...) per spatial dimension: asymmetric padding.
            py::sequence seq = py::reinterpret_borrow<py::sequence>(padding);
            const int n = static_cast<int>(seq.size());
            if (n != nsp && n != 1)
                invalid(std::string(fn) + ": padding as (left, right) pairs needs " + std::to_string(nsp) +
                        " pairs (one per spatial dimension), got " + std::to_string(n));
            if (sides)
                invalid(std::string(fn) + ": padding_l/padding_r cannot be combined with (left, right) padding pairs");
            for (int i = 0; i < nsp; ++i) {
                py::handle item = seq[n == 1 ? 0 : i];
                std::vector<int64_t> pair;
                if (!is_seq(item) || !seq_ints(item, pair, fn, "padding") || pair.size() != 2)
                    throw py::type_error(std::string(fn) + "(): padding must be an int, a tuple of ints, 'same', "
                                         "'valid', or a tuple of (left, right) int pairs");
                pl[i] = pair[0];
                pr[i] = pair[1];
            }
        }
    } else {
        throw py::type_error(std::string(fn) + "(): argument 'padding' must be an int, a tuple of ints, 'same' or "
                             "'valid', not " + Py_TYPE(padding.ptr())->tp_name);
    }
    if (!is_none(padding_l)) int_param(padding_l, fn, "padding_l", nsp, pl);
    if (!is_none(padding_r)) int_param(padding_r, fn, "padding_r", nsp, pr);
    if (same) {
        for (int i = 0; i < nsp; ++i)
            if (st[i] != 1) invalid("padding='same' is not supported for strided convolutions");
        if (kernel.rank() != nsp + 2)
            invalid(std::string(fn) + ": weight must have " + std::to_string(nsp + 2) + " dimensions, got shape " +
                    kernel.str());
        // PyTorch: total = dilation * (k - 1); the left side gets half, the right side the rest.
        for (int i = 0; i < nsp; ++i) {
            int64_t total = di[i] * (kernel[2 + i] - 1);
            pl[i] = total / 2;
            pr[i] = total - pl[i];
        }
    }
    for (int i = 0; i < nsp; ++i)
        if (pl[i] < 0 || pr[i] < 0) invalid("negative padding is not supported");
    params.stride = dims_of(st, nsp);
    params.dilation = dims_of(di, nsp);
    params.padding_l = dims_of(pl, nsp);
    params.padding_r = dims_of(pr, nsp);
    params.groups = g;
}

void parse_transpose_geometry(convkit::ConvTransposeParams& params, const char* fn, int nsp, py::handle stride,
                              py::handle padding, py::handle output_padding, py::handle groups, py::handle dilation,
                              py::handle padding_l, py::handle padding_r) {
    // 'same' / 'valid' describe a convolution's output relative to its input; PyTorch's
    // conv_transpose*d refuses strings with this TypeError, and so does convkit.
    if (PyUnicode_Check(padding.ptr()))
        throw py::type_error(std::string(fn) + "(): argument 'padding' must be tuple of ints, not str ('same' and "
                             "'valid' apply to convolutions, not to transposed ones)");
    convkit::ConvParams conv;
    parse_geometry(conv, fn, nsp, stride, padding, dilation, groups, padding_l, padding_r, convkit::Dims());
    int64_t op[3];
    int_param(output_padding, fn, "output_padding", nsp, op);
    for (int i = 0; i < nsp; ++i)
        if (op[i] < 0) invalid("negative output_padding is not supported");
    params.stride = conv.stride;
    params.padding_l = conv.padding_l;
    params.padding_r = conv.padding_r;
    params.dilation = conv.dilation;
    params.output_padding = dims_of(op, nsp);
    params.groups = conv.groups;
}

ArgTensor& Operands::next() {
    if (!items) items.reset(new ArgTensor[convkit::PostOps::max_ops]);
    if (count >= static_cast<int>(convkit::PostOps::max_ops))
        invalid("at most " + std::to_string(convkit::PostOps::max_ops) + " post-ops are supported");
    return items[count++];
}

namespace {

void add_text(convkit::PostOps& ops, const std::string& text, const char* fn) {
    std::vector<std::string> args;
    convkit::PostOps parsed = convkit::parse_post_ops(text, &args);
    for (const convkit::PostOp& op : parsed) {
        if (op.kind == convkit::PostOp::Kind::binary)
            invalid(std::string(fn) + ": post-op '" + op.str() + "' needs an operand tensor: pass post_ops=[..., ('" +
                    op.str() + "', tensor)]");
        ops.append(op);
    }
}

void add_item(convkit::PostOps& ops, Operands& operands, py::handle item, const char* fn, CallStream& cs) {
    py::sequence seq = py::reinterpret_borrow<py::sequence>(item);
    const std::size_t n = seq.size();
    if (n == 0 || !PyUnicode_Check(seq[0].ptr()))
        throw py::type_error(std::string(fn) + ": a post-op tuple is (name, *args) with a str name, e.g. ('relu', 0.1) "
                             "or ('add', tensor)");
    const std::string name = py::str(seq[0]);
    std::string arg;
    convkit::PostOp op = convkit::parse_post_op(name, &arg);
    if (op.kind == convkit::PostOp::Kind::binary) {
        if (n != 2)
            invalid(std::string(fn) + ": binary post-op ('" + name + "', tensor) takes exactly one operand tensor, got " +
                    std::to_string(n - 1) + " argument(s)");
        ArgTensor& a = operands.next();
        const std::string what = "post_ops operand of '" + name + "'";
        import_tensor(a, seq[1], fn, what.c_str(), ImportOptions{}, &cs);
        op.operand = a.view;
        ops.append(op);
        return;
    }
    std::string text = name;
    for (std::size_t i = 1; i < n; ++i) {
        py::handle v = seq[i];
        if (!PyFloat_Check(v.ptr()) && !PyLong_Check(v.ptr()) && !PyNumber_Check(v.ptr()))
            throw py::type_error(std::string(fn) + ": post-op '" + name + "' takes numbers, got a " +
                                 Py_TYPE(v.ptr())->tp_name);
        text += ":" + fmt_double(py::float_(py::reinterpret_borrow<py::object>(v)).cast<double>());
    }
    ops.append(convkit::parse_post_op(text));
}

}  // namespace

void parse_post_ops(convkit::PostOps& ops, Operands& operands, py::handle spec, const char* fn, CallStream& cs) {
    if (is_none(spec)) return;
    if (PyUnicode_Check(spec.ptr())) {
        std::string s = py::str(spec);
        if (!s.empty()) add_text(ops, s, fn);
        return;
    }
    if (!is_seq(spec))
        throw py::type_error(std::string(fn) + ": post_ops must be None, a str ('relu', 'sum:0.5+relu') or a list of "
                             "str / (name, *args) tuples, not " + Py_TYPE(spec.ptr())->tp_name);
    py::sequence seq = py::reinterpret_borrow<py::sequence>(spec);
    // A bare tuple ('add', t) / ('relu', 0.1): one post-op, as a convenience.
    if (PyTuple_Check(spec.ptr()) && seq.size() >= 2 && PyUnicode_Check(seq[0].ptr())) {
        bool rest_non_str = true;
        for (std::size_t i = 1; i < seq.size(); ++i) rest_non_str = rest_non_str && !PyUnicode_Check(seq[i].ptr()) && !is_seq(seq[i]);
        if (rest_non_str) return add_item(ops, operands, spec, fn, cs);
    }
    for (auto item : seq) {
        if (PyUnicode_Check(item.ptr())) {
            add_text(ops, py::str(item), fn);
        } else if (is_seq(item)) {
            add_item(ops, operands, item, fn, cs);
        } else {
            throw py::type_error(std::string(fn) + ": each post_ops item must be a str or a (name, *args) tuple, not " +
                                 Py_TYPE(item.ptr())->tp_name);
        }
    }
}

void broadcast_operands(convkit::PostOps& ops, int rank) {
    for (std::size_t i = 0; i < ops.size(); ++i) {
        convkit::PostOp& op = ops[i];
        if (op.kind != convkit::PostOp::Kind::binary) continue;
        convkit::TensorView& v = op.operand;
        const int r = v.rank();
        if (r >= rank) continue;
        convkit::Dims sz, st;
        for (int d = 0; d < rank - r; ++d) {
            sz.push_back(1);
            st.push_back(1);
        }
        for (int d = 0; d < r; ++d) {
            sz.push_back(v.sizes[d]);
            st.push_back(v.strides[d]);
        }
        v.sizes = sz;
        v.strides = st;
    }
}

convkit::ConvOptions parse_options(py::handle engine, py::handle deterministic) {
    convkit::ConvOptions opt;
    opt.engine = parse_engine(engine);
    opt.deterministic = parse_optional_bool(deterministic);
    return opt;
}

convkit::Engine parse_engine(py::handle h) {
    if (is_none(h)) return convkit::Engine::automatic;
    if (!PyUnicode_Check(h.ptr()))
        throw py::type_error(std::string("engine must be a str ('auto', 'ref', 'cpu' or 'cuda'), not ") +
                             Py_TYPE(h.ptr())->tp_name);
    PyObject* o = h.ptr();
    if (PyUnicode_CompareWithASCIIString(o, "auto") == 0) return convkit::Engine::automatic;
    if (PyUnicode_CompareWithASCIIString(o, "cpu") == 0) return convkit::Engine::cpu;
    if (PyUnicode_CompareWithASCIIString(o, "ref") == 0) return convkit::Engine::ref;
    if (PyUnicode_CompareWithASCIIString(o, "cuda") == 0) return convkit::Engine::cuda;
    return convkit::engine_from_string(py::str(h));  // throws with the list of names
}

std::optional<bool> parse_optional_bool(py::handle h) {
    if (is_none(h)) return std::nullopt;
    int t = PyObject_IsTrue(h.ptr());
    if (t < 0) throw py::error_already_set();
    return t != 0;
}

}  // namespace ckpy
