// The tiles of a problem too large for its engine (tiling.hpp has the rules). All geometry is
// along spatial dim 0 in forward terms: the window of output row o reads input rows
// [o * s - pl, o * s - pl + ext), ext = (k - 1) * dilation + 1.
#include "core/tiling.hpp"

#include <algorithm>

namespace convkit::core {
namespace {

int64_t numel(const Dims& d) {
    int64_t n = 1;
    for (int i = 0; i < d.rank(); ++i) n *= d[i];
    return n;
}

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The tensor bias and post-ops apply to: dst, or src in a transposed backward-data.
bool epilogue_on_src(const ConvProblem& p) { return p.transposed && p.dir == Direction::bwd_d; }

// One tile's rows along dim 0, in forward terms: src rows [in0, in0 + in) with paddings pl, pr,
// dst rows [out0, out0 + out).
struct Rows {
    int64_t in0, in, pl, pr, out0, out;
};

Tile make_tile(const ConvProblem& p, int64_t n0, int64_t nimg, const Rows* r) {
    Tile t;
    t.p = p;
    t.n0 = n0;
    t.p.mb = nimg;
    const Dims epi = epilogue_on_src(p) ? p.src_dims() : p.dst_dims();
    if (r) {
        t.src0 = r->in0;
        t.dst0 = r->out0;
        t.p.in[0] = r->in;
        t.p.out[0] = r->out;
        t.p.padding_l[0] = r->pl;
        t.p.padding_r[0] = r->pr;
    }
    const Dims epi_tile = epilogue_on_src(p) ? t.p.src_dims() : t.p.dst_dims();
    for (int i = 0; i < p.n_post_ops; ++i) {
        PostOpDesc& d = t.p.post_ops[i];
        if (d.kind != PostOp::Kind::binary) continue;
        // Each operand dim is 1 (broadcast) or the output's: the full ones follow the tile.
        if (d.operand_sizes[0] != 1 || epi[0] == 1) d.operand_sizes[0] = epi_tile[0];
        if (r && (d.operand_sizes[2] != 1 || epi[2] == 1)) d.operand_sizes[2] = epi_tile[2];
    }
    return t;
}

int64_t tile_max(const ConvProblem& q) { return largest_activation(q); }

// Forward and backward-weights: dst rows [o0, o1) and the src rows their windows read.
bool rows_for_dst(const ConvProblem& p, int64_t o0, int64_t o1, Rows* r) {
    const int64_t s = p.stride[0], pl = p.padding_l[0], ext = (p.k[0] - 1) * p.dilation[0] + 1;
    const int64_t i0 = o0 * s - pl, i1 = (o1 - 1) * s - pl + ext;
    const int64_t c0 = std::max<int64_t>(0, i0), c1 = std::min(p.in[0], i1);
    if (c1 <= c0) return false;  // windows wholly in the padding
    *r = Rows{c0, c1 - c0, c0 - i0, i1 - c1, o0, o1 - o0};
    return true;
}

// Backward-data tile j of the cuts `o` (o[0] = 0 < ... < o[T] = out, in dst rows): diff_src rows
// from where window o[j] starts (0 for the first) to where window o[j + 1] starts (in for the
// last), and the diff_dst rows whose windows reach them.
bool rows_for_src(const ConvProblem& p, const std::vector<int64_t>& o, std::size_t j, Rows* r) {
    const int64_t s = p.stride[0], pl = p.padding_l[0], ext = (p.k[0] - 1) * p.dilation[0] + 1;
    const std::size_t T = o.size() - 1;
    const int64_t a0 = j == 0 ? 0 : o[j] * s - pl;
    const int64_t a1 = j + 1 == T ? p.in[0] : o[j + 1] * s - pl;
    if (a0 < 0 || a1 <= a0 || a1 > p.in[0]) return false;
    // The first tile keeps the problem's own start (its first windows may lie in the padding) and
    // the last its own end, so their paddings are the problem's.
    const int64_t lo = j == 0 ? 0 : std::max<int64_t>(0, floor_div(a0 + pl - ext, s) + 1);
    const int64_t hi = j + 1 == T ? p.out[0] : o[j + 1];
    if (hi <= lo) return false;
    const int64_t pl2 = a0 - (lo * s - pl);
    int64_t pr2 = p.padding_r[0];
    if (j + 1 != T) {
        // Taps past a1 are the next tile's rows; when the windows end before a1 (ext < stride),
        // the untouched rows fall to the output-size rounding, as in the whole problem.
        pr2 = std::max<int64_t>(0, (hi - 1) * s - pl + ext - a1);
    }
    if (pl2 < 0) return false;
    *r = Rows{a0, a1 - a0, pl2, pr2, lo, hi - lo};
    // The tile's output size must be what its geometry gives.
    return floor_div(r->in + pl2 + pr2 - ext, s) + 1 == r->out;
}

// Whether the tiles cut src into disjoint rows (else dst): where src is written (backward data),
// or summed for the bias gradient (a transposed backward-weights, whose diff_bias is src's).
bool src_disjoint(const ConvProblem& p) { return p.dir == Direction::bwd_d || (p.dir == Direction::bwd_w && p.transposed); }

// Cuts of `out` dst rows into tiles of at most `rows` rows.
std::vector<int64_t> cuts(int64_t out, int64_t rows) {
    std::vector<int64_t> o;
    const int64_t n = ceil_div(out, rows);
    for (int64_t j = 0; j <= n; ++j) o.push_back(out * j / n);  // even tiles
    return o;
}

// The row tiles of one image (n0) with at most `rows` dst rows each; false if a tile does not
// make a valid problem.
bool row_tiles(const ConvProblem& p, int64_t n0, int64_t rows, std::vector<Tile>* out) {
    const std::vector<int64_t> o = cuts(p.out[0], rows);
    for (std::size_t j = 0; j + 1 < o.size(); ++j) {
        Rows r;
        const bool ok = src_disjoint(p) ? rows_for_src(p, o, j, &r) : rows_for_dst(p, o[j], o[j + 1], &r);
        if (!ok) return false;
        out->push_back(make_tile(p, n0, 1, &r));
    }
    return true;
}

}  // namespace

int64_t largest_activation(const ConvProblem& p) {
    int64_t m = std::max(numel(p.src_dims()), numel(p.dst_dims()));
    for (int i = 0; i < p.n_post_ops; ++i)
        if (p.post_ops[i].kind == PostOp::Kind::binary) m = std::max(m, numel(p.post_ops[i].operand_sizes));
    return m;
}

TilePlan plan_tiles(const ConvProblem& p, int64_t limit) {
    TilePlan tp;
    tp.accumulate = p.dir == Direction::bwd_w;
    const std::string lim = std::to_string(limit);
    if (numel(p.wei_dims()) > limit) {
        tp.why_not = "the weights " + p.wei_dims().str() + " have more than " + lim + " elements";
        return tp;
    }
    if (largest_activation(p) <= limit || p.mb == 0) {
        tp.tiles.push_back(make_tile(p, 0, p.mb, nullptr));
        tp.accumulate = false;
        return tp;
    }
    // Whole images, as many as fit (a binary operand broadcast over the batch does not shrink).
    int64_t per_image = 1;
    bool fixed_fits = true;
    auto per = [&](const Dims& d, bool batched) {
        if (batched) per_image = std::max(per_image, numel(d) / std::max<int64_t>(1, d[0]));
        else fixed_fits = fixed_fits && numel(d) <= limit;
    };
    per(p.src_dims(), true);
    per(p.dst_dims(), true);
    for (int i = 0; i < p.n_post_ops; ++i)
        if (p.post_ops[i].kind == PostOp::Kind::binary)
            per(p.post_ops[i].operand_sizes, p.post_ops[i].operand_sizes[0] != 1 || p.mb == 1);
    if (!fixed_fits) {
        tp.why_not = "a binary post-op operand broadcast over the batch has more than " + lim + " elements";
        return tp;
    }
    const int64_t images = limit / per_image;
    if (images >= 1 && p.mb > 1) {
        for (int64_t n0 = 0; n0 < p.mb; n0 += images) tp.tiles.push_back(make_tile(p, n0, std::min(images, p.mb - n0), nullptr));
        return tp;
    }
    // Rows of one image. The rows a tile of R dst rows holds at most, per tensor: src (R - 1) *
    // stride + ext plus a stride for a backward-data edge tile, dst R + ext / stride.
    tp.axis = 0;
    const int64_t s = p.stride[0], ext = (p.k[0] - 1) * p.dilation[0] + 1;
    int64_t src_row = 1, dst_row = 1;
    for (int i = 1; i < p.nsp; ++i) src_row *= p.in[i], dst_row *= p.out[i];
    src_row *= p.ic;
    dst_row *= p.oc;
    int64_t rows = p.out[0];
    auto fits = [&](int64_t R) {
        const double src = static_cast<double>(src_row) * static_cast<double>((R + 1) * s + ext + p.padding_l[0]);
        const double dst = static_cast<double>(dst_row) * static_cast<double>(R + ceil_div(ext, s) + 1);
        return std::max(src, dst) <= static_cast<double>(limit) / 1.0001;
    };
    while (rows > 1 && !fits(rows)) rows = std::max<int64_t>(1, rows / 2);
    while (rows + 1 < p.out[0] && fits(rows + rows / 8 + 1)) rows += rows / 8 + 1;
    // The bound above is loose at the edges; shrink until every tile fits.
    for (; rows >= 1; rows = rows * 7 / 8) {
        std::vector<Tile> tiles;
        bool ok = true;
        for (int64_t n = 0; n < p.mb && ok; ++n) ok = row_tiles(p, n, rows, &tiles);
        if (ok)
            for (const Tile& t : tiles) ok = ok && tile_max(t.p) <= limit;
        if (ok) {
            tp.tiles = std::move(tiles);
            return tp;
        }
        if (rows == 1) break;
    }
    tp.why_not = "one image cannot be cut into row ranges of its outermost spatial dimension whose tensors each hold at most " +
                 lim + " elements";
    tp.axis = -1;
    return tp;
}

}  // namespace convkit::core
