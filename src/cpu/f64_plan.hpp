// The f64 path's plan (f64_conv.cpp has the design): a problem's geometry as the im2col + dgemm
// formulation sees it (which layout, whether im2col is needed, whether weights and dst must be
// reordered), and how the work of one direction is cut into blocks and channel chunks.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/problem.hpp"

namespace convkit::cpu {

// Column-buffer budget per thread. Large enough that a block has a few hundred rows (OpenBLAS
// repacks the weights on every call, so short blocks pay that copy too often), small enough to
// stay near the L2/L3 caches.
constexpr std::size_t kColBudget = std::size_t(4) << 20;

class F64Plan {
public:
    core::ConvProblem p;
    core::Spatial3 geo;   // spatial geometry right-aligned to (d, h, w)
    int64_t IS = 1, OS = 1, KS = 1;
    int64_t ICg = 0, OCg = 0, K = 0, G = 1;
    int first = 0;        // index of the outermost real spatial dim in geo's arrays
    int64_t P = 1;        // output positions per outer row
    int64_t O0 = 1;       // outer rows
    bool cl = false;      // channels-last formulation (by src layout)
    bool direct = false;  // 1x1, stride 1, no padding: no im2col
    bool wei_native = false;  // the user's weights are already in the formulation's K order
    bool dst_native = false;  // dst (diff_dst) already in the formulation's layout
    int64_t reach_bwd_d = 0;     // input rows shared by neighbouring blocks in backward data
    int64_t min_rows_bwd_d = 1;  // outer rows a backward-data block needs for even/odd scatter

    explicit F64Plan(const core::ConvProblem& prob);

    // How the work of one direction is cut: blocks of R outer output rows (nb per image), and
    // the gemm's channel dimension cut into `chunks` of `chunk` channels (output channels for
    // forward, input channels for backward data). OpenBLAS repacks the weights on every call,
    // so where the weights outweigh an image's columns (late layers, small images) threads
    // split channels (each packs only its share of the weights) instead of rows (each would
    // pack all of them).
    struct Split {
        int64_t R = 1, nb = 1, chunks = 1, chunk = 1;
        bool phases = false;  // backward data: even blocks, then odd ones
    };

    // Column elements per output position: `col_fixed` + chunk * `col_per_channel`.
    Split split(int nthr, int64_t channels, int64_t col_fixed, int64_t col_per_channel, bool bwd_d) const;
};

}  // namespace convkit::cpu
