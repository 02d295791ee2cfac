"""convkit: PyTorch's convolution layer on convkit's engines, without libtorch.

Forward (with bias and fused post-ops), backward-data and backward-weights for 1D/2D/3D
convolutions and transposed convolutions with groups, stride, dilation and asymmetric padding, on channels-first or
channels-last tensors, in float32, float64, bfloat16 and float16; engines 'cpu' (oneDNN), 'ref'
(reference loops) and 'cuda' (cuDNN).

Tensors go in and out without copies through DLPack: pass NumPy arrays, torch tensors (CPU or
CUDA) or convkit.Tensor objects; hand results to numpy.from_dlpack / torch.from_dlpack.

    >>> import numpy as np, convkit
    >>> x = np.random.rand(1, 16, 8, 8).astype(np.float32)
    >>> w = np.random.rand(16, 16, 3, 3).astype(np.float32)
    >>> y = convkit.conv2d(x, w, padding=1, post_ops="relu")
    >>> np.from_dlpack(y).shape
    (1, 16, 8, 8)

The argument normalisation of the functions (ints or tuples per dimension, 'same' / 'valid',
post-op strings, engine names) runs in the extension, so a cached call costs a few microseconds
over the convolution itself. convkit.torch (a separate module) adds autograd, nn modules and
the integration with PyTorch.
"""

from . import _convkit
from ._convkit import (
    BackendError,
    Error,
    InvalidArgumentError,
    OutOfMemoryError,
    PackedWeights,
    Tensor,
    UnsupportedError,
    allow_tf32,
    autotune,
    available_engines,
    cache_stats,
    clear_cache,
    conv1d,
    conv2d,
    conv3d,
    conv_backward_data,
    conv_backward_weights,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    conv_transpose_backward_data,
    conv_transpose_backward_weights,
    conv_transpose_output_shape,
    deterministic,
    engine_info,
    from_dlpack,
    get_num_threads,
    prepack_weights,
    set_allow_tf32,
    set_verbose,
    verbose,
    set_autotune,
    set_deterministic,
    set_num_threads,
    set_tune_file,
)

__version__ = getattr(_convkit, "__version__", "0.0.0")

for _cls in (Tensor, PackedWeights):
    _cls.__module__ = "convkit"
del _cls

_DTYPES = {
    "float32": "float32", "f32": "float32", "float": "float32",
    "float64": "float64", "f64": "float64", "double": "float64",
    "float16": "float16", "f16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def _dtype_name(dtype):
    """'float32' for 'float32' / 'f32' / numpy.float32 / numpy.dtype('float32') / torch.float32."""
    if isinstance(dtype, str):
        name = dtype
    else:
        name = getattr(dtype, "name", None)          # numpy.dtype
        if not isinstance(name, str):
            name = getattr(dtype, "__name__", None)  # numpy scalar types (numpy.float32)
        if not isinstance(name, str):
            name = str(dtype)                        # torch.float32 -> 'torch.float32'
    name = name[6:] if name.startswith("torch.") else name
    try:
        return _DTYPES[name]
    except KeyError:
        raise TypeError(
            f"empty: unsupported dtype {dtype!r} (expected float32, float64, float16 or bfloat16)") from None


def _memory_format_name(memory_format):
    name = memory_format if isinstance(memory_format, str) else str(memory_format)
    name = name[6:] if name.startswith("torch.") else name
    return {"contiguous_format": "contiguous", "channels_last_3d": "channels_last",
            "preserve_format": "contiguous"}.get(name, name)


def empty(shape, dtype="float32", device="cpu", memory_format="contiguous"):
    """empty(shape, dtype='float32', device='cpu', memory_format='contiguous') -> Tensor

    A new uninitialised tensor of `shape` (1 to 5 dims) from convkit's allocator. dtype: 'float32',
    'float64', 'float16', 'bfloat16' (or a NumPy / torch dtype); device: 'cpu', 'cuda', 'cuda:N'
    (or a torch.device); memory_format: 'contiguous' or 'channels_last' (N, spatial..., C in
    memory; also torch.channels_last / channels_last_3d). Use it as out= of the conv functions.
    """
    if isinstance(shape, int):
        shape = (shape,)
    return _convkit._empty(tuple(shape), _dtype_name(dtype), str(device), _memory_format_name(memory_format))


__all__ = [
    "Tensor", "PackedWeights",
    "Error", "InvalidArgumentError", "UnsupportedError", "OutOfMemoryError", "BackendError",
    "from_dlpack", "empty",
    "conv1d", "conv2d", "conv3d", "conv_backward_data", "conv_backward_weights", "prepack_weights",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose_backward_data",
    "conv_transpose_backward_weights", "conv_transpose_output_shape",
    "set_num_threads", "get_num_threads", "set_autotune", "autotune", "set_tune_file",
    "set_allow_tf32", "allow_tf32", "set_verbose", "verbose", "set_deterministic", "deterministic",
    "cache_stats", "clear_cache", "engine_info", "available_engines",
]
