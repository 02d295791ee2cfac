// What ran, on stderr (CONVKIT_VERBOSE / set_verbose), and how to run it again: the one-line
// `convkit bench` reproducer that the trace lines and the errors of a problem carry.
//
// The lines follow the layout of oneDNN 2.6's ONEDNN_VERBOSE (same fields, same order, the
// prefix `convkit_verbose`), so scripts written for oneDNN's trace read convkit's, with one more
// field at the end: the reproducer. Level 1 prints one `exec` line per executed call, level 2 also
// one `create:cache_hit|cache_miss` line per plan lookup and one `dispatch` line per engine choice.
// Off (level 0) costs one relaxed load and a branch per call.
#pragma once
#include <atomic>
#include <string>

#include "core/problem.hpp"

namespace convkit::core::trace {

extern std::atomic<int> g_level;  // -1 until CONVKIT_VERBOSE has been read
int init_level();
inline int level() {
    const int l = g_level.load(std::memory_order_relaxed);
    return l >= 0 ? l : init_level();
}

// What a call asked for, beyond its ConvProblem: how the user called (transposed calls are
// traced and reproduced in their own terms), which engine, whether with prepacked weights.
struct CallDesc {
    bool transposed = false;  // a conv_transpose_* call (the problem is its convolution)
    Engine engine = Engine::automatic;  // the engine that ran it, or was asked for
    bool prepack = false;
};

// The `convkit bench` command line that runs `p` the same way (engine, dtype, layout, post-ops,
// switches as environment settings), or "" where no descriptor expresses it.
std::string reproducer(const ConvProblem& p, const CallDesc& c);
// A reproducer from raw sizes that did not make a valid problem (the descriptor then fails the
// same way); `transposed`: deconv terms (src = input, wei = [IC, OC/g, k...]).
std::string raw_reproducer(const Dims& src, const Dims& wei, const Dims& stride, const Dims& padding_l,
                           const Dims& padding_r, const Dims& dilation, const Dims& output_padding, int64_t groups, bool transposed,
                           DType dt, Engine engine);

// Plan-cache lookups of the calling thread since the last take_lookups() (level 2 only).
struct Lookups {
    int hits = 0, misses = 0;
    double create_ms = 0;  // the longest build among the misses
};
void note_hit();
void note_miss(double ms);
Lookups take_lookups();
double now_ms();

// The lines themselves; each is written with one fputs, so threads' lines do not interleave.
void exec_line(const ConvProblem& p, const CallDesc& c, const std::string& impl, double ms);
void create_line(const ConvProblem& p, const CallDesc& c, const std::string& impl, const Lookups& l);
void dispatch_line(const ConvProblem& p, const CallDesc& c, const std::string& why);

}  // namespace convkit::core::trace
