// cuDNN graph (backend) API: descriptors, graph construction, heuristics, plans, variant packs.
// Written against cudnn_graph.h of cuDNN 9.19; the attribute types below are the ones the
// backend accepts (e.g. pointwise parameters as FLOAT when the math precision is FLOAT).
#include "cuda/cudnn_graph.hpp"

#include "cuda/cuda_util.hpp"

namespace convkit::cuda {

Desc::Desc(cudnnBackendDescriptorType_t type) {
    check_cudnn(cudnnBackendCreateDescriptor(type, &d_), "cudnnBackendCreateDescriptor");
}

Desc::~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
}

Desc& Desc::operator=(Desc&& o) noexcept {
    if (this != &o) {
        if (d_) cudnnBackendDestroyDescriptor(d_);
        d_ = std::exchange(o.d_, nullptr);
    }
    return *this;
}

Desc& Desc::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values) {
    cudnnStatus_t s = cudnnBackendSetAttribute(d_, name, type, count, values);
    if (s != CUDNN_STATUS_SUCCESS)
        throw_cudnn(s, "cudnnBackendSetAttribute(attribute " + std::to_string(static_cast<int>(name)) + ")");
    return *this;
}

void Desc::finalize(const char* what) { check_cudnn(cudnnBackendFinalize(d_), what); }

cudnnStatus_t Desc::try_finalize() { return cudnnBackendFinalize(d_); }

cudnnDataType_t to_cudnn(DType dt) {
    switch (dt) {
        case DType::f32: return CUDNN_DATA_FLOAT;
        case DType::f64: return CUDNN_DATA_DOUBLE;
        case DType::f16: return CUDNN_DATA_HALF;
        case DType::bf16: return CUDNN_DATA_BFLOAT16;
    }
    return CUDNN_DATA_FLOAT;
}

namespace {

Desc make_tensor(const TensorSpec& t, int64_t alignment) {
    Desc d(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    bool is_virtual = t.is_virtual;
    d.set_dtype(CUDNN_ATTR_TENSOR_DATA_TYPE, t.dtype)
        .set_i64s(CUDNN_ATTR_TENSOR_DIMENSIONS, t.dims)
        .set_i64s(CUDNN_ATTR_TENSOR_STRIDES, t.strides)
        .set_i64(CUDNN_ATTR_TENSOR_UNIQUE_ID, t.uid)
        .set_i64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, alignment)
        .set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    d.finalize("cudnnBackendFinalize(tensor)");
    return d;
}

void set_scalar(Desc& d, cudnnBackendAttributeName_t name, double v, bool as_double) {
    if (as_double) {
        d.set(name, CUDNN_TYPE_DOUBLE, 1, &v);
    } else {
        float f = static_cast<float>(v);
        d.set(name, CUDNN_TYPE_FLOAT, 1, &f);
    }
}

Desc make_pointwise_desc(const PointwiseSpec& p) {
    Desc d(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    cudnnPointwiseMode_t mode = p.mode;
    d.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    d.set_dtype(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_DATA_FLOAT);
    if (p.mode == CUDNN_POINTWISE_RELU_FWD) {
        d.set(CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP, CUDNN_TYPE_FLOAT, 1, &p.relu_lower);
        if (p.has_upper) d.set(CUDNN_ATTR_POINTWISE_RELU_UPPER_CLIP, CUDNN_TYPE_FLOAT, 1, &p.relu_upper);
        d.set(CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP_SLOPE, CUDNN_TYPE_FLOAT, 1, &p.relu_slope);
    }
    if (p.mode == CUDNN_POINTWISE_ELU_FWD) d.set(CUDNN_ATTR_POINTWISE_ELU_ALPHA, CUDNN_TYPE_FLOAT, 1, &p.elu_alpha);
    if (p.mode == CUDNN_POINTWISE_SWISH_FWD) d.set(CUDNN_ATTR_POINTWISE_SWISH_BETA, CUDNN_TYPE_FLOAT, 1, &p.swish_beta);
    d.finalize("cudnnBackendFinalize(pointwise)");
    return d;
}

// The descriptor type and attribute names of the convolution node of each direction: x, w and y
// are src/weights/dst, diff_src/weights/diff_dst (bwd_d) or src/diff_weights/diff_dst (bwd_w).
struct ConvOpNames {
    cudnnBackendDescriptorType_t type;
    cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
    const char* finalize;
};

#define CONVKIT_CONV_OP(TYPE, ATTR, X, W, Y, WHAT)                                                              \
    ConvOpNames {                                                                                              \
        CUDNN_BACKEND_OPERATION_CONVOLUTION_##TYPE##_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_##ATTR##_##X,   \
            CUDNN_ATTR_OPERATION_CONVOLUTION_##ATTR##_##W, CUDNN_ATTR_OPERATION_CONVOLUTION_##ATTR##_##Y,       \
            CUDNN_ATTR_OPERATION_CONVOLUTION_##ATTR##_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_##ATTR##_ALPHA, \
            CUDNN_ATTR_OPERATION_CONVOLUTION_##ATTR##_BETA, "cudnnBackendFinalize(convolution " WHAT ")"        \
    }

const ConvOpNames& conv_op_names(core::Direction dir) {
    static const ConvOpNames fwd = CONVKIT_CONV_OP(FORWARD, FORWARD, X, W, Y, "forward");
    static const ConvOpNames bwd_d = CONVKIT_CONV_OP(BACKWARD_DATA, BWD_DATA, DX, W, DY, "backward data");
    static const ConvOpNames bwd_w = CONVKIT_CONV_OP(BACKWARD_FILTER, BWD_FILTER, X, DW, DY, "backward filter");
    return dir == core::Direction::fwd ? fwd : dir == core::Direction::bwd_d ? bwd_d : bwd_w;
}

#undef CONVKIT_CONV_OP

}  // namespace

std::vector<int64_t> graph_uids(const GraphSpec& g) {
    std::vector<int64_t> u{g.x.uid, g.w.uid, g.y.uid};
    for (const auto& p : g.epilogue)
        if (p.binary) u.push_back(p.operand.uid);
    return u;
}

Graph build_graph(cudnnHandle_t handle, const GraphSpec& g) {
    std::vector<Desc> keep;
    Desc x = make_tensor(g.x, g.alignment), w = make_tensor(g.w, g.alignment);
    // The convolution writes y directly, or a virtual f32 tensor that the pointwise chain consumes.
    TensorSpec conv_out = g.y;
    if (!g.epilogue.empty()) {
        conv_out.uid = 1000;
        conv_out.dtype = CUDNN_DATA_FLOAT;
        conv_out.is_virtual = true;
    }
    Desc y = make_tensor(conv_out, g.alignment);

    Desc conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    int64_t nsp = static_cast<int64_t>(g.stride.size());
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    conv.set_i64(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, nsp)
        .set_dtype(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, g.compute)
        .set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode)
        .set_i64s(CUDNN_ATTR_CONVOLUTION_DILATIONS, g.dilation)
        .set_i64s(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, g.stride)
        .set_i64s(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, g.pre_pad)
        .set_i64s(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, g.post_pad);
    conv.finalize("cudnnBackendFinalize(convolution)");

    std::vector<Desc> ops;
    const ConvOpNames& names = conv_op_names(g.dir);
    Desc conv_op(names.type);
    conv_op.set_desc(names.x, x).set_desc(names.w, w).set_desc(names.y, y).set_desc(names.conv, conv);
    set_scalar(conv_op, names.alpha, 1.0, g.double_scalars);
    set_scalar(conv_op, names.beta, g.dir == core::Direction::fwd ? g.beta : 0.0, g.double_scalars);  // bwd: 0
    conv_op.finalize(names.finalize);
    ops.push_back(std::move(conv_op));

    // Pointwise chain: each node reads the previous node's output; the last writes the real y.
    const Desc* prev = &y;
    std::vector<Desc> tensors;
    tensors.reserve(2 * g.epilogue.size() + 1);
    for (std::size_t i = 0; i < g.epilogue.size(); ++i) {
        const PointwiseSpec& p = g.epilogue[i];
        const bool last = i + 1 == g.epilogue.size();
        TensorSpec out = g.y;
        if (!last) {
            out.uid = 1001 + static_cast<int64_t>(i);
            out.dtype = CUDNN_DATA_FLOAT;
            out.is_virtual = true;
        }
        tensors.push_back(make_tensor(out, g.alignment));
        const Desc& out_desc = tensors.back();
        Desc pw = make_pointwise_desc(p);
        Desc op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
        op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw).set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, *prev);
        if (p.binary) {
            tensors.push_back(make_tensor(p.operand, g.alignment));
            op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, tensors.back());
        }
        op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, out_desc);
        op.finalize("cudnnBackendFinalize(pointwise operation)");
        ops.push_back(std::move(op));
        keep.push_back(std::move(pw));
        prev = &out_desc;
    }

    std::vector<cudnnBackendDescriptor_t> raw;
    for (auto& o : ops) raw.push_back(o.get());
    Desc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(raw.size()), raw.data());
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    graph.finalize("cudnnBackendFinalize(operation graph)");
    Graph out;
    out.graph = std::move(graph);
    out.parts = std::move(keep);
    for (auto& d : tensors) out.parts.push_back(std::move(d));
    for (auto& d : ops) out.parts.push_back(std::move(d));
    out.parts.push_back(std::move(x));
    out.parts.push_back(std::move(w));
    out.parts.push_back(std::move(y));
    out.parts.push_back(std::move(conv));
    return out;
}

std::string Candidate::name() const {
    std::string s = "eng" + std::to_string(engine_index);
    for (const auto& k : knobs) s += " k" + std::to_string(k.first) + "=" + std::to_string(k.second);
    return s;
}

namespace {

void read_notes(const Desc& eng, Candidate* c) {
    int64_t n = 0;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    if (cudnnBackendGetAttribute(eng.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes) == CUDNN_STATUS_SUCCESS)
        for (int64_t k = 0; k < n && k < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; ++k) {
            if (notes[k] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE) c->tensor_core = true;
            if (notes[k] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) c->down_convert = true;
            if (notes[k] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) c->nondeterministic = true;
        }
    cudnnBackendBehaviorNote_t bnotes[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    n = 0;
    if (cudnnBackendGetAttribute(eng.get(), CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, bnotes) == CUDNN_STATUS_SUCCESS)
        for (int64_t k = 0; k < n && k < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; ++k)
            if (bnotes[k] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) c->runtime_compiled = true;
}

}  // namespace

std::vector<Candidate> all_engines(const Desc& graph) {
    std::vector<Candidate> out;
    int64_t count = 0, n = 0;
    if (cudnnBackendGetAttribute(graph.get(), CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, CUDNN_TYPE_INT64, 1, &n,
                                 &count) != CUDNN_STATUS_SUCCESS)
        return out;
    for (int64_t i = 0; i < count; ++i) {
        Candidate c;
        c.engine = Desc(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
        c.engine.set_desc(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, graph).set_i64(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, i);
        if (c.engine.try_finalize() != CUDNN_STATUS_SUCCESS) continue;  // engine does not apply to this graph
        read_notes(c.engine, &c);
        c.engine_index = i;
        c.cfg = Desc(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
        c.cfg.set_desc(CUDNN_ATTR_ENGINECFG_ENGINE, c.engine);
        if (c.cfg.try_finalize() != CUDNN_STATUS_SUCCESS) continue;
        if (cudnnBackendGetAttribute(c.cfg.get(), CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                     &c.workspace) != CUDNN_STATUS_SUCCESS)
            c.workspace = 0;
        out.push_back(std::move(c));
    }
    return out;
}

std::vector<Candidate> heuristics(const Desc& graph, cudnnBackendHeurMode_t mode) {
    std::vector<Candidate> out;
    Desc h(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    h.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    h.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (h.try_finalize() != CUDNN_STATUS_SUCCESS) return out;
    int64_t count = 0;
    if (cudnnBackendGetAttribute(h.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr) != CUDNN_STATUS_SUCCESS ||
        count <= 0)
        return out;
    std::vector<Desc> cfgs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
        cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
        raw.push_back(cfgs.back().get());
    }
    int64_t got = 0;
    if (cudnnBackendGetAttribute(h.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                 raw.data()) != CUDNN_STATUS_SUCCESS)
        return out;
    for (int64_t i = 0; i < got && i < count; ++i) {
        Candidate c;
        c.cfg = std::move(cfgs[static_cast<std::size_t>(i)]);
        Desc eng(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
        cudnnBackendDescriptor_t eraw = eng.get();
        int64_t n = 0;
        if (cudnnBackendGetAttribute(c.cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                     &eraw) != CUDNN_STATUS_SUCCESS)
            continue;
        cudnnBackendGetAttribute(eng.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &c.engine_index);
        read_notes(eng, &c);
        // Knob choices: read so that a tuned choice can be persisted as index + knobs.
        std::vector<Desc> kcs;
        std::vector<cudnnBackendDescriptor_t> kraw;
        for (int k = 0; k < CUDNN_KNOB_TYPE_COUNTS; ++k) {
            kcs.emplace_back(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
            kraw.push_back(kcs.back().get());
        }
        n = 0;
        if (cudnnBackendGetAttribute(c.cfg.get(), CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                     CUDNN_KNOB_TYPE_COUNTS, &n, kraw.data()) == CUDNN_STATUS_SUCCESS)
            for (int64_t k = 0; k < n && k < CUDNN_KNOB_TYPE_COUNTS; ++k) {
                cudnnBackendKnobType_t type;
                int64_t value = 0, m = 0;
                if (cudnnBackendGetAttribute(kraw[static_cast<std::size_t>(k)], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE,
                                             CUDNN_TYPE_KNOB_TYPE, 1, &m, &type) != CUDNN_STATUS_SUCCESS)
                    continue;
                if (cudnnBackendGetAttribute(kraw[static_cast<std::size_t>(k)], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE,
                                             CUDNN_TYPE_INT64, 1, &m, &value) != CUDNN_STATUS_SUCCESS)
                    continue;
                c.knobs.emplace_back(static_cast<int64_t>(type), value);
            }
        n = 0;
        if (cudnnBackendGetAttribute(c.cfg.get(), CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                     &c.workspace) != CUDNN_STATUS_SUCCESS)
            c.workspace = 0;
        out.push_back(std::move(c));
    }
    return out;
}

namespace {

Desc finalize_plan(cudnnHandle_t handle, const Desc& cfg, std::string* why) {
    Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    plan.set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfg);
    cudnnStatus_t s = plan.try_finalize();
    if (s != CUDNN_STATUS_SUCCESS) {
        if (why) *why = cudnnGetErrorString(s);
        return Desc();
    }
    return plan;
}

}  // namespace

Desc make_plan(cudnnHandle_t handle, const Candidate& c, std::string* why) { return finalize_plan(handle, c.cfg, why); }

Desc make_plan_from_engine(cudnnHandle_t handle, const Desc& graph, int64_t engine_index,
                           const std::vector<std::pair<int64_t, int64_t>>& knobs, std::string* why) {
    Desc eng(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    eng.set_desc(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, graph).set_i64(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, engine_index);
    cudnnStatus_t s = eng.try_finalize();
    if (s != CUDNN_STATUS_SUCCESS) {
        if (why) *why = std::string("engine: ") + cudnnGetErrorString(s);
        return Desc();
    }
    std::vector<Desc> kcs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (const auto& k : knobs) {
        Desc kc(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
        auto type = static_cast<cudnnBackendKnobType_t>(k.first);
        kc.set(CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &type).set_i64(CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, k.second);
        kc.finalize("cudnnBackendFinalize(knob choice)");
        raw.push_back(kc.get());
        kcs.push_back(std::move(kc));
    }
    Desc cfg(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    cfg.set_desc(CUDNN_ATTR_ENGINECFG_ENGINE, eng);
    if (!raw.empty())
        cfg.set(CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(raw.size()), raw.data());
    s = cfg.try_finalize();
    if (s != CUDNN_STATUS_SUCCESS) {
        if (why) *why = std::string("engine config: ") + cudnnGetErrorString(s);
        return Desc();
    }
    return finalize_plan(handle, cfg, why);
}

Desc make_plan_from_json(cudnnHandle_t handle, const std::string& json, std::string* why) {
    Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    plan.set(CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, static_cast<int64_t>(json.size()), json.data());
    cudnnStatus_t s = plan.try_finalize();
    if (s != CUDNN_STATUS_SUCCESS) {
        if (why) *why = std::string("plan from JSON: ") + cudnnGetErrorString(s);
        return Desc();
    }
    return plan;
}

std::string plan_json(const Desc& plan) {
    int64_t n = 0;
    if (cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, 0, &n,
                                 nullptr) != CUDNN_STATUS_SUCCESS ||
        n <= 0)
        return "";
    std::string s(static_cast<std::size_t>(n), '\0');
    if (cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, n, &n,
                                 &s[0]) != CUDNN_STATUS_SUCCESS)
        return "";
    s.resize(static_cast<std::size_t>(n));
    while (!s.empty() && s.back() == '\0') s.pop_back();
    return s;
}

int64_t plan_workspace(const Desc& plan) {
    int64_t ws = 0, n = 0;
    check_cudnn(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws),
                "cudnnBackendGetAttribute(plan workspace size)");
    return ws;
}

Desc make_variant_pack(const int64_t* uids, void* const* ptrs, int64_t n, void* workspace) {
    Desc vp(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    vp.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs)
        .set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids)
        .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    vp.finalize("cudnnBackendFinalize(variant pack)");
    return vp;
}

}  // namespace convkit::cuda
