"""convkit's functional API (conv1d/2d/3d, conv_backward_data, conv_backward_weights,
prepack_weights, the switches) against PyTorch's CPU results.

Tolerances. Every result is compared with PyTorch computing the same convolution in float64 on
the same input values (the inputs are first rounded to the dtype under test), and each element
must satisfy

    |got - want| <= 2 * ((K + 2) * u_acc * |conv|(x, w) + u_out * |want|)

where |conv|(x, w) is the convolution of the absolute values (the same direction, computed in
float64), K the length of the reduction behind each element (IC/groups * kernel volume (+1 for the
bias) forward; OC/groups * kernel volume for backward-data; N * output volume for
backward-weights and the bias gradient), u_acc the unit roundoff of the accumulation and u_out
that of the result's dtype:

    float64  u_acc = u_out = 2^-53
    float32  u_acc = u_out = 2^-24
    bfloat16 u_acc = 2^-24 (bf16 products are exact in f32 and convkit accumulates in f32),
             u_out = 2^-8 (one rounding of the f32 result to bf16: half an ulp of an 8-bit
             significand)
    float16  u_acc = 2^-24, u_out = 2^-11 (as bf16, with f16's 11-bit significand)

(K + 2) * u_acc * |conv| is the classical worst-case bound of a recursive sum of K products
(gamma_K), whatever order an engine sums in; the factor 2 leaves room for the few extra roundings
of blocked/split summation. The bound is therefore independent of the engine's algorithm and
still catches any real bug (a wrong tap, pad or group is off by O(|x||w|), millions of times the
bound). Post-ops other than relu apply a function to the convolution; their check widens u_out by
the function's conditioning (stated at the test).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit

ENGINES = [e for e in ("cpu", "ref") if e in convkit.available_engines()]
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CK_CONV = {1: convkit.conv1d, 2: convkit.conv2d, 3: convkit.conv3d}
TDT = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
U_ACC = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "bfloat16": 2.0 ** -24, "float16": 2.0 ** -24}
# PyTorch's own 'same' with an even kernel warns that it pads a copy: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
U_OUT = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}


def as_torch(y):
    return torch.from_dlpack(y) if isinstance(y, convkit.Tensor) else y


def check(got, want, absref, dtype, K, what, widen=1.0):
    got = as_torch(got)
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert str(got.dtype) == "torch." + dtype, f"{what}: dtype {got.dtype}"
    err = (got.to(torch.float64) - want).abs()
    bound = 2.0 * ((K + 2) * U_ACC[dtype] * absref + widen * U_OUT[dtype] * want.abs()) + 1e-300
    ok = err <= bound
    if not bool(ok.all()):
        i = int((err / bound).flatten().nan_to_num(float("inf")).argmax())
        raise AssertionError(f"{what}: {int((~ok).sum())} element(s) outside the bound; worst at flat index {i}: "
                             f"got {got.flatten()[i].item()!r}, want {want.flatten()[i].item()!r}, "
                             f"bound {bound.flatten()[i].item():.3g} (dtype {dtype}, K {K})")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand(shape, dtype, g, fmt="contiguous"):
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(TDT[dtype])
    return to_format(x, fmt)


def to_format(x, fmt):
    """channels_last for any rank >= 3: (N, spatial..., C) in memory, sizes unchanged."""
    if fmt == "contiguous":
        return x.contiguous()
    nd = x.dim()
    perm = (0,) + tuple(range(2, nd)) + (1,)
    back = (0, nd - 1) + tuple(range(1, nd - 1))
    return x.permute(perm).contiguous().permute(back)


def is_channels_last(t):
    st, sz = t.stride(), t.shape
    want = to_format(torch.empty(tuple(sz)), "channels_last").stride()
    return all(a == b for a, b, s in zip(st, want, sz) if s != 1)


# ------------------------------------------------------------------------------------------------
# Cases: convkit's arguments and the PyTorch call that computes the same thing. `pad` (F.pad's
# tuple, last dimension first) is applied to the input before a padding=0 PyTorch call.
# ------------------------------------------------------------------------------------------------
def case(name, nsp, n, c, oc, spatial, k, ck=None, tk=None, pad=None):
    ck = dict(ck or {})
    return pytest.param(dict(nsp=nsp, n=n, c=c, oc=oc, spatial=spatial, k=k, ck=ck,
                             tk=dict(ck if tk is None else tk), pad=pad), id=name)


CASES = [
    case("1d", 1, 2, 4, 6, (11,), (3,), dict(padding=1)),
    case("1d_s2_d2", 1, 2, 4, 6, (13,), (3,), dict(stride=2, padding=2, dilation=2)),
    case("1d_same_even", 1, 2, 3, 2, (10,), (4,), dict(padding="same")),
    case("2d", 2, 2, 4, 8, (7, 9), (3, 3), dict(padding=1)),
    case("2d_tuples", 2, 1, 3, 5, (9, 8), (3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    case("2d_one_tuple", 2, 1, 3, 5, (9, 8), (3, 3), dict(stride=(2,), padding=[1], dilation=(1,))),
    case("2d_groups", 2, 2, 6, 9, (6, 6), (3, 3), dict(groups=3, padding=1)),
    case("2d_depthwise", 2, 2, 8, 8, (7, 7), (3, 3), dict(groups=8, padding=1, stride=2)),
    case("2d_depthwise_x2", 2, 1, 4, 8, (6, 6), (3, 3), dict(groups=4)),
    case("2d_1x1", 2, 2, 8, 4, (5, 5), (1, 1)),
    case("2d_same_odd", 2, 1, 3, 4, (7, 6), (3, 5), dict(padding="same")),
    case("2d_same_even", 2, 1, 3, 4, (7, 6), (4, 2), dict(padding="same", dilation=(1, 3))),
    case("2d_valid", 2, 1, 3, 4, (7, 6), (3, 3), dict(padding="valid")),
    case("2d_asym_pairs", 2, 2, 3, 4, (6, 7), (3, 3), dict(padding=((1, 2), (0, 3))),
         tk=dict(), pad=(0, 3, 1, 2)),
    case("2d_asym_sides", 2, 1, 4, 4, (8, 8), (3, 3), dict(stride=2, padding=1, padding_r=0),
         tk=dict(stride=2), pad=(1, 0, 1, 0)),
    case("2d_asym_lr", 2, 1, 2, 3, (5, 6), (2, 3), dict(padding_l=(0, 2), padding_r=(1, 0)),
         tk=dict(), pad=(2, 0, 0, 1)),
    case("3d", 3, 1, 3, 4, (5, 6, 5), (3, 3, 3), dict(padding=1)),
    case("3d_s2_groups", 3, 2, 4, 4, (6, 5, 7), (3, 2, 3), dict(stride=2, groups=2, padding=(1, 0, 1))),
    case("3d_same", 3, 1, 2, 3, (4, 5, 4), (2, 3, 2), dict(padding="same")),
]


def make_inputs(p, dtype, seed, fmt="contiguous", bias=True):
    g = gen(seed)
    nsp = p["nsp"]
    groups = p["ck"].get("groups", 1)
    x = rand((p["n"], p["c"]) + p["spatial"], dtype, g, fmt)
    w = rand((p["oc"], p["c"] // groups) + p["k"], dtype, g, fmt)
    b = rand((p["oc"],), dtype, g) if bias else None
    return nsp, x, w, b


def torch_forward(p, x, w, b):
    """(want, |conv|) in float64."""
    f = TORCH_CONV[p["nsp"]]
    X, W = x.to(torch.float64), w.to(torch.float64)
    B = None if b is None else b.to(torch.float64)
    if p["pad"]:
        X_abs = F.pad(X.abs(), p["pad"])
        X = F.pad(X, p["pad"])
    else:
        X_abs = X.abs()
    want = f(X, W, B, **p["tk"])
    absref = f(X_abs, W.abs(), None if B is None else B.abs(), **p["tk"])
    return want, absref


def torch_backward(p, x, w, gy):
    """(gx, gw, gb) and their |.| bounds, by autograd in float64."""
    f = TORCH_CONV[p["nsp"]]

    def grads(X, W, GY):
        X = X.detach().requires_grad_()
        W = W.detach().requires_grad_()
        B = torch.zeros(W.shape[0], dtype=torch.float64, requires_grad=True)
        Xp = F.pad(X, p["pad"]) if p["pad"] else X
        f(Xp, W, B, **p["tk"]).backward(GY)
        return X.grad, W.grad, B.grad

    X, W, GY = x.to(torch.float64), w.to(torch.float64), gy.to(torch.float64)
    return grads(X, W, GY), grads(X.abs(), W.abs(), GY.abs())


def k_forward(p):
    return p["c"] // p["ck"].get("groups", 1) * int(np.prod(p["k"])) + 1


# ------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", CASES)
def test_forward(p, dtype, engine):
    nsp, x, w, b = make_inputs(p, dtype, 1)
    y = CK_CONV[nsp](x, w, b, engine=engine, **p["ck"])
    assert isinstance(y, convkit.Tensor)
    want, absref = torch_forward(p, x, w, b)
    check(y, want, absref, dtype, k_forward(p), f"forward {engine}")
    assert y.device == "cpu" and y.dtype == dtype
    assert y.stride() == tuple(torch.empty(want.shape).stride())  # channels-first in, channels-first out


SMALL = [c for c in CASES if c.id in ("1d_s2_d2", "2d", "2d_groups", "2d_depthwise", "2d_asym_pairs", "3d")]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("p", SMALL)
def test_forward_16bit(p, fmt, dtype, engine):
    nsp, x, w, b = make_inputs(p, dtype, 2, fmt)
    y = CK_CONV[nsp](x, w, b, engine=engine, **p["ck"])
    want, absref = torch_forward(p, x, w, b)
    check(y, want, absref, dtype, k_forward(p), f"forward {dtype} {fmt} {engine}")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("p", [c for c in CASES if c.id in ("1d", "2d_tuples", "2d_depthwise", "3d_s2_groups")])
def test_forward_channels_last(p, dtype, engine):
    nsp, x, w, b = make_inputs(p, dtype, 3, "channels_last")
    y = CK_CONV[nsp](x, w, b, engine=engine, **p["ck"])
    want, absref = torch_forward(p, x, w, b)
    check(y, want, absref, dtype, k_forward(p), f"forward channels_last {engine}")
    yt = as_torch(y)
    assert is_channels_last(yt), f"channels_last input gave strides {yt.stride()}"
    if nsp >= 2:
        fmt = torch.channels_last if nsp == 2 else torch.channels_last_3d
        assert yt.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("engine", ENGINES)
def test_forward_numpy_inputs(engine):
    rs = np.random.default_rng(7)
    x = rs.standard_normal((2, 4, 9, 7))
    w = rs.standard_normal((6, 2, 3, 3))
    b = rs.standard_normal(6)
    y = convkit.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), groups=2, engine=engine)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=(2, 1), padding=(1, 2),
                    groups=2)
    absref = F.conv2d(torch.from_numpy(x).abs(), torch.from_numpy(w).abs(), torch.from_numpy(b).abs(),
                      stride=(2, 1), padding=(1, 2), groups=2)
    check(y, want, absref, "float64", 2 * 9 + 1, "numpy f64")
    assert np.from_dlpack(y).dtype == np.float64


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("nsp", [1, 2, 3])
def test_forward_unbatched(nsp, engine):
    g = gen(4)
    x = rand((3,) + (7,) * nsp, "float32", g)
    w = rand((5, 3) + (3,) * nsp, "float32", g)
    b = rand((5,), "float32", g)
    y = CK_CONV[nsp](x, w, b, padding=1, engine=engine)
    want = TORCH_CONV[nsp](x.double(), w.double(), b.double(), padding=1)
    absref = TORCH_CONV[nsp](x.double().abs(), w.double().abs(), b.double().abs(), padding=1)
    assert y.shape == (5,) + (7,) * nsp
    check(y, want, absref, "float32", 3 * 3 ** nsp + 1, "unbatched")


@pytest.mark.parametrize("engine", ENGINES)
def test_forward_strided_input(engine):
    # A non-dense view (every other column): convkit reads it through a dense temporary.
    g = gen(5)
    base = rand((2, 4, 9, 16), "float32", g)
    x = base[:, :, :, ::2]
    w = rand((3, 4, 3, 3), "float32", g)
    y = convkit.conv2d(x, w, padding=1, engine=engine)
    want = F.conv2d(x.double(), w.double(), padding=1)
    absref = F.conv2d(x.double().abs(), w.double().abs(), padding=1)
    check(y, want, absref, "float32", 4 * 9, "strided input")


def test_engines_agree():
    if len(ENGINES) < 2:
        pytest.skip("one CPU engine in this build")
    g = gen(6)
    x, w, b = rand((2, 8, 10, 10), "float32", g), rand((8, 4, 3, 3), "float32", g), rand((8,), "float32", g)
    ys = [as_torch(convkit.conv2d(x, w, b, padding="same", groups=2, engine=e)).double() for e in ENGINES]
    absref = F.conv2d(x.double().abs(), w.double().abs(), b.double().abs(), padding=1, groups=2)
    bound = 2 * 2 * (4 * 9 + 3) * 2.0 ** -24 * absref + 1e-30
    assert bool(((ys[0] - ys[1]).abs() <= bound).all())


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_batch(engine):
    x = torch.empty(0, 4, 6, 6)
    w = torch.randn(5, 4, 3, 3, generator=gen(8))
    y = convkit.conv2d(x, w, engine=engine)
    assert y.shape == (0, 5, 4, 4)
    gw, gb = convkit.conv_backward_weights(torch.empty(0, 5, 4, 4), x, (5, 4, 3, 3), bias=True, engine=engine)
    assert bool((as_torch(gw) == 0).all()) and bool((as_torch(gb) == 0).all())


# ------------------------------------------------------------------------------------------------
# Backward
# ------------------------------------------------------------------------------------------------
def out_shape(p, x, w):
    with torch.no_grad():
        X = F.pad(x.double(), p["pad"]) if p["pad"] else x.double()
        return TORCH_CONV[p["nsp"]](X, w.double(), **p["tk"]).shape


def run_backward(p, dtype, engine, fmt, seed):
    nsp, x, w, _ = make_inputs(p, dtype, seed, fmt, bias=False)
    groups = p["ck"].get("groups", 1)
    gy = to_format(rand(out_shape(p, x, w), dtype, gen(seed + 100)), fmt)
    gx = convkit.conv_backward_data(gy, w, tuple(x.shape), engine=engine, **p["ck"])
    gw, gb = convkit.conv_backward_weights(gy, x, tuple(w.shape), bias=True, engine=engine, **p["ck"])
    (tx, tw, tb), (ax, aw, ab) = torch_backward(p, x, w, gy)
    k_data = p["oc"] // groups * int(np.prod(p["k"]))
    k_wei = p["n"] * int(np.prod(gy.shape[2:]))
    check(gx, tx, ax, dtype, k_data, f"backward_data {engine}")
    check(gw, tw, aw, dtype, k_wei, f"backward_weights {engine}")
    check(gb, tb, ab, dtype, k_wei, f"backward_bias {engine}")
    return as_torch(gx), as_torch(gw)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", CASES)
def test_backward(p, dtype, engine):
    gx, gw = run_backward(p, dtype, engine, "contiguous", 11)
    assert not is_channels_last(gx) or gx.shape[1] == 1 or all(s == 1 for s in gx.shape[2:])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("p", [c for c in CASES if c.id in ("1d_same_even", "2d_depthwise", "2d_asym_sides", "3d")])
def test_backward_channels_last(p, dtype, engine):
    gx, gw = run_backward(p, dtype, engine, "channels_last", 12)
    assert is_channels_last(gx), f"grad_input strides {gx.stride()}"
    assert is_channels_last(gw), f"grad_weight strides {gw.stride()}"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("p", SMALL)
def test_backward_16bit(p, dtype, engine):
    run_backward(p, dtype, engine, "contiguous", 13)


@pytest.mark.parametrize("engine", ENGINES)
def test_backward_matches_torch_nn_grad(engine):
    # The same gradients as torch.nn.grad's helpers, which take the same arguments.
    g = gen(14)
    x, w = rand((2, 4, 9, 8), "float64", g), rand((6, 2, 3, 3), "float64", g)
    gy = rand(F.conv2d(x, w, stride=2, padding=1, groups=2).shape, "float64", g)
    gx = convkit.conv_backward_data(gy, w, x.shape, 2, 1, 1, 2, engine=engine)
    gw, gb = convkit.conv_backward_weights(gy, x, w.shape, 2, 1, 1, 2, engine=engine)
    assert gb is None
    torch.testing.assert_close(as_torch(gx), torch.nn.grad.conv2d_input(x.shape, w, gy, 2, 1, 1, 2),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(as_torch(gw), torch.nn.grad.conv2d_weight(x, w.shape, gy, 2, 1, 1, 2),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("nsp", [1, 2, 3])
def test_backward_unbatched(nsp, engine):
    g = gen(15)
    x = rand((3,) + (6,) * nsp, "float64", g)
    w = rand((4, 3) + (3,) * nsp, "float64", g)
    gy = rand((4,) + (6,) * nsp, "float64", g)
    gx = convkit.conv_backward_data(gy, w, x.shape, padding="same", engine=engine)
    gw, gb = convkit.conv_backward_weights(gy, x, w.shape, padding="same", bias=True, engine=engine)
    X = x.clone().requires_grad_()
    W = w.clone().requires_grad_()
    B = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    TORCH_CONV[nsp](X, W, B, padding="same").backward(gy)
    torch.testing.assert_close(as_torch(gx), X.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(as_torch(gw), W.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(as_torch(gb), B.grad, rtol=1e-12, atol=1e-12)


def test_backward_weights_bias_out_only():
    g = gen(16)
    x, gy = rand((2, 3, 5, 5), "float32", g), rand((2, 4, 3, 3), "float32", g)
    gb_buf = torch.full((4,), 7.0)
    gw, gb = convkit.conv_backward_weights(gy, x, (4, 3, 3, 3), bias_out=gb_buf)  # bias_out implies bias=True
    assert gb.data_ptr() == gb_buf.data_ptr()
    torch.testing.assert_close(gb_buf, gy.sum(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Post-ops
# ------------------------------------------------------------------------------------------------
# (spec, f(y) in float64, conditioning): the check's u_out is widened by `cond` for functions that
# amplify the relative error of their argument or are evaluated in f32 with a few ulps of error
# (|f'(y) * y / f(y)| stays below cond over the values produced here).
ELTWISE = [
    ("relu", F.relu, 1),
    ("relu:0.1", lambda y: F.leaky_relu(y, 0.1), 1),
    ("linear:2:0.5", lambda y: 2 * y + 0.5, 4),
    ("clip:-0.5:0.75", lambda y: y.clamp(-0.5, 0.75), 1),
    ("elu", F.elu, 8),
    ("elu:0.5", lambda y: F.elu(y, 0.5), 8),
    ("swish", lambda y: y * torch.sigmoid(y), 8),
    ("swish:2", lambda y: y * torch.sigmoid(2 * y), 8),
    ("gelu_erf", F.gelu, 8),
    ("gelu_tanh", lambda y: F.gelu(y, approximate="tanh"), 8),
    ("logistic", torch.sigmoid, 8),
    ("tanh", torch.tanh, 8),
    ("hardswish", F.hardswish, 8),
    ("mish", F.mish, 8),
    ("abs", torch.abs, 1),
    ("square", torch.square, 4),
    ("abs+sqrt", lambda y: y.abs().sqrt(), 4),
    ("linear:0.1:0+exp", lambda y: torch.exp(0.1 * y), 8),
    ("abs+linear:1:1+log", lambda y: torch.log(y.abs() + 1), 8),
    ("relu+linear:-1:0+relu", lambda y: torch.zeros_like(y), 1),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("spec,fn,cond", ELTWISE, ids=[e[0] for e in ELTWISE])
def test_post_ops_eltwise(spec, fn, cond, engine):
    g = gen(21)
    x, w, b = rand((2, 4, 6, 6), "float32", g), rand((5, 4, 3, 3), "float32", g), rand((5,), "float32", g)
    y = convkit.conv2d(x, w, b, padding=1, post_ops=spec, engine=engine)
    conv = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    absref = F.conv2d(x.double().abs(), w.double().abs(), b.double().abs(), padding=1)
    want = fn(conv)
    # The conv's own error (gamma_K * |conv|) passes through f with |f'| <= cond / 2 here.
    err = (as_torch(y).double() - want).abs()
    bound = cond * (2 * (37 + 2) * 2.0 ** -24 * absref + 8 * 2.0 ** -24 * want.abs()) + 1e-30
    assert bool((err <= bound).all()), f"{spec}: max error {err.max().item():.3g}"


@pytest.mark.parametrize("engine", ENGINES)
def test_post_ops_forms_agree(engine):
    g = gen(22)
    x, w = rand((1, 3, 7, 7), "float32", g), rand((4, 3, 3, 3), "float32", g)
    res = rand((1, 4, 7, 7), "float32", g)

    def run(spec):
        return as_torch(convkit.conv2d(x, w, padding=1, post_ops=spec, engine=engine))

    ref = run("relu:0.25+linear:2:1")
    for spec in (["relu:0.25", "linear:2:1"], [("relu", 0.25), ("linear", 2, 1.0)], ("relu:0.25+linear:2:1",),
                 [("relu", 0.25), "linear:2:1"], ["relu:0.25+linear:2:1"]):
        assert torch.equal(run(spec), ref), spec
    assert torch.equal(run(("relu", 0.25)), run("relu:0.25"))
    assert torch.equal(run([("add", res)]), run(("add", res)))
    assert torch.equal(run(None), run("")) and torch.equal(run([]), run(None))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_post_ops_binary_and_sum(dtype, engine):
    g = gen(23)
    x, w, b = rand((2, 4, 6, 6), dtype, g), rand((6, 4, 3, 3), dtype, g), rand((6,), dtype, g)
    full = rand((2, 6, 6, 6), dtype, g)
    per_c = rand((1, 6, 1, 1), dtype, g)
    per_c3 = rand((6, 1, 1), dtype, g)        # right-aligned: (1, 6, 1, 1)
    scalar = torch.tensor(0.75, dtype=TDT[dtype])  # 0-d: broadcast to every element
    pos = rand((2, 6, 6, 6), dtype, g).abs() + 0.5
    conv = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    absref = F.conv2d(x.double().abs(), w.double().abs(), b.double().abs(), padding=1)
    d = lambda t: t.double()  # noqa: E731
    cases = [
        ([("add", full)], conv + d(full), absref + d(full).abs()),
        ([("mul", per_c)], conv * d(per_c), absref * d(per_c).abs()),
        ([("sub", per_c3)], conv - d(per_c3), absref + d(per_c3).abs()),
        ([("div", pos)], conv / d(pos), absref / d(pos)),
        ([("max", scalar)], conv.clamp(min=0.75), absref),
        ([("min", full), "relu"], torch.minimum(conv, d(full)).relu(), absref + d(full).abs()),
        ([("add", full), ("mul", per_c), "relu"], ((conv + d(full)) * d(per_c)).relu(),
         (absref + d(full).abs()) * d(per_c).abs()),
    ]
    for spec, want, ab in cases:
        y = convkit.conv2d(x, w, b, padding=1, post_ops=spec, engine=engine)
        check(y, want, ab, dtype, 4 * 9 + 3, f"binary {spec[0][0]}", widen=4)
    # sum: accumulates into out's previous contents.
    prev = rand((2, 6, 6, 6), dtype, g)
    out = prev.clone()
    y = convkit.conv2d(x, w, b, padding=1, post_ops="sum:0.5+relu", out=out, engine=engine)
    assert y.data_ptr() == out.data_ptr()
    check(out, (conv + 0.5 * d(prev)).relu(), absref + 0.5 * d(prev).abs(), dtype, 4 * 9 + 3, "sum", widen=4)


@pytest.mark.parametrize("engine", ENGINES)
def test_post_ops_bf16_channels_last(engine):
    g = gen(24)
    x = rand((1, 8, 6, 6), "bfloat16", g, "channels_last")
    w = rand((8, 8, 3, 3), "bfloat16", g, "channels_last")
    r = rand((1, 8, 6, 6), "bfloat16", g, "channels_last")
    y = convkit.conv2d(x, w, padding=1, post_ops=[("add", r), "relu"], engine=engine)
    conv = F.conv2d(x.double(), w.double(), padding=1)
    absref = F.conv2d(x.double().abs(), w.double().abs(), padding=1) + r.double().abs()
    check(y, (conv + r.double()).relu(), absref, "bfloat16", 8 * 9 + 1, "bf16 add+relu")
    assert is_channels_last(as_torch(y))


# ------------------------------------------------------------------------------------------------
# prepack_weights
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_prepack_weights(fmt, engine):
    g = gen(31)
    x = rand((2, 8, 9, 9), "float32", g, fmt)
    w = rand((16, 8, 3, 3), "float32", g, fmt)
    b = rand((16,), "float32", g)
    pw = convkit.prepack_weights(w, x.shape, 2, 1, engine=engine)
    assert isinstance(pw, convkit.PackedWeights)
    assert pw.shape == (16, 8, 3, 3) and pw.dtype == "float32" and pw.device == "cpu" and pw.engine == engine
    assert "PackedWeights" in repr(pw)
    plain = as_torch(convkit.conv2d(x, w, b, 2, 1, engine=engine))
    packed = as_torch(convkit.conv2d(x, pw, b, 2, 1, engine=engine))
    torch.testing.assert_close(packed, plain, rtol=1e-6, atol=1e-6)
    # Another batch size than packed for: still right.
    x3 = rand((3, 8, 9, 9), "float32", g, fmt)
    torch.testing.assert_close(as_torch(convkit.conv2d(x3, pw, b, 2, 1)),
                               as_torch(convkit.conv2d(x3, w, b, 2, 1, engine=engine)), rtol=1e-6, atol=1e-6)
    # The caller's weights may change (or go away) after packing.
    keep = plain.clone()
    w.zero_()
    torch.testing.assert_close(as_torch(convkit.conv2d(x, pw, b, 2, 1)), keep, rtol=1e-6, atol=1e-6)


def test_prepack_weights_sample_tensor_and_post_ops():
    g = gen(32)
    x = rand((1, 4, 8, 8), "float32", g, "channels_last")
    w = rand((4, 4, 3, 3), "float32", g)
    pw = convkit.prepack_weights(w, x, padding="same", post_ops="relu")  # a sample input: its format
    y = convkit.conv2d(x, pw, padding="same", post_ops="relu")
    torch.testing.assert_close(as_torch(y), F.conv2d(x, w, padding="same").relu(), rtol=1e-5, atol=1e-5)
    unb = convkit.prepack_weights(w, (4, 8, 8))  # an unbatched input size
    torch.testing.assert_close(as_torch(convkit.conv2d(x[0], unb)), F.conv2d(x[0], w), rtol=1e-5, atol=1e-5)


def test_prepack_weights_wrong_engine():
    if "cpu" not in ENGINES:
        pytest.skip("no cpu engine")
    w = torch.randn(4, 4, 3, 3, generator=gen(33))
    x = torch.randn(1, 4, 6, 6, generator=gen(34))
    pw = convkit.prepack_weights(w, x.shape, engine="cpu")
    with pytest.raises(convkit.InvalidArgumentError, match="packed for engine 'cpu'"):
        convkit.conv2d(x, pw, engine="ref")
    with pytest.raises(convkit.InvalidArgumentError, match="dtype"):
        convkit.conv2d(x.double(), pw)


# ------------------------------------------------------------------------------------------------
# empty, out=, switches, caches
# ------------------------------------------------------------------------------------------------
def test_empty():
    t = convkit.empty((2, 3, 4, 5))
    assert t.shape == (2, 3, 4, 5) and t.dtype == "float32" and t.device == "cpu" and t.stride() == (60, 20, 5, 1)
    assert t.ndim == 4 and t.numel() == 120 and t.size() == t.shape
    t = convkit.empty([2, 3, 4, 5], dtype="bf16", memory_format="channels_last")
    assert t.dtype == "bfloat16" and t.stride() == (60, 1, 15, 3)
    t = convkit.empty((2, 3, 4, 5, 6), dtype=torch.float64, memory_format=torch.channels_last_3d)
    assert t.dtype == "float64" and t.stride() == (360, 1, 90, 18, 3)
    assert convkit.empty(7, dtype=np.float16).shape == (7,)
    assert convkit.empty((3,), dtype=np.dtype("float64"), device=torch.device("cpu")).dtype == "float64"
    with pytest.raises(TypeError):
        convkit.empty((2,), dtype="int32")
    with pytest.raises(ValueError):
        convkit.empty((2, 3, 4, 5), memory_format="nhwc")
    with pytest.raises(ValueError):
        convkit.empty((2, 3), device="tpu")


@pytest.mark.parametrize("engine", ENGINES)
def test_out_convkit_tensor(engine):
    g = gen(41)
    x, w = rand((1, 4, 6, 6), "float32", g, "channels_last"), rand((4, 4, 3, 3), "float32", g)
    out = convkit.empty((1, 4, 6, 6), memory_format="channels_last")
    y = convkit.conv2d(x, w, padding=1, out=out, engine=engine)
    assert y is out
    torch.testing.assert_close(as_torch(out), F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)
    # A channels-first out for a channels-last input: convkit writes whatever layout out has.
    out2 = np.full((1, 4, 6, 6), np.nan, dtype=np.float32)
    convkit.conv2d(x, w, padding=1, out=out2, engine=engine)
    np.testing.assert_allclose(out2, F.conv2d(x, w, padding=1).numpy(), rtol=1e-5, atol=1e-5)


def test_switches():
    n = convkit.get_num_threads()
    try:
        convkit.set_num_threads(1)
        assert convkit.get_num_threads() == 1
    finally:
        convkit.set_num_threads(n)
    assert convkit.get_num_threads() == n
    for setter, getter in ((convkit.set_deterministic, convkit.deterministic),
                           (convkit.set_allow_tf32, convkit.allow_tf32),
                           (convkit.set_autotune, convkit.autotune)):
        before = getter()
        try:
            setter(not before)
            assert getter() == (not before)
        finally:
            setter(before)
        assert getter() == before
    convkit.set_tune_file("")
    with pytest.raises(convkit.InvalidArgumentError):
        convkit.set_num_threads(0)
    engines = convkit.available_engines()
    assert "ref" in engines and all(e in ("cpu", "ref", "cuda") for e in engines)
    if "cpu" in engines:
        assert "oneDNN" in convkit.engine_info("cpu")
    assert isinstance(convkit.engine_info("ref"), str)
    with pytest.raises(convkit.InvalidArgumentError, match="unknown engine"):
        convkit.engine_info("tpu")


@pytest.mark.parametrize("engine", ENGINES)
def test_cache_stats(engine):
    g = gen(42)
    x, w = rand((1, 3, 11, 13), "float32", g), rand((5, 3, 3, 2), "float32", g)  # a shape no other test uses
    convkit.clear_cache(engine)
    s0 = convkit.cache_stats(engine)
    assert set(s0) == {"hits", "misses", "evictions", "size", "capacity"}
    assert all(isinstance(v, int) for v in s0.values())
    if s0["capacity"] == 0:
        pytest.skip(f"engine {engine} keeps no plan cache")
    assert s0["size"] == 0
    convkit.conv2d(x, w, engine=engine)
    s1 = convkit.cache_stats(engine)
    assert s1["misses"] == s0["misses"] + 1 and s1["size"] == 1
    for _ in range(3):
        convkit.conv2d(x, w, engine=engine)
    s2 = convkit.cache_stats(engine)
    assert s2["hits"] == s1["hits"] + 3 and s2["misses"] == s1["misses"] and s2["size"] == 1
    convkit.clear_cache(engine)
    assert convkit.cache_stats(engine)["size"] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_deterministic(engine):
    g = gen(43)
    x, gy = rand((4, 8, 12, 12), "float32", g), rand((4, 8, 12, 12), "float32", g)
    a, _ = convkit.conv_backward_weights(gy, x, (8, 8, 3, 3), padding=1, deterministic=True, engine=engine)
    b, _ = convkit.conv_backward_weights(gy, x, (8, 8, 3, 3), padding=1, deterministic=True, engine=engine)
    assert torch.equal(as_torch(a), as_torch(b))


def test_gil_released_threads():
    # Calls from several threads at once (the GIL is released around the convolution).
    import threading
    g = gen(44)
    x, w = rand((2, 8, 16, 16), "float32", g), rand((8, 8, 3, 3), "float32", g)
    want = F.conv2d(x, w, padding=1)
    errors = []

    def work():
        try:
            for _ in range(20):
                torch.testing.assert_close(as_torch(convkit.conv2d(x, w, padding=1)), want, rtol=1e-5, atol=1e-5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_docstrings():
    for name in convkit.__all__:
        obj = getattr(convkit, name)
        assert obj.__doc__ and len(obj.__doc__.strip()) > 10, name
    assert "padding='same'" in convkit.conv2d.__doc__ or "'same'" in convkit.conv2d.__doc__
