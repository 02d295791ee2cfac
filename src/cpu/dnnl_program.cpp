// Execution of a oneDNN plan's step program (see dnnl_program.hpp): the call's pointers are bound
// to the prebuilt primitives' memory objects and every step runs in order; convkit's own steps
// (zeroing, row gathers and scatters, 16-bit widening and narrowing, diff_bias, the post-op pass)
// run here too.
#include "cpu/dnnl_program.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "cpu/dnnl_convert.hpp"

namespace convkit::cpu {

using core::ConvArgs;
using core::ConvProblem;

namespace {

std::unique_ptr<ExecCtx> make_ctx(const Variant& v) {
    auto c = std::make_unique<ExecCtx>();
    c->strm = dnnl::stream(dnnl_engine());
    c->mems.resize(v.steps.size());
    c->cargs.resize(v.steps.size());
    for (std::size_t i = 0; i < v.steps.size(); ++i) {
        const Step& s = v.steps[i];
        if (s.kind != Step::primitive) continue;
        for (std::size_t a = 0; a < s.arg_ids.size(); ++a) {
            c->mems[i].emplace_back(s.mds[a], dnnl_engine(), static_cast<void*>(nullptr));
            c->cargs[i].push_back(dnnl_exec_arg_t{s.arg_ids[a], c->mems[i].back().get()});
        }
    }
    return c;
}

struct Pointers {
    void* user[4] = {nullptr, nullptr, nullptr, nullptr};  // src, wei, bias, dst
    void* packed = nullptr;
    char* ws = nullptr;
    const PostOps* post_ops = nullptr;
};

void* resolve(const Variant& v, const Pointers& ptr, Bind b) {
    switch (b.kind) {
        case Bind::src: return ptr.user[0];
        case Bind::wei: return ptr.user[1];
        case Bind::bias: return ptr.user[2];
        case Bind::dst: return ptr.user[3];
        case Bind::packed: return ptr.packed;
        case Bind::temp: return ptr.ws + v.temp_off[static_cast<std::size_t>(b.index)];
        case Bind::operand: return (*ptr.post_ops)[static_cast<std::size_t>(b.index)].operand.data;
    }
    return nullptr;
}

// Reorders prepacked weights whose layout is not the one this plan's primitive reads (the plan
// was built for another batch size, say): correct, at the cost of a reorder per call.
void* repack(Variant& v, const PackedWeightsHandle& h, char* ws) {
    dnnl::reorder r;
    {
        std::lock_guard<std::mutex> lock(v.packed_mu);
        for (auto& e : v.packed_reorders)
            if (e.first == h.md) r = e.second;
        if (!r) {
            r = dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), h.md, dnnl_engine(), v.wei_md));
            v.packed_reorders.emplace_back(h.md, r);
        }
    }
    void* out = ws + v.temp_off[static_cast<std::size_t>(v.wei_temp)];
    dnnl::memory from(h.md, dnnl_engine(), h.data.data()), to(v.wei_md, dnnl_engine(), out);
    dnnl::stream s(dnnl_engine());
    r.execute(s, from, to);
    s.wait();
    return out;
}

// Copies between the input rows a strided 1x1 convolution reads (channels-last src) and a dense
// [M, IC] matrix: gather = src -> rows, else rows -> src.
void strided_rows(const ConvProblem& p, std::size_t elem_bytes, char* src, char* rows, bool gather) {
    const std::size_t row_bytes = static_cast<std::size_t>(p.ic) * elem_bytes;
    const core::Spatial3 geo = p.spatial3();
    const int64_t *in = geo.in, *out = geo.out, *stride = geo.stride;
    const int64_t rows_per_image = out[0] * out[1] * out[2];
    const int64_t M = p.mb * rows_per_image;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
        const int64_t n = m / rows_per_image, r = m % rows_per_image;
        const int64_t ow = r % out[2], oh = (r / out[2]) % out[1], od = r / (out[2] * out[1]);
        const int64_t pos = ((n * in[0] + od * stride[0]) * in[1] + oh * stride[1]) * in[2] + ow * stride[2];
        char* s = src + static_cast<std::size_t>(pos) * row_bytes;
        char* d = rows + static_cast<std::size_t>(m) * row_bytes;
        if (gather) std::memcpy(d, s, row_bytes);
        else std::memcpy(s, d, row_bytes);
    }
}

// diff_bias[c] = sum of channels-last diff_dst over every image and position. Threads own channel
// ranges and sum rows in order, so the result does not depend on the thread count; f32 sums in
// double, bf16/f16 in f32 (as the reference does).
void bias_grad_channels_last(const ConvProblem& p, const void* ddst, void* dbias) {
    int64_t M = p.mb;
    for (int i = 0; i < p.nsp; ++i) M *= p.out[i];
    const int64_t OC = p.oc;
    constexpr int64_t kChunk = 256;
    const int nthr = omp_get_max_threads();
    const int64_t per = std::min<int64_t>(kChunk, std::max<int64_t>(16, (OC + nthr - 1) / nthr));
    const int64_t chunks = (OC + per - 1) / per;
    const bool half = p.dt == DType::bf16 || p.dt == DType::f16;
    const bool bf16 = p.dt == DType::bf16;
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t c0 = ch * per, n = std::min(per, OC - c0);
        double acc[kChunk];
        float accf[kChunk];
        for (int64_t j = 0; j < n; ++j) acc[j] = 0, accf[j] = 0;
        for (int64_t m = 0; m < M; ++m) {
            if (bf16) {
                const uint16_t* row = static_cast<const uint16_t*>(ddst) + m * OC + c0;
                for (int64_t j = 0; j < n; ++j) accf[j] += bf16_load(row[j]);
            } else if (half) {
                const uint16_t* row = static_cast<const uint16_t*>(ddst) + m * OC + c0;
                for (int64_t j = 0; j < n; ++j) accf[j] += f16_to_f32(row[j]);
            } else {
                const float* row = static_cast<const float*>(ddst) + m * OC + c0;
                for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
            }
        }
        for (int64_t j = 0; j < n; ++j) {
            if (bf16) static_cast<uint16_t*>(dbias)[c0 + j] = bf16_store(accf[j]);
            else if (half) static_cast<uint16_t*>(dbias)[c0 + j] = f32_to_f16(accf[j]);
            else static_cast<float*>(dbias)[c0 + j] = static_cast<float>(acc[j]);
        }
    }
}

}  // namespace

Event run_variant(Variant& v, const ConvProblem& p, const ConvArgs& args) {
    Pointers ptr;
    ptr.user[0] = args.src.data;
    ptr.user[1] = args.weights.data;
    ptr.user[2] = args.bias.data;
    ptr.user[3] = args.dst.data;
    ptr.post_ops = args.post_ops;
    Workspace ws;
    if (v.ws_bytes) ws.buf = core::Buffer(Device::cpu(), v.ws_bytes);
    ptr.ws = ws.base();
    if (p.packed_weights) {
        const auto* h = static_cast<const PackedWeightsHandle*>(args.packed);
        if (!h) throw Error(ErrorKind::invalid_argument, "cpu backend: prepacked weights expected but none given");
        ptr.packed = h->md == v.wei_md ? h->data.data() : repack(v, *h, ptr.ws);
    }

    std::unique_ptr<ExecCtx> ctx;
    {
        std::lock_guard<std::mutex> lock(v.pool_mu);
        if (!v.pool.empty()) {
            ctx = std::move(v.pool.back());
            v.pool.pop_back();
        }
    }
    if (!ctx) ctx = make_ctx(v);
    for (std::size_t i = 0; i < v.steps.size(); ++i) {
        const Step& s = v.steps[i];
        if (p.packed_weights && s.weights_reorder) continue;
        if (s.kind == Step::zero) {
            std::memset(resolve(v, ptr, s.to), 0, s.zero_bytes);
            continue;
        }
        if (s.kind == Step::widen) {
            widen_to_f32(p.dt, resolve(v, ptr, s.from), static_cast<float*>(resolve(v, ptr, s.to)), s.count);
            continue;
        }
        if (s.kind == Step::narrow) {
            narrow_from_f32(p.dt, static_cast<const float*>(resolve(v, ptr, s.from)), resolve(v, ptr, s.to), s.count);
            continue;
        }
        if (s.kind == Step::widen_blocked) {
            widen_to_blocked(p.dt, resolve(v, ptr, s.from), static_cast<float*>(resolve(v, ptr, s.to)),
                             v.maps[static_cast<std::size_t>(s.map)]);
            continue;
        }
        if (s.kind == Step::narrow_blocked) {
            narrow_from_blocked(p.dt, static_cast<const float*>(resolve(v, ptr, s.from)), resolve(v, ptr, s.to),
                                v.maps[static_cast<std::size_t>(s.map)]);
            continue;
        }
        if (s.kind == Step::gather || s.kind == Step::scatter) {
            const bool gather = s.kind == Step::gather;
            strided_rows(p, s.count, static_cast<char*>(resolve(v, ptr, gather ? s.from : s.to)),
                         static_cast<char*>(resolve(v, ptr, gather ? s.to : s.from)), gather);
            continue;
        }
        for (std::size_t a = 0; a < s.binds.size(); ++a) ctx->mems[i][a].set_data_handle(resolve(v, ptr, s.binds[a]));
        check_status(dnnl_primitive_execute(s.prim.get(), ctx->strm.get(), static_cast<int>(ctx->cargs[i].size()),
                                            ctx->cargs[i].data()),
                     "executing a oneDNN primitive");
    }
    check_status(dnnl_stream_wait(ctx->strm.get()), "waiting for the oneDNN stream");
    {
        std::lock_guard<std::mutex> lock(v.pool_mu);
        v.pool.push_back(std::move(ctx));
    }
    if (v.own_bias_grad) bias_grad_channels_last(p, args.dst.data, args.bias.data);
    if (v.own_epilogue) {
        Epilogue e;
        e.init(p, args.dst.data, p.dst_layout, nullptr, args.post_ops);
        e.run_all(resolve(v, ptr, v.acc));
    }
    return Event();
}

}  // namespace convkit::cpu
