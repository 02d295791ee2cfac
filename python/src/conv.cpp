// The convolution functions of the Python API: conv1d/2d/3d, conv_backward_data,
// conv_backward_weights, prepack_weights, and the transposed ones (conv_transpose1d/2d/3d,
// conv_transpose_backward_data, conv_transpose_backward_weights, conv_transpose_output_shape). Each imports its tensors (zero-copy), normalises the
// arguments, allocates outputs that were not given (in the input's memory format, on its device),
// and runs the library call with the GIL released. Nothing is written into a caller's buffer
// before every check has passed (the library validates before it writes; the checks here run
// before the library is called).
#include <memory>
#include <string>

#include "args.hpp"
#include "common.hpp"

namespace ckpy {

namespace {

struct PackedObj {
    convkit::PackedWeights packed;
    convkit::Device device;
};

const convkit::Stream& cpu_stream() {
    static const convkit::Stream s;
    return s;
}

const std::vector<convkit::Event>& no_deps() {
    static const std::vector<convkit::Event> d;
    return d;
}

PyTypeObject* g_packed_type = nullptr;

std::string sizes_str(const convkit::TensorView& v, int ndim) {
    if (ndim == 0) return "[]";
    return v.sizes.str();
}

void agree(const char* fn, const char* name, const convkit::TensorView& v, const char* ref_name,
           const convkit::TensorView& ref) {
    if (v.dtype != ref.dtype)
        invalid(std::string(fn) + ": " + name + " has dtype " + dtype_name(v.dtype) + " but " + ref_name +
                " has dtype " + dtype_name(ref.dtype) + " (all tensors must share one dtype)");
    if (v.device != ref.device)
        invalid(std::string(fn) + ": " + name + " is on " + v.device.str() + " but " + ref_name + " is on " +
                ref.device.str());
}

// An unbatched (C, spatial...) view as (1, C, spatial...).
// v with a leading batch dim of 1 added (`add`) or its leading dim dropped: unbatched tensors
// as PyTorch takes them, seen by the library as batches of one.
convkit::TensorView rebatch(const convkit::TensorView& v, bool add) {
    convkit::TensorView b = v;
    convkit::Dims sz, st;
    if (add) {
        sz.push_back(1);
        st.push_back(v.rank() ? v.sizes[0] * v.strides[0] : 1);
    }
    for (int i = add ? 0 : 1; i < v.rank(); ++i) {
        sz.push_back(v.sizes[i]);
        st.push_back(v.strides[i]);
    }
    b.sizes = sz;
    b.strides = st;
    return b;
}
convkit::TensorView add_batch(const convkit::TensorView& v) { return rebatch(v, true); }
convkit::TensorView drop_batch(const convkit::TensorView& v) { return rebatch(v, false); }

convkit::Layout format_of(const convkit::TensorView& v) {
    return v.rank() >= 3 && v.layout() == convkit::Layout::channels_last ? convkit::Layout::channels_last
                                                                          : convkit::Layout::channels_first;
}

convkit::Dims forward_shape(const convkit::Dims& src, const convkit::Dims& wei, const convkit::ConvParams& p) {
    try {
        return convkit::output_shape(src, wei, p);
    } catch (const convkit::Error& e) {
        std::string msg = e.what();
        const std::string from = "output_shape:";
        if (msg.compare(0, from.size(), from) == 0) msg = "convolution_forward:" + msg.substr(from.size());
        throw convkit::Error(e.kind(), msg);
    }
}

// The library's shape errors name the function that failed; a Python call that asks for the
// shape on its way to another function reports that function instead.
convkit::Dims transpose_shape(const convkit::Dims& src, const convkit::Dims& wei, const convkit::ConvTransposeParams& p,
                              const char* as_fn) {
    try {
        return convkit::conv_transpose_output_shape(src, wei, p);
    } catch (const convkit::Error& e) {
        std::string msg = e.what();
        const std::string from = "conv_transpose_output_shape:";
        if (as_fn && msg.compare(0, from.size(), from) == 0) msg = std::string(as_fn) + ":" + msg.substr(from.size());
        throw convkit::Error(e.kind(), msg);
    }
}

// (N, C, spatial...) from a batched or unbatched shape argument of rank nsp + 2 or nsp + 1.
convkit::Dims batched_shape(const convkit::Dims& sz, int nsp, const char* fn, const char* what, const char* why) {
    if (sz.rank() != nsp + 2 && sz.rank() != nsp + 1)
        invalid(std::string(fn) + ": " + what + " " + sz.str() + " must have " + std::to_string(nsp + 2) + " values (or " +
                std::to_string(nsp + 1) + " for an unbatched input) for " + why);
    for (int64_t v : sz)
        if (v < 0) invalid(std::string(fn) + ": " + what + " " + sz.str() + " has a negative size");
    if (sz.rank() == nsp + 2) return sz;
    convkit::Dims b{1};
    for (int64_t v : sz) b.push_back(v);
    return b;
}


void no_stream_on_cpu(const char* fn, py::handle stream, const convkit::TensorView& v) {
    if (!is_none(stream) && v.device.is_cpu())
        invalid(std::string(fn) + ": stream= applies to CUDA tensors; the tensors are on cpu");
}

// An output: the caller's `out` (its view, batched if the call is unbatched), or a new tensor.
struct Output {
    ArgTensor arg;
    bool given = false;
    std::shared_ptr<convkit::Tensor> owned;
    convkit::TensorView view;  // what the library writes (batched)

    void import(py::handle out, const char* fn, const char* name, CallStream& cs) {
        given = !is_none(out);
        if (!given) return;
        ImportOptions opt;
        opt.writable = true;
        import_tensor(arg, out, fn, name, opt, &cs);
    }
    // `sizes` batched; `unbatched`: the caller's out has no batch dimension.
    void prepare(const char* fn, const char* name, const convkit::Dims& sizes, bool unbatched, convkit::DType dt,
                 convkit::Layout layout, convkit::Device dev) {
        if (given) {
            convkit::Dims want = sizes;
            if (unbatched) {
                want = convkit::Dims();
                for (int i = 1; i < sizes.rank(); ++i) want.push_back(sizes[i]);
            }
            if (arg.ndim != want.rank() || arg.view.sizes != want)
                invalid(std::string(fn) + ": " + name + " has shape " + sizes_str(arg.view, arg.ndim) +
                        " but the result has shape " + want.str());
            view = unbatched ? add_batch(arg.view) : arg.view;
            return;
        }
        owned = std::make_shared<convkit::Tensor>(dt, sizes, layout, dev);
        view = owned->view();
    }
    // The Python result: out's own object (a convkit.Tensor view of it) or the new tensor.
    py::object result(py::handle out, bool unbatched, const CallStream& cs, const convkit::Event& ev) {
        TensorObj* t;
        py::object obj;
        if (given) {
            obj = tensor_from_arg(arg, out);
            t = py::cast<TensorObj*>(obj);
        } else {
            t = new TensorObj;
            t->view = unbatched ? drop_batch(owned->view()) : owned->view();
            t->owner = std::move(owned);
            obj = wrap_tensor(t);
        }
        if (t->view.device.is_cuda() && cs.resolved) {
            t->has_stream = true;
            t->stream = cs.handle;
            t->ready = ev;
        }
        return obj;
    }
};

const convkit::Stream& call_stream(CallStream& cs, const convkit::TensorView& v, const char* fn) {
    (void)fn;
    return v.device.is_cuda() ? resolve_stream(cs, v.device) : cpu_stream();
}

void check_sum_has_out(const convkit::PostOps& ops, bool have_out, const char* fn) {
    if (!have_out && ops.has_sum())
        invalid(std::string(fn) + ": post-op 'sum' adds the destination's previous contents; pass out= (a new result "
                "has no previous contents)");
}

void agree_operands(const convkit::PostOps& ops, const char* fn, const convkit::TensorView& ref) {
    for (const convkit::PostOp& op : ops)
        if (op.kind == convkit::PostOp::Kind::binary) agree(fn, "the post-op operand", op.operand, "input", ref);
}

// ---------------------------------------------------------------------------------------------
// A convolution and a transposed one take the same arguments bar the geometry, so each direction
// is written once, over a kind (Conv or Transposed) that holds what differs.

// The geometry arguments as Python passed them; output_padding is the transposed kind's only.
struct Geometry {
    py::handle stride, padding, dilation, groups, output_padding, padding_l, padding_r;
};

struct Conv {
    using Params = convkit::ConvParams;
    // How the weight's sizes name its channels (in the messages about its shape).
    static constexpr const char* weight_dims = "(out_channels, in_channels / groups, kernel...)";
    // conv_backward_data names the batched input_size in its negative-size message, the
    // transposed one the caller's; kept so that neither message changes.
    static constexpr bool negative_input_size_batched = true;

    static void parse(Params& p, const char* fn, int nsp, const Geometry& g, const convkit::Dims& wsz) {
        parse_geometry(p, fn, nsp, g.stride, g.padding, g.dilation, g.groups, g.padding_l, g.padding_r, wsz);
    }
    static void check_packed(const char*, int) {}
    static convkit::Dims output_shape(const convkit::Dims& src, const convkit::Dims& wei, const Params& p) {
        return forward_shape(src, wei, p);
    }
    static int64_t bias_channels(const convkit::Dims& wsz, const Params&) { return wsz[0]; }

    static convkit::Event forward(const convkit::TensorView& dst, const convkit::TensorView& src, const PackedObj* pk,
                                  const convkit::TensorView& wei, const convkit::TensorView& bias, const Params& p,
                                  const convkit::PostOps& ops, const convkit::Stream& s,
                                  const convkit::ConvOptions& opt) {
        if (pk) return convkit::convolution_forward(dst, src, pk->packed, bias, p, ops, s, no_deps(), opt);
        return convkit::convolution_forward(dst, src, wei, bias, p, ops, s, no_deps(), opt);
    }
    static convkit::Event backward_data(const convkit::TensorView& diff_src, const convkit::TensorView& diff_dst,
                                        const convkit::TensorView& wei, const Params& p, const convkit::Stream& s,
                                        const convkit::ConvOptions& opt) {
        return convkit::convolution_backward_data(diff_src, diff_dst, wei, p, s, no_deps(), opt);
    }
    static convkit::Event backward_weights(const convkit::TensorView& diff_wei, const convkit::TensorView& diff_bias,
                                           const convkit::TensorView& diff_dst, const convkit::TensorView& src,
                                           const Params& p, const convkit::Stream& s,
                                           const convkit::ConvOptions& opt) {
        return convkit::convolution_backward_weights(diff_wei, diff_bias, diff_dst, src, p, s, no_deps(), opt);
    }
};

struct Transposed {
    using Params = convkit::ConvTransposeParams;
    static constexpr const char* weight_dims = "(in_channels, out_channels / groups, kernel...)";
    static constexpr bool negative_input_size_batched = false;

    static void parse(Params& p, const char* fn, int nsp, const Geometry& g, const convkit::Dims&) {
        parse_transpose_geometry(p, fn, nsp, g.stride, g.padding, g.output_padding, g.groups, g.dilation,
                                 g.padding_l, g.padding_r);
    }
    // Packed weights are laid out for a convolution's forward kernels; a transposed convolution
    // runs a backward-data kernel, which reads another layout.
    static void check_packed(const char* fn, int nsp) {
        throw py::type_error(std::string(fn) + ": weight is a PackedWeights (packed for conv" + std::to_string(nsp) +
                             "d's forward); a transposed convolution takes the weight tensor itself");
    }
    static convkit::Dims output_shape(const convkit::Dims& src, const convkit::Dims& wei, const Params& p) {
        return transpose_shape(src, wei, p, "conv_transpose_forward");
    }
    // The transposed weight is [IC, OC / groups, k...]: the bias has OC = weight_size[1] * groups.
    static int64_t bias_channels(const convkit::Dims& wsz, const Params& p) { return wsz[1] * p.groups; }

    static convkit::Event forward(const convkit::TensorView& dst, const convkit::TensorView& src, const PackedObj*,
                                  const convkit::TensorView& wei, const convkit::TensorView& bias, const Params& p,
                                  const convkit::PostOps& ops, const convkit::Stream& s,
                                  const convkit::ConvOptions& opt) {
        return convkit::conv_transpose_forward(dst, src, wei, bias, p, ops, s, no_deps(), opt);
    }
    static convkit::Event backward_data(const convkit::TensorView& diff_src, const convkit::TensorView& diff_dst,
                                        const convkit::TensorView& wei, const Params& p, const convkit::Stream& s,
                                        const convkit::ConvOptions& opt) {
        return convkit::conv_transpose_backward_data(diff_src, diff_dst, wei, p, s, no_deps(), opt);
    }
    static convkit::Event backward_weights(const convkit::TensorView& diff_wei, const convkit::TensorView& diff_bias,
                                           const convkit::TensorView& diff_dst, const convkit::TensorView& src,
                                           const Params& p, const convkit::Stream& s,
                                           const convkit::ConvOptions& opt) {
        return convkit::conv_transpose_backward_weights(diff_wei, diff_bias, diff_dst, src, p, s, no_deps(), opt);
    }
};

[[noreturn]] void bad_weight_rank(const char* fn, const std::string& count, const char* weight_dims,
                                  const ArgTensor& w) {
    invalid(std::string(fn) + ": weight must have " + count + " dimensions " + weight_dims + ", got shape " +
            sizes_str(w.view, w.ndim));
}

// The number of spatial dimensions of a weight tensor (rank 3 to 5) or of a weight_size.
int weight_nsp(const char* fn, const ArgTensor& w, const char* weight_dims) {
    const int nsp = w.ndim - 2;
    if (nsp < 1 || nsp > 3) bad_weight_rank(fn, "3 to 5", weight_dims, w);
    return nsp;
}
int weight_size_nsp(const char* fn, const convkit::Dims& wsz, const char* weight_dims) {
    const int nsp = wsz.rank() - 2;
    if (nsp < 1 || nsp > 3)
        invalid(std::string(fn) + ": weight_size " + wsz.str() + " must have 3 to 5 values " + weight_dims);
    return nsp;
}

template <class K>
py::object forward_impl(int nsp, const char* fn, py::handle input, py::handle weight, py::handle bias,
                        const Geometry& geo, py::handle post_ops, py::handle out, py::handle engine,
                        py::handle deterministic, py::handle stream) {
    CallStream cs;
    cs.user = stream;
    cs.first = input;
    ArgTensor x;
    import_tensor(x, input, fn, "input", ImportOptions{}, &cs);
    if (x.ndim != nsp + 1 && x.ndim != nsp + 2)
        invalid("Expected " + std::to_string(nsp + 1) + "D (unbatched) or " + std::to_string(nsp + 2) +
                "D (batched) input to " + fn + ", but got input of size: " + sizes_str(x.view, x.ndim));
    const bool unbatched = x.ndim == nsp + 1;

    ArgTensor w;
    const PackedObj* pk = nullptr;
    convkit::Dims wsizes;
    if (g_packed_type && Py_TYPE(weight.ptr()) == g_packed_type) {
        K::check_packed(fn, nsp);
        pk = py::cast<const PackedObj*>(weight);
        wsizes = pk->packed.sizes();
        if (pk->packed.dtype() != x.view.dtype)
            invalid(std::string(fn) + ": the packed weight has dtype " + dtype_name(pk->packed.dtype()) +
                    " but input has dtype " + dtype_name(x.view.dtype));
        if (pk->device != x.view.device)
            invalid(std::string(fn) + ": the packed weight is on " + pk->device.str() + " but input is on " +
                    x.view.device.str());
    } else {
        import_tensor(w, weight, fn, "weight", ImportOptions{}, &cs);
        if (w.ndim != nsp + 2) bad_weight_rank(fn, std::to_string(nsp + 2), K::weight_dims, w);
        agree(fn, "weight", w.view, "input", x.view);
        wsizes = w.view.sizes;
    }
    ArgTensor b;
    if (!is_none(bias)) {
        import_tensor(b, bias, fn, "bias", ImportOptions{}, &cs);
        if (b.ndim != 1)
            invalid(std::string(fn) + ": bias must have 1 dimension (out_channels), got shape " + sizes_str(b.view, b.ndim));
        agree(fn, "bias", b.view, "input", x.view);
    }
    typename K::Params prm;
    K::parse(prm, fn, nsp, geo, wsizes);
    convkit::PostOps ops;
    Operands operands;
    parse_post_ops(ops, operands, post_ops, fn, cs);
    broadcast_operands(ops, nsp + 2);
    agree_operands(ops, fn, x.view);
    const convkit::ConvOptions opt = parse_options(engine, deterministic);

    Output o;
    o.import(out, fn, "out", cs);
    if (o.given) agree(fn, "out", o.arg.view, "input", x.view);
    no_stream_on_cpu(fn, stream, x.view);
    check_sum_has_out(ops, o.given, fn);

    const convkit::TensorView src = unbatched ? add_batch(x.view) : x.view;
    const convkit::Dims osz = K::output_shape(src.sizes, wsizes, prm);
    o.prepare(fn, "out", osz, unbatched, src.dtype, format_of(src), src.device);
    const convkit::Stream& s = call_stream(cs, src, fn);
    convkit::Event ev;
    {
        py::gil_scoped_release nogil;
        ev = K::forward(o.view, src, pk, w.view, b.view, prm, ops, s, opt);
    }
    return o.result(out, unbatched, cs, ev);
}

template <class K>
py::object backward_data_impl(const char* fn, py::handle grad_output, py::handle weight, py::handle input_size,
                              const Geometry& geo, py::handle out, py::handle engine, py::handle deterministic,
                              py::handle stream) {
    CallStream cs;
    cs.user = stream;
    cs.first = grad_output;
    ArgTensor gy, w;
    import_tensor(gy, grad_output, fn, "grad_output", ImportOptions{}, &cs);
    import_tensor(w, weight, fn, "weight", ImportOptions{}, &cs);
    const int nsp = weight_nsp(fn, w, K::weight_dims);
    if (gy.ndim != nsp + 1 && gy.ndim != nsp + 2)
        invalid(std::string(fn) + ": grad_output has shape " + sizes_str(gy.view, gy.ndim) + " but weight " +
                w.view.sizes.str() + " needs a " + std::to_string(nsp + 2) + "D (batched) or " +
                std::to_string(nsp + 1) + "D (unbatched) grad_output");
    const bool unbatched = gy.ndim == nsp + 1;
    agree(fn, "weight", w.view, "grad_output", gy.view);
    const convkit::Dims given = parse_shape(input_size, fn, "input_size");
    if (given.rank() != gy.ndim)
        invalid(std::string(fn) + ": input_size " + given.str() + " must have " + std::to_string(gy.ndim) +
                " values, as grad_output " + gy.view.sizes.str() + " has");
    // The rank matches grad_output's, so batched_shape can only fail on a negative size.
    convkit::Dims isz = given;
    if (K::negative_input_size_batched && unbatched) {
        isz = convkit::Dims{1};
        for (int64_t v : given) isz.push_back(v);
    }
    isz = batched_shape(isz, nsp, fn, "input_size", "this weight");
    typename K::Params prm;
    K::parse(prm, fn, nsp, geo, w.view.sizes);
    const convkit::ConvOptions opt = parse_options(engine, deterministic);
    Output o;
    o.import(out, fn, "out", cs);
    if (o.given) agree(fn, "out", o.arg.view, "grad_output", gy.view);
    no_stream_on_cpu(fn, stream, gy.view);

    const convkit::TensorView dy = unbatched ? add_batch(gy.view) : gy.view;
    o.prepare(fn, "out", isz, unbatched, dy.dtype, format_of(dy), dy.device);
    const convkit::Stream& s = call_stream(cs, dy, fn);
    convkit::Event ev;
    {
        py::gil_scoped_release nogil;
        ev = K::backward_data(o.view, dy, w.view, prm, s, opt);
    }
    return o.result(out, unbatched, cs, ev);
}

template <class K>
py::object backward_weights_impl(const char* fn, py::handle grad_output, py::handle input, py::handle weight_size,
                                 const Geometry& geo, py::handle bias, py::handle out, py::handle bias_out,
                                 py::handle engine, py::handle deterministic, py::handle stream) {
    CallStream cs;
    cs.user = stream;
    cs.first = grad_output;
    ArgTensor gy, x;
    import_tensor(gy, grad_output, fn, "grad_output", ImportOptions{}, &cs);
    import_tensor(x, input, fn, "input", ImportOptions{}, &cs);
    const convkit::Dims wsz = parse_shape(weight_size, fn, "weight_size");
    const int nsp = weight_size_nsp(fn, wsz, K::weight_dims);
    if (x.ndim != nsp + 1 && x.ndim != nsp + 2)
        invalid(std::string(fn) + ": input has shape " + sizes_str(x.view, x.ndim) + " but weight_size " + wsz.str() +
                " needs a " + std::to_string(nsp + 2) + "D (batched) or " + std::to_string(nsp + 1) +
                "D (unbatched) input");
    const bool unbatched = x.ndim == nsp + 1;
    if (gy.ndim != x.ndim)
        invalid(std::string(fn) + ": grad_output has shape " + sizes_str(gy.view, gy.ndim) + " but input has shape " +
                sizes_str(x.view, x.ndim) + " (both batched or both unbatched)");
    for (int64_t v : wsz)
        if (v < 0) invalid(std::string(fn) + ": weight_size " + wsz.str() + " has a negative size");
    agree(fn, "input", x.view, "grad_output", gy.view);
    typename K::Params prm;
    K::parse(prm, fn, nsp, geo, wsz);
    const convkit::ConvOptions opt = parse_options(engine, deterministic);
    const bool with_bias = parse_optional_bool(bias).value_or(false) || !is_none(bias_out);
    Output ow, ob;
    ow.import(out, fn, "out", cs);
    if (ow.given) agree(fn, "out", ow.arg.view, "grad_output", gy.view);
    if (with_bias) {
        ob.import(bias_out, fn, "bias_out", cs);
        if (ob.given) agree(fn, "bias_out", ob.arg.view, "grad_output", gy.view);
    }
    no_stream_on_cpu(fn, stream, gy.view);

    const convkit::TensorView dy = unbatched ? add_batch(gy.view) : gy.view;
    const convkit::TensorView src = unbatched ? add_batch(x.view) : x.view;
    ow.prepare(fn, "out", wsz, false, dy.dtype, format_of(src), dy.device);
    if (with_bias)
        ob.prepare(fn, "bias_out", convkit::Dims{K::bias_channels(wsz, prm)}, false, dy.dtype,
                   convkit::Layout::channels_first, dy.device);
    const convkit::Stream& s = call_stream(cs, dy, fn);
    convkit::Event ev;
    {
        py::gil_scoped_release nogil;
        ev = K::backward_weights(ow.view, with_bias ? ob.view : convkit::TensorView(), dy, src, prm, s, opt);
    }
    py::object gw = ow.result(out, false, cs, ev);
    py::object gb = with_bias ? ob.result(bias_out, false, cs, ev) : py::none();
    return py::make_tuple(gw, gb);
}

// The Python entry points: each kind's argument order (PyTorch's), onto the shared bodies.

py::object forward(int nsp, const char* fn, py::handle input, py::handle weight, py::handle bias, py::handle stride,
                   py::handle padding, py::handle dilation, py::handle groups, py::handle padding_l,
                   py::handle padding_r, py::handle post_ops, py::handle out, py::handle engine,
                   py::handle deterministic, py::handle stream) {
    const Geometry geo{stride, padding, dilation, groups, py::none(), padding_l, padding_r};
    return forward_impl<Conv>(nsp, fn, input, weight, bias, geo, post_ops, out, engine, deterministic, stream);
}

py::object backward_data(py::handle grad_output, py::handle weight, py::handle input_size, py::handle stride,
                         py::handle padding, py::handle dilation, py::handle groups, py::handle padding_l,
                         py::handle padding_r, py::handle out, py::handle engine, py::handle deterministic,
                         py::handle stream) {
    const Geometry geo{stride, padding, dilation, groups, py::none(), padding_l, padding_r};
    return backward_data_impl<Conv>("conv_backward_data", grad_output, weight, input_size, geo, out, engine,
                                    deterministic, stream);
}

py::object backward_weights(py::handle grad_output, py::handle input, py::handle weight_size, py::handle stride,
                            py::handle padding, py::handle dilation, py::handle groups, py::handle bias,
                            py::handle padding_l, py::handle padding_r, py::handle out, py::handle bias_out,
                            py::handle engine, py::handle deterministic, py::handle stream) {
    const Geometry geo{stride, padding, dilation, groups, py::none(), padding_l, padding_r};
    return backward_weights_impl<Conv>("conv_backward_weights", grad_output, input, weight_size, geo, bias, out,
                                       bias_out, engine, deterministic, stream);
}

py::object transpose_forward(int nsp, const char* fn, py::handle input, py::handle weight, py::handle bias,
                             py::handle stride, py::handle padding, py::handle output_padding, py::handle groups,
                             py::handle dilation, py::handle padding_l, py::handle padding_r, py::handle post_ops,
                             py::handle out, py::handle engine, py::handle deterministic, py::handle stream) {
    const Geometry geo{stride, padding, dilation, groups, output_padding, padding_l, padding_r};
    return forward_impl<Transposed>(nsp, fn, input, weight, bias, geo, post_ops, out, engine, deterministic, stream);
}

py::object transpose_backward_data(py::handle grad_output, py::handle weight, py::handle input_size,
                                   py::handle stride, py::handle padding, py::handle output_padding,
                                   py::handle groups, py::handle dilation, py::handle padding_l, py::handle padding_r,
                                   py::handle out, py::handle engine, py::handle deterministic, py::handle stream) {
    const Geometry geo{stride, padding, dilation, groups, output_padding, padding_l, padding_r};
    return backward_data_impl<Transposed>("conv_transpose_backward_data", grad_output, weight, input_size, geo, out,
                                          engine, deterministic, stream);
}

py::object transpose_backward_weights(py::handle grad_output, py::handle input, py::handle weight_size,
                                      py::handle stride, py::handle padding, py::handle output_padding,
                                      py::handle groups, py::handle dilation, py::handle bias, py::handle padding_l,
                                      py::handle padding_r, py::handle out, py::handle bias_out, py::handle engine,
                                      py::handle deterministic, py::handle stream) {
    const Geometry geo{stride, padding, dilation, groups, output_padding, padding_l, padding_r};
    return backward_weights_impl<Transposed>("conv_transpose_backward_weights", grad_output, input, weight_size, geo,
                                             bias, out, bias_out, engine, deterministic, stream);
}

PackedObj prepack(py::handle weight, py::handle input_size, py::handle stride, py::handle padding,
                  py::handle dilation, py::handle groups, py::handle post_ops, py::handle engine) {
    const char* fn = "prepack_weights";
    CallStream cs;
    cs.first = weight;
    ArgTensor w;
    import_tensor(w, weight, fn, "weight", ImportOptions{}, &cs);
    const int nsp = weight_nsp(fn, w, Conv::weight_dims);
    // input_size: a shape (the input's memory format is then taken to be the weight's) or a sample
    // tensor (its sizes and memory format; its data is not read).
    convkit::Dims isz;
    convkit::Layout layout = format_of(w.view);
    ArgTensor sample;
    if (PySequence_Check(input_size.ptr()) && !PyObject_HasAttrString(input_size.ptr(), "__dlpack__")) {
        isz = parse_shape(input_size, fn, "input_size");
    } else {
        import_tensor(sample, input_size, fn, "input_size", ImportOptions{}, &cs);
        isz = sample.view.sizes;
        if (sample.ndim == nsp + 2) layout = format_of(sample.view);
        else if (sample.ndim == nsp + 1) layout = format_of(add_batch(sample.view));
    }
    if (isz.rank() == nsp + 1) {
        convkit::Dims b{1};
        for (int64_t v : isz) b.push_back(v);
        isz = b;
    }
    if (isz.rank() != nsp + 2)
        invalid(std::string(fn) + ": input_size " + isz.str() + " must have " + std::to_string(nsp + 2) +
                " values (or " + std::to_string(nsp + 1) + " for an unbatched input) for weight " + w.view.sizes.str());
    for (int64_t v : isz)
        if (v < 0) invalid(std::string(fn) + ": input_size " + isz.str() + " has a negative size");
    convkit::ConvParams prm;
    parse_geometry(prm, fn, nsp, stride, padding, dilation, groups, py::none(), py::none(), w.view.sizes);
    convkit::PostOps ops;
    Operands operands;
    parse_post_ops(ops, operands, post_ops, fn, cs);
    broadcast_operands(ops, nsp + 2);
    convkit::ConvOptions opt;
    opt.engine = parse_engine(engine);
    const convkit::TensorView src = convkit::TensorView::with_layout(nullptr, w.view.dtype, isz, layout, w.view.device);
    PackedObj p;
    {
        py::gil_scoped_release nogil;
        p.packed = convkit::prepack_weights(w.view, src, prm, ops, opt);
    }
    p.device = w.view.device;
    return p;
}

py::tuple transpose_output_shape(py::handle input_size, py::handle weight_size, py::handle stride, py::handle padding,
                                 py::handle output_padding, py::handle groups, py::handle dilation,
                                 py::handle padding_l, py::handle padding_r) {
    const char* fn = "conv_transpose_output_shape";
    const convkit::Dims wsz = parse_shape(weight_size, fn, "weight_size");
    const int nsp = weight_size_nsp(fn, wsz, Transposed::weight_dims);
    const convkit::Dims given = parse_shape(input_size, fn, "input_size");
    const convkit::Dims isz = batched_shape(given, nsp, fn, "input_size", ("weight_size " + wsz.str()).c_str());
    convkit::ConvTransposeParams prm;
    parse_transpose_geometry(prm, fn, nsp, stride, padding, output_padding, groups, dilation, padding_l, padding_r);
    const convkit::Dims osz = transpose_shape(isz, wsz, prm, nullptr);
    const int skip = given.rank() == nsp + 1 ? 1 : 0;  // unbatched in, unbatched out
    py::tuple t(osz.rank() - skip);
    for (int i = skip; i < osz.rank(); ++i) t[i - skip] = osz[i];
    return t;
}

// ---------------------------------------------------------------------------------------------

const char* kForwardDoc = R"doc((input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_l=None, padding_r=None, post_ops=None, out=None, engine='auto', deterministic=None, stream=None) -> Tensor

%dD convolution with PyTorch's semantics and argument names (torch.nn.functional.conv%dd):
out = post_ops(conv(input, weight) + bias).

input   (N, C_in, %s) or unbatched (C_in, %s): any DLPack tensor (NumPy array,
        torch tensor on CPU or CUDA) or a convkit.Tensor; never copied.
weight  (C_out, C_in / groups, %s), or PackedWeights from prepack_weights().
bias    (C_out,) or None.
stride, dilation: an int or one int per spatial dimension.
padding: an int, one int per dimension, 'valid', 'same' (stride 1 only; an odd total pads the
        extra element on the right, as PyTorch), or ((left, right), ...) per dimension.
padding_l / padding_r: per-side overrides (an int or one per dimension) of an int padding.
post_ops: fused after the bias: a benchdnn string ('relu', 'relu:0.1', 'clip:0:6',
        'sum:0.5+relu', ...), or a list of strings and (name, *args) tuples; binary ops take a
        tensor broadcastable to the result: [('add', residual), 'relu']. 'sum' accumulates into
        out's previous contents and needs out=.
out     the result's buffer (its shape, dtype and device must match); returned as a
        convkit.Tensor view of it. Nothing is written into it when the call fails.
engine  'auto' (the best for the tensors' device), 'cpu' (oneDNN), 'ref' (reference loops), 'cuda'.
deterministic: bitwise reproducible results run to run; None = set_deterministic()'s setting.
stream  CUDA only: a cudaStream_t (int) or an object with .cuda_stream (torch.cuda.Stream); None =
        torch's current stream for torch inputs, else the legacy default stream. The call returns
        without synchronising; the result is ready in stream order.

Returns a new convkit.Tensor in input's memory format (channels_last in -> channels_last out) on
input's device, or out's view. Raises InvalidArgumentError (a ValueError) on bad arguments,
UnsupportedError, OutOfMemoryError, BackendError; TypeError for an object without DLPack or an
unsupported dtype.)doc";

std::string forward_doc(int nsp) {
    static const char* sp[] = {"", "L", "H, W", "D, H, W"};
    static const char* k[] = {"", "kL", "kH, kW", "kD, kH, kW"};
    char buf[4096];
    std::snprintf(buf, sizeof buf, kForwardDoc, nsp, nsp, sp[nsp], sp[nsp], k[nsp]);
    return std::string("conv") + std::to_string(nsp) + "d" + buf;
}

template <int N>
void def_forward(py::module_& m) {
    static const std::string name = "conv" + std::to_string(N) + "d";
    static const std::string doc = forward_doc(N);
    m.def(
        name.c_str(),
        [](py::handle input, py::handle weight, py::handle bias, py::handle stride, py::handle padding,
           py::handle dilation, py::handle groups, py::handle padding_l, py::handle padding_r, py::handle post_ops,
           py::handle out, py::handle engine, py::handle deterministic, py::handle stream) {
            return forward(N, name.c_str(), input, weight, bias, stride, padding, dilation, groups, padding_l,
                           padding_r, post_ops, out, engine, deterministic, stream);
        },
        py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = 1,
        py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1, py::kw_only(),
        py::arg("padding_l") = py::none(), py::arg("padding_r") = py::none(), py::arg("post_ops") = py::none(),
        py::arg("out") = py::none(), py::arg("engine") = "auto", py::arg("deterministic") = py::none(),
        py::arg("stream") = py::none(), doc.c_str());
}

const char* kTransposeDoc = R"doc((input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, padding_l=None, padding_r=None, post_ops=None, out=None, engine='auto', deterministic=None, stream=None) -> Tensor

%dD transposed convolution ("deconvolution") with PyTorch's semantics, argument names and
argument order (torch.nn.functional.conv_transpose%dd): out = post_ops(conv_transpose(input,
weight) + bias), the input gradient of conv%dd with the same weight. Per spatial dimension:
    out = (in - 1) * stride - padding_l - padding_r + dilation * (k - 1) + output_padding + 1

input   (N, C_in, %s) or unbatched (C_in, %s): any DLPack tensor or a convkit.Tensor.
weight  (C_in, C_out / groups, %s): PyTorch's transposed layout (what nn.ConvTranspose%dd holds).
bias    (C_out,) or None.
stride, dilation, output_padding: an int or one int per spatial dimension. output_padding adds
        rows at the end of each dimension and must be smaller than the stride or the dilation.
padding: an int, one int per dimension, or ((left, right), ...) per dimension: rows removed from
        the ends of the output. 'same' / 'valid' are a TypeError, as in PyTorch.
padding_l / padding_r: per-side overrides (an int or one per dimension) of an int padding.
post_ops, out, engine, deterministic, stream: as conv%dd (post-ops apply to this function's
        output; 'sum' accumulates into out's previous contents).

Returns a new convkit.Tensor in input's memory format on input's device, or out's view. Raises
InvalidArgumentError (a ValueError) on bad arguments, UnsupportedError, OutOfMemoryError,
BackendError; TypeError for an object without DLPack, an unsupported dtype or a PackedWeights.)doc";

std::string transpose_doc(int nsp) {
    static const char* sp[] = {"", "L", "H, W", "D, H, W"};
    static const char* k[] = {"", "kL", "kH, kW", "kD, kH, kW"};
    char buf[4096];
    std::snprintf(buf, sizeof buf, kTransposeDoc, nsp, nsp, nsp, sp[nsp], sp[nsp], k[nsp], nsp, nsp);
    return std::string("conv_transpose") + std::to_string(nsp) + "d" + buf;
}

template <int N>
void def_transpose(py::module_& m) {
    static const std::string name = "conv_transpose" + std::to_string(N) + "d";
    static const std::string doc = transpose_doc(N);
    m.def(
        name.c_str(),
        [](py::handle input, py::handle weight, py::handle bias, py::handle stride, py::handle padding,
           py::handle output_padding, py::handle groups, py::handle dilation, py::handle padding_l,
           py::handle padding_r, py::handle post_ops, py::handle out, py::handle engine, py::handle deterministic,
           py::handle stream) {
            return transpose_forward(N, name.c_str(), input, weight, bias, stride, padding, output_padding, groups,
                                     dilation, padding_l, padding_r, post_ops, out, engine, deterministic, stream);
        },
        py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = 1,
        py::arg("padding") = 0, py::arg("output_padding") = 0, py::arg("groups") = 1, py::arg("dilation") = 1,
        py::kw_only(), py::arg("padding_l") = py::none(), py::arg("padding_r") = py::none(),
        py::arg("post_ops") = py::none(), py::arg("out") = py::none(), py::arg("engine") = "auto",
        py::arg("deterministic") = py::none(), py::arg("stream") = py::none(), doc.c_str());
}

}  // namespace

void bind_conv(py::module_& m) {
    def_forward<1>(m);
    def_forward<2>(m);
    def_forward<3>(m);

    m.def("conv_backward_data", &backward_data, py::arg("grad_output"), py::arg("weight"), py::arg("input_size"),
          py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1,
          py::kw_only(), py::arg("padding_l") = py::none(), py::arg("padding_r") = py::none(),
          py::arg("out") = py::none(), py::arg("engine") = "auto", py::arg("deterministic") = py::none(),
          py::arg("stream") = py::none(),
          R"doc(conv_backward_data(grad_output, weight, input_size, stride=1, padding=0, dilation=1, groups=1, *, padding_l=None, padding_r=None, out=None, engine='auto', deterministic=None, stream=None) -> Tensor

Gradient of a convolution with respect to its input (torch.nn.grad.conv{1,2,3}d_input): the
dimension comes from weight's rank. input_size is the forward input's shape (N, C_in, spatial...)
(it settles the sizes a strided convolution leaves ambiguous); an unbatched grad_output goes
with an unbatched input_size. Parameters as conv2d. The result is in grad_output's memory format
on its device, or out's view.)doc");

    m.def("conv_backward_weights", &backward_weights, py::arg("grad_output"), py::arg("input"),
          py::arg("weight_size"), py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1,
          py::arg("groups") = 1, py::kw_only(), py::arg("bias") = false, py::arg("padding_l") = py::none(),
          py::arg("padding_r") = py::none(), py::arg("out") = py::none(), py::arg("bias_out") = py::none(),
          py::arg("engine") = "auto", py::arg("deterministic") = py::none(), py::arg("stream") = py::none(),
          R"doc(conv_backward_weights(grad_output, input, weight_size, stride=1, padding=0, dilation=1, groups=1, *, bias=False, padding_l=None, padding_r=None, out=None, bias_out=None, engine='auto', deterministic=None, stream=None) -> (Tensor, Tensor or None)

Gradient of a convolution with respect to its weight (torch.nn.grad.conv{1,2,3}d_weight) and,
with bias=True or bias_out=, its bias (grad_output summed over all but the channel dimension).
weight_size is (C_out, C_in / groups, kernel...). Parameters as conv2d. The weight gradient is in
input's memory format; returns (grad_weight, grad_bias or None), or views of out / bias_out.)doc");

    def_transpose<1>(m);
    def_transpose<2>(m);
    def_transpose<3>(m);

    m.def("conv_transpose_backward_data", &transpose_backward_data, py::arg("grad_output"), py::arg("weight"),
          py::arg("input_size"), py::arg("stride") = 1, py::arg("padding") = 0, py::arg("output_padding") = 0,
          py::arg("groups") = 1, py::arg("dilation") = 1, py::kw_only(), py::arg("padding_l") = py::none(),
          py::arg("padding_r") = py::none(), py::arg("out") = py::none(), py::arg("engine") = "auto",
          py::arg("deterministic") = py::none(), py::arg("stream") = py::none(),
          R"doc(conv_transpose_backward_data(grad_output, weight, input_size, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, padding_l=None, padding_r=None, out=None, engine='auto', deterministic=None, stream=None) -> Tensor

Gradient of a transposed convolution with respect to its input (a convolution of grad_output
with the weight): the dimension comes from weight's rank (C_in, C_out / groups, kernel...).
input_size is the forward input's shape (N, C_in, spatial...); grad_output must have the shape
the forward gives for it with these parameters (output_padding included). An unbatched
grad_output goes with an unbatched input_size. Parameters as conv_transpose2d. The result is in
grad_output's memory format on its device, or out's view.)doc");

    m.def("conv_transpose_backward_weights", &transpose_backward_weights, py::arg("grad_output"), py::arg("input"),
          py::arg("weight_size"), py::arg("stride") = 1, py::arg("padding") = 0, py::arg("output_padding") = 0,
          py::arg("groups") = 1, py::arg("dilation") = 1, py::kw_only(), py::arg("bias") = false,
          py::arg("padding_l") = py::none(), py::arg("padding_r") = py::none(), py::arg("out") = py::none(),
          py::arg("bias_out") = py::none(), py::arg("engine") = "auto", py::arg("deterministic") = py::none(),
          py::arg("stream") = py::none(),
          R"doc(conv_transpose_backward_weights(grad_output, input, weight_size, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, bias=False, padding_l=None, padding_r=None, out=None, bias_out=None, engine='auto', deterministic=None, stream=None) -> (Tensor, Tensor or None)

Gradient of a transposed convolution with respect to its weight and, with bias=True or bias_out=
(bias_out given computes the bias gradient even with bias=False), its bias (grad_output summed
over all but the channel dimension, C_out = weight_size[1] * groups values). weight_size is
(C_in, C_out / groups, kernel...). Parameters as conv_transpose2d. The weight gradient is in
input's memory format; returns (grad_weight, grad_bias or None), or views of out / bias_out.)doc");

    m.def("conv_transpose_output_shape", &transpose_output_shape, py::arg("input_size"), py::arg("weight_size"),
          py::arg("stride") = 1, py::arg("padding") = 0, py::arg("output_padding") = 0, py::arg("groups") = 1,
          py::arg("dilation") = 1, py::kw_only(), py::arg("padding_l") = py::none(),
          py::arg("padding_r") = py::none(),
          R"doc(conv_transpose_output_shape(input_size, weight_size, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, padding_l=None, padding_r=None) -> tuple

The shape conv_transpose{1,2,3}d gives for an input of input_size (batched or unbatched: the
result has the same rank) and a weight of weight_size (C_in, C_out / groups, kernel...):
(N, weight_size[1] * groups, (in - 1) * stride - padding_l - padding_r + dilation * (k - 1) +
output_padding + 1 ...). Checks the arguments as the transposed convolution would
(InvalidArgumentError naming the values).)doc");

    py::class_<PackedObj> packed(m, "PackedWeights",
                                 "Weights reordered once into the layout an engine's forward kernels read (from "
                                 "prepack_weights()); pass it as conv*d's weight.");
    g_packed_type = reinterpret_cast<PyTypeObject*>(packed.ptr());
    packed.def_property_readonly("shape", [](const PackedObj& p) {
        py::tuple t(p.packed.sizes().rank());
        for (int i = 0; i < p.packed.sizes().rank(); ++i) t[i] = p.packed.sizes()[i];
        return t;
    }, "The weight's shape (C_out, C_in / groups, kernel...).");
    packed.def_property_readonly("dtype", [](const PackedObj& p) { return dtype_name(p.packed.dtype()); });
    packed.def_property_readonly("device", [](const PackedObj& p) { return p.device.str(); });
    packed.def_property_readonly("engine", [](const PackedObj& p) { return convkit::to_string(p.packed.engine()); },
                                 "The engine the weights were packed for.");
    packed.def("__repr__", [](const PackedObj& p) {
        return std::string("convkit.PackedWeights(shape=") + p.packed.sizes().str() + ", dtype='" +
               dtype_name(p.packed.dtype()) + "', device='" + p.device.str() + "', engine='" +
               convkit::to_string(p.packed.engine()) + "')";
    });

    m.def("prepack_weights", &prepack, py::arg("weight"), py::arg("input_size"), py::arg("stride") = 1,
          py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1, py::kw_only(),
          py::arg("post_ops") = py::none(), py::arg("engine") = "auto",
          R"doc(prepack_weights(weight, input_size, stride=1, padding=0, dilation=1, groups=1, *, post_ops=None, engine='auto') -> PackedWeights

Reorders weight once, ahead of time, into the layout the engine's forward kernels read (oneDNN's
blocked layouts on CPU), for inference where the weights do not change; pass the result as
conv*d's weight with the same geometry. input_size is the input's shape (its memory format is
then taken to be the weight's) or a sample input tensor (its shape and memory format; its data is
not read). A call whose problem differs (another batch size) still gives the right answer, at
the cost of a reorder. The weight may be freed afterwards.)doc");
}

}  // namespace ckpy
