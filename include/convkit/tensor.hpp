// Tensors as convkit sees them: a dtype, a device, sizes and strides in elements.
// TensorView never owns memory (the framework owns it); Tensor owns memory obtained through
// convkit's allocator for its device. Sizes are always in PyTorch's logical order
// (N, C, spatial... for activations, OC, IC/groups, k... for weights); the strides say where the
// elements live, so channels-first and channels-last are told apart exactly as PyTorch does.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "convkit/error.hpp"

namespace convkit {

enum class DType { f32, f64, f16, bf16 };
CONVKIT_API std::size_t dtype_size(DType dt);
CONVKIT_API const char* to_string(DType dt);
CONVKIT_API DType dtype_from_string(const std::string& name);  // "f32", "f64", "f16", "bf16"

enum class DeviceType { cpu, cuda };

struct CONVKIT_API Device {
    DeviceType type = DeviceType::cpu;
    int index = 0;
    static Device cpu() { return {DeviceType::cpu, 0}; }
    static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
    bool is_cpu() const { return type == DeviceType::cpu; }
    bool is_cuda() const { return type == DeviceType::cuda; }
    bool operator==(const Device& o) const { return type == o.type && (type == DeviceType::cpu || index == o.index); }
    bool operator!=(const Device& o) const { return !(*this == o); }
    std::string str() const;  // "cpu", "cuda:1"
};

// A small fixed-capacity list of sizes: convolution tensors have rank 3..5, and a value type
// keeps the hot path free of heap allocation.
class CONVKIT_API Dims {
public:
    static constexpr int max_rank = 5;
    Dims() = default;
    Dims(std::initializer_list<int64_t> values);
    explicit Dims(const std::vector<int64_t>& values);
    int rank() const { return rank_; }
    bool empty() const { return rank_ == 0; }
    int64_t operator[](int i) const { return d_[static_cast<std::size_t>(i)]; }
    int64_t& operator[](int i) { return d_[static_cast<std::size_t>(i)]; }
    const int64_t* begin() const { return d_.data(); }
    const int64_t* end() const { return d_.data() + rank_; }
    void push_back(int64_t v);
    std::vector<int64_t> vec() const { return std::vector<int64_t>(begin(), end()); }
    bool operator==(const Dims& o) const;
    bool operator!=(const Dims& o) const { return !(*this == o); }
    std::string str() const;  // "[2, 3, 8, 8]"

private:
    int rank_ = 0;
    std::array<int64_t, max_rank> d_{};
};

// How a tensor's elements are laid out. channels_first = dense NC(D)(H)W (PyTorch contiguous),
// channels_last = dense N(D)(H)WC (PyTorch channels_last / channels_last_3d); for weights the same
// words mean OI(D)(H)W and O(D)(H)WI. Anything else is `strided`.
enum class Layout { channels_first, channels_last, strided };
CONVKIT_API const char* to_string(Layout l);

// Dense strides for `sizes` in the given layout (strided is not a valid argument).
CONVKIT_API Dims dense_strides(const Dims& sizes, Layout layout);

struct CONVKIT_API TensorView {
    void* data = nullptr;
    DType dtype = DType::f32;
    Dims sizes;
    Dims strides;
    Device device = Device::cpu();

    TensorView() = default;  // "no tensor" (e.g. no bias)
    // Dense channels-first (PyTorch contiguous).
    TensorView(void* data, DType dtype, Dims sizes, Device device = Device::cpu());
    TensorView(void* data, DType dtype, Dims sizes, Dims strides, Device device = Device::cpu());
    static TensorView with_layout(void* data, DType dtype, Dims sizes, Layout layout,
                                  Device device = Device::cpu());

    bool defined() const { return sizes.rank() > 0; }
    int rank() const { return sizes.rank(); }
    int64_t numel() const;         // checked against int64 overflow
    std::size_t nbytes() const;    // bytes spanned by a dense tensor of these sizes
    // channels_first when both apply (C == 1 or all spatial sizes 1): the two are then the same memory.
    Layout layout() const;
    bool is_dense() const { return layout() != Layout::strided; }
    template <typename T> T* ptr() const { return static_cast<T*>(data); }
};

// Owning tensor. Memory comes from the allocator registered for its device and is returned
// to it when the last copy of the Tensor goes away.
class CONVKIT_API Tensor {
public:
    Tensor() = default;
    Tensor(DType dtype, Dims sizes, Layout layout = Layout::channels_first,
           Device device = Device::cpu());
    const TensorView& view() const { return view_; }
    operator const TensorView&() const { return view_; }
    void* data() const { return view_.data; }
    template <typename T> T* ptr() const { return static_cast<T*>(view_.data); }
    const Dims& sizes() const { return view_.sizes; }
    DType dtype() const { return view_.dtype; }
    Device device() const { return view_.device; }
    int64_t numel() const { return view_.numel(); }
    std::size_t nbytes() const { return view_.nbytes(); }

private:
    std::shared_ptr<void> storage_;
    TensorView view_;
};

// Copies elements between any two tensors of equal sizes: any layouts, any dtypes (converted
// with round-to-nearest-even), host or device. Synchronous.
CONVKIT_API void copy(const TensorView& dst, const TensorView& src);

// Scalar conversions used everywhere the library narrows or widens 16-bit floats.
CONVKIT_API uint16_t f32_to_bf16(float v);   // round to nearest even, NaN stays NaN
CONVKIT_API float bf16_to_f32(uint16_t v);
CONVKIT_API uint16_t f32_to_f16(float v);    // round to nearest even, overflow to inf
CONVKIT_API float f16_to_f32(uint16_t v);

}  // namespace convkit
