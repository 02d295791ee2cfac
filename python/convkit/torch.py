"""PyTorch on convkit.

Three ways to run PyTorch convolutions on convkit:

* ``convkit.torch.conv1d/conv2d/conv3d/convolution``: functional, differentiable (an autograd
  Function whose forward is convkit's forward and whose backward is ``conv_backward_data`` /
  ``conv_backward_weights``, honouring ``needs_input_grad``).
* ``convkit.torch.Conv1d/Conv2d/Conv3d``: drop-in subclasses of ``torch.nn.Conv1d/2d/3d``
  (``convert(model)`` re-classes a model's existing ``nn.ConvNd`` layers in place).
* ``enable()`` / ``disable()`` / ``with enabled():``: convkit registered as the CPU (and, when the
  ``cuda`` engine is available, CUDA) kernel of ``aten::convolution`` and
  ``aten::convolution_backward`` through ``torch.library.Library("aten", "IMPL")``, so unchanged
  code (``F.conv2d``, ``nn.Conv2d``, ``F.conv_transpose2d``, ``nn.ConvTranspose2d``, autograd
  through them) reaches convkit. Calls convkit does not take (a negative ``output_padding``,
  complex/integer dtypes, mixed dtypes or devices, empty tensors, anything convkit raises
  ``convkit.Error`` for) are computed by PyTorch's own kernel, reached without going back through the overridden entry (see
  ``_native_forward`` / ``_native_backward``). ``stats()`` counts both.

Tensors travel zero-copy over DLPack: convkit reads the torch tensors in place and writes into
torch-allocated outputs (``out=``), whose memory format is the one PyTorch would give
(channels-first unless the input or the weight is channels-last; then what this PyTorch's own
kernels give for that kind of call, asked once and cached: see ``_memory_formats``).
"""
import contextlib
import threading
import warnings

import torch
import torch.nn.functional as F

import convkit as _ck

__all__ = [
    "ConvFunction", "convolution", "conv1d", "conv2d", "conv3d",
    "Conv1d", "Conv2d", "Conv3d", "convert",
    "enable", "disable", "enabled", "is_enabled", "stats", "reset_stats", "fallback_paths",
]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_CK_FORWARD = {1: "conv1d", 2: "conv2d", 3: "conv3d"}
_CK_TRANSPOSE = {1: "conv_transpose1d", 2: "conv_transpose2d", 3: "conv_transpose3d"}
_TORCH_FORWARD = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CEA = torch._C.DispatchKey.CompositeExplicitAutograd


class _NotForConvkit(Exception):
    """Raised inside this module for a call that PyTorch should compute; carries the reason."""

    def __init__(self, reason, message=""):
        super().__init__(message or reason)
        self.reason = reason


# ----------------------------------------------------------------------------------------------
# Counters
# ----------------------------------------------------------------------------------------------
_stats_lock = threading.Lock()
_counts = {"forward": 0, "backward": 0, "fallback_forward": 0, "fallback_backward": 0}
_reasons = {}
_messages = {}


def _count(key):
    with _stats_lock:
        _counts[key] += 1


def _count_fallback(direction, reason, message=None):
    with _stats_lock:
        _counts["fallback_" + direction] += 1
        _reasons[reason] = _reasons.get(reason, 0) + 1
        if message:
            _messages[reason] = message


def stats():
    """Counters since import (or reset_stats()).

    ``forward`` / ``backward``: calls convkit computed (the autograd Function, the modules and the
    aten override alike; a backward call computing any of the three gradients counts once);
    ``fallback_forward`` / ``fallback_backward``: calls handed to PyTorch's own kernels;
    ``fallback_reasons``: {reason: calls} (``output_padding``,
    ``dtype:<name>``, ``mixed_dtypes``, ``mixed_devices``, ``device:<type>``, ``rank``,
    ``empty``, ``layout``, ``output_size``, ``convkit:<ExceptionName>``);
    ``fallback_messages``: {reason: last message} for reasons that came with one (convkit's);
    ``fallback_paths``: how PyTorch's kernels are reached (see fallback_paths()).
    """
    with _stats_lock:
        out = dict(_counts)
        out["fallback_reasons"] = dict(_reasons)
        out["fallback_messages"] = dict(_messages)
    out["fallback_paths"] = fallback_paths()
    return out


def reset_stats():
    with _stats_lock:
        for k in _counts:
            _counts[k] = 0
        _reasons.clear()
        _messages.clear()


# ----------------------------------------------------------------------------------------------
# Geometry and layouts
# ----------------------------------------------------------------------------------------------
def _expand(value, nd, name):
    if isinstance(value, int):
        return [int(value)] * nd
    value = [int(v) for v in value]
    if len(value) == 1:
        return value * nd
    if len(value) != nd:
        raise _NotForConvkit("invalid", "%s has %d values for %d spatial dimensions" % (name, len(value), nd))
    return value


def _normalize_padding(padding, kernel, stride, dilation, nd):
    """-> (padding_l, padding_r) lists. int, tuple per dim, per-dim (l, r) pairs, 'same', 'valid'."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * nd, [0] * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            left = [t // 2 for t in total]
            return left, [t - l for t, l in zip(total, left)]
        raise ValueError("Invalid padding string '%s', should be one of {'valid', 'same'}" % padding)
    if isinstance(padding, int):
        return [padding] * nd, [padding] * nd
    padding = list(padding)
    if len(padding) == 1 and nd > 1:
        padding = padding * nd
    if len(padding) != nd:
        raise ValueError("padding has %d values for %d spatial dimensions" % (len(padding), nd))
    left, right = [], []
    for p in padding:
        if isinstance(p, (tuple, list)):
            left.append(int(p[0]))
            right.append(int(p[1]))
        else:
            left.append(int(p))
            right.append(int(p))
    return left, right


def _padding_arg(pl, pr):
    """convkit's padding argument: a tuple per dim, or (l, r) pairs where asymmetric."""
    if list(pl) == list(pr):
        return tuple(pl)
    return tuple((l, r) for l, r in zip(pl, pr))


def _output_shape(x_shape, w_shape, stride, pl, pr, dilation):
    out = [x_shape[0], w_shape[0]]
    for i in range(len(stride)):
        extent = x_shape[2 + i] + pl[i] + pr[i] - dilation[i] * (w_shape[2 + i] - 1) - 1
        if extent < 0:
            raise _NotForConvkit("output_size", "output size would be < 1 in spatial dimension %d" % i)
        out.append(extent // stride[i] + 1)
    return out


def _transpose_output_shape(x_shape, w_shape, stride, pl, pr, dilation, output_padding, groups):
    """A transposed convolution's output shape; the weight is [IC, OC / groups, k...]."""
    out = [x_shape[0], w_shape[1] * groups]
    for i in range(len(stride)):
        size = ((x_shape[2 + i] - 1) * stride[i] - pl[i] - pr[i] + dilation[i] * (w_shape[2 + i] - 1)
                + output_padding[i] + 1)
        if size < 1:
            raise _NotForConvkit("output_size", "output size would be < 1 in spatial dimension %d" % i)
        out.append(size)
    return out


def _strides_like_channels_last(t, order):
    # c10's is_channels_last_strides_2d_s4 / _3d_s5 (what Tensor::suggest_memory_format uses).
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    m = 0
    for d in order:
        if sizes[d] == 0 or strides[d] < m:
            return False
        if d == 0 and m == strides[1]:
            return False
        m = strides[d]
        if sizes[d] > 1:
            m *= sizes[d]
    return True


def _suggest_memory_format(t):
    if t.layout == torch.strided:
        if t.dim() == 4 and _strides_like_channels_last(t, (1, 3, 2, 0)):
            return torch.channels_last
        if t.dim() == 5 and _strides_like_channels_last(t, (1, 4, 3, 2, 0)):
            return torch.channels_last_3d
    return torch.contiguous_format


_CONTIGUOUS3 = (torch.contiguous_format,) * 3
_format_cache = {}


def _memory_formats(x, w, groups, transposed=False):
    """(output, grad_input, grad_weight) memory formats, as PyTorch gives them.

    Channels-first unless the input or the weight suggests channels-last (suggest_memory_format).
    Then PyTorch's answer differs between versions and paths (1.13 on CPU: channels-last for 2D,
    but a contiguous grad_weight with groups > 1, and contiguous 3D results; contiguous
    transposed outputs even from channels-last 2D inputs; 2.x: channels-last 3D too), so it is
    asked once per (device, dtype, rank, input/weight layouts, grouping, transposed), on a tiny
    problem through PyTorch's own kernels, and cached. Where PyTorch cannot compute the probe
    (CPU float16 in 1.13) the rule is channels-last for all three."""
    if x.dim() == 4:
        cl = torch.channels_last
    elif x.dim() == 5:
        cl = torch.channels_last_3d
    else:
        return _CONTIGUOUS3
    x_cl = _suggest_memory_format(x) == cl
    w_cl = _suggest_memory_format(w) == cl
    if not (x_cl or w_cl):
        return _CONTIGUOUS3
    grouping = "depthwise" if groups > 1 and groups == x.shape[1] else ("grouped" if groups > 1 else "dense")
    key = (x.device.type, x.dtype, x.dim(), x_cl, w_cl, grouping, bool(transposed))
    formats = _format_cache.get(key)
    if formats is None:
        formats = _format_cache[key] = _ask_pytorch_formats(key, x.device, cl)
    return formats


def _ask_pytorch_formats(key, device, cl):
    _, dtype, rank, x_cl, w_cl, grouping, transposed = key
    groups = {"dense": 1, "grouped": 2, "depthwise": 4}[grouping]
    nd = rank - 2
    try:
        with _lock:
            if _library is None:  # while registered, enable() has probed already
                _probe_paths([device.type])
        with torch.no_grad(), _below_autograd():
            # ones, not randn: the probe must not draw from the caller's random generator
            x = torch.ones((2, 4) + (5,) * nd, device=device, dtype=dtype)
            # [OC, IC / groups, k...] or, transposed, [IC, OC / groups, k...]: the same sizes
            w = torch.ones((4, 4 // groups) + (3,) * nd, device=device, dtype=dtype)
            x = x.to(memory_format=cl) if x_cl else x
            w = w.to(memory_format=cl) if w_cl else w
            geometry = ([1] * nd, [1] * nd, [1] * nd, transposed, [0] * nd, groups)
            y = _native_forward(x, w, None, *geometry)
            if _paths["backward"] == "dispatch_key":
                gx, gw, _ = _native_backward(torch.ones_like(y), x, w, None, *geometry, [True, True, False])
            else:  # no native backward to ask (the re-derivation asks this function): as y
                gx = gw = y
    except Exception:
        return (cl,) * 3

    def format_of(t):
        if t.is_contiguous(memory_format=cl) and not t.is_contiguous():
            return cl
        return torch.contiguous_format

    return format_of(y), format_of(gx), format_of(gw)


def _dense(t, fmt):
    """A detached tensor convkit reads in place: dense channels-first or channels-last as it is,
    anything else (slices, expanded zero strides such as sum()'s gradient) copied into fmt."""
    t = t.detach()
    if t.is_contiguous():
        return t
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return t
    return t.contiguous(memory_format=fmt if t.dim() >= 4 else torch.contiguous_format)


def _cuda_engine():
    try:
        return "cuda" in _ck.available_engines()
    except Exception:  # pragma: no cover - a broken CUDA runtime counts as no engine
        return False


_cuda_engine_cached = None


def _has_cuda_engine():
    global _cuda_engine_cached
    if _cuda_engine_cached is None:
        _cuda_engine_cached = _cuda_engine()
    return _cuda_engine_cached


def _torch_allows_tf32():
    conv = getattr(torch.backends.cudnn, "conv", None)
    precision = getattr(conv, "fp32_precision", None)  # PyTorch >= 2.9
    if precision == "tf32":
        return True
    if precision == "ieee":
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(torch.backends.cudnn.allow_tf32)


def _options(t):
    """Per-call convkit options that follow PyTorch's settings."""
    deterministic = None
    if torch.are_deterministic_algorithms_enabled():
        deterministic = True
    if t.is_cuda:
        if torch.backends.cudnn.deterministic:
            deterministic = True
        if t.dtype == torch.float32:
            tf32 = _torch_allows_tf32()
            if _ck.allow_tf32() != tf32:
                _ck.set_allow_tf32(tf32)
    return {"deterministic": deterministic}


def _unsupported(x, w, b=None, transposed=False, output_padding=(), grad_output=None):
    """None when convkit can take the call, else the reason PyTorch computes it."""
    # A direct convolution ignores output_padding (PyTorch's _convolution reads it for transposed
    # ones only; the double backward of a transposed convolution passes its output_padding to
    # direct calls), except that a negative one is PyTorch's error to raise.
    if any(int(p) < 0 for p in output_padding):
        return "output_padding"
    tensors = [t for t in (x, w, b, grad_output) if t is not None]
    if any(t.layout != torch.strided or t.is_quantized for t in tensors):
        return "layout"
    if x.dim() not in (3, 4, 5) or w.dim() != x.dim():
        return "rank"
    if grad_output is not None and grad_output.dim() != x.dim():
        return "rank"
    if b is not None and b.dim() != 1:
        return "rank"
    if x.dtype not in _DTYPES:
        return "dtype:" + str(x.dtype).replace("torch.", "")
    if any(t.dtype != x.dtype for t in tensors):
        return "mixed_dtypes"
    if any(t.device != x.device for t in tensors):
        return "mixed_devices"
    if x.device.type == "cuda":
        if not _has_cuda_engine():
            return "device:cuda"
    elif x.device.type != "cpu":
        return "device:" + x.device.type
    if any(t.numel() == 0 for t in (x, w, grad_output) if t is not None):
        return "empty"
    return None


def _reason_of(err):
    return "convkit:" + type(err).__name__


# ----------------------------------------------------------------------------------------------
# convkit calls (shared by the autograd Function, the modules and the aten override)
# ----------------------------------------------------------------------------------------------
def _ck_forward(x, w, b, stride, pl, pr, dilation, groups):
    nd = x.dim() - 2
    fmt = _memory_formats(x, w, groups)[0]
    shape = _output_shape(x.shape, w.shape, stride, pl, pr, dilation)
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    getattr(_ck, _CK_FORWARD[nd])(
        _dense(x, fmt), _dense(w, fmt), None if b is None else _dense(b, fmt),
        stride=tuple(stride), padding=_padding_arg(pl, pr), dilation=tuple(dilation),
        groups=int(groups), out=out, **_options(x))
    return out


def _ck_backward(grad_output, x, w, stride, pl, pr, dilation, groups, mask):
    """(grad_input, grad_weight, grad_bias), None where mask is False."""
    fmt, fmt_gx, fmt_gw = _memory_formats(x, w, groups)
    go = _dense(grad_output, fmt)
    geometry = dict(stride=tuple(stride), padding=_padding_arg(pl, pr), dilation=tuple(dilation),
                    groups=int(groups), **_options(x))
    gx = gw = gb = None
    if mask[0]:
        gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt_gx)
        _ck.conv_backward_data(go, _dense(w, fmt), tuple(x.shape), out=gx, **geometry)
    if mask[1]:
        gw = torch.empty(w.shape, dtype=w.dtype, device=w.device, memory_format=fmt_gw)
        if mask[2]:
            gb = torch.empty((w.shape[0],), dtype=w.dtype, device=w.device)
        _ck.conv_backward_weights(go, _dense(x, fmt), tuple(w.shape), bias=bool(mask[2]),
                                  out=gw, bias_out=gb, **geometry)
    elif mask[2]:
        # Only the bias gradient: a reduction, not a convolution.
        gb = go.sum(dim=[0] + list(range(2, go.dim())))
    return gx, gw, gb


def _ck_transpose_forward(x, w, b, stride, pl, pr, dilation, output_padding, groups):
    nd = x.dim() - 2
    fmt = _memory_formats(x, w, groups, transposed=True)[0]
    shape = _transpose_output_shape(x.shape, w.shape, stride, pl, pr, dilation, output_padding, groups)
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    getattr(_ck, _CK_TRANSPOSE[nd])(
        _dense(x, fmt), _dense(w, fmt), None if b is None else _dense(b, fmt),
        stride=tuple(stride), padding=_padding_arg(pl, pr), output_padding=tuple(output_padding),
        groups=int(groups), dilation=tuple(dilation), out=out, **_options(x))
    return out


def _ck_transpose_backward(grad_output, x, w, stride, pl, pr, dilation, output_padding, groups, mask):
    """(grad_input, grad_weight, grad_bias) of a transposed convolution, None where mask is False."""
    fmt, fmt_gx, fmt_gw = _memory_formats(x, w, groups, transposed=True)
    go = _dense(grad_output, fmt)
    geometry = dict(stride=tuple(stride), padding=_padding_arg(pl, pr), output_padding=tuple(output_padding),
                    groups=int(groups), dilation=tuple(dilation), **_options(x))
    gx = gw = gb = None
    if mask[0]:
        gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt_gx)
        _ck.conv_transpose_backward_data(go, _dense(w, fmt), tuple(x.shape), out=gx, **geometry)
    if mask[1]:
        gw = torch.empty(w.shape, dtype=w.dtype, device=w.device, memory_format=fmt_gw)
        if mask[2]:
            gb = torch.empty((w.shape[1] * groups,), dtype=w.dtype, device=w.device)
        _ck.conv_transpose_backward_weights(go, _dense(x, fmt), tuple(w.shape), bias=bool(mask[2]),
                                            out=gw, bias_out=gb, **geometry)
    elif mask[2]:
        gb = go.sum(dim=[0] + list(range(2, go.dim())))
    return gx, gw, gb


# ----------------------------------------------------------------------------------------------
# The autograd Function, the functional API and the modules
# ----------------------------------------------------------------------------------------------
class ConvFunction(torch.autograd.Function):
    """convkit convolution as an autograd Function, any rank (1D/2D/3D from the weight's rank).

    apply(input, weight, bias, stride, padding_l, padding_r, dilation, groups) with batched
    input and per-dimension lists. First-order only (once_differentiable): use the aten override
    (enable()) where double backward is needed.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding_l, padding_r, dilation, groups):
        out = _ck_forward(input, weight, bias, stride, padding_l, padding_r, dilation, groups)
        _count("forward")
        ctx.save_for_backward(input, weight)
        ctx.geometry = (stride, padding_l, padding_r, dilation, groups)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = (bool(need[0]), bool(need[1]), bool(ctx.has_bias and need[2]))
        if not any(mask):
            return (None,) * 8
        gx, gw, gb = _ck_backward(grad_output, x, w, *ctx.geometry, mask)
        _count("backward")
        return gx, gw, gb, None, None, None, None, None


def _torch_convolution(x, w, b, stride, padding, pl, pr, dilation, groups):
    """PyTorch's own F.conv*d for a call convkit does not take (keeps PyTorch's errors)."""
    fn = _TORCH_FORWARD.get(w.dim() - 2, F.conv2d)  # another rank: PyTorch's own error
    if isinstance(padding, str) or pl is None or list(pl) == list(pr):
        return fn(x, w, b, stride, padding if (isinstance(padding, str) or pl is None) else pl, dilation, groups)
    pad = []
    for l, r in zip(reversed(pl), reversed(pr)):
        pad += [l, r]
    return fn(F.pad(x, pad), w, b, stride, 0, dilation, groups)


def convolution(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Differentiable convolution on convkit with F.conv*d's arguments (rank from the weight).

    padding: int, tuple per dim, 'same', 'valid', or per-dim (left, right) pairs (convkit's
    asymmetric padding). Unbatched input (no batch dim) is accepted as in PyTorch. A call convkit
    does not take (see stats()) runs F.conv*d instead.
    """
    nd = weight.dim() - 2
    unbatched = input.dim() == nd + 1
    x = input.unsqueeze(0) if unbatched else input
    try:
        stride_l = _expand(stride, nd, "stride")
        dilation_l = _expand(dilation, nd, "dilation")
        pl, pr = _normalize_padding(padding, list(weight.shape[2:]), stride_l, dilation_l, nd)
    except _NotForConvkit as e:
        _count_fallback("forward", e.reason, str(e))
        return _torch_convolution(input, weight, bias, stride, padding, None, None, dilation, groups)
    reason, message = (_unsupported(x, weight, bias) if nd in (1, 2, 3) else "rank"), None
    if reason is None:
        try:
            out = ConvFunction.apply(x, weight, bias, stride_l, pl, pr, dilation_l, int(groups))
            return out.squeeze(0) if unbatched else out
        except _NotForConvkit as e:
            reason, message = e.reason, str(e)
        except _ck.Error as e:
            reason, message = _reason_of(e), str(e)
    _count_fallback("forward", reason, message)
    return _torch_convolution(input, weight, bias, stride, padding, pl, pr, dilation, groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv1d on convkit (see convolution())."""
    return convolution(input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d on convkit (see convolution())."""
    return convolution(input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv3d on convkit (see convolution())."""
    return convolution(input, weight, bias, stride, padding, dilation, groups)


class _ConvkitConv:
    """forward() through convkit; padding modes other than 'zeros' via F.pad, as PyTorch does."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return convolution(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return convolution(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class Conv1d(_ConvkitConv, torch.nn.Conv1d):
    """torch.nn.Conv1d whose forward and backward run on convkit."""


class Conv2d(_ConvkitConv, torch.nn.Conv2d):
    """torch.nn.Conv2d whose forward and backward run on convkit."""


class Conv3d(_ConvkitConv, torch.nn.Conv3d):
    """torch.nn.Conv3d whose forward and backward run on convkit."""


_CONVERT = {torch.nn.Conv1d: Conv1d, torch.nn.Conv2d: Conv2d, torch.nn.Conv3d: Conv3d}


def convert(module):
    """Re-class, in place, every module of exactly torch.nn.Conv1d/2d/3d in `module` (itself
    included) as convkit's subclass (same parameters, buffers and hooks). Returns `module`."""
    for m in module.modules():
        cls = _CONVERT.get(type(m))
        if cls is not None:
            m.__class__ = cls
    return module


# ----------------------------------------------------------------------------------------------
# PyTorch's own kernels, reached from inside the override without recursion
# ----------------------------------------------------------------------------------------------
# Once convkit is the CPU kernel of aten::convolution, torch.ops.aten.convolution(...) from the
# fallback would come straight back. Two ways around it, picked once by a probe (_probe_paths):
#  'dispatch_key': call the operator's CompositeExplicitAutograd kernel directly
#     (OpOverload._op_dk(DispatchKey.CompositeExplicitAutograd, ...), the dispatcher's
#     callBoxedForDispatchKey): that is at::native::convolution / convolution_backward, the very
#     kernels the CPU (and CUDA) keys run when nothing overrides them. Exists in 1.13 and 2.x.
#  'direct' (forward) / 'rederive' (backward): aten::_convolution, which native::convolution
#     calls and which convkit does not override, with the global flags native::convolution
#     passes; gradients re-derived as _convolution calls (transposed <-> not, see _rederive).
_paths = {"forward": None, "backward": None}


def fallback_paths():
    """{'forward': 'dispatch_key'|'direct', 'backward': 'dispatch_key'|'rederive'} as chosen by
    the probe run by enable() (None before the first enable())."""
    return dict(_paths)


@contextlib.contextmanager
def _below_autograd():
    """Autograd keys excluded, as inside an aten kernel: PyTorch's native kernels assert it (mkldnn:
    variable_excluded_from_dispatch) when called directly rather than through the dispatcher.
    torch._C._AutoDispatchBelowAutograd is an RAII guard (1.13: no context-manager protocol)."""
    cls = getattr(torch._C, "_AutoDispatchBelowAutograd", None)
    if cls is None:
        yield
        return
    guard = cls()
    if hasattr(guard, "__enter__"):
        with guard:
            yield
    else:
        try:
            yield
        finally:
            del guard


def _conv_flags():
    ctx = torch.backends.cudnn
    deterministic = bool(ctx.deterministic) or torch.are_deterministic_algorithms_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf32 = bool(ctx.allow_tf32)
    return bool(ctx.benchmark), deterministic, bool(ctx.enabled), tf32


def _native_forward(x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    with _below_autograd():
        if _paths["forward"] == "dispatch_key":
            return torch.ops.aten.convolution.default._op_dk(
                _CEA, x, w, b, stride, padding, dilation, transposed, output_padding, groups)
        return torch.ops.aten._convolution.default(
            x, w, b, stride, padding, dilation, transposed, output_padding, groups, *_conv_flags())


def _native_backward(go, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding,
                     groups, mask):
    with _below_autograd():
        if _paths["backward"] == "dispatch_key":
            res = torch.ops.aten.convolution_backward.default._op_dk(
                _CEA, go, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding,
                groups, mask)
        else:
            res = _rederive(go, x, w, stride, padding, dilation, transposed, output_padding,
                            groups, mask)
    return tuple(t if m else None for t, m in zip(res, mask))


def _conv_op(x, w, stride, padding, dilation, transposed, output_padding, groups):
    return torch.ops.aten._convolution.default(
        x, w, None, list(stride), list(padding), list(dilation), transposed, list(output_padding),
        groups, *_conv_flags())


def _weight_grad(inp, gout, w_shape, s, p, d, groups):
    """dL/dw of y = conv(inp, w; s, p, d, groups) given gout = dL/dy, as one convolution:
    gw[g*ocg+oc, ic, k] = sum_n,o gout[n, g*ocg+oc, o] * inp_padded[n, g*icg+ic, o*s + k*d], i.e.
    a convolution of inp (channels as batch) with gout (batch as input channels), stride d,
    dilation s, padding p, cropped to the kernel extent."""
    nd = inp.dim() - 2
    n, c = inp.shape[0], inp.shape[1]
    icg = c // groups
    spatial = list(inp.shape[2:])
    xi = inp.reshape([n, groups, icg] + spatial).permute([2, 1, 0] + list(range(3, 3 + nd)))
    xi = xi.reshape([icg, groups * n] + spatial)
    wi = gout.transpose(0, 1)
    r = _conv_op(xi, wi, d, p, s, False, [0] * nd, groups)
    for i in range(nd):
        r = r.narrow(2 + i, 0, w_shape[2 + i])
    return r.transpose(0, 1)


def _rederive(go, x, w, stride, padding, dilation, transposed, output_padding, groups, mask):
    nd = x.dim() - 2
    s, p, d = (_expand(v, nd, n) for v, n in ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    _, fmt_gx, fmt_gw = _memory_formats(x, w, groups, transposed)
    gx = gw = gb = None
    if not transposed:
        if mask[0]:
            # remainder of the forward's floor division, < stride: a valid output_padding
            op = [x.shape[2 + i] - ((go.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (w.shape[2 + i] - 1) + 1)
                  for i in range(nd)]
            gx = _conv_op(go, w, s, p, d, True, op, groups)
        if mask[1]:
            gw = _weight_grad(x, go, w.shape, s, p, d, groups)
    else:
        # y = conv_transpose(x, w) is the input gradient of conv(y-shaped, w) at x: swap roles.
        if mask[0]:
            gx = _conv_op(go, w, s, p, d, False, [0] * nd, groups)
            for i in range(nd):
                gx = gx.narrow(2 + i, 0, x.shape[2 + i])
        if mask[1]:
            gw = _weight_grad(go, x, w.shape, s, p, d, groups)
    if mask[2]:
        gb = go.sum(dim=[0] + list(range(2, go.dim())))
    if gx is not None:
        gx = gx.contiguous(memory_format=fmt_gx)
    if gw is not None:
        gw = gw.contiguous(memory_format=fmt_gw)
    return gx, gw, gb


_probed = set()


def _same(a, b):
    # the same operator, not necessarily bitwise (cuDNN may pick atomics-based backward kernels)
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-3, atol=1e-3)


def _probe_paths(device_types):
    """Check on tiny tensors, once per device type, that the 'dispatch_key' path gives the
    operators' own results; else take the other path. Runs only while convkit is not registered
    (so the operators are still PyTorch's): from enable() before registering, or from the
    functional path while the override is off."""
    todo = [d for d in device_types if d not in _probed]
    if not todo:
        return
    fwd, bwd = _paths["forward"], _paths["backward"]
    if fwd is None:
        has = getattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", None)
        usable = hasattr(torch.ops.aten.convolution.default, "_op_dk") and has is not None
        fwd = "dispatch_key" if usable and has("aten::convolution", _CEA) else "direct"
        bwd = "dispatch_key" if usable and has("aten::convolution_backward", _CEA) else "rederive"
    conv = torch.ops.aten.convolution.default
    conv_bwd = torch.ops.aten.convolution_backward.default
    gen = torch.Generator().manual_seed(0)
    for dev in todo:
        x = torch.randn(2, 3, 5, 5, generator=gen).to(dev)
        w = torch.randn(4, 3, 3, 3, generator=gen).to(dev)
        b = torch.randn(4, generator=gen).to(dev)
        go = torch.randn(2, 4, 3, 3, generator=gen).to(dev)
        args = ([2, 1], [1, 0], [1, 1], False, [0, 0], 1)
        with torch.no_grad(), _below_autograd():
            if fwd == "dispatch_key":
                try:
                    ok = _same(conv._op_dk(_CEA, x, w, b, *args), conv(x, w, b, *args))
                except Exception:
                    ok = False
                fwd = fwd if ok else "direct"
            if bwd == "dispatch_key":
                bargs = (go, x, w, [4]) + args + ([True, True, True],)
                try:
                    ok = all(_same(a, e) for a, e in zip(conv_bwd._op_dk(_CEA, *bargs), conv_bwd(*bargs)))
                except Exception:
                    ok = False
                bwd = bwd if ok else "rederive"
    _paths["forward"], _paths["backward"] = fwd, bwd
    _probed.update(todo)


# ----------------------------------------------------------------------------------------------
# The aten override
# ----------------------------------------------------------------------------------------------
def _on_convkit(direction, reason, compute):
    """(True, compute()) when convkit takes the call; (False, None) after counting the fallback
    when `reason` already says it does not, or convkit declines or raises."""
    message = None
    if reason is None:
        try:
            result = compute()
        except _NotForConvkit as e:
            reason, message = e.reason, str(e)
        except _ck.Error as e:
            reason, message = _reason_of(e), str(e)
        else:
            _count(direction)
            return True, result
    _count_fallback(direction, reason, message)
    return False, None


def _geometry(input, stride, padding, dilation):
    nd = input.dim() - 2
    pad = _expand(padding, nd, "padding")
    return _expand(stride, nd, "stride"), pad, pad, _expand(dilation, nd, "dilation")


def _aten_convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    def compute():
        geometry = _geometry(input, stride, padding, dilation)
        if transposed:
            op = _expand(output_padding, input.dim() - 2, "output_padding")
            return _ck_transpose_forward(input, weight, bias, *geometry, op, groups)
        return _ck_forward(input, weight, bias, *geometry, groups)

    ok, out = _on_convkit("forward", _unsupported(input, weight, bias, transposed, output_padding), compute)
    if ok:
        return out
    return _native_forward(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)


def _aten_convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
                               transposed, output_padding, groups, output_mask):
    mask = [bool(m) for m in output_mask]
    reason = _unsupported(input, weight, None, transposed, output_padding, grad_output)
    if reason is None and not any(mask):
        return None, None, None
    def compute():
        geometry = _geometry(input, stride, padding, dilation)
        if transposed:
            op = _expand(output_padding, input.dim() - 2, "output_padding")
            return _ck_transpose_backward(grad_output, input, weight, *geometry, op, groups, mask)
        return _ck_backward(grad_output, input, weight, *geometry, groups, mask)

    ok, res = _on_convkit("backward", reason, compute)
    if ok:
        return res
    return _native_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
                            transposed, output_padding, groups, mask)


_lock = threading.RLock()
_library = None
_keys = ()


def is_enabled():
    """Whether convkit is registered as aten::convolution(_backward)'s kernel."""
    return _library is not None


def enable():
    """Register convkit as the CPU (and, with convkit's cuda engine, CUDA) kernel of
    aten::convolution and aten::convolution_backward. Idempotent."""
    global _library, _keys
    with _lock:
        if _library is not None:
            return
        keys = ["CPU"]
        if _has_cuda_engine() and torch.cuda.is_available():
            keys.append("CUDA")
        _probe_paths(["cpu"] + (["cuda"] if "CUDA" in keys else []))
        lib = torch.library.Library("aten", "IMPL")
        try:
            with warnings.catch_warnings():
                # "Overriding a previously registered kernel" (2.x: convolution_backward has an
                # explicit CUDA kernel): overriding is the point.
                warnings.simplefilter("ignore")
                for key in keys:
                    lib.impl("convolution", _aten_convolution, key)
                    lib.impl("convolution_backward", _aten_convolution_backward, key)
        except Exception:
            _destroy(lib)
            raise
        _library, _keys = lib, tuple(keys)


def _destroy(lib):
    destroy = getattr(lib, "_destroy", None)  # PyTorch >= 2.3
    if destroy is not None:
        destroy()
    else:
        # 1.13: Library.__del__ forgets the registrations and drops the C++ handle, whose
        # destructor deregisters the kernels; the last reference is ours.
        lib.__del__()
        lib._op_impls = set()


def disable():
    """Drop the registrations: PyTorch's own kernels again. Idempotent."""
    global _library, _keys
    with _lock:
        lib, _library, _keys = _library, None, ()
        if lib is not None:
            _destroy(lib)
            del lib


@contextlib.contextmanager
def enabled(on=True):
    """Context manager: convkit registered (on=True) or not (on=False) inside, the previous
    state restored on exit; nests."""
    with _lock:
        previous = is_enabled()
        (enable if on else disable)()
    try:
        yield
    finally:
        with _lock:
            (enable if previous else disable)()
