// Problems whose tensors are too large for an engine, as a sequence of smaller problems.
//
// cuDNN indexes tensors with 32-bit integers, so a tensor of 2^31 or more elements cannot go to
// it whole (pytorch#22496); PyTorch splits only the batch and otherwise falls to slow kernels.
// The core cuts such a problem into tiles that each are an ordinary convolution of the same
// engine: groups of whole images when one image fits, else, image by image, ranges of rows of
// the outermost spatial dim (d in 3D, h in 2D, w in 1D) with the halo rows their windows read.
// The geometry is the same for every engine and lives here; run_tiled (tiled_run.cpp) moves the
// data. What each direction's tiles are:
//   fwd:   disjoint ranges of dst rows, each reading the src rows its windows cover (the halo
//          overlaps the neighbours'); bias and post-ops apply per tile.
//   bwd_d: disjoint ranges of diff_src rows, cut where a window starts, each reading the diff_dst
//          rows whose windows reach it; a window's taps outside the tile are the tile's padding
//          (the neighbour that owns those rows adds them), so every diff_src row is exact.
//   bwd_w: disjoint ranges of diff_dst rows (as fwd), or of src rows (as bwd_d) in a transposed
//          problem, whose diff_bias sums src; either way each (output, input) product falls in
//          exactly one tile. The tiles' diff_weights and diff_bias are partial sums, added in f64
//          in tile order (deterministic).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/problem.hpp"

namespace convkit::core {

struct Tile {
    ConvProblem p;      // the tile's problem: dense tensors, post-op operands sized for it
    int64_t n0 = 0;     // its first image
    int64_t src0 = 0;   // its first src row along the split dim (0 when whole images)
    int64_t dst0 = 0;   // its first dst row along the split dim
};

struct TilePlan {
    std::vector<Tile> tiles;
    int axis = -1;           // spatial dim the rows are of (0 = outermost), -1: whole images
    bool accumulate = false;  // bwd_w: the tiles' weight (and bias) gradients are summed
    std::string why_not;     // set when the problem cannot be cut: tiles is empty
};

// Elements of the largest activation-sized tensor of `p` (src, dst, full-size binary operands)
// and of its weights.
int64_t largest_activation(const ConvProblem& p);

// Tiles of `p` whose tensors each hold at most `limit` elements. A problem that already fits
// gets one tile (p itself).
TilePlan plan_tiles(const ConvProblem& p, int64_t limit);

class Backend;
// Runs the tiles of `tp` (of `p`, whose whole tensors are `a`) on `b`, in order on `stream`
// (tiled_run.cpp). `fn` names the call in errors.
Event run_tiled(Backend* b, const ConvProblem& p, const ConvArgs& a, const Stream& stream, const std::vector<Event>& deps,
                const TilePlan& tp, const char* fn);

}  // namespace convkit::core
