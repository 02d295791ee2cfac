// A problem run tile by tile on one engine (tiling.hpp has the geometry). Tiles of whole images,
// and row tiles of channels-last tensors, are views into the caller's tensors; a row tile of a
// channels-first tensor is one block per channel, copied through a dense temporary. The
// temporaries are allocated before the first tile runs, so failing to get them leaves the
// outputs as they were (an engine failing inside a later tile leaves the earlier tiles' rows
// written). All work is ordered on the call's stream: on a GPU nothing blocks.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "core/backend.hpp"
#include "core/env.hpp"
#include "core/half.hpp"
#include "core/tiling.hpp"

namespace convkit::core {
namespace {

// ---- The memory operations, on the host or through the device's runtime ----

DeviceRuntime* device_rt(Device d) { return d.is_cpu() ? nullptr : runtime(d.type); }

void copy_blocks(Device dev, void* dst, std::size_t dpitch, const void* src, std::size_t spitch, std::size_t width,
                 std::size_t blocks, const Stream& s) {
    if (DeviceRuntime* rt = device_rt(dev)) return rt->copy_2d(dst, dpitch, src, spitch, width, blocks, s);
#pragma omp parallel for schedule(static) if (blocks * width > (1u << 20))
    for (int64_t b = 0; b < static_cast<int64_t>(blocks); ++b)
        std::memcpy(static_cast<char*>(dst) + static_cast<std::size_t>(b) * dpitch,
                    static_cast<const char*>(src) + static_cast<std::size_t>(b) * spitch, width);
}

double load(const void* x, DType dt, int64_t i) {
    switch (dt) {
        case DType::f32: return static_cast<const float*>(x)[i];
        case DType::f64: return static_cast<const double*>(x)[i];
        case DType::bf16: return bf16_load(static_cast<const uint16_t*>(x)[i]);
        case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(x)[i]);
    }
    return 0;
}

void accumulate(Device dev, double* acc, const void* x, DType dt, int64_t n, bool first, const Stream& s) {
    if (DeviceRuntime* rt = device_rt(dev)) return rt->accumulate(acc, x, dt, n, first, s);
    for (int64_t i = 0; i < n; ++i) acc[i] = first ? load(x, dt, i) : acc[i] + load(x, dt, i);
}

void store(Device dev, void* out, DType dt, const double* acc, int64_t n, const Stream& s) {
    if (DeviceRuntime* rt = device_rt(dev)) return rt->store(out, dt, acc, n, s);
    for (int64_t i = 0; i < n; ++i) {
        switch (dt) {
            case DType::f32: static_cast<float*>(out)[i] = static_cast<float>(acc[i]); break;
            case DType::f64: static_cast<double*>(out)[i] = acc[i]; break;
            case DType::bf16: static_cast<uint16_t*>(out)[i] = bf16_store(static_cast<float>(acc[i])); break;
            case DType::f16: static_cast<uint16_t*>(out)[i] = f32_to_f16(static_cast<float>(acc[i])); break;
        }
    }
}

// ---- Views of a tile ----

// The part of `t` of images [n0, n0 + n) and, when `rows` >= 0, rows [r0, r0 + rows) of spatial
// dim 0 (tensor dim 2). Same strides: dense for whole images and for channels-last rows.
TensorView slice(const TensorView& t, int64_t n0, int64_t n, int64_t r0, int64_t rows) {
    TensorView v = t;
    int64_t off = 0;
    if (t.sizes[0] != 1) off += n0 * t.strides[0], v.sizes[0] = n;
    if (rows >= 0 && t.sizes[2] != 1) off += r0 * t.strides[2], v.sizes[2] = rows;
    v.data = static_cast<char*>(t.data) + off * static_cast<int64_t>(dtype_size(t.dtype));
    return v;
}

// A slice that is not dense is one image of a channels-first tensor with fewer rows: one block
// per channel of the rows' elements, strides[1] apart.
struct Blocks {
    std::size_t width = 0, pitch = 0, count = 0;
};

Blocks blocks_of(const TensorView& v, const char* what) {
    std::size_t es = dtype_size(v.dtype), inner = 1;
    for (int d = 2; d < v.rank(); ++d) inner *= static_cast<std::size_t>(v.sizes[d]);
    bool ok = v.sizes[0] == 1 && v.strides[v.rank() - 1] == 1;
    for (int d = 2; d + 1 < v.rank(); ++d) ok = ok && v.strides[d] == v.strides[d + 1] * v.sizes[d + 1];
    if (!ok) throw Error(ErrorKind::backend, std::string("tiled run: the tile of ") + what + " " + v.sizes.str() +
                                                 " is neither dense nor one block per channel");
    return Blocks{inner * es, static_cast<std::size_t>(v.strides[1]) * es, static_cast<std::size_t>(v.sizes[1])};
}

// One tensor of the call as the tiles see it: the view of the current tile, through `temp` when
// the view is not dense.
struct Slot {
    explicit Slot(const char* w) : what(w) {}
    const char* what;
    TensorView whole;
    bool in = false, out = false;  // read by the tiles / written by them
    bool widen = false;            // the tiles read it as f32 (a 16-bit backward-weights)
    std::size_t temp_bytes = 0;    // the largest temporary a tile needs
    Buffer temp;
    TensorView cur, orig;  // the tile's dense view and, if different, the caller's slice
};

void copy_in(const Slot& s, const Stream& st) {
    if (s.widen) {
        if (DeviceRuntime* rt = device_rt(s.whole.device)) {
            const std::size_t es = dtype_size(s.orig.dtype);
            const Blocks b = s.orig.is_dense() ? Blocks{s.orig.nbytes(), s.orig.nbytes(), 1} : blocks_of(s.orig, s.what);
            return rt->widen(static_cast<float*>(s.cur.data), s.orig.data, s.orig.dtype, static_cast<int64_t>(b.width / es),
                             static_cast<int64_t>(b.pitch / es), static_cast<int64_t>(b.count), st);
        }
        return copy(s.cur, s.orig);  // host: any strides, converted
    }
    const Blocks b = blocks_of(s.orig, s.what);
    copy_blocks(s.whole.device, s.cur.data, b.width, s.orig.data, b.pitch, b.width, b.count, st);
}

void copy_out(const Slot& s, const Stream& st) {
    const Blocks b = blocks_of(s.orig, s.what);
    copy_blocks(s.whole.device, s.orig.data, b.pitch, s.cur.data, b.width, b.width, b.count, st);
}

void bind(Slot& s, const TensorView& v) {
    s.orig = v;
    if (s.widen) {
        s.cur = TensorView::with_layout(s.temp.data(), DType::f32, v.sizes, v.is_dense() ? v.layout() : Layout::channels_first,
                                        v.device);
        return;
    }
    if (v.is_dense()) {
        s.cur = v;
        return;
    }
    s.cur = TensorView::with_layout(s.temp.data(), v.dtype, v.sizes, Layout::channels_first, v.device);
}

// The temporary a slice of `v` needs: none when it is dense (f32 elements when widened).
std::size_t need(const Slot& s, const TensorView& v) {
    if (s.widen) return static_cast<std::size_t>(v.numel()) * sizeof(float);
    return v.is_dense() ? 0 : v.nbytes();
}

Buffer allocate(Device dev, std::size_t bytes, const Stream& st, const char* what, const char* fn) {
    try {
        return Buffer(dev, bytes, st.native_handle());
    } catch (const std::bad_alloc&) {
        throw Error(ErrorKind::out_of_memory, std::string(fn) + ": allocating the tiled run's " + what + " (" +
                                                  std::to_string(bytes) + " bytes on " + dev.str() + ") failed");
    }
}

}  // namespace

int64_t tile_limit(const Backend& b, const ConvProblem& p) {
    if (!b.tiled()) return 0;
    // -1: unset (or not a number); -2: "off", whole problems wherever the engine can index them
    // (an experiment: oneDNN past its limits, docs/large-tensors.md).
    static const int64_t asked = [] {
        const char* v = env::text("CONVKIT_TILE_ELEMENTS");
        if (v && std::strcmp(v, "off") == 0) return int64_t(-2);
        return std::max<int64_t>(-1, env::integer("CONVKIT_TILE_ELEMENTS", -1));
    }();
    if (asked == -2) return b.max_indexable_elements() == INT64_MAX ? 0 : b.max_indexable_elements();
    const int64_t own = b.max_tensor_elements(p);
    if (asked == 0) return own;
    if (asked > 0) return std::min(asked, own);
    return std::min<int64_t>(own, INT32_MAX);
}

Event run_tiled(Backend* b, const ConvProblem& p, const ConvArgs& a, const Stream& stream, const std::vector<Event>& deps,
                const TilePlan& tp, const char* fn) {
    const bool epi_src = p.transposed && p.dir == Direction::bwd_d;
    const Direction dir = p.dir;
    // Per tensor: the slice of each tile and whether it needs a temporary.
    Slot src("src"), dst("dst");
    src.whole = a.src;
    dst.whole = a.dst;
    src.in = dir != Direction::bwd_d || (epi_src && p.has_sum());
    src.out = dir == Direction::bwd_d;
    dst.in = dir != Direction::fwd || p.has_sum();
    dst.out = dir == Direction::fwd;
    // A 16-bit backward-weights runs its tiles in f32 on widened copies, so each partial sum is
    // exact to f32 and the result rounds once (16-bit partials would round once per tile).
    const bool widen = tp.accumulate && (p.dt == DType::bf16 || p.dt == DType::f16);
    src.widen = dst.widen = widen;
    const DType part_dt = widen ? DType::f32 : a.weights.dtype;
    std::vector<Slot> operands;
    PostOps ops;
    if (a.post_ops) ops = *a.post_ops;
    for (std::size_t i = 0; i < ops.size(); ++i)
        if (ops[i].kind == PostOp::Kind::binary) {
            Slot s("a binary post-op operand");
            s.whole = ops[i].operand;
            s.in = true;
            operands.push_back(std::move(s));
        }
    auto slices = [&](const Tile& t, TensorView* sv, TensorView* dv, std::vector<TensorView>* ov) {
        const int64_t rin = tp.axis < 0 ? -1 : t.p.in[0], rout = tp.axis < 0 ? -1 : t.p.out[0];
        *sv = slice(a.src, t.n0, t.p.mb, t.src0, rin);
        *dv = slice(a.dst, t.n0, t.p.mb, t.dst0, rout);
        ov->clear();
        for (const Slot& s : operands) {
            const int64_t nimg = s.whole.sizes[0] == 1 ? 1 : t.p.mb;
            ov->push_back(slice(s.whole, t.n0, nimg, epi_src ? t.src0 : t.dst0, epi_src ? rin : rout));
        }
    };
    TensorView sv, dv;
    std::vector<TensorView> ov;
    for (const Tile& t : tp.tiles) {
        slices(t, &sv, &dv, &ov);
        src.temp_bytes = std::max(src.temp_bytes, need(src, sv));
        dst.temp_bytes = std::max(dst.temp_bytes, need(dst, dv));
        for (std::size_t i = 0; i < operands.size(); ++i)
            operands[i].temp_bytes = std::max(operands[i].temp_bytes, need(operands[i], ov[i]));
    }
    const Device dev = p.device;
    for (const auto& e : deps) stream.wait(e);
    src.temp = allocate(dev, src.temp_bytes, stream, "src rows", fn);
    dst.temp = allocate(dev, dst.temp_bytes, stream, "dst rows", fn);
    for (Slot& s : operands) s.temp = allocate(dev, s.temp_bytes, stream, "post-op operand rows", fn);
    // Backward weights: each tile's gradients into a temporary, summed in f64.
    const int64_t nw = a.weights.numel(), nb = tp.accumulate && a.bias.defined() ? a.bias.numel() : 0;
    Buffer wtile, btile, acc;
    if (tp.accumulate) {
        const std::size_t es = dtype_size(part_dt);
        wtile = allocate(dev, static_cast<std::size_t>(nw) * es, stream, "weight gradient of a tile", fn);
        if (nb) btile = allocate(dev, static_cast<std::size_t>(nb) * es, stream, "bias gradient of a tile", fn);
        acc = allocate(dev, static_cast<std::size_t>(nw + nb) * sizeof(double), stream, "f64 sums", fn);
    }
    bool first = true;
    for (const Tile& t : tp.tiles) {
        slices(t, &sv, &dv, &ov);
        bind(src, sv);
        bind(dst, dv);
        ConvProblem q = t.p;
        if (widen) {
            q.dt = DType::f32;
            // TF32 holds a bf16 value exactly, not an f16 one (11 significant bits).
            q.allow_tf32 = p.allow_tf32 && p.dt == DType::bf16;
        }
        q.src_layout = src.cur.layout();
        q.dst_layout = dst.cur.layout();
        ConvArgs ta = a;
        ta.src = src.cur;
        ta.dst = dst.cur;
        for (std::size_t i = 0, k = 0; i < ops.size(); ++i) {
            if (ops[i].kind != PostOp::Kind::binary) continue;
            bind(operands[k], ov[k]);
            ops[i].operand = operands[k].cur;
            q.post_ops[i].operand_layout = operands[k].cur.layout();
            if (operands[k].cur.data != ov[k].data) copy_in(operands[k], stream);
            ++k;
        }
        if (a.post_ops) ta.post_ops = &ops;
        if (src.in && src.cur.data != sv.data) copy_in(src, stream);
        if (dst.in && dst.cur.data != dv.data) copy_in(dst, stream);  // (widened slots: always)
        if (tp.accumulate) {
            ta.weights = TensorView(wtile.data(), part_dt, a.weights.sizes, a.weights.strides, dev);
            if (nb) ta.bias = TensorView(btile.data(), part_dt, a.bias.sizes, a.bias.strides, dev);
        }
        b->execute(q, ta, stream, {});
        if (src.out && src.cur.data != sv.data) copy_out(src, stream);
        if (dst.out && dst.cur.data != dv.data) copy_out(dst, stream);
        if (tp.accumulate) {
            double* sums = static_cast<double*>(acc.data());
            accumulate(dev, sums, wtile.data(), part_dt, nw, first, stream);
            if (nb) accumulate(dev, sums + nw, btile.data(), part_dt, nb, first, stream);
        }
        first = false;
    }
    if (tp.accumulate) {
        const double* sums = static_cast<const double*>(acc.data());
        store(dev, a.weights.data, a.weights.dtype, sums, nw, stream);
        if (nb) store(dev, a.bias.data, a.bias.dtype, sums + nw, nb, stream);
    }
    return stream.record();
}

}  // namespace convkit::core
