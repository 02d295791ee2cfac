// A cuDNN execution plan that several threads can execute at once. cuDNN does not promise that
// one execution plan may be executed concurrently from several threads (PyTorch keeps its plans
// per thread for that reason: pytorch#103939, "not guaranteed to be thread safe across all
// engines"), so the executor holds lanes: each lane is an execution plan of the same engine
// configuration plus the variant packs it used last, and one call at a time has a lane. Lane 0 is
// the plan that was built; a call that finds every lane busy adds another (a second plan made
// from the engine index and knobs, the cold path), up to kMaxLanes. No lock is held while cuDNN
// enqueues; a busy lane is skipped, not waited for. See docs/cuda.md, "Execution".
#pragma once
#include <cudnn.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "convkit/post_ops.hpp"
#include "cuda/cudnn_graph.hpp"

namespace convkit::cuda {

// The device pointers of one execution: data[i] is the tensor of the graph's i-th unique id.
struct Binding {
    static constexpr int kMax = 4 + static_cast<int>(PostOps::max_ops);  // src, weights, dst, bias, operands
    void* data[kMax] = {};
    int n = 0;
    void* workspace = nullptr;
    bool operator==(const Binding& o) const;
};

class Executor {
public:
    // `graph` stays alive as long as the plans; `engine_index` and `knobs` make more plans of the
    // same configuration (engine_index < 0: none, calls then share lane 0 one at a time).
    Executor(Graph graph, Desc plan, std::vector<int64_t> uids, int64_t engine_index,
             std::vector<std::pair<int64_t, int64_t>> knobs);
    ~Executor();
    Executor(const Executor&) = delete;
    Executor& operator=(const Executor&) = delete;

    // cudnnBackendExecute of the plan with the pointers of `b` on `h` (whose stream is set).
    void execute(cudnnHandle_t h, const Binding& b);
    // The plan that was built (for its workspace size; while no call runs).
    const Desc& plan() const;

private:
    static constexpr int kMaxLanes = 8;
    struct Lane;
    Lane& claim(cudnnHandle_t h);
    Lane* add_lane(cudnnHandle_t h, int start);

    Graph graph_;
    const std::vector<int64_t> uids_;
    const int64_t engine_index_;
    const std::vector<std::pair<int64_t, int64_t>> knobs_;
    std::atomic<Lane*> lanes_[kMaxLanes] = {};
    std::mutex grow_mu_;  // held while a lane is added, never during an execution
    std::atomic<bool> can_grow_;  // fewer than kMaxLanes lanes, and more plans can be made
};

}  // namespace convkit::cuda
