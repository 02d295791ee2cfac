// Engine choice for a cuDNN graph: the tune file's entry, else heuristics filtered by the
// problem's numerics (and, with autotuning, timed), and the timing helpers autotuning shares with
// the split backward-data's decision. How and why: docs/cuda.md, "Engine choice" and "Autotune".
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/problem.hpp"
#include "cuda/cudnn_graph.hpp"

namespace convkit::cuda {

class Plan;

// An execution plan chosen for a graph, with what PlanInfo reports about it and what it takes to
// make another plan of the same engine configuration (engine index and knobs).
struct Choice {
    Desc plan;  // empty: no engine runs the graph
    int64_t engine_index = -1;
    std::vector<std::pair<int64_t, int64_t>> knobs;
    std::string name;
    bool tuned = false, loaded = false;  // autotuned / from the tune file
};

// The tune file's key of a problem's graph `variant` ("fused", "conv", "padded+acc32", "split"...)
// at `alignment` bytes: cuDNN version, GPU, compute capability, variant, alignment, the problem.
std::string tune_key(const core::ConvProblem& p, const char* variant, int64_t alignment);

// Picks an execution plan for graph `g` of problem `p`: the tune file's entry, else heuristics
// (mode A, then FALLBACK) filtered by the problem's numerics, optionally autotuned (and then stored
// in the tune file). An empty plan with the reason in *why when nothing works.
Choice choose(const core::ConvProblem& p, const GraphSpec& g, const Desc& graph, const char* variant, cudnnHandle_t h,
              std::string* why);

// Times `n` candidates on stream `s` between events e0/e1 and returns the fastest's index, -1 if
// none ran. run(i) enqueues candidate i once (false: it could not).
int fastest_of(std::size_t n, cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, bool drop_slow,
               const std::function<bool(std::size_t)>& run);

// Times whole plans of problem `p` as they run (1 warm-up + 3 runs each, events on `s`) on scratch
// tensors of the problem's shapes; returns the fastest's index, -1 if none ran. No bias or post-op
// operands: for backward-data candidates (the split against the single plan).
int time_whole_plans(const core::ConvProblem& p, const std::vector<const Plan*>& plans, cudaStream_t s);

}  // namespace convkit::cuda
