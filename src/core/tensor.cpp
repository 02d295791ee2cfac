// Dtypes, Dims, TensorView/Tensor and the generic element copy (layout and dtype conversion).
#include <cmath>
#include <type_traits>
#include <cstring>
#include <sstream>

#include "convkit/allocator.hpp"
#include "convkit/tensor.hpp"
#include "core/backend.hpp"
#include "core/checked.hpp"
#include "core/half.hpp"

namespace convkit {

std::size_t dtype_size(DType dt) {
    switch (dt) {
        case DType::f32: return 4;
        case DType::f64: return 8;
        case DType::f16: return 2;
        case DType::bf16: return 2;
    }
    return 0;
}

const char* to_string(DType dt) {
    switch (dt) {
        case DType::f32: return "f32";
        case DType::f64: return "f64";
        case DType::f16: return "f16";
        case DType::bf16: return "bf16";
    }
    return "?";
}

DType dtype_from_string(const std::string& s) {
    if (s == "f32") return DType::f32;
    if (s == "f64") return DType::f64;
    if (s == "f16") return DType::f16;
    if (s == "bf16") return DType::bf16;
    throw Error(ErrorKind::invalid_argument,
                "unknown dtype '" + s + "' (expected one of f32, f64, f16, bf16)");
}

std::string Device::str() const {
    return type == DeviceType::cpu ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Dims::Dims(std::initializer_list<int64_t> values) {
    for (int64_t v : values) push_back(v);
}

Dims::Dims(const std::vector<int64_t>& values) {
    for (int64_t v : values) push_back(v);
}

void Dims::push_back(int64_t v) {
    if (rank_ >= max_rank)
        throw Error(ErrorKind::invalid_argument,
                    "Dims: more than " + std::to_string(max_rank) + " dimensions");
    d_[static_cast<std::size_t>(rank_++)] = v;
}

bool Dims::operator==(const Dims& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
        if ((*this)[i] != o[i]) return false;
    return true;
}

std::string Dims::str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) {
        if (i) s += ", ";
        s += std::to_string((*this)[i]);
    }
    return s + "]";
}

const char* to_string(Layout l) {
    switch (l) {
        case Layout::channels_first: return "channels_first";
        case Layout::channels_last: return "channels_last";
        case Layout::strided: return "strided";
    }
    return "?";
}

Dims dense_strides(const Dims& sizes, Layout layout) {
    const int r = sizes.rank();
    Dims st;
    for (int i = 0; i < r; ++i) st.push_back(0);
    if (layout == Layout::strided)
        throw Error(ErrorKind::invalid_argument, "dense_strides: layout must be channels_first or channels_last");
    if (layout == Layout::channels_first || r < 3) {
        int64_t s = 1;
        for (int i = r - 1; i >= 0; --i) {
            st[i] = s;
            s = core::checked_mul(s, std::max<int64_t>(sizes[i], 1), "tensor size");
        }
        return st;
    }
    // N, spatial..., C
    int64_t s = 1;
    st[1] = s;
    s = core::checked_mul(s, std::max<int64_t>(sizes[1], 1), "tensor size");
    for (int i = r - 1; i >= 2; --i) {
        st[i] = s;
        s = core::checked_mul(s, std::max<int64_t>(sizes[i], 1), "tensor size");
    }
    st[0] = s;
    return st;
}

TensorView::TensorView(void* d, DType dt, Dims sz, Device dev)
    : data(d), dtype(dt), sizes(sz), strides(dense_strides(sz, Layout::channels_first)), device(dev) {}

TensorView::TensorView(void* d, DType dt, Dims sz, Dims st, Device dev)
    : data(d), dtype(dt), sizes(sz), strides(st), device(dev) {
    if (st.rank() != sz.rank())
        throw Error(ErrorKind::invalid_argument, "TensorView: sizes " + sz.str() + " and strides " +
                                                     st.str() + " have different ranks");
}

TensorView TensorView::with_layout(void* d, DType dt, Dims sz, Layout layout, Device dev) {
    return TensorView(d, dt, sz, dense_strides(sz, layout), dev);
}

int64_t TensorView::numel() const {
    int64_t n = 1;
    for (int64_t s : sizes) n = core::checked_mul(n, s, "tensor element count");
    return n;
}

std::size_t TensorView::nbytes() const {
    return static_cast<std::size_t>(core::checked_mul(numel(), static_cast<int64_t>(dtype_size(dtype)),
                                                      "tensor byte size"));
}

// Dense in `layout`, ignoring the strides of size-1 dimensions (PyTorch does the same).
static bool matches(const TensorView& t, Layout layout) {
    Dims want = dense_strides(t.sizes, layout);
    for (int i = 0; i < t.rank(); ++i)
        if (t.sizes[i] != 1 && t.strides[i] != want[i]) return false;
    return true;
}

Layout TensorView::layout() const {
    if (numel() == 0) return Layout::channels_first;
    if (matches(*this, Layout::channels_first)) return Layout::channels_first;
    if (matches(*this, Layout::channels_last)) return Layout::channels_last;
    return Layout::strided;
}

Tensor::Tensor(DType dtype, Dims sizes, Layout layout, Device device) {
    view_ = TensorView::with_layout(nullptr, dtype, sizes, layout, device);
    std::size_t bytes = view_.nbytes();
    auto alloc = get_allocator(device.type);
    void* p = alloc->allocate(bytes ? bytes : 1, device, nullptr);
    view_.data = p;
    storage_ = std::shared_ptr<void>(p, [alloc, bytes, device](void* q) {
        alloc->deallocate(q, bytes ? bytes : 1, device, nullptr);
    });
}

uint16_t f32_to_bf16(float v) { return core::bf16_store(v); }

float bf16_to_f32(uint16_t v) { return core::bf16_load(v); }

uint16_t f32_to_f16(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
    if (absu >= 0x47800000u) {                                              // >= 65536: inf after rounding
        // 65520 and above round to inf; below that handled by the normal path.
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (absu < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (absu < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to zero
        uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
        int exp = static_cast<int>(absu >> 23);  // 102..112
        int shift = 126 - exp;                     // 14..24
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) ++half;
        return static_cast<uint16_t>(sign | half);
    }
    uint32_t h = ((absu - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
    uint32_t rem = absu & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into inf: correct
    return static_cast<uint16_t>(sign | h);
}

float f16_to_f32(uint16_t v) {
    uint32_t sign = static_cast<uint32_t>(v & 0x8000u) << 16;
    uint32_t exp = (v >> 10) & 0x1fu;
    uint32_t mant = v & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: value = mant * 2^-24
            float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
            std::memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

namespace {

using core::Bf16Bits;
using core::F16Bits;
template <typename T> using Elem = core::Scalar<T>;

// Narrowing to bf16/f16 goes through f32 (f64 -> f16 may then round twice, which only matters
// within 2^-29 of a tie; all narrowing in convkit starts from f32 anyway).
template <typename D, typename S> D convert(S s) {
    if constexpr (std::is_same_v<D, S>) return s;
    else if constexpr (std::is_same_v<D, double>) return static_cast<double>(Elem<S>::load(s));
    else return Elem<D>::store(static_cast<float>(Elem<S>::load(s)));
}

// Walks all dimensions but the last with an index vector and runs the last one as a tight
// strided loop, so the per-element cost is one conversion and two pointer steps.
template <typename D, typename S> void copy_typed(const TensorView& dst, const TensorView& src) {
    const int r = dst.rank();
    D* dp = static_cast<D*>(dst.data);
    const S* sp = static_cast<const S*>(src.data);
    if (dst.is_dense() && src.is_dense() && dst.layout() == src.layout()) {
        const int64_t n = dst.numel();
        for (int64_t i = 0; i < n; ++i) dp[i] = convert<D, S>(sp[i]);
        return;
    }
    const int last = r - 1;
    const int64_t inner = dst.sizes[last], ds = dst.strides[last], ss = src.strides[last];
    int64_t outer = 1;
    for (int d = 0; d < last; ++d) outer *= dst.sizes[d];
#pragma omp parallel for schedule(static) if (outer * inner > (1 << 20))
    for (int64_t o = 0; o < outer; ++o) {
        int64_t rem = o, doff = 0, soff = 0;
        for (int d = last - 1; d >= 0; --d) {
            const int64_t i = rem % dst.sizes[d];
            rem /= dst.sizes[d];
            doff += i * dst.strides[d];
            soff += i * src.strides[d];
        }
        D* dq = dp + doff;
        const S* sq = sp + soff;
        for (int64_t i = 0; i < inner; ++i) dq[i * ds] = convert<D, S>(sq[i * ss]);
    }
}

template <typename D> void copy_to(const TensorView& dst, const TensorView& src) {
    switch (src.dtype) {
        case DType::f32: return copy_typed<D, float>(dst, src);
        case DType::f64: return copy_typed<D, double>(dst, src);
        case DType::bf16: return copy_typed<D, Bf16Bits>(dst, src);
        case DType::f16: return copy_typed<D, F16Bits>(dst, src);
    }
}

void host_copy(const TensorView& dst, const TensorView& src) {
    if (dst.numel() == 0) return;
    if (dst.rank() == 0) return;
    if (dst.dtype == src.dtype && dst.strides == src.strides && dst.is_dense()) {
        std::memcpy(dst.data, src.data, dst.nbytes());
        return;
    }
    switch (dst.dtype) {
        case DType::f32: return copy_to<float>(dst, src);
        case DType::f64: return copy_to<double>(dst, src);
        case DType::bf16: return copy_to<Bf16Bits>(dst, src);
        case DType::f16: return copy_to<F16Bits>(dst, src);
    }
}

}  // namespace

void copy(const TensorView& dst, const TensorView& src) {
    if (dst.sizes != src.sizes)
        throw Error(ErrorKind::invalid_argument, "copy: dst sizes " + dst.sizes.str() +
                                                     " differ from src sizes " + src.sizes.str());
    if (dst.numel() > 0 && (!dst.data || !src.data))
        throw Error(ErrorKind::invalid_argument, "copy: null data pointer");
    if (dst.device.is_cpu() && src.device.is_cpu()) {
        host_copy(dst, src);
        return;
    }
    // Device copies: same dtype and same dense layout go straight through the runtime; anything
    // else is staged through host memory (a convenience path, not a fast one).
    core::DeviceRuntime* rt = core::runtime(DeviceType::cuda);
    if (!rt)
        throw Error(ErrorKind::unsupported, "copy: this build of convkit has no CUDA support");
    if (dst.dtype == src.dtype && dst.is_dense() && src.is_dense() &&
        (dst.layout() == src.layout())) {
        rt->memcpy(dst.data, dst.device, src.data, src.device, dst.nbytes());
        return;
    }
    Tensor hs(src.dtype, src.sizes, src.is_dense() ? src.layout() : Layout::channels_first);
    Tensor hd(dst.dtype, dst.sizes, dst.is_dense() ? dst.layout() : Layout::channels_first);
    if (src.device.is_cpu()) host_copy(hs.view(), src);
    else if (src.is_dense()) rt->memcpy(hs.data(), Device::cpu(), src.data, src.device, src.nbytes());
    else throw Error(ErrorKind::unsupported, "copy: strided device tensors are not supported");
    host_copy(hd.view(), hs.view());
    if (dst.device.is_cpu()) host_copy(dst, hd.view());
    else if (dst.is_dense()) rt->memcpy(dst.data, dst.device, hd.data(), Device::cpu(), dst.nbytes());
    else throw Error(ErrorKind::unsupported, "copy: strided device tensors are not supported");
}

}  // namespace convkit
