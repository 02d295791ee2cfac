"""convkit.torch's autograd Function, functional API and modules against PyTorch.

Tolerances. Every f32 comparison uses the classical worst-case bound of a floating-point dot
product: a sum of n products computed in any order, in precision u, is within
gamma_n * sum|a_i b_i| of the exact value (gamma_n = n u / (1 - n u)). Two f32 implementations
(convkit, PyTorch) that each meet it differ by at most 2 gamma_n * (|x| conv |w|), computed here
per output element in f64 with PyTorch on the absolute values, with n the reduction length of
that output (C/groups * kernel volume (+1 for the bias) forward, OC/groups * kernel volume for the
input gradient, N * output volume for the weight and bias gradients). The bound holds for direct,
GEMM and blocked reductions alike; an indexing mistake (padding off by one, a wrong group) gives
errors of the order of |x||w| itself, far above it. f64 uses the same bound with u = 2^-53 and
gradcheck (finite differences in f64) checks the gradients independently of PyTorch's kernels.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.torch as ckt
from torch_support import CUDA, TORCH_CONV, U, assert_within, forward_bound, gamma, grad_bounds, memory_format_of, plain_pytorch  # noqa: F401

def make(nd, n, c, oc, size, k, groups=1, bias=True, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    size = size if isinstance(size, (tuple, list)) else (size,) * nd
    k = k if isinstance(k, (tuple, list)) else (k,) * nd
    x = torch.randn((n, c) + tuple(size), generator=g, dtype=torch.float64)
    w = torch.randn((oc, c // groups) + tuple(k), generator=g, dtype=torch.float64)
    b = torch.randn((oc,), generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)
    return cast(x), cast(w), cast(b)


# (id, nd, N, C, OC, size, kernel, kwargs, bias)
CASES = [
    ("1d", 1, 2, 4, 6, 11, 3, dict(), True),
    ("1d-stride-pad", 1, 2, 4, 6, 12, 3, dict(stride=2, padding=1), True),
    ("1d-dilation", 1, 2, 4, 6, 12, 3, dict(dilation=2, padding=2), False),
    ("1d-groups", 1, 2, 6, 4, 9, 3, dict(groups=2, padding=1), True),
    ("1d-depthwise", 1, 2, 4, 4, 9, 3, dict(groups=4, padding=1), True),
    ("1d-same-even", 1, 2, 3, 5, 10, 4, dict(padding="same"), True),
    ("1d-valid", 1, 2, 3, 5, 10, 3, dict(padding="valid"), False),
    ("2d", 2, 2, 3, 5, 7, 3, dict(), True),
    ("2d-nobias", 2, 2, 3, 5, 7, 3, dict(padding=1), False),
    ("2d-stride-pad-tuple", 2, 2, 3, 4, (9, 8), (3, 2), dict(stride=(2, 1), padding=(1, 0)), True),
    ("2d-dilation", 2, 1, 4, 4, 9, 3, dict(dilation=(2, 1), padding=(2, 1)), True),
    ("2d-groups", 2, 2, 6, 9, 6, 3, dict(groups=3, padding=1), True),
    ("2d-depthwise-stride", 2, 2, 5, 5, 9, 3, dict(groups=5, stride=2, padding=1), True),
    ("2d-depthwise-multiplier", 2, 2, 3, 6, 7, 3, dict(groups=3, padding=1), False),
    ("2d-same-dilated", 2, 2, 3, 4, 8, 3, dict(padding="same", dilation=2), True),
    ("2d-same-even", 2, 1, 3, 4, 7, (2, 4), dict(padding="same"), True),
    ("2d-valid", 2, 2, 3, 4, 7, 3, dict(padding="valid"), True),
    ("2d-1x1", 2, 2, 8, 4, 5, 1, dict(), True),
    ("3d", 3, 2, 2, 3, 5, 3, dict(padding=1), True),
    ("3d-stride-dilation", 3, 1, 2, 4, (7, 6, 5), (3, 2, 2), dict(stride=(2, 1, 1), dilation=(1, 2, 1)), False),
    ("3d-groups", 3, 1, 4, 4, 4, 2, dict(groups=2, padding="same"), True),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_gradients_match_pytorch_f32(case):
    _, nd, n, c, oc, size, k, kw, bias = case
    x, w, b = make(nd, n, c, oc, size, k, kw.get("groups", 1), bias, seed=1)
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
    y = ckt.convolution(x, w, b, **kw)
    y_ref = TORCH_CONV[nd](x, w, b, **kw)
    assert_within(y, y_ref, forward_bound(x, w, b, torch.float32, **kw), "forward")
    gy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad(y, leaves, gy)
    want = torch.autograd.grad(y_ref, leaves, gy)
    bounds = grad_bounds(x, w, gy, torch.float32, **kw)
    for name, gt, wt, bd in zip(("grad_input", "grad_weight", "grad_bias"), got, want, bounds):
        assert_within(gt, wt, bd, name)
    s = ckt.stats()
    assert (s["forward"], s["backward"], s["fallback_forward"]) == (1, 1, 0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_f64(case):
    _, nd, n, c, oc, size, k, kw, bias = case
    # gradcheck perturbs every element: keep the problem small (batch 1, the case's geometry)
    x, w, b = make(nd, 1, c, oc, size, k, kw.get("groups", 1), bias, dtype=torch.float64, seed=3)
    inputs = tuple(t.requires_grad_() for t in (x, w, b) if t is not None)

    def f(*args):
        return ckt.convolution(args[0], args[1], args[2] if bias else None, **kw)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    y = f(*inputs)
    assert_within(y, TORCH_CONV[nd](x, w, b, **kw), forward_bound(x, w, b, torch.float64, **kw), "f64 forward")


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("which", ["input", "weight", "both"])
@pytest.mark.parametrize("groups", [1, 2])
def test_channels_last(nd, which, groups):
    fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
    x, w, b = make(nd, 2, 4, 6, 6 if nd == 2 else 4, 3, groups=groups, seed=4)
    if which in ("input", "both"):
        x = x.to(memory_format=fmt)
    if which in ("weight", "both"):
        w = w.to(memory_format=fmt)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    y = ckt.convolution(x, w, b, padding=1, groups=groups)
    y_ref = TORCH_CONV[nd](x, w, b, padding=1, groups=groups)
    # PyTorch's own answer (1.13 on CPU: channels-last 2D, contiguous 3D; 2.x: channels-last both)
    assert memory_format_of(y) == memory_format_of(y_ref)
    if nd == 2:
        assert memory_format_of(y) == "channels_last"
    assert_within(y, y_ref, forward_bound(x, w, b, torch.float32, padding=1, groups=groups), "forward")
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(y, [x, w, b], gy)
    want = torch.autograd.grad(y_ref, [x, w, b], gy)
    for name, gt, wt, bd in zip(("grad_input", "grad_weight", "grad_bias"), got, want,
                                grad_bounds(x, w, gy, torch.float32, padding=1, groups=groups)):
        assert memory_format_of(gt) == memory_format_of(wt), name
        assert_within(gt, wt, bd, name)


def test_non_contiguous_and_expanded_inputs():
    x, w, b = make(2, 2, 4, 3, 12, 3, seed=6)
    xs = x[:, ::2, 1:10:2, :]          # strided slice: 2 channels, 5 rows
    ws = w[:, ::2].transpose(2, 3)     # non-contiguous weight
    xs.requires_grad_()
    y = ckt.conv2d(xs, ws, b, padding=1)
    y_ref = F.conv2d(xs, ws, b, padding=1)
    assert_within(y, y_ref, forward_bound(xs, ws, b, torch.float32, padding=1), "forward")
    # sum()'s gradient reaches backward as an expanded (stride 0) tensor
    g, = torch.autograd.grad(y.sum(), [xs])
    g_ref, = torch.autograd.grad(y_ref.sum(), [xs])
    assert_within(g, g_ref, grad_bounds(xs, ws, torch.ones_like(y), torch.float32, padding=1)[0], "grad_input")


def test_unbatched_input():
    x, w, b = make(2, 1, 3, 4, 6, 3, seed=7)
    y = ckt.conv2d(x[0], w, b, padding=1)
    assert y.shape == (4, 6, 6)
    assert_within(y, F.conv2d(x[0], w, b, padding=1), forward_bound(x, w, b, torch.float32, padding=1)[0], "unbatched")


def test_asymmetric_padding_pairs():
    x, w, b = make(2, 2, 3, 4, 7, 3, seed=8)
    y = ckt.conv2d(x, w, b, padding=((1, 2), (0, 1)))
    xp = F.pad(x, (0, 1, 1, 2))
    assert_within(y, F.conv2d(xp, w, b), forward_bound(xp, w, b, torch.float32), "asymmetric")


class _Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


@pytest.mark.parametrize("grads", [("x",), ("w",), ("b",), ("w", "b"), ("x", "w", "b")])
def test_needs_input_grad_is_honoured(monkeypatch, grads):
    data = _Counting(convkit.conv_backward_data)
    weights = _Counting(convkit.conv_backward_weights)
    monkeypatch.setattr(convkit, "conv_backward_data", data)
    monkeypatch.setattr(convkit, "conv_backward_weights", weights)
    x, w, b = make(2, 2, 3, 4, 6, 3, seed=9)
    named = {"x": x, "w": w, "b": b}
    for name in grads:
        named[name].requires_grad_()
    y = ckt.conv2d(x, w, b, padding=1)
    y_ref = F.conv2d(x, w, b, padding=1)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(10))
    got = torch.autograd.grad(y, [named[n] for n in grads], gy)
    want = torch.autograd.grad(y_ref, [named[n] for n in grads], gy)
    bounds = dict(zip("xwb", grad_bounds(x, w, gy, torch.float32, padding=1)))
    for name, gt, wt in zip(grads, got, want):
        assert_within(gt, wt, bounds[name], "grad " + name)
    assert data.calls == (1 if "x" in grads else 0)
    assert weights.calls == (1 if "w" in grads else 0)  # bias alone: a reduction, no convolution


def test_same_padding_with_stride_raises_like_pytorch():
    x, w, _ = make(2, 1, 3, 4, 8, 3)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        ckt.conv2d(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="Invalid padding string"):
        ckt.conv2d(x, w, padding="full")


def test_unsupported_dtypes_fall_back_to_pytorch():
    g = torch.Generator().manual_seed(11)
    x = torch.randint(-3, 4, (1, 2, 5, 5), generator=g)
    w = torch.randint(-3, 4, (3, 2, 3, 3), generator=g)
    assert torch.equal(ckt.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))
    xc = torch.randn(1, 2, 5, 5, dtype=torch.complex128, generator=g)
    wc = torch.randn(3, 2, 3, 3, dtype=torch.complex128, generator=g)
    assert torch.allclose(ckt.conv2d(xc, wc), F.conv2d(xc, wc), rtol=0, atol=1e-12)
    s = ckt.stats()
    assert s["forward"] == 0 and s["fallback_forward"] == 2
    assert s["fallback_reasons"] == {"dtype:int64": 1, "dtype:complex128": 1}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_against_f64_reference(dtype):
    # Inputs already in the 16-bit type, so the f64 reference sees the same values. convkit
    # accumulates in f32 and rounds once: |y - ref| <= u16 |ref| + gamma_n(f32) (|x| conv |w| + |b|),
    # u16 = 2^-8 (bf16), 2^-11 (f16).
    u16 = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[dtype]
    x, w, b = make(2, 2, 8, 6, 7, 3, dtype=dtype, seed=12)
    y = ckt.conv2d(x, w, b, padding=1)
    assert y.dtype == dtype
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    bound = u16 * ref.abs() + forward_bound(x.double(), w.double(), b.double(), torch.float32, padding=1)
    assert_within(y, ref, bound, str(dtype))


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------
MODULE_CASES = [
    (1, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), 10),
    (1, dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=4), 10),
    (2, dict(in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1), 9),
    (2, dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect", bias=False), 7),
    (2, dict(in_channels=4, out_channels=6, kernel_size=(3, 2), padding=(1, 2), padding_mode="circular", groups=2), 7),
    (2, dict(in_channels=3, out_channels=5, kernel_size=3, padding="same", padding_mode="replicate", dilation=2), 8),
    (3, dict(in_channels=2, out_channels=4, kernel_size=3, padding=1), 5),
    (3, dict(in_channels=2, out_channels=2, kernel_size=2, stride=2, padding="valid"), 6),
]


@pytest.mark.parametrize("nd,kw,size", MODULE_CASES, ids=[str(i) for i in range(len(MODULE_CASES))])
def test_modules_match_torch_modules(nd, kw, size):
    torch_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
    ck_cls = {1: ckt.Conv1d, 2: ckt.Conv2d, 3: ckt.Conv3d}[nd]
    torch.manual_seed(13)
    ref = torch_cls(**kw)
    torch.manual_seed(13)
    mod = ck_cls(**kw)
    assert isinstance(mod, torch_cls)
    for p, q in zip(ref.parameters(), mod.parameters()):
        assert torch.equal(p, q)  # same init, same seed
    x = torch.randn((2, kw["in_channels"]) + (size,) * nd, generator=torch.Generator().manual_seed(14))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = mod(x1), ref(x2)
    # the modules pad non-zero padding modes explicitly: the bound is computed on the padded input
    xp = x if ref.padding_mode == "zeros" else F.pad(x, ref._reversed_padding_repeated_twice, mode=ref.padding_mode)
    conv_kw = dict(stride=ref.stride, dilation=ref.dilation, groups=ref.groups,
                   padding=ref.padding if ref.padding_mode == "zeros" else 0)
    assert_within(y, y_ref, forward_bound(xp, ref.weight, ref.bias, torch.float32, **conv_kw), "forward")
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(15))
    y.backward(gy)
    y_ref.backward(gy)
    bx, bw, bb = grad_bounds(xp, ref.weight, gy, torch.float32, **conv_kw)
    assert_within(mod.weight.grad, ref.weight.grad, bw, "grad_weight")
    if ref.bias is not None:
        assert_within(mod.bias.grad, ref.bias.grad, bb, "grad_bias")
    if ref.padding_mode == "zeros":
        assert_within(x1.grad, x2.grad, bx, "grad_input")
    else:  # the pad's backward folds the border gradients back: bound by its largest sum
        assert_within(x1.grad, x2.grad, torch.full_like(x1.grad, 4 * bx.max().item()), "grad_input")
    assert ckt.stats()["forward"] == 1 and ckt.stats()["backward"] == 1


def test_convert_reclasses_conv_layers():
    torch.manual_seed(16)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 4, 3), torch.nn.ConvTranspose2d(4, 2, 2))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(17))
    want = model(x)
    ckt.convert(model)
    assert type(model[0]) is ckt.Conv2d and type(model[2]) is ckt.Conv2d
    assert type(model[3]) is torch.nn.ConvTranspose2d  # only exact nn.ConvNd classes
    got = model(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert ckt.stats()["forward"] == 2


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and convkit's cuda engine")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_forward_and_gradients_match_pytorch(case):
    _, nd, n, c, oc, size, k, kw, bias = case
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # both sides in true f32 (convkit follows the flag)
    try:
        x, w, b = make(nd, n, c, oc, size, k, kw.get("groups", 1), bias, seed=18, device="cuda")
        leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
        y = ckt.convolution(x, w, b, **kw)
        y_ref = TORCH_CONV[nd](x, w, b, **kw)
        assert y.device == y_ref.device
        assert_within(y, y_ref, forward_bound(x.cpu(), w.cpu(), None if b is None else b.cpu(), torch.float32, **kw), "forward")
        gy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(19)).cuda()
        got = torch.autograd.grad(y, leaves, gy)
        want = torch.autograd.grad(y_ref, leaves, gy)
        bounds = grad_bounds(x.cpu(), w.cpu(), gy.cpu(), torch.float32, **kw)
        for name, gt, wt, bd in zip(("grad_input", "grad_weight", "grad_bias"), got, want, bounds):
            assert_within(gt, wt, bd, name)
        assert ckt.stats()["forward"] == 1 and ckt.stats()["fallback_forward"] == 0
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and convkit's cuda engine")
def test_cuda_gradcheck_f64():
    x, w, b = make(2, 1, 3, 4, 5, 3, dtype=torch.float64, seed=20, device="cuda")
    inputs = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(lambda *a: ckt.conv2d(*a, padding=1, groups=1), inputs,
                                    eps=1e-6, atol=1e-7, rtol=1e-6)
