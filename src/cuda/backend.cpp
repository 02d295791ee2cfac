// The cuDNN backend: a ConvProblem becomes a cuDNN operation graph, heuristics (or autotuning, or
// the tune file) pick an engine configuration, and the finalized plan is cached per device. A call
// then only binds pointers (a cached variant pack when they repeat) and enqueues work on the
// caller's stream; it never blocks the host.
//
// Plan shapes, chosen once per problem (and per pointer alignment):
//   direct     forward problems of at most direct_max_macs() multiply-adds: convkit's own kernel
//              with the epilogue fused, one launch (cuDNN's host cost per call is the larger part).
//   fused      forward, NHWC, ungrouped, 16-byte aligned channels, f16/bf16/f32 (TF32 allowed),
//              bias/binary add.../relu/clip/elu/swish/gelu/logistic/tanh: one runtime-fusion
//              graph conv -> pointwise chain, no pass over dst of ours.
//   conv       a single convolution node (pre-compiled engines), then at most one kernel of ours:
//              the epilogue (bias + the whole post-op chain) or the bias-gradient reduction. With a
//              `sum` post-op the convolution writes a temporary, as the epilogue reads the old dst.
//              A 16-bit forward with bias or post-ops must round dst once, as the reference does
//              (conv, then the epilogue, rounds twice: 2 ulps off, beyond bf16's 1-ulp tolerance).
//              In order of preference:
//   acc32      the convolution writes an f32 temporary and the epilogue rounds once (not with
//              unequal native paddings: an engine then left elements of an f32 result unwritten).
//   wide       when every engine refuses an f32 result: src and weights are widened to f32
//              temporaries and an f32 plan with TF32 allowed runs (exact products: bf16 and f16
//              values fit TF32's 11 significant bits; f32 sums), then the epilogue rounds once.
//              Also small 16-bit backward-weights (<= wide_bwd_w_max_macs()): cuDNN's 16-bit
//              engine for a grouped, strided, dilated 3D layer came out 6 bf16 ulps off an
//              f32-accumulated result (rounded partial sums). Larger backward-weights keep the
//              16-bit engines: an f32 result there ran 2-6x slower (H100, ResNet-50 mb 32).
//   plain      conv, then the epilogue (two roundings), if nothing above is accepted.
//              CONVKIT_CUDA_ACC32=0 and CONVKIT_CUDA_WIDE=0 turn them off. (Earlier a bias
//              prefill with beta = 1 was tried; engines blend after rounding, so res3_ds NCHW
//              still came out 2 ulps off: removed.)
//   padded     as conv, for asymmetric padding that no engine accepts: the input (forward,
//              backward-weights) is copied into a zero-padded temporary, or the backward-data result
//              is computed padded and cropped.
//   split      backward-data of a strided layer (f32 without TF32, f64) as one stride-1
//              sub-convolution per phase of diff_src, each with the kernel taps that reach it (no
//              multiplies by inserted zeros). Gather of the phase's taps, the sub-plan (itself a
//              conv plan) into a dense temporary, scatter into diff_src; phases no tap reaches are
//              zeroed. Opt-in (set_split_dgrad): timed against cuDNN's plans it won on no ResNet-50
//              layer once the padding was normalized, and it costs first-call time.
// Every plan is built for the problem with its post-padding normalized (see normalized()).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <new>

#include "core/backend.hpp"
#include "core/lru_cache.hpp"
#include "cuda/cuda_api.hpp"
#include "cuda/cuda_util.hpp"
#include "cuda/cudnn_graph.hpp"
#include "cuda/kernels.hpp"
#include "cuda/tune_file.hpp"

namespace convkit::cuda {
namespace {

using core::ConvArgs;
using core::ConvProblem;
using core::Direction;

// ---------------------------------------------------------------------------------------------
// Settings.

std::atomic<int64_t> g_direct_max_macs{-1};
std::atomic<int> g_split_dgrad{-2};  // -2: not yet read from the environment; else -1 auto, 0, 1

bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}

// CONVKIT_CUDA_ACC32=0 turns off the f32 convolution result for 16-bit problems that need a pass
// of ours after the convolution (see "acc32" at the top of the file).
bool acc32_enabled() {
    static const bool on = [] {
        const char* v = std::getenv("CONVKIT_CUDA_ACC32");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    return on;
}

// CONVKIT_CUDA_WIDE=0 turns off the widened (f32, TF32) convolution for 16-bit problems whose
// engines refuse an f32 result (see "wide" at the top of the file).
// Backward-weights takes the widened plan only up to this many multiply-adds (default 2^24,
// CONVKIT_CUDA_WIDE_BWD_W_MAX_MACS): there it costs little, while on ResNet-50's layers the f32
// (TF32) engines run 1.5-6x slower than the 16-bit ones, which met every tolerance there.
int64_t wide_bwd_w_max_macs() {
    static const int64_t v = [] {
        const char* e = std::getenv("CONVKIT_CUDA_WIDE_BWD_W_MAX_MACS");
        return e && *e ? std::atoll(e) : int64_t{1} << 24;
    }();
    return v;
}

bool wide_enabled() {
    static const bool on = [] {
        const char* v = std::getenv("CONVKIT_CUDA_WIDE");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    return on;
}

// Asymmetric padding done by a zero-padded temporary before native pre/post paddings are tried.
// CONVKIT_CUDA_EXPLICIT_PADDING=1 for every dtype, 0 for none; default f64 only, where an engine
// that accepted unequal pre/post paddings gave wrong backward-weights results on the H100
// (1D NCHW, pad 0/1, cuDNN 9.19; found by the PyTorch-oracle suite).
bool prefer_explicit_padding(const ConvProblem& p) {
    static const int mode = [] {
        const char* v = std::getenv("CONVKIT_CUDA_EXPLICIT_PADDING");
        if (!v || !*v) return -1;
        return std::strcmp(v, "0") == 0 ? 0 : 1;
    }();
    return mode == 1 || (mode == -1 && p.dt == DType::f64);
}

int64_t workspace_limit() {
    static const int64_t limit = [] {
        const char* v = std::getenv("CONVKIT_CUDA_WORKSPACE_LIMIT_MB");
        long long mb = v ? std::atoll(v) : 0;
        // Heuristics' favourite configs occasionally ask for gigabytes (pytorch#49207); 2 GiB keeps
        // every ResNet-scale choice and rules out the pathological ones.
        return (mb > 0 ? mb : 2048) * (int64_t(1) << 20);
    }();
    return limit;
}

// ---------------------------------------------------------------------------------------------
// Per-device state: properties, cuDNN handles. Leaked on purpose (see runtime.cpp).

struct DeviceInfo {
    std::string name;
    int cc_major = 0, cc_minor = 0;
};

const DeviceInfo& device_info(int device) {
    static std::mutex mu;
    static auto* infos = new std::map<int, DeviceInfo>;
    std::lock_guard<std::mutex> lock(mu);
    auto it = infos->find(device);
    if (it != infos->end()) return it->second;
    cudaDeviceProp prop;
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    DeviceInfo d;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    return infos->emplace(device, d).first->second;
}

// cuDNN handles are not thread-safe; a pool per device lets threads run concurrently without one
// handle per (device, thread) that would outlive its thread.
class HandlePool {
public:
    cudnnHandle_t acquire(int device) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto& v = free_[device];
            if (!v.empty()) {
                cudnnHandle_t h = v.back();
                v.pop_back();
                return h;
            }
        }
        cudnnHandle_t h;
        check_cudnn(cudnnCreate(&h), "cudnnCreate");  // the caller has made `device` current
        return h;
    }
    void release(int device, cudnnHandle_t h) {
        std::lock_guard<std::mutex> lock(mu_);
        free_[device].push_back(h);
    }

private:
    std::mutex mu_;
    std::map<int, std::vector<cudnnHandle_t>> free_;
};

HandlePool& handles() {
    static auto* p = new HandlePool;
    return *p;
}

class HandleLease {
public:
    explicit HandleLease(int device) : device_(device), h_(handles().acquire(device)) {}
    ~HandleLease() { handles().release(device_, h_); }
    cudnnHandle_t get() const { return h_; }
    HandleLease(const HandleLease&) = delete;
    HandleLease& operator=(const HandleLease&) = delete;

private:
    int device_;
    cudnnHandle_t h_;
};

// ---------------------------------------------------------------------------------------------
// Plans.

// What the variant pack binds, slot by slot.
enum Slot : int { kSrc, kWei, kDst, kBias, kPaddedSrc, kConvTemp, kOperand0 = 16 };

struct Plan;

// One phase of a split backward-data: diff_src positions r + s*j (per spatial dim), reached by
// the kernel taps phi + s*t. `sub` is the stride-1 problem over those positions and taps.
struct Phase {
    core::ConvProblem sub;
    std::shared_ptr<Plan> plan;  // null: no tap reaches the phase, its positions are zero-filled
    int64_t r[3] = {0, 0, 0}, phi[3] = {0, 0, 0}, in[3] = {1, 1, 1}, k[3] = {1, 1, 1};
};

struct Plan {
    std::string error;  // non-empty: building failed; the error is re-thrown on every call
    ErrorKind error_kind = ErrorKind::unsupported;

    bool fused = false, padded = false, conv_to_temp = false, epilogue = false, bias_grad = false, direct = false;
    bool acc32 = false;         // 16-bit: the convolution writes an f32 temporary, rounded once by us
    std::shared_ptr<Plan> wide;  // 16-bit: the f32 (TF32) plan run on widened copies of the inputs
    core::ConvProblem wide_problem;
    bool autotuned = false, from_tune_file = false;
    Graph graph;
    Desc plan;
    int64_t workspace = 0;
    int64_t engine_index = -1;
    std::string engine_name;
    std::vector<int64_t> uids;
    std::vector<int> slots;

    // padded: the zero-padded activation (src, or diff_src for bwd_d), dense in the problem's layout.
    int64_t pad_sizes[kMaxRank] = {1, 1, 1, 1, 1}, pad_strides[kMaxRank] = {0, 0, 0, 0, 0};
    int64_t pad_offset = 0;  // elements from the padded origin to the interior
    std::size_t pad_bytes = 0;
    std::size_t temp_bytes = 0;  // conv_to_temp: dst-sized temporary

    EpilogueArgs epi;  // pointers filled per call

    // split: the phases, and the largest phase's diff_src and weights temporaries (bytes).
    bool split = false;
    std::vector<Phase> phases;
    std::size_t split_dx_bytes = 0, split_w_bytes = 0;

    std::mutex vp_mu;  // the variant pack cached for the last pointers
    std::vector<void*> vp_ptrs;
    Desc vp;
};

struct Entry {
    std::mutex mu;
    std::shared_ptr<Plan> plan[2];  // [16-byte aligned pointers, less aligned]
};

using PlanCache = core::LruCache<ConvProblem, Entry, core::ConvProblemHash>;

struct Counters {
    std::atomic<uint64_t> fused{0}, unfused{0}, direct{0}, padded{0}, tuned{0}, loaded{0}, split{0};
};
Counters& counters() {
    static auto* c = new Counters;
    return *c;
}

thread_local std::shared_ptr<Plan> t_last_plan;

// Logical (N, C, d, h, w) dims with the spatial ones cuDNN sees: 1D gets a unit H in front.
std::vector<int64_t> cudnn_dims(int64_t a, int64_t b, const int64_t* sp, int nsp) {
    std::vector<int64_t> d{a, b};
    if (nsp == 1) d.push_back(1);
    for (int i = 0; i < nsp; ++i) d.push_back(sp[i]);
    return d;
}

// Dense strides of `dims` in channels-first or channels-last order (size-1 dims get the stride
// they would have in that layout: cuDNN tells layouts apart by strides).
std::vector<int64_t> dense(const std::vector<int64_t>& dims, bool channels_last) {
    const std::size_t r = dims.size();
    std::vector<int64_t> st(r, 1);
    int64_t s = 1;
    if (!channels_last) {
        for (std::size_t i = r; i-- > 0;) {
            st[i] = s;
            s *= std::max<int64_t>(dims[i], 1);
        }
        return st;
    }
    st[1] = 1;
    s = std::max<int64_t>(dims[1], 1);
    for (std::size_t i = r; i-- > 2;) {
        st[i] = s;
        s *= std::max<int64_t>(dims[i], 1);
    }
    st[0] = s;
    return st;
}

TensorSpec spec(int64_t uid, DType dt, std::vector<int64_t> dims, Layout layout) {
    TensorSpec t;
    t.uid = uid;
    t.dtype = to_cudnn(dt);
    t.strides = dense(dims, layout == Layout::channels_last);
    t.dims = std::move(dims);
    return t;
}

bool asymmetric(const ConvProblem& p) {
    for (int i = 0; i < p.nsp; ++i)
        if (p.padding_l[i] != p.padding_r[i]) return true;
    return false;
}

// A tensor whose channels or spatial extent is 1 is dense in both layouts, and convkit calls it
// channels-first; cuDNN reads layouts from strides, and its NHWC engines (runtime fusion above all)
// want every tensor of the graph in NHWC. So such tensors follow the problem's real layout.
Layout primary_layout(const ConvProblem& p) {
    auto ambiguous = [&](int64_t c, const int64_t* sp) {
        int64_t s = 1;
        for (int i = 0; i < p.nsp; ++i) s *= sp[i];
        return c == 1 || s == 1;
    };
    if (!ambiguous(p.ic, p.in)) return p.src_layout;
    if (!ambiguous(p.oc, p.out)) return p.dst_layout;
    if (!ambiguous(p.icg(), p.k)) return p.wei_layout;
    return p.src_layout;
}

Layout effective(Layout l, int64_t c, const int64_t* sp, int nsp, Layout primary) {
    int64_t s = 1;
    for (int i = 0; i < nsp; ++i) s *= sp[i];
    return (c == 1 || s == 1) ? primary : l;
}

// The convolution-only graph; `padded` describes the activation with its padding made explicit.
GraphSpec conv_spec(const ConvProblem& p, bool padded, int64_t alignment) {
    GraphSpec g;
    g.dir = p.dir;
    g.compute = p.dt == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    g.double_scalars = p.dt == DType::f64;
    g.alignment = alignment;
    int64_t in[3];
    for (int i = 0; i < p.nsp; ++i) in[i] = padded ? p.in[i] + p.padding_l[i] + p.padding_r[i] : p.in[i];
    const Layout prim = primary_layout(p);
    g.x = spec(1, p.dt, cudnn_dims(p.mb, p.ic, in, p.nsp), effective(p.src_layout, p.ic, p.in, p.nsp, prim));
    g.w = spec(2, p.dt, cudnn_dims(p.oc, p.icg(), p.k, p.nsp), effective(p.wei_layout, p.icg(), p.k, p.nsp, prim));
    g.y = spec(3, p.dt, cudnn_dims(p.mb, p.oc, p.out, p.nsp), effective(p.dst_layout, p.oc, p.out, p.nsp, prim));
    if (p.nsp == 1) {
        g.pre_pad.push_back(0);
        g.post_pad.push_back(0);
        g.stride.push_back(1);
        g.dilation.push_back(1);
    }
    for (int i = 0; i < p.nsp; ++i) {
        g.pre_pad.push_back(padded ? 0 : p.padding_l[i]);
        g.post_pad.push_back(padded ? 0 : p.padding_r[i]);
        g.stride.push_back(p.stride[i]);
        g.dilation.push_back(p.dilation[i]);
    }
    return g;
}

// Can the forward problem's bias and post-ops go into a runtime-fusion graph? Fills the chain.
bool fused_spec(const ConvProblem& p, GraphSpec* g, std::vector<int>* slots) {
    if (p.dir != Direction::fwd || (!p.with_bias && p.n_post_ops == 0)) return false;
    if (p.dt == DType::f64) return false;
    if (p.dt == DType::f32 && !p.allow_tf32) return false;  // runtime fusion engines are tensor-core only
    if (p.g != 1) return false;
    // All three NHWC as described to cuDNN (see effective()): the channel stride is 1.
    const bool nhwc = g->x.strides[1] == 1 && g->w.strides[1] == 1 && g->y.strides[1] == 1;
    if (!nhwc) return false;
    const int64_t vec = 16 / static_cast<int64_t>(dtype_size(p.dt));  // 128-bit channel vectors
    if (p.ic % vec || p.oc % vec) return false;
    std::vector<int64_t> ddims = g->y.dims;
    std::vector<int64_t> chan(ddims.size(), 1);
    chan[1] = p.oc;
    *slots = {kSrc, kWei, kDst};
    if (p.with_bias) {
        PointwiseSpec b;
        b.mode = CUDNN_POINTWISE_ADD;
        b.binary = true;
        b.operand = spec(4, p.dt, chan, Layout::channels_last);
        g->epilogue.push_back(b);
        slots->push_back(kBias);
    }
    for (int i = 0; i < p.n_post_ops; ++i) {
        const core::PostOpDesc& d = p.post_ops[i];
        PointwiseSpec s;
        if (d.kind == PostOp::Kind::sum) return false;
        if (d.kind == PostOp::Kind::binary) {
            switch (static_cast<BinaryAlg>(d.alg)) {
                case BinaryAlg::add: s.mode = CUDNN_POINTWISE_ADD; break;
                case BinaryAlg::mul: s.mode = CUDNN_POINTWISE_MUL; break;
                case BinaryAlg::sub: s.mode = CUDNN_POINTWISE_SUB; break;
                case BinaryAlg::div: s.mode = CUDNN_POINTWISE_DIV; break;
                case BinaryAlg::max: s.mode = CUDNN_POINTWISE_MAX; break;
                case BinaryAlg::min: s.mode = CUDNN_POINTWISE_MIN; break;
            }
            std::vector<int64_t> od = d.operand_sizes.vec();
            if (p.nsp == 1) od.insert(od.begin() + 2, 1);
            const bool full = od == ddims, per_channel = od == chan;
            // The graph describes the operand as dense channels-last (a per-channel operand as K
            // contiguous values), so any other memory order goes to our epilogue instead.
            if (d.operand_layout == Layout::strided) return false;
            if (!(per_channel || (full && d.operand_layout == Layout::channels_last))) return false;
            s.binary = true;
            s.operand = spec(10 + i, p.dt, od, Layout::channels_last);
            slots->push_back(kOperand0 + i);
        } else {
            switch (static_cast<EltwiseAlg>(d.alg)) {
                case EltwiseAlg::relu:
                    s.mode = CUDNN_POINTWISE_RELU_FWD;
                    s.relu_slope = static_cast<float>(d.alpha);
                    break;
                case EltwiseAlg::clip:
                    s.mode = CUDNN_POINTWISE_RELU_FWD;
                    s.relu_lower = static_cast<float>(d.alpha);
                    s.relu_upper = static_cast<float>(d.beta);
                    s.has_upper = true;
                    break;
                case EltwiseAlg::elu:
                    s.mode = CUDNN_POINTWISE_ELU_FWD;
                    s.elu_alpha = static_cast<float>(d.alpha);
                    break;
                case EltwiseAlg::swish:
                    s.mode = CUDNN_POINTWISE_SWISH_FWD;
                    s.swish_beta = static_cast<float>(d.alpha);
                    break;
                case EltwiseAlg::gelu_erf: s.mode = CUDNN_POINTWISE_GELU_FWD; break;
                case EltwiseAlg::gelu_tanh: s.mode = CUDNN_POINTWISE_GELU_APPROX_TANH_FWD; break;
                case EltwiseAlg::logistic: s.mode = CUDNN_POINTWISE_SIGMOID_FWD; break;
                case EltwiseAlg::tanh: s.mode = CUDNN_POINTWISE_TANH_FWD; break;
                default: return false;  // linear, hardswish, mish, abs, ...: our epilogue
            }
        }
        g->epilogue.push_back(s);
    }
    return true;
}

std::string tune_key(const ConvProblem& p, const char* variant, int64_t alignment) {
    const DeviceInfo& d = device_info(p.device.index);
    char hash[32];
    std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(p.hash()));
    return "cudnn=" + std::to_string(cudnnGetVersion()) + "|gpu=" + d.name + "|cc=" + std::to_string(d.cc_major) + "." +
           std::to_string(d.cc_minor) + "|" + variant + "|align=" + std::to_string(alignment) + "|" + p.str() + "|" + hash;
}

// Bytes spanned by a graph tensor (for autotuning's scratch buffers).
std::size_t span_bytes(const TensorSpec& t, DType dt) {
    int64_t last = 0;
    for (std::size_t i = 0; i < t.dims.size(); ++i) last += (t.dims[i] - 1) * t.strides[i];
    // A tensor may be wider than the problem's dtype (acc32's f32 result of a 16-bit problem).
    const std::size_t es = t.dtype == CUDNN_DATA_FLOAT ? std::max<std::size_t>(4, dtype_size(dt)) : dtype_size(dt);
    return static_cast<std::size_t>(last + 1) * es;
}

struct Choice {
    Desc plan;
    int64_t engine_index = -1;
    std::string name;
    bool tuned = false, loaded = false;
};

// Times `n` candidates on stream `s` between events e0/e1 and returns the fastest's index, -1 if
// none ran. run(i) enqueues candidate i once (false: it could not). Each gets one warm-up run and
// 3 timed runs. With `drop_slow` the warm-up is timed too: a candidate far slower than the best so
// far (strict-f32 lists hold engines 50x off, at tens of ms a run) is dropped after it instead of
// running 3 more times; the slack covers a first run's lazy module load (a few ms).
int fastest_of(std::size_t n, cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, bool drop_slow,
               const std::function<bool(std::size_t)>& run) {
    const int reps = 3;
    auto timed = [&](std::size_t i, int times, float* ms) {
        bool ok = cudaEventRecord(e0, s) == cudaSuccess;
        for (int r = 0; r < times && ok; ++r) ok = run(i);
        ok = cudaEventRecord(e1, s) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess && ok;
        if (!ok) {
            (void)cudaGetLastError();
            return false;
        }
        return cudaEventElapsedTime(ms, e0, e1) == cudaSuccess;
    };
    int best = -1;
    float best_ms = 0;
    for (std::size_t i = 0; i < n; ++i) {
        float warm = 0, ms = 0;
        if (!timed(i, 1, &warm)) continue;
        if (drop_slow && best >= 0 && warm > std::max(3 * best_ms / reps, best_ms / reps + 5.f)) continue;
        if (!timed(i, reps, &ms)) continue;
        if (best < 0 || ms < best_ms) {
            best = static_cast<int>(i);
            best_ms = ms;
        }
    }
    return best;
}

// Times each plan on scratch tensors (a private stream, events) and returns the fastest's index.
int time_plans(const std::vector<Desc>& plans, const GraphSpec& g, DType dt, cudnnHandle_t h) {
    std::vector<const TensorSpec*> tensors{&g.x, &g.w, &g.y};
    for (const auto& e : g.epilogue)
        if (e.binary) tensors.push_back(&e.operand);
    int64_t ws_max = 0;
    for (const auto& pl : plans) ws_max = std::max(ws_max, plan_workspace(pl));
    std::vector<void*> bufs;
    struct Free {
        std::vector<void*>* b;
        cudnnHandle_t h;
        cudaStream_t s = nullptr;
        cudaEvent_t e0 = nullptr, e1 = nullptr;
        ~Free() {
            // The handle goes back to the pool: leave it on the legacy stream, not a destroyed one.
            cudnnSetStream(h, nullptr);
            if (s) cudaStreamSynchronize(s);
            for (void* p : *b) cudaFree(p);
            if (e0) cudaEventDestroy(e0);
            if (e1) cudaEventDestroy(e1);
            if (s) cudaStreamDestroy(s);
            (void)cudaGetLastError();
        }
    } guard{&bufs, h};
    for (const TensorSpec* t : tensors) {
        void* p = nullptr;
        std::size_t n = span_bytes(*t, dt);
        check_cuda(cudaMalloc(&p, n), "cudaMalloc (autotune scratch)");
        bufs.push_back(p);
        // Small normal values in every dtype (0x3c bytes): no NaN/denormal timing artefacts.
        check_cuda(cudaMemset(p, 0x3c, n), "cudaMemset");
    }
    void* ws = nullptr;
    if (ws_max > 0) {
        check_cuda(cudaMalloc(&ws, static_cast<std::size_t>(ws_max)), "cudaMalloc (autotune workspace)");
        bufs.push_back(ws);
    }
    check_cuda(cudaStreamCreateWithFlags(&guard.s, cudaStreamNonBlocking), "cudaStreamCreate");
    check_cuda(cudaEventCreate(&guard.e0), "cudaEventCreate");
    check_cuda(cudaEventCreate(&guard.e1), "cudaEventCreate");
    check_cudnn(cudnnSetStream(h, guard.s), "cudnnSetStream");
    std::vector<int64_t> uids = graph_uids(g);
    std::vector<void*> ptrs(bufs.begin(), bufs.begin() + static_cast<std::ptrdiff_t>(tensors.size()));
    Desc vp = make_variant_pack(uids, ptrs, ws);
    return fastest_of(plans.size(), guard.s, guard.e0, guard.e1, true, [&](std::size_t i) {
        return cudnnBackendExecute(h, plans[i].get(), vp.get()) == CUDNN_STATUS_SUCCESS;
    });
}

// Picks an execution plan for graph `g`: the tune file's entry, else heuristics (mode A, then
// FALLBACK) filtered by the problem's numerics, optionally autotuned. Empty plan: nothing works.
Choice choose(const ConvProblem& p, const GraphSpec& g, const Desc& graph, const char* variant, cudnnHandle_t h,
              std::string* why) {
    Choice c;
    const std::string key = tune_key(p, variant, g.alignment);
    TunedChoice tc;
    if (tune_lookup(key, &tc)) {
        std::string w;
        if (!tc.json.empty()) c.plan = make_plan_from_json(h, tc.json, &w);
        if (!c.plan && tc.engine_index >= 0) c.plan = make_plan_from_engine(h, graph, tc.engine_index, tc.knobs, &w);
        if (c.plan) {
            c.engine_index = tc.engine_index;
            c.name = "eng" + std::to_string(tc.engine_index) + " (tune file)";
            c.loaded = true;
            return c;
        }
    }
    const bool tune = convkit::autotune();
    const bool strict_f32 = p.dt == DType::f32 && !p.allow_tf32;
    // Filtered before ranking, so that "heuristics' top picks" are the top picks this problem may
    // run: for strict f32 the head of mode A's list is tensor-core configurations, and taking a
    // fixed head before filtering left few non-tensor-core ones to time.
    std::size_t offered = 0;
    auto eligible = [&](std::vector<Candidate> v, std::size_t cap, std::vector<Candidate>* out) {
        offered += v.size();
        std::size_t n = 0;
        for (auto& cand : v) {
            if (n >= cap) break;
            if (p.deterministic && cand.nondeterministic) continue;
            // Strict f32: engines that round inputs to TF32 (tensor-core f32 paths) do not qualify.
            if (strict_f32 && (cand.tensor_core || cand.down_convert)) continue;
            if (cand.workspace > workspace_limit()) continue;
            bool dup = false;
            for (const auto& u : *out) dup = dup || (u.engine_index == cand.engine_index && u.knobs == cand.knobs);
            if (dup) continue;
            out->push_back(std::move(cand));
            ++n;
        }
    };
    struct Built {
        Desc plan;
        int64_t engine_index;
        std::vector<std::pair<int64_t, int64_t>> knobs;
        std::string name;
    };
    std::vector<Built> built;
    std::string last_why;
    int nvrtc = 0;
    // Autotuning times at most this many plans (pre-compiled ones build in well under 1 ms and
    // run 4 times each; the first call of a ResNet-50 layer stays well under a second).
    const std::size_t max_timed = 32;
    auto build = [&](const std::vector<Candidate>& list) {
        for (const auto& cand : list) {
            if (!tune && !built.empty()) return;
            if (built.size() >= max_timed) return;
            // Autotuning: each runtime-compiled candidate costs an NVRTC compile (0.3-2 s), so only
            // the first two of them are timed; pre-compiled ones cost well under a millisecond.
            if (tune && cand.runtime_compiled && !built.empty() && ++nvrtc > 2) continue;
            std::string w;
            Desc plan = make_plan(h, cand, &w);
            if (!plan) {
                last_why = cand.name() + ": " + w;
                continue;
            }
            built.push_back(Built{std::move(plan), cand.engine_index, cand.knobs, cand.name()});
        }
    };
    std::vector<Candidate> cands;
    if (!tune) {
        // Heuristics only: mode A's first eligible configuration that finalizes; FALLBACK (a
        // second heuristics query, tens of ms) only when mode A had none.
        eligible(heuristics(graph, CUDNN_HEUR_MODE_A), SIZE_MAX, &cands);
        build(cands);
        if (built.empty()) {
            cands.clear();
            eligible(heuristics(graph, CUDNN_HEUR_MODE_FALLBACK), SIZE_MAX, &cands);
            build(cands);
        }
    } else {
        // As PyTorch's cudnn.benchmark, every eligible mode-A configuration (it times them all,
        // plus the fallback list); then mode B's top picks with their knobs, FALLBACK, and every
        // other engine with default knobs.
        eligible(heuristics(graph, CUDNN_HEUR_MODE_A), 24, &cands);
        eligible(heuristics(graph, CUDNN_HEUR_MODE_B), 8, &cands);
        eligible(heuristics(graph, CUDNN_HEUR_MODE_FALLBACK), SIZE_MAX, &cands);
        eligible(all_engines(graph), SIZE_MAX, &cands);
        build(cands);
    }
    if (built.empty()) {
        if (!last_why.empty()) *why = last_why;
        else if (offered == 0) *why = "heuristics offered no engine configuration";
        else *why = "every engine configuration was filtered out (determinism, TF32 or workspace)";
        return c;
    }
    std::size_t pick = 0;
    if (tune && built.size() > 1) {
        std::vector<Desc> plans;
        for (auto& b : built) plans.push_back(std::move(b.plan));
        try {
            pick = static_cast<std::size_t>(std::max(0, time_plans(plans, g, p.dt, h)));
        } catch (const Error&) {
            pick = 0;  // no memory to time in: heuristics' order
        }
        for (std::size_t i = 0; i < built.size(); ++i) built[i].plan = std::move(plans[i]);
        c.tuned = true;
    }
    Built& b = built[pick];
    c.plan = std::move(b.plan);
    c.engine_index = b.engine_index;
    c.name = b.name;
    if (tune) {
        TunedChoice out;
        out.engine_index = c.engine_index;
        out.knobs = b.knobs;
        out.json = plan_json(c.plan);
        tune_store(key, out);
    }
    return c;
}

void fill_epilogue_template(const ConvProblem& p, EpilogueArgs* e) {
    e->dt = p.dt;
    e->rank = p.rank();
    e->channels_last = p.dst_layout == Layout::channels_last;
    Dims dd = p.dst_dims();
    for (int i = 0; i < kMaxRank; ++i) e->sizes[i] = i < dd.rank() ? dd[i] : 1;
    e->n_ops = p.n_post_ops;
    int nb = 0;
    for (int i = 0; i < p.n_post_ops; ++i) {
        const core::PostOpDesc& d = p.post_ops[i];
        EpilogueOp& op = e->ops[i];
        op.kind = static_cast<int>(d.kind);
        op.alg = d.alg;
        op.alpha = d.alpha;
        op.beta = d.beta;
        op.scale = d.scale;
        op.operand = d.kind == PostOp::Kind::binary ? nb++ : -1;
    }
    e->n_operands = nb;
}

double macs(const ConvProblem& p) {
    double m = static_cast<double>(p.mb) * static_cast<double>(p.oc) * static_cast<double>(p.icg());
    for (int i = 0; i < p.nsp; ++i) m *= static_cast<double>(p.out[i]) * static_cast<double>(p.k[i]);
    return m;
}

// benchdnn-style descriptors (batch files, `convkit bench`) give a strided layer the post-padding
// that its output size implies: ResNet-50's 3x3/2 layers get 1/0 where PyTorch passes 1/1, conv1
// 3/2 for 3/3. Padding that no window reaches changes nothing, so every post-padding that keeps
// the output size describes the same convolution, and cuDNN's engines want it symmetric: with 1/0,
// mode A's first strict-f32 engine for res5's 3x3/2 backward-data ran 19 ms, with 1/1 0.3 ms
// (H100, cuDNN 9.19, as PyTorch gets). So post-padding becomes the pre-padding where that keeps
// the output size.
ConvProblem normalized(const ConvProblem& p) {
    ConvProblem q = p;
    for (int i = 0; i < p.nsp; ++i) {
        const int64_t span = (p.k[i] - 1) * p.dilation[i] + 1;
        // The least post-padding that still fits `out` windows; up to stride - 1 more keep `out`.
        const int64_t lo = (p.out[i] - 1) * p.stride[i] + span - p.in[i] - p.padding_l[i];
        const int64_t hi = lo + p.stride[i] - 1;
        if (p.padding_l[i] >= std::max<int64_t>(lo, 0) && p.padding_l[i] <= hi) q.padding_r[i] = p.padding_l[i];
    }
    return q;
}

// The plan takes the graph and the engine configuration chosen for it.
void adopt(Plan* plan, Graph&& graph, Choice&& c, const GraphSpec& g) {
    plan->graph = std::move(graph);
    plan->plan = std::move(c.plan);
    plan->engine_index = c.engine_index;
    plan->engine_name = c.name;
    plan->autotuned = c.tuned;
    plan->from_tune_file = c.loaded;
    plan->uids = graph_uids(g);
}

// A plan of one of the shapes direct, fused, conv or padded (see the top of the file).
std::shared_ptr<Plan> build_plain_plan(const ConvProblem& p, bool aligned, cudnnHandle_t h) {
    auto plan = std::make_shared<Plan>();
    if (p.dir == Direction::fwd && macs(p) <= static_cast<double>(direct_max_macs())) {
        plan->direct = true;
        plan->engine_name = "convkit direct";
        fill_epilogue_template(p, &plan->epi);
        counters().direct++;
        return plan;
    }
    const int64_t alignment = aligned ? 16 : static_cast<int64_t>(dtype_size(p.dt));
    std::string why;
    // 1. Runtime fusion.
    {
        GraphSpec g = conv_spec(p, false, alignment);
        std::vector<int> slots;
        if (fused_spec(p, &g, &slots)) {
            try {
                Graph graph = build_graph(h, g);
                Choice c = choose(p, g, graph.graph, "fused", h, &why);
                if (c.plan) {
                    plan->fused = true;
                    adopt(plan.get(), std::move(graph), std::move(c), g);
                    plan->slots = slots;
                }
            } catch (const Error& e) {
                if (e.kind() == ErrorKind::out_of_memory) throw;
                why = e.what();  // the graph itself was refused: fall through to the plain path
            }
        }
    }
    // 2. A convolution node alone, with native padding, then explicit padding if that fails. For
    //    16-bit problems, first the variants that round the result once (acc32, wide; see the
    //    top of the file), else an f32 result for our epilogue or conversion
    //    (forward with bias or post-ops, backward-weights); engines that refuse those leave the
    //    plain convolution.
    const bool half = p.dt == DType::f16 || p.dt == DType::bf16;
    const bool needs_pass = p.dir == Direction::fwd && (p.with_bias || p.n_post_ops > 0);
    const bool acc32_wanted = !plan->fused && half && needs_pass && acc32_enabled();
    const bool wide_wanted = !plan->fused && half && wide_enabled() &&
                             (needs_pass || (p.dir == Direction::bwd_w && macs(p) <= static_cast<double>(wide_bwd_w_max_macs())));
    if (!plan->fused) {
        // Kinds in order: 0 acc32, 1 wide, 2 plain; two paddings each (native first, unless
        // explicit is preferred).
        for (int attempt = 0; attempt < 6 && !plan->plan; ++attempt) {
            const int kind = attempt / 2;
            if (kind == 1) {
                if (attempt == 3 || !wide_wanted) continue;
                ConvProblem q = p;
                q.dt = DType::f32;
                q.allow_tf32 = true;
                q.with_bias = false;
                q.n_post_ops = 0;
                std::shared_ptr<Plan> sub = build_plain_plan(q, aligned, h);
                if (sub->error.empty()) {
                    plan->wide = std::move(sub);
                    plan->wide_problem = q;
                    plan->engine_name = "widened to f32: " + plan->wide->engine_name;
                    break;
                }
                why = sub->error;
                continue;
            }
            const bool acc32 = kind == 0,
                       padded = (attempt % 2 == 1) != (asymmetric(p) && prefer_explicit_padding(p));
            if (acc32 && !acc32_wanted) continue;
            if (padded && !asymmetric(p)) continue;
            // An f32 result with unequal native paddings: an engine accepted bf16 backward-weights
            // NCHW pads 1/0, 0/2 and left elements unwritten (H100, cuDNN 9.19): explicit only.
            if (acc32 && asymmetric(p) && !padded) continue;
            GraphSpec g = conv_spec(p, padded, alignment);
            if (acc32) g.y.dtype = CUDNN_DATA_FLOAT;
            try {
                Graph graph = build_graph(h, g);
                std::string variant = padded ? "padded" : "conv";
                if (acc32) variant += "+acc32";
                Choice c = choose(p, g, graph.graph, variant.c_str(), h, &why);
                if (!c.plan) continue;
                plan->acc32 = acc32;
                plan->padded = padded;
                adopt(plan.get(), std::move(graph), std::move(c), g);
                // x is src (fwd, bwd_w) or diff_src (bwd_d): the padded temporary either way.
                plan->slots = {padded ? kPaddedSrc : kSrc, kWei, kDst};
                if (acc32) plan->slots[p.dir == Direction::bwd_w ? 1 : 2] = kConvTemp;
                if (padded) {
                    const TensorSpec& x = g.x;  // N, C, [1,] spatial...
                    // Back to convkit's rank: drop the unit H inserted for 1D.
                    std::vector<int64_t> dims = x.dims, st = x.strides;
                    if (p.nsp == 1) {
                        dims.erase(dims.begin() + 2);
                        st.erase(st.begin() + 2);
                    }
                    // 5-D view for the window copy: missing trailing dims of size 1.
                    for (std::size_t i = 0; i < static_cast<std::size_t>(kMaxRank); ++i) {
                        plan->pad_sizes[i] = i < dims.size() ? dims[i] : 1;
                        plan->pad_strides[i] = i < st.size() ? st[i] : 0;
                    }
                    int64_t off = 0, n = 1;
                    for (int i = 0; i < p.nsp; ++i) off += p.padding_l[i] * st[static_cast<std::size_t>(2 + i)];
                    for (int64_t d : dims) n *= d;
                    plan->pad_offset = off;
                    plan->pad_bytes = static_cast<std::size_t>(n) * dtype_size(p.dt);
                }
            } catch (const Error& e) {
                if (e.kind() == ErrorKind::out_of_memory) throw;
                why = e.what();
            }
        }
    }
    if (!plan->plan && !plan->wide) {
        plan->error = "no cuDNN engine runs " + p.str() + (why.empty() ? "" : ": " + why);
        return plan;
    }
    if (plan->plan) plan->workspace = plan_workspace(plan->plan);
    if (plan->acc32 || plan->wide) plan->engine_name += " (f32 result)";
    if (!plan->fused && p.dir == Direction::fwd && (p.with_bias || p.n_post_ops > 0)) {
        plan->epilogue = true;
        plan->conv_to_temp = p.has_sum() || plan->acc32;
        if (plan->conv_to_temp) {
            plan->slots[2] = kConvTemp;
            plan->temp_bytes = static_cast<std::size_t>(p.mb) * static_cast<std::size_t>(p.oc) *
                               (plan->acc32 ? sizeof(float) : dtype_size(p.dt));
            for (int i = 0; i < p.nsp; ++i) plan->temp_bytes *= static_cast<std::size_t>(p.out[i]);
        }
        fill_epilogue_template(p, &plan->epi);
        plan->epi.in_f32 = plan->acc32 || plan->wide;
        if (plan->wide) plan->conv_to_temp = false;  // run_wide has its own f32 result
    }
    if (plan->wide && p.dir == Direction::bwd_w) {
        // diff_weights in f32, converted by the epilogue kernel with no ops (element order is the
        // same on both sides: dense in the user's weight layout).
        plan->conv_to_temp = true;
        Dims wd = p.wei_dims();
        plan->temp_bytes = sizeof(float);
        for (int64_t d : wd) plan->temp_bytes *= static_cast<std::size_t>(d);
        EpilogueArgs& e = plan->epi;
        e.dt = p.dt;
        e.rank = wd.rank();
        e.channels_last = p.wei_layout == Layout::channels_last;
        for (int i = 0; i < kMaxRank; ++i) e.sizes[i] = i < wd.rank() ? wd[i] : 1;
        e.n_ops = 0;
        e.n_operands = 0;
        e.in_f32 = true;
    }
    plan->bias_grad = p.dir == Direction::bwd_w && p.with_bias;
    auto& cnt = counters();
    (plan->fused ? cnt.fused : cnt.unfused)++;
    if (plan->padded) cnt.padded++;
    if (plan->autotuned) cnt.tuned++;
    if (plan->from_tune_file) cnt.loaded++;
    return plan;
}

// A user allocator may signal failure with std::bad_alloc rather than convkit::Error.
core::Buffer make_buffer(Device dev, std::size_t bytes, cudaStream_t s, const char* what) {
    try {
        return core::Buffer(dev, bytes, s);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorKind::out_of_memory, std::string("cuda: allocating the ") + what + " (" + std::to_string(bytes) +
                                                  " bytes on " + dev.str() + ") failed: the allocator threw std::bad_alloc");
    }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Strides of a binary operand as the epilogue reads it: 0 on broadcast dimensions.
void operand_strides(const TensorView& t, int64_t* out) {
    for (int d = 0; d < kMaxRank; ++d) out[d] = 0;
    for (int d = 0; d < t.rank(); ++d) out[d] = t.sizes[d] == 1 ? 0 : t.strides[d];
}

void to5(const TensorView& t, int64_t* sizes, int64_t* strides) {
    for (int d = 0; d < kMaxRank; ++d) {
        sizes[d] = d < t.rank() ? t.sizes[d] : 1;
        strides[d] = d < t.rank() ? t.strides[d] : 0;
    }
}

EpilogueArgs epilogue_args(const Plan& plan, const ConvArgs& a) {
    EpilogueArgs e = plan.epi;
    e.in = a.dst.data;
    e.prior = a.dst.data;
    e.out = a.dst.data;
    e.bias = a.bias.defined() ? a.bias.data : nullptr;
    e.bias_stride = a.bias.defined() ? a.bias.strides[0] : 0;
    int k = 0;
    if (a.post_ops)
        for (const PostOp& op : *a.post_ops)
            if (op.kind == PostOp::Kind::binary) {
                e.operands[k] = op.operand.data;
                operand_strides(op.operand, e.operand_strides[k]);
                ++k;
            }
    return e;
}

void run_direct(const ConvProblem& p, const ConvArgs& a, const Plan& plan, cudaStream_t s) {
    DirectConvArgs d;
    d.src = a.src.data;
    d.wei = a.weights.data;
    d.icg = p.icg();
    d.ocg = p.ocg();
    for (int i = 0; i < p.nsp; ++i) {
        const int j = 3 - p.nsp + i;
        d.in[j] = p.in[i];
        d.k[j] = p.k[i];
        d.stride[j] = p.stride[i];
        d.pad[j] = p.padding_l[i];
        d.dilation[j] = p.dilation[i];
        d.src_st[2 + j] = a.src.strides[2 + i];
        d.wei_st[2 + j] = a.weights.strides[2 + i];
    }
    d.src_st[0] = a.src.strides[0];
    d.src_st[1] = a.src.strides[1];
    d.wei_st[0] = a.weights.strides[0];
    d.wei_st[1] = a.weights.strides[1];
    launch_direct_conv(d, epilogue_args(plan, a), s);
}

// diff_bias from diff_dst (our deterministic reduction), enqueued on `s`.
void run_bias_grad(const ConvProblem& p, const ConvArgs& a, cudaStream_t s) {
    BiasGradArgs b;
    b.dt = p.dt;
    b.n = p.mb;
    b.c = p.oc;
    for (int i = 0; i < p.nsp; ++i) b.s *= p.out[i];
    b.channels_last = p.dst_layout == Layout::channels_last;
    b.diff_dst = a.dst.data;
    b.diff_bias = a.bias.data;
    b.bias_stride = a.bias.strides[0];
    core::Buffer partial = make_buffer(p.device, bias_grad_scratch_bytes(b), s, "bias-gradient scratch");
    b.partial = partial.data();
    launch_bias_grad(b, s);
}

// One cuDNN plan (conv, fused or padded) and the kernels of ours around it, enqueued on `s`.
void run_cudnn(const ConvProblem& p, Plan& plan, const ConvArgs& a, cudaStream_t s) {
    HandleLease h(p.device.index);
    check_cudnn(cudnnSetStream(h.get(), s), "cudnnSetStream");
    core::Buffer ws, padded, temp;
    if (plan.workspace > 0) ws = make_buffer(p.device, static_cast<std::size_t>(plan.workspace), s, "cuDNN workspace");
    if (plan.padded) padded = make_buffer(p.device, plan.pad_bytes, s, "padded input");
    if (plan.conv_to_temp) temp = make_buffer(p.device, plan.temp_bytes, s, "convolution result temporary");
    const std::size_t es = dtype_size(p.dt);
    // The activation the padding applies to: src (fwd, bwd_w) or diff_src (bwd_d, an output).
    const TensorView& act = a.src;
    int64_t act_sizes[kMaxRank], act_strides[kMaxRank];
    to5(act, act_sizes, act_strides);
    void* interior = padded.data() ? static_cast<char*>(padded.data()) + plan.pad_offset * static_cast<int64_t>(es) : nullptr;
    if (plan.padded && p.dir != Direction::bwd_d) {
        check_cuda(cudaMemsetAsync(padded.data(), 0, plan.pad_bytes, s), "cudaMemsetAsync");
        launch_copy_window(interior, plan.pad_strides, act.data, act_strides, act_sizes, static_cast<int>(es), s);
    }

    std::vector<void*> ptrs;
    ptrs.reserve(plan.slots.size());
    for (int slot : plan.slots) {
        switch (slot) {
            case kSrc: ptrs.push_back(a.src.data); break;
            case kWei: ptrs.push_back(a.weights.data); break;
            case kDst: ptrs.push_back(a.dst.data); break;
            case kBias: ptrs.push_back(a.bias.data); break;
            case kPaddedSrc: ptrs.push_back(padded.data()); break;
            case kConvTemp: ptrs.push_back(temp.data()); break;
            default: ptrs.push_back((*a.post_ops)[static_cast<std::size_t>(slot - kOperand0)].operand.data); break;
        }
    }
    ptrs.push_back(ws.data());  // part of the variant pack's identity
    {
        std::lock_guard<std::mutex> lock(plan.vp_mu);
        if (!plan.vp || plan.vp_ptrs != ptrs) {
            std::vector<void*> data(ptrs.begin(), ptrs.end() - 1);
            plan.vp = make_variant_pack(plan.uids, data, ws.data());
            plan.vp_ptrs = ptrs;
        }
        check_cudnn(cudnnBackendExecute(h.get(), plan.plan.get(), plan.vp.get()), "cudnnBackendExecute");
    }

    if (plan.padded && p.dir == Direction::bwd_d)
        launch_copy_window(act.data, act_strides, interior, plan.pad_strides, act_sizes, static_cast<int>(es), s);
    if (plan.epilogue) {
        EpilogueArgs e = epilogue_args(plan, a);
        e.in = plan.conv_to_temp ? temp.data() : a.dst.data;
        launch_epilogue(e, s);
    }
    if (plan.bias_grad) run_bias_grad(p, a, s);
}

// ---------------------------------------------------------------------------------------------
// Phase-split backward-data.

void run_plan(const ConvProblem& p, Plan& plan, const ConvArgs& a, cudaStream_t s);

// 5-D sizes and strides (elements) of the window of `t` that keeps N and C whole and takes, per
// spatial dim i, n[i] positions step[i] apart from position at[i]; *offset is its first element.
void phase_window(const TensorView& t, int nsp, const int64_t* n, const int64_t* step, const int64_t* at,
                  int64_t* sizes, int64_t* strides, int64_t* offset) {
    for (int d = 0; d < kMaxRank; ++d) {
        sizes[d] = 1;
        strides[d] = 0;
    }
    for (int d = 0; d < 2; ++d) {
        sizes[d] = t.sizes[d];
        strides[d] = t.strides[d];
    }
    *offset = 0;
    for (int i = 0; i < nsp; ++i) {
        sizes[2 + i] = n[i];
        strides[2 + i] = t.strides[2 + i] * step[i];
        *offset += at[i] * t.strides[2 + i];
    }
}

void run_split(const ConvProblem& p, Plan& plan, const ConvArgs& a, cudaStream_t s) {
    const std::size_t es = dtype_size(p.dt);
    const int e = static_cast<int>(es);
    // One temporary pair for all phases: they run one after the other on `s`.
    core::Buffer dxt = make_buffer(p.device, plan.split_dx_bytes, s, "split backward-data temporary");
    core::Buffer wt = make_buffer(p.device, plan.split_w_bytes, s, "split backward-data weights");
    char* dx = static_cast<char*>(a.src.data);
    const char* w = static_cast<const char*>(a.weights.data);
    for (Phase& ph : plan.phases) {
        int64_t xs[kMaxRank], xst[kMaxRank], xoff = 0;
        phase_window(a.src, p.nsp, ph.in, p.stride, ph.r, xs, xst, &xoff);
        if (!ph.plan) {
            launch_zero_window(dx + xoff * static_cast<int64_t>(es), xst, xs, e, s);
            continue;
        }
        const ConvProblem& q = ph.sub;
        // The phase's kernel taps, gathered into dense weights in the sub-problem's layout (the
        // weights change every training step, so this runs per call; it moves ~1/s^2 of them).
        int64_t ws[kMaxRank], wst[kMaxRank], woff = 0;
        phase_window(a.weights, p.nsp, ph.k, p.stride, ph.phi, ws, wst, &woff);
        TensorView wv = TensorView::with_layout(wt.data(), p.dt, q.wei_dims(), q.wei_layout, p.device);
        int64_t wsz[kMaxRank], wdst[kMaxRank];
        to5(wv, wsz, wdst);
        launch_copy_window(wv.data, wdst, w + woff * static_cast<int64_t>(es), wst, ws, e, s);
        // The stride-1 sub-convolution into a dense temporary, then scattered to the phase's
        // positions of diff_src (cuDNN engines want dense tensors; the scatter is a copy of
        // diff_src's size in all, a few microseconds at ResNet-50 sizes).
        TensorView xv = TensorView::with_layout(dxt.data(), p.dt, q.src_dims(), q.src_layout, p.device);
        ConvArgs sa;
        sa.src = xv;
        sa.weights = wv;
        sa.dst = a.dst;
        run_plan(q, *ph.plan, sa, s);
        int64_t xsz[kMaxRank], xsrc[kMaxRank];
        to5(xv, xsz, xsrc);
        launch_copy_window(dx + xoff * static_cast<int64_t>(es), xst, xv.data, xsrc, xs, e, s);
    }
}

// A 16-bit problem on the f32 plan: widen the inputs, run, round the f32 result once into the
// user's output (forward: bias and post-ops too).
void run_wide(const ConvProblem& p, Plan& plan, const ConvArgs& a, cudaStream_t s) {
    auto widened = [&](const TensorView& t, core::Buffer* buf, bool fill, const char* what) {
        const int64_t n = t.numel();
        *buf = make_buffer(p.device, static_cast<std::size_t>(n) * sizeof(float), s, what);
        if (fill) launch_widen(static_cast<float*>(buf->data()), t.data, t.dtype, n, s);
        TensorView v = t;  // same sizes and strides (dense), f32 elements
        v.data = buf->data();
        v.dtype = DType::f32;
        return v;
    };
    const bool fwd = p.dir == Direction::fwd;
    core::Buffer x, w, y;
    ConvArgs wa;
    wa.src = widened(a.src, &x, true, "f32 copy of src");
    wa.weights = widened(a.weights, &w, fwd, fwd ? "f32 copy of the weights" : "f32 diff_weights");
    wa.dst = widened(a.dst, &y, !fwd, fwd ? "f32 convolution result" : "f32 copy of diff_dst");
    run_plan(plan.wide_problem, *plan.wide, wa, s);
    if (fwd) {
        EpilogueArgs e = epilogue_args(plan, a);
        e.in = y.data();
        e.in_f32 = true;
        launch_epilogue(e, s);
    } else {
        EpilogueArgs e = plan.epi;
        e.in = w.data();
        e.out = a.weights.data;
        launch_epilogue(e, s);
        if (plan.bias_grad) run_bias_grad(p, a, s);
    }
}

void run_plan(const ConvProblem& p, Plan& plan, const ConvArgs& a, cudaStream_t s) {
    if (plan.direct) run_direct(p, a, plan, s);
    else if (plan.wide) run_wide(p, plan, a, s);
    else if (plan.split) run_split(p, plan, a, s);
    else run_cudnn(p, plan, a, s);
}

// Times whole plans as they run (1 warm-up + 3 runs each, events on `s`) on scratch tensors of the
// problem's shapes; returns the fastest's index, -1 if none ran. No bias or post-op operands: for
// backward-data candidates.
int time_variants(const ConvProblem& p, const std::vector<Plan*>& plans, cudaStream_t s) {
    const std::size_t es = dtype_size(p.dt);
    auto bytes = [&](const Dims& d) {
        std::size_t n = es;
        for (int64_t v : d) n *= static_cast<std::size_t>(v);
        return n;
    };
    core::Buffer x = make_buffer(p.device, bytes(p.src_dims()), s, "autotune scratch");
    core::Buffer w = make_buffer(p.device, bytes(p.wei_dims()), s, "autotune scratch");
    core::Buffer y = make_buffer(p.device, bytes(p.dst_dims()), s, "autotune scratch");
    // Small normal values in every dtype (0x3c bytes), as time_plans: no NaN/denormal artefacts.
    for (const core::Buffer* b : {&x, &w, &y}) check_cuda(cudaMemsetAsync(b->data(), 0x3c, b->size(), s), "cudaMemsetAsync");
    ConvArgs a;
    a.src = TensorView::with_layout(x.data(), p.dt, p.src_dims(), p.src_layout, p.device);
    a.weights = TensorView::with_layout(w.data(), p.dt, p.wei_dims(), p.wei_layout, p.device);
    a.dst = TensorView::with_layout(y.data(), p.dt, p.dst_dims(), p.dst_layout, p.device);
    struct Events {
        cudaEvent_t e0 = nullptr, e1 = nullptr;
        ~Events() {
            if (e0) cudaEventDestroy(e0);
            if (e1) cudaEventDestroy(e1);
        }
    } ev;
    check_cuda(cudaEventCreate(&ev.e0), "cudaEventCreate");
    check_cuda(cudaEventCreate(&ev.e1), "cudaEventCreate");
    return fastest_of(plans.size(), s, ev.e0, ev.e1, false, [&](std::size_t i) {
        try {
            run_plan(p, *plans[i], a, s);
            return true;
        } catch (const Error&) {
            return false;
        }
    });
}

int split_mode() {
    int v = g_split_dgrad.load();
    if (v == -2) {
        const char* e = std::getenv("CONVKIT_CUDA_SPLIT_DGRAD");
        v = (!e || !*e || std::strcmp(e, "0") == 0) ? 0 : std::strcmp(e, "auto") == 0 ? -1 : 1;
        g_split_dgrad = v;
    }
    return v;
}

// Strided backward-data whose numerics rule out tensor-core engines (f32 without TF32, f64):
// there cuDNN's strided dgrad engines are slow. Tensor-core dtypes have fast ones.
bool split_applies(const ConvProblem& p) {
    if (p.dir != Direction::bwd_d || p.mb == 0) return false;
    if (!((p.dt == DType::f32 && !p.allow_tf32) || p.dt == DType::f64)) return false;
    bool strided = false;
    for (int i = 0; i < p.nsp; ++i) {
        if (p.dilation[i] != 1) return false;
        strided = strided || p.stride[i] > 1;
    }
    return strided;
}

// The split plan of a problem split_applies() to; null if a phase's paddings do not make a valid
// stride-1 convolution or no engine runs a phase.
std::shared_ptr<Plan> build_split_plan(const ConvProblem& p, bool aligned, cudnnHandle_t h) {
    auto plan = std::make_shared<Plan>();
    plan->split = true;
    const std::size_t es = dtype_size(p.dt);
    auto bytes = [&](const Dims& d) {
        std::size_t n = es;
        for (int64_t v : d) n *= static_cast<std::size_t>(v);
        return n;
    };
    int64_t nph = 1;
    for (int i = 0; i < p.nsp; ++i) nph *= p.stride[i];
    std::string names;
    int convs = 0;
    for (int64_t idx = 0; idx < nph; ++idx) {
        Phase ph;
        ph.sub = p;
        ConvProblem& q = ph.sub;
        bool empty = false, zero = false, valid = true;
        int64_t rem = idx;
        for (int i = p.nsp - 1; i >= 0; --i) {
            const int64_t st = p.stride[i], phi = rem % st;
            rem /= st;
            // Taps phi, phi + st, ... reach the diff_src positions i with (i + padding_l) % st == phi,
            // the first of which is r.
            const int64_t r = ((phi - p.padding_l[i]) % st + st) % st;
            const int64_t n = r < p.in[i] ? (p.in[i] - r + st - 1) / st : 0;
            const int64_t kk = phi < p.k[i] ? (p.k[i] - phi + st - 1) / st : 0;
            ph.r[i] = r;
            ph.phi[i] = phi;
            ph.in[i] = n;
            ph.k[i] = kk;
            if (n == 0) empty = true;
            if (kk == 0) {
                zero = true;
                continue;
            }
            // diff_src[r + st*j] = sum_t diff_dst[j + pre - t] * w[phi + st*t]: a stride-1
            // backward-data with pre-padding `pre`; the post-padding follows from the sizes.
            const int64_t pre = (r + p.padding_l[i] - phi) / st;
            const int64_t post = p.out[i] - n - pre + kk - 1;
            // Paddings of a stride-1 convolution lie in [0, kernel - 1]; outside that range the
            // phase would need diff_dst rows that do not exist (or a cropped result): no split.
            if (pre > kk - 1 || post < 0 || post > kk - 1) valid = false;
            q.in[i] = n;
            q.k[i] = kk;
            q.stride[i] = 1;
            q.padding_l[i] = pre;
            q.padding_r[i] = post;
        }
        if (empty) continue;  // no diff_src position in this phase (input smaller than the stride)
        if (!zero) {
            if (!valid) return nullptr;
            ph.plan = build_plain_plan(q, aligned, h);
            if (!ph.plan->error.empty()) return nullptr;
            plan->split_dx_bytes = std::max(plan->split_dx_bytes, bytes(q.src_dims()));
            plan->split_w_bytes = std::max(plan->split_w_bytes, bytes(q.wei_dims()));
            names += (convs++ ? ", " : "") + ph.plan->engine_name;
            plan->autotuned = plan->autotuned || ph.plan->autotuned;
        }
        plan->phases.push_back(std::move(ph));
    }
    if (convs == 0) return nullptr;  // nothing but zeros: cannot happen for a valid problem
    plan->engine_name = "split dgrad, " + std::to_string(convs) + " of " + std::to_string(nph) + " phases: " + names;
    return plan;
}

// The plan of a problem: a split backward-data where it applies and wins (see set_split_dgrad),
// else build_plain_plan(). Autotuning times the split on `s`, the calling stream.
std::shared_ptr<Plan> build_plan(const ConvProblem& problem, bool aligned, cudnnHandle_t h, cudaStream_t s) {
    const ConvProblem p = normalized(problem);
    if (!split_applies(p)) return build_plain_plan(p, aligned, h);
    const int64_t alignment = aligned ? 16 : static_cast<int64_t>(dtype_size(p.dt));
    const std::string key = tune_key(p, "split", alignment);
    int decision = split_mode();  // 1 split, 0 not, -1 still to decide
    bool from_file = false;
    if (decision < 0) {
        TunedChoice tc;
        if (tune_lookup(key, &tc)) {
            decision = tc.engine_index == 1 ? 1 : 0;
            from_file = true;
        } else if (!convkit::autotune()) {
            // Heuristics alone: cuDNN's own plan. Measured (H100, ResNet-50 f32 NCHW mb 32,
            // heuristics-picked sub-plans): the split lost on conv1 (4.5 vs 0.9 ms) and the 1x1/2
            // layers (0.46-0.57 vs 0.28-0.31 ms), and with symmetric padding cuDNN's 3x3/2 picks
            // are PyTorch's (0.29-0.45 ms), which the split's (0.45-0.77 ms) do not beat.
            decision = 0;
        }
    }
    if (decision == 0) return build_plain_plan(p, aligned, h);
    std::shared_ptr<Plan> split = build_split_plan(p, aligned, h);
    auto use_split = [&] {
        counters().split++;
        split->from_tune_file = from_file;
        return split;
    };
    if (decision == 1) return split ? use_split() : build_plain_plan(p, aligned, h);
    // Autotuning: the split against the best single plan, each timed whole as it runs.
    std::shared_ptr<Plan> plain = build_plain_plan(p, aligned, h);
    if (!split) return plain;
    if (!plain->error.empty()) return use_split();
    int pick = -1;
    try {
        pick = time_variants(p, {plain.get(), split.get()}, s);
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::out_of_memory) throw;
    }
    if (pick < 0) return plain;  // could not time: cuDNN's own plan
    TunedChoice out;
    out.engine_index = pick;  // the tune file's record of the decision: 1 split, 0 not
    tune_store(key, out);
    return pick == 1 ? use_split() : plain;
}

class CudaBackend final : public core::Backend {
public:
    Engine engine() const override { return Engine::cuda; }
    std::string describe() const override {
        const int n = visible_devices();
        std::string s = "cuDNN " + std::to_string(cudnnGetVersion()) + ", " + std::to_string(n) + " device(s)";
        if (n > 0) {
            const DeviceInfo& d = device_info(0);
            s += ", cuda:0 " + d.name + " (sm_" + std::to_string(d.cc_major) + std::to_string(d.cc_minor) + ")";
        }
        return s;
    }
    DeviceType device_type() const override { return DeviceType::cuda; }

    std::string check(const ConvProblem& p) const override {
        const int n = visible_devices();
        if (n == 0) return "no CUDA device is visible";
        if (p.device.index < 0 || p.device.index >= n)
            return "device " + p.device.str() + " does not exist (" + std::to_string(n) + " visible)";
        if (p.packed_weights) return "the cuda engine does not prepack weights";
        // cuDNN indexes tensors with 32-bit integers (pytorch#22496).
        const double limit = 2147483647.0;
        auto numel = [](const Dims& d) {
            double v = 1;
            for (int64_t s : d) v *= static_cast<double>(s);
            return v;
        };
        if (numel(p.src_dims()) > limit || numel(p.dst_dims()) > limit || numel(p.wei_dims()) > limit)
            return "a tensor has 2^31 or more elements (cuDNN's limit; split the batch)";
        return "";
    }

    Event execute(const ConvProblem& p, const ConvArgs& a, const Stream& stream,
                  const std::vector<Event>& deps) override {
        const int dev = p.device.index;
        DeviceGuard guard(dev);
        auto s = static_cast<cudaStream_t>(stream.native_handle());
        for (const auto& e : deps) stream.wait(e);

        bool aligned = aligned16(a.src.data) && aligned16(a.weights.data) && aligned16(a.dst.data) &&
                       (!a.bias.defined() || aligned16(a.bias.data));
        if (a.post_ops)
            for (const PostOp& op : *a.post_ops)
                if (op.kind == PostOp::Kind::binary) aligned = aligned && aligned16(op.operand.data);

        std::shared_ptr<Entry> entry = cache(dev).get_or_create(p, [] { return std::make_shared<Entry>(); });
        std::shared_ptr<Plan> plan;
        {
            std::lock_guard<std::mutex> lock(entry->mu);
            auto& slot = entry->plan[aligned ? 0 : 1];
            if (!slot) {
                HandleLease hb(dev);
                slot = build_plan(p, aligned, hb.get(), s);
            }
            plan = slot;
        }
        t_last_plan = plan;
        if (!plan->error.empty()) throw Error(plan->error_kind, "cuda: " + plan->error);
        run_plan(p, *plan, a, s);
        return stream.record();
    }

    CacheStats cache_stats() const override {
        CacheStats total;
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& c : caches_) {
            if (!c) continue;
            CacheStats s = c->stats();
            total.hits += s.hits;
            total.misses += s.misses;
            total.evictions += s.evictions;
            total.size += s.size;
            total.capacity += s.capacity;
        }
        return total;
    }

    void clear_cache() override {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& c : caches_)
            if (c) c->clear();
        auto& cnt = counters();
        cnt.fused = cnt.unfused = cnt.direct = cnt.padded = cnt.tuned = cnt.loaded = cnt.split = 0;
    }

private:
    PlanCache& cache(int device) {
        std::lock_guard<std::mutex> lock(mu_);
        if (caches_.size() <= static_cast<std::size_t>(device)) caches_.resize(static_cast<std::size_t>(device) + 1);
        auto& c = caches_[static_cast<std::size_t>(device)];
        if (!c) c = new PlanCache();  // never destroyed: plans hold cuDNN objects (see runtime.cpp)
        return *c;
    }

    mutable std::mutex mu_;
    std::vector<PlanCache*> caches_;
};

}  // namespace


void set_split_dgrad(int mode) { g_split_dgrad = mode < 0 ? -1 : mode > 0 ? 1 : 0; }

int split_dgrad() { return split_mode(); }

void set_direct_max_macs(int64_t m) { g_direct_max_macs = m < 0 ? 0 : m; }

int64_t direct_max_macs() {
    int64_t v = g_direct_max_macs.load();
    if (v < 0) {
        const char* e = std::getenv("CONVKIT_CUDA_DIRECT_MAX_MACS");
        v = e && *e ? std::max<long long>(0, std::atoll(e)) : (int64_t(1) << 20);
        g_direct_max_macs = v;
    }
    return v;
}


PlanCounters plan_counters() {
    auto& c = counters();
    PlanCounters out;
    out.fused = c.fused;
    out.unfused = c.unfused;
    out.direct = c.direct;
    out.explicit_padding = c.padded;
    out.tuned = c.tuned;
    out.loaded = c.loaded;
    out.split = c.split;
    return out;
}

PlanInfo last_plan() {
    PlanInfo i;
    const auto& p = t_last_plan;
    if (!p || !p->error.empty()) return i;
    i.found = true;
    i.fused = p->fused;
    i.direct = p->direct;
    i.explicit_padding = p->padded;
    i.from_tune_file = p->from_tune_file;
    i.autotuned = p->autotuned;
    i.split_dgrad = p->split;
    for (const Phase& ph : p->phases) i.phases += ph.plan ? 1 : 0;
    i.engine_index = p->engine_index;
    i.workspace = p->workspace;
    i.engine_name = p->engine_name;
    return i;
}

}  // namespace convkit::cuda

namespace convkit::core {
std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<cuda::CudaBackend>(); }
}  // namespace convkit::core
