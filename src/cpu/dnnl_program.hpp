// The step program a oneDNN plan runs: what one variant of a plan is (its steps, where each
// step's memory comes from, the workspace regions), and its execution, which only binds the
// call's pointers and runs the steps. Built by dnnl_builder / dnnl_matmul, cached by dnnl_plan.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <utility>
#include <vector>

#include "cpu/convert.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit::cpu {

// Where a primitive argument's memory comes from at execution time.
struct Bind {
    enum Kind : uint8_t { src, wei, bias, dst, packed, temp, operand } kind = temp;
    int index = 0;  // temp region or post-op index
};

struct Step {
    // A oneDNN primitive, or one of convkit's own copies (no oneDNN descriptor describes them).
    // widen / narrow: 16-bit `from` <-> f32 `to` in one layout; widen_blocked / narrow_blocked:
    // 16-bit plain weights <-> f32 weights in the convolution's blocked layout (maps[map]).
    enum Kind : uint8_t { primitive, zero, gather, scatter, widen, narrow, widen_blocked, narrow_blocked } kind = primitive;
    dnnl::primitive prim;
    Bind from, to;               // gather / scatter: src rows <-> dense rows; zero: `to`
    std::size_t zero_bytes = 0;
    std::size_t count = 0;       // widen / narrow: elements; gather / scatter: bytes per element
    int map = -1;                // widen_blocked / narrow_blocked
    std::vector<int> arg_ids;
    std::vector<dnnl::memory::desc> mds;
    std::vector<Bind> binds;
    bool weights_reorder = false;  // skipped when the weights come prepacked
    void add(int id, const dnnl::memory::desc& md, Bind b) {
        arg_ids.push_back(id);
        mds.push_back(md);
        binds.push_back(b);
    }
};

// Per-executor memory objects and argument arrays, reused so a call allocates nothing itself;
// a plan keeps a pool of them so concurrent calls on one plan never share one.
struct ExecCtx {
    dnnl::stream strm;
    std::vector<std::vector<dnnl::memory>> mems;
    std::vector<std::vector<dnnl_exec_arg_t>> cargs;
};

// What dnnl_prepack() hands out: weights in the layout of the plan they were packed for.
struct PackedWeightsHandle {
    dnnl::memory::desc md;
    core::Buffer data;
};

// Everything built for one problem at one thread count.
struct Variant {
    int nthr = 0;
    std::vector<Step> steps;
    std::vector<std::size_t> temp_off;  // temp 0 is the scratchpad shared by all steps
    std::vector<BlockedMap> maps;       // widened weights: plain <-> blocked
    std::vector<std::size_t> temp_size;
    std::size_t ws_bytes = 0;
    dnnl::memory::desc wei_md;  // weights as the convolution reads them (fwd / bwd_d)
    int wei_temp = -1;   // temp for reordered weights, -1 if the user's are read directly
    bool own_epilogue = false;
    Bind acc;            // own epilogue input: the user dst or a temp (f32, dst's user layout)
    bool own_bias_grad = false;  // matmul path: diff_bias summed by convkit (matmul has none)
    PlanInfo info;

    std::mutex pool_mu;
    std::vector<std::unique_ptr<ExecCtx>> pool;
    std::mutex packed_mu;
    std::vector<std::pair<dnnl::memory::desc, dnnl::reorder>> packed_reorders;

    int add_temp(std::size_t bytes) {
        temp_size.push_back(bytes);
        return static_cast<int>(temp_size.size()) - 1;
    }
};

// Executes one variant (binds the call's pointers, runs the steps).
Event run_variant(Variant& v, const core::ConvProblem& p, const core::ConvArgs& args);

}  // namespace convkit::cpu
