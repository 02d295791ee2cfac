// Convolution entry points: forward (+bias, +post-ops), backward-data, backward-weights (+bias
// grad), for 1D/2D/3D with groups, stride, dilation and asymmetric padding.
//
// Every call validates its arguments (convkit::Error with the argument and the values on any
// mismatch), describes the problem once as a plain value, picks a backend (the engine asked for,
// or the best one for the tensors' device), and runs a plan that backend keeps cached for that
// problem, so a repeated call only binds pointers.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "convkit/post_ops.hpp"
#include "convkit/stream.hpp"
#include "convkit/tensor.hpp"

namespace convkit {

// Per spatial dimension (d, h, w order, as in PyTorch). Each list may be empty (the default:
// stride 1, padding 0, dilation 1) or hold one value that applies to every spatial dimension.
struct ConvParams {
    Dims stride;
    Dims padding_l;  // front / top / left
    Dims padding_r;  // back / bottom / right
    Dims dilation;   // 1 = dense (PyTorch's convention)
    int64_t groups = 1;

    // Symmetric padding in one go: padding_l = padding_r = pad.
    ConvParams& pad(Dims p) { padding_l = p; padding_r = p; return *this; }
};

// dst sizes of a forward convolution:
// [src N, weights OC, (in + pad_l + pad_r - (dil * (k - 1) + 1)) / stride + 1 ...] (floor).
// Validates the arguments as the convolution itself would.
CONVKIT_API Dims output_shape(const Dims& src_sizes, const Dims& weights_sizes, const ConvParams& params);

enum class Engine { automatic, ref, cpu, cuda };
CONVKIT_API const char* to_string(Engine e);
CONVKIT_API Engine engine_from_string(const std::string& name);  // "auto", "ref", "cpu", "cuda"
// Engines compiled into this build and able to run here (cuda needs a visible device).
CONVKIT_API std::vector<Engine> available_engines();
// The engine `automatic` picks for a device: cpu (oneDNN) if built, else ref; cuda for GPUs.
CONVKIT_API Engine best_engine(Device device);

struct ConvOptions {
    Engine engine = Engine::automatic;
    // Bitwise reproducible results run to run; unset = the global setting (set_deterministic).
    std::optional<bool> deterministic;
};

CONVKIT_API Event convolution_forward(const TensorView& dst, const TensorView& src, const TensorView& weights,
                                      const TensorView& bias, const ConvParams& params,
                                      const PostOps& post_ops = PostOps(), const Stream& stream = Stream(),
                                      const std::vector<Event>& deps = {}, const ConvOptions& options = {});

CONVKIT_API Event convolution_backward_data(const TensorView& diff_src, const TensorView& diff_dst,
                                            const TensorView& weights, const ConvParams& params,
                                            const Stream& stream = Stream(), const std::vector<Event>& deps = {},
                                            const ConvOptions& options = {});

// diff_bias may be an undefined TensorView (no bias gradient).
CONVKIT_API Event convolution_backward_weights(const TensorView& diff_weights, const TensorView& diff_bias,
                                               const TensorView& diff_dst, const TensorView& src,
                                               const ConvParams& params, const Stream& stream = Stream(),
                                               const std::vector<Event>& deps = {},
                                               const ConvOptions& options = {});

// ---- Transposed convolution (PyTorch's conv_transpose1d/2d/3d, ONNX ConvTranspose, oneDNN's
// deconvolution) ----
//
// The transposed convolution of src [N, IC, in...] with weights [IC, OC/groups, k...] (PyTorch's
// transposed layout) is the data gradient of the convolution of a [N, OC, out...] tensor with the
// same weights, so every engine runs it as that convolution, with bias and post-ops fused into its
// output on the forward direction. Per spatial dimension:
//   out = (in - 1) * stride - padding_l - padding_r + dilation * (k - 1) + output_padding + 1
// padding removes rows at the ends of the output; output_padding adds rows at the end (it picks
// one of the `stride` output sizes that a strided convolution maps to the same input size) and
// must be smaller than the stride or the dilation, as in PyTorch.
struct ConvTransposeParams {
    Dims stride;
    Dims padding_l;       // front / top / left
    Dims padding_r;       // back / bottom / right
    Dims dilation;        // 1 = dense
    Dims output_padding;  // added at the back / bottom / right; 0 by default
    int64_t groups = 1;

    ConvTransposeParams& pad(Dims p) { padding_l = p; padding_r = p; return *this; }
};

// dst sizes [src N, weights[1] * groups, out...] of a transposed convolution (formula above).
// Validates the arguments as the transposed convolution itself would.
CONVKIT_API Dims conv_transpose_output_shape(const Dims& src_sizes, const Dims& weights_sizes, const ConvTransposeParams& params);

// dst = post_ops(conv_transpose(src, weights) + bias). bias: [OC] or undefined. The post-ops are
// those of convolution_forward; a binary operand broadcasts to dst, and `sum` adds dst's old
// contents.
CONVKIT_API Event conv_transpose_forward(const TensorView& dst, const TensorView& src, const TensorView& weights,
                                         const TensorView& bias, const ConvTransposeParams& params,
                                         const PostOps& post_ops = PostOps(), const Stream& stream = Stream(),
                                         const std::vector<Event>& deps = {}, const ConvOptions& options = {});

// diff_src [N, IC, in...] from diff_dst [N, OC, out...]: a forward convolution with the weights.
CONVKIT_API Event conv_transpose_backward_data(const TensorView& diff_src, const TensorView& diff_dst,
                                               const TensorView& weights, const ConvTransposeParams& params,
                                               const Stream& stream = Stream(), const std::vector<Event>& deps = {},
                                               const ConvOptions& options = {});

// diff_weights [IC, OC/groups, k...] and, if defined, diff_bias [OC] (channel sums of diff_dst).
CONVKIT_API Event conv_transpose_backward_weights(const TensorView& diff_weights, const TensorView& diff_bias,
                                                  const TensorView& diff_dst, const TensorView& src,
                                                  const ConvTransposeParams& params, const Stream& stream = Stream(),
                                                  const std::vector<Event>& deps = {}, const ConvOptions& options = {});

// Weights reordered once, ahead of time, into the layout an engine's forward kernels read
// (oneDNN's blocked layouts on CPU), for inference where weights do not change. Use it in place of
// the weights tensor in convolution_forward. A call whose problem differs from the one packed for
// (another batch size, say) still gives the right answer, at the cost of a reorder.
class CONVKIT_API PackedWeights {
public:
    struct Impl;
    PackedWeights() = default;
    explicit PackedWeights(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
    bool defined() const { return impl_ != nullptr; }
    const Dims& sizes() const;  // [OC, IC/groups, k...]
    DType dtype() const;
    Engine engine() const;
    const std::shared_ptr<Impl>& impl() const { return impl_; }

private:
    std::shared_ptr<Impl> impl_;
};

// `src` only lends its sizes, dtype, layout and device (its data is not read and may be null).
CONVKIT_API PackedWeights prepack_weights(const TensorView& weights, const TensorView& src, const ConvParams& params,
                                          const PostOps& post_ops = PostOps(), const ConvOptions& options = {});

CONVKIT_API Event convolution_forward(const TensorView& dst, const TensorView& src, const PackedWeights& weights,
                                      const TensorView& bias, const ConvParams& params,
                                      const PostOps& post_ops = PostOps(), const Stream& stream = Stream(),
                                      const std::vector<Event>& deps = {}, const ConvOptions& options = {});

// Global switches.
// GPU engine choice: with autotune on, the first call of a new problem times the candidate cuDNN
// engines and keeps the fastest (as torch.backends.cudnn.benchmark; default from
// CONVKIT_CUDA_AUTOTUNE=1). Tuned choices persist in the tune file (default from
// CONVKIT_CUDA_TUNE_FILE; "" = none), keyed by cuDNN version, GPU and problem, so a new process
// does not tune again. No effect in builds without the CUDA engine.
CONVKIT_API void set_autotune(bool on);
CONVKIT_API bool autotune();
CONVKIT_API void set_tune_file(const std::string& path);

// Threads used by CPU engines (OpenMP); the default honours OMP_NUM_THREADS.
CONVKIT_API void set_num_threads(int n);
CONVKIT_API int num_threads();
CONVKIT_API void set_deterministic(bool on);   // default off
CONVKIT_API bool deterministic();
// TF32 tensor-core math for f32 convolutions on GPUs; on by default, as PyTorch's
// torch.backends.cudnn.allow_tf32.
CONVKIT_API void set_allow_tf32(bool on);
CONVKIT_API bool allow_tf32();

// Tracing (default from CONVKIT_VERBOSE): 1 prints one line per executed call on stderr, 2 also
// one per plan lookup (cache hit or miss, with the build time) and per engine choice; 0 is off.
// The layout is oneDNN's ONEDNN_VERBOSE with the prefix convkit_verbose, and each line ends with
// the `convkit bench` command that runs the same problem. Traced calls wait for their work (the
// time is the call's), as oneDNN's verbose mode does on GPUs.
CONVKIT_API void set_verbose(int level);
CONVKIT_API int verbose();

// Plan-cache counters of one engine (all zeros for an engine that keeps no cache).
struct CacheStats {
    uint64_t hits = 0, misses = 0, evictions = 0, size = 0, capacity = 0;
};
CONVKIT_API CacheStats cache_stats(Engine engine);
CONVKIT_API void clear_cache(Engine engine);

// One line on what an engine runs on, for tables and logs: for cpu, oneDNN's version, the
// instruction set it dispatches to (after ONEDNN_MAX_CPU_ISA), the threads and how bf16/f16 run.
// "" for an engine that is not compiled in.
CONVKIT_API std::string engine_info(Engine engine);

}  // namespace convkit
