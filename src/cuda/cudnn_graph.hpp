// A thin RAII layer over cuDNN's graph (backend) C API, and the graph builders the CUDA backend
// needs: one convolution node (FPROP, BPROP_DATA or BPROP_FILTER) optionally followed by a chain
// of pointwise nodes (bias, binary operands, activations) for runtime fusion.
#pragma once
#include <cudnn.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/problem.hpp"

namespace convkit::cuda {

class Desc {
public:
    Desc() = default;
    explicit Desc(cudnnBackendDescriptorType_t type);
    ~Desc();
    Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
    Desc& operator=(Desc&& o) noexcept;
    Desc(const Desc&) = delete;
    Desc& operator=(const Desc&) = delete;

    cudnnBackendDescriptor_t get() const { return d_; }
    explicit operator bool() const { return d_ != nullptr; }

    Desc& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values);
    Desc& set_i64(cudnnBackendAttributeName_t name, int64_t v) { return set(name, CUDNN_TYPE_INT64, 1, &v); }
    Desc& set_i64s(cudnnBackendAttributeName_t name, const std::vector<int64_t>& v) {
        return set(name, CUDNN_TYPE_INT64, static_cast<int64_t>(v.size()), v.data());
    }
    Desc& set_dtype(cudnnBackendAttributeName_t name, cudnnDataType_t v) { return set(name, CUDNN_TYPE_DATA_TYPE, 1, &v); }
    Desc& set_desc(cudnnBackendAttributeName_t name, const Desc& d) {
        cudnnBackendDescriptor_t raw = d.get();
        return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
    }
    void finalize(const char* what);
    cudnnStatus_t try_finalize();

private:
    cudnnBackendDescriptor_t d_ = nullptr;
};

cudnnDataType_t to_cudnn(DType dt);

// One tensor of the graph: logical dims (N, C, spatial; 1D is given an H of 1) and element strides.
struct TensorSpec {
    int64_t uid = 0;
    cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
    std::vector<int64_t> dims, strides;
    bool is_virtual = false;
};

// One pointwise node after the convolution: y = op(x[, operand]).
struct PointwiseSpec {
    cudnnPointwiseMode_t mode = CUDNN_POINTWISE_IDENTITY;
    float relu_lower = 0.f, relu_upper = 0.f, relu_slope = 0.f;
    bool has_upper = false;
    float elu_alpha = 1.f, swish_beta = 1.f;
    bool binary = false;
    TensorSpec operand;  // binary only
};

struct GraphSpec {
    core::Direction dir = core::Direction::fwd;
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    bool double_scalars = false;  // alpha/beta as double (f64 problems)
    TensorSpec x, w, y;           // for bwd_d, x is diff_src; for bwd_w, w is diff_weights
    std::vector<int64_t> pre_pad, post_pad, stride, dilation;
    std::vector<PointwiseSpec> epilogue;  // forward only; empty = a single convolution node
    double beta = 0;  // forward only: y = conv(x, w) + beta * y (convkit uses 0)
    int64_t alignment = 16;
};

// The unique ids of the tensors bound at execution, in variant-pack order.
std::vector<int64_t> graph_uids(const GraphSpec& g);

// The operation graph plus every descriptor it was built from: kept alive together, as cuDNN's
// graph refers to its nodes and tensors rather than copying them (cudnn-frontend does the same).
struct Graph {
    Desc graph;
    std::vector<Desc> parts;
};
Graph build_graph(cudnnHandle_t handle, const GraphSpec& g);

// An engine configuration cuDNN offered, with what filtering needs to know about it.
struct Candidate {
    Desc cfg;
    int64_t engine_index = -1;
    std::vector<std::pair<int64_t, int64_t>> knobs;  // (type, value)
    bool tensor_core = false, down_convert = false, nondeterministic = false, runtime_compiled = false;
    int64_t workspace = 0;
    Desc engine;  // the engine behind cfg when we made the configuration ourselves (enumeration)
    std::string name() const;
};

// Engine configurations offered by heuristics `mode` for `graph`, in cuDNN's order (best first).
// An empty list (rather than an error) when the mode has nothing for this graph.
std::vector<Candidate> heuristics(const Desc& graph, cudnnBackendHeurMode_t mode);

// Every engine of the graph (CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT) with default knobs,
// skipping engines that refuse the graph: the exhaustive list autotuning adds to heuristics'.
std::vector<Candidate> all_engines(const Desc& graph);

// An execution plan from an engine configuration; an empty Desc if cuDNN refuses to finalize it
// (unsupported shape/alignment for that engine), with cuDNN's reason in *why.
Desc make_plan(cudnnHandle_t handle, const Candidate& c, std::string* why);
// From an engine's global index and knob choices (the persisted form of a tuned choice).
Desc make_plan_from_engine(cudnnHandle_t handle, const Desc& graph, int64_t engine_index,
                           const std::vector<std::pair<int64_t, int64_t>>& knobs, std::string* why);
// From the plan's JSON (CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION).
Desc make_plan_from_json(cudnnHandle_t handle, const std::string& json, std::string* why);
std::string plan_json(const Desc& plan);
int64_t plan_workspace(const Desc& plan);

// A finalized variant pack for one set of pointers: ptrs[i] is the tensor of unique id uids[i].
Desc make_variant_pack(const int64_t* uids, void* const* ptrs, int64_t n, void* workspace);

}  // namespace convkit::cuda
