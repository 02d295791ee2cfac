"""What the convkit.torch suites share: the reference convolutions, a fixture that keeps every
test's reference PyTorch's own, and the worst-case dot-product bounds their comparisons use
(test_torch_functional.py's docstring derives them)."""
import math

import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.torch as ckt

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
U = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}
CUDA = torch.cuda.is_available() and "cuda" in convkit.available_engines()


@pytest.fixture(autouse=True)
def plain_pytorch():
    # The reference results must be PyTorch's own: no aten override left on by another test.
    ckt.disable()
    ckt.reset_stats()
    yield
    ckt.disable()


def gamma(n, u):
    return n * u / (1.0 - n * u) if n * u < 1 else math.inf


def unit(u):
    """The unit roundoff of a dtype, or u itself when it is already a number."""
    return U[u] if isinstance(u, torch.dtype) else u


def forward_bound(x, w, b, u=2.0 ** -24, **kw):
    """2 gamma_n * (|x| conv |w| + |b|) in f64: the most two correct implementations may differ."""
    nd = w.dim() - 2
    ab = None if b is None else b.detach().cpu().double().abs()
    mag = TORCH_CONV[nd](x.detach().cpu().double().abs(), w.detach().cpu().double().abs(), ab, **kw)
    return 2 * gamma(w.shape[1] * math.prod(w.shape[2:]) + 1, unit(u)) * mag


def grad_bounds(x, w, gy, u=2.0 ** -24, **kw):
    """Bounds for (grad_input, grad_weight, grad_bias) from the absolute values, as forward_bound."""
    nd = w.dim() - 2
    ax = x.detach().cpu().double().abs().requires_grad_()
    aw = w.detach().cpu().double().abs().requires_grad_()
    agy = gy.detach().cpu().double().abs()
    mx, mw = torch.autograd.grad(TORCH_CONV[nd](ax, aw, None, **kw), [ax, aw], agy)
    n_x = (w.shape[0] // kw.get("groups", 1)) * math.prod(w.shape[2:])
    n_w = gy.shape[0] * math.prod(gy.shape[2:])
    mb = agy.sum(dim=[0] + list(range(2, gy.dim())))
    u = unit(u)
    return 2 * gamma(n_x, u) * mx, 2 * gamma(n_w, u) * mw, 2 * gamma(n_w, u) * mb


def transpose_forward_bound(x, w, b, u=2.0 ** -24, **kw):
    """forward_bound for a transposed convolution (weight [IC, OC/groups, k...]); n = IC/groups *
    kernel volume + 1 bounds the taps that reach one output element."""
    nd = w.dim() - 2
    ab = None if b is None else b.detach().cpu().double().abs()
    mag = TORCH_CONV_T[nd](x.detach().cpu().double().abs(), w.detach().cpu().double().abs(), ab, **kw)
    n = w.shape[0] // kw.get("groups", 1) * math.prod(w.shape[2:]) + 1
    return 2 * gamma(n, unit(u)) * mag


def transpose_grad_bounds(x, w, gy, u=2.0 ** -24, **kw):
    """grad_bounds for a transposed convolution: the input gradient is a convolution of gy with
    the weight (n = OC/groups * kernel volume); the weight and bias gradients sum over at most
    N * output volume products."""
    nd = w.dim() - 2
    ax = x.detach().cpu().double().abs().requires_grad_()
    aw = w.detach().cpu().double().abs().requires_grad_()
    agy = gy.detach().cpu().double().abs()
    mx, mw = torch.autograd.grad(TORCH_CONV_T[nd](ax, aw, None, **kw), [ax, aw], agy)
    n_x = w.shape[1] * math.prod(w.shape[2:])
    n_w = gy.shape[0] * math.prod(gy.shape[2:])
    mb = agy.sum(dim=[0] + list(range(2, gy.dim())))
    u = unit(u)
    return 2 * gamma(n_x, u) * mx, 2 * gamma(n_w, u) * mw, 2 * gamma(n_w, u) * mb


def assert_within(got, want, bound, what, same_dtype=False):
    assert got.shape == want.shape and (not same_dtype or got.dtype == want.dtype), what
    err = (got.detach().cpu().double() - want.detach().cpu().double()).abs()
    excess = (err - bound.detach().cpu()).max().item()
    assert excess <= 0, "%s: max error %.3g exceeds the bound by %.3g" % (what, err.max().item(), excess)


def memory_format_of(t):
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return "channels_last"
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous():
        return "channels_last_3d"
    return "contiguous" if t.is_contiguous() else "strided"
