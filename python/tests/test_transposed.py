"""convkit's transposed convolutions (conv_transpose1d/2d/3d, conv_transpose_backward_data,
conv_transpose_backward_weights, conv_transpose_output_shape) against PyTorch's
F.conv_transpose1d/2d/3d and its autograd on CPU.

Tolerances: test_functional.py's bound (its docstring derives it), with the reduction lengths of
a transposed convolution: K = C_in/groups * kernel volume (+1 for the bias) forward (an upper
bound: an output element sums over the taps that reach it); C_out/groups * kernel volume for the
input gradient (a convolution of grad_output with the weight); N * output volume for the weight
and bias gradients.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
from test_functional import ENGINES, as_torch, check, gen, is_channels_last, rand, to_format

T_CONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
CK_T = {1: convkit.conv_transpose1d, 2: convkit.conv_transpose2d, 3: convkit.conv_transpose3d}
CUDA = torch.cuda.is_available() and "cuda" in convkit.available_engines()


# ------------------------------------------------------------------------------------------------
# Cases: convkit's arguments and the PyTorch call computing the same thing. `crop` ((l, r) per
# spatial dimension) is taken off PyTorch's padding=0 result for convkit's asymmetric padding.
# ------------------------------------------------------------------------------------------------
def case(name, nsp, n, c, oc, spatial, k, ck=None, tk=None, crop=None):
    ck = dict(ck or {})
    return pytest.param(dict(nsp=nsp, n=n, c=c, oc=oc, spatial=spatial, k=k, ck=ck,
                             tk=dict(ck if tk is None else tk), crop=crop), id=name)


CASES = [
    case("1d", 1, 2, 4, 6, (7,), (3,), dict(stride=2, padding=1, output_padding=1)),
    case("1d_dilation", 1, 2, 3, 5, (6,), (3,), dict(dilation=2, padding=2)),
    case("1d_depthwise", 1, 2, 4, 4, (8,), (4,), dict(stride=3, groups=4, output_padding=2)),
    case("2d", 2, 2, 4, 6, (5, 4), (3, 3), dict(stride=2, padding=1, output_padding=1)),
    case("2d_s1", 2, 2, 5, 3, (6, 6), (3, 3), dict(padding=1)),
    case("2d_tuples", 2, 1, 3, 4, (5, 6), (3, 2),
         dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), dilation=(1, 2))),
    case("2d_groups", 2, 2, 6, 9, (4, 5), (3, 3), dict(stride=2, groups=3, padding=1, output_padding=1)),
    case("2d_depthwise", 2, 2, 6, 6, (5, 5), (3, 3), dict(stride=2, groups=6, padding=1)),
    case("2d_depthwise_x2", 2, 1, 4, 8, (4, 4), (3, 3), dict(groups=4)),
    # output_padding >= stride, allowed because it is smaller than the dilation
    case("2d_op_dilation_s1", 2, 1, 3, 4, (5, 5), (3, 3), dict(dilation=3, output_padding=2)),
    case("2d_op_dilation_s2", 2, 2, 3, 4, (4, 5), (3, 2), dict(stride=2, dilation=(3, 4), output_padding=(2, 3))),
    case("2d_1x1", 2, 2, 8, 4, (5, 5), (1, 1)),
    case("2d_asym_pairs", 2, 2, 3, 4, (5, 4), (3, 3), dict(stride=2, padding=((1, 0), (0, 2))),
         tk=dict(stride=2), crop=((1, 0), (0, 2))),
    case("2d_asym_sides", 2, 1, 4, 2, (4, 4), (4, 4), dict(stride=2, padding=1, padding_r=(0, 2)),
         tk=dict(stride=2), crop=((1, 0), (1, 2))),
    case("3d", 3, 1, 3, 4, (3, 4, 3), (3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    case("3d_groups", 3, 2, 4, 6, (3, 3, 4), (2, 3, 2),
         dict(stride=(1, 2, 2), groups=2, dilation=(2, 1, 1), output_padding=(1, 1, 0), padding=(0, 1, 0))),
]
SMALL = [c for c in CASES if c.id in ("1d", "2d", "2d_groups", "2d_depthwise", "2d_op_dilation_s2",
                                      "2d_asym_pairs", "3d")]


def ck_call(p, dtype, engine, fn, *args, **kwargs):
    """fn(*args, engine=engine, **kwargs): every engine takes every case, output_padding >= stride
    included (the cpu engine crops the rows no window reaches where oneDNN cannot pad)."""
    return fn(*args, engine=engine, **kwargs)


def make_inputs(p, dtype, seed, fmt="contiguous", bias=True):
    g = gen(seed)
    groups = p["ck"].get("groups", 1)
    x = rand((p["n"], p["c"]) + p["spatial"], dtype, g, fmt)
    w = rand((p["c"], p["oc"] // groups) + p["k"], dtype, g, fmt)  # [C_in, C_out / groups, k...]
    b = rand((p["oc"],), dtype, g) if bias else None
    return x, w, b


def crop(p, y):
    if p["crop"]:
        for d, (l, r) in enumerate(p["crop"]):
            y = y.narrow(2 + d, l, y.shape[2 + d] - l - r)
    return y


def torch_forward(p, x, w, b):
    """(want, |conv_transpose|) in float64."""
    f = T_CONV[p["nsp"]]
    X, W = x.to(torch.float64), w.to(torch.float64)
    B = None if b is None else b.to(torch.float64)
    want = crop(p, f(X, W, B, **p["tk"]))
    absref = crop(p, f(X.abs(), W.abs(), None if B is None else B.abs(), **p["tk"]))
    return want, absref


def torch_backward(p, x, w, gy):
    """(gx, gw, gb) and their |.| bounds, by PyTorch's autograd in float64."""
    f = T_CONV[p["nsp"]]

    def grads(X, W, GY):
        X = X.detach().requires_grad_()
        W = W.detach().requires_grad_()
        B = torch.zeros(p["oc"], dtype=torch.float64, requires_grad=True)
        crop(p, f(X, W, B, **p["tk"])).backward(GY)
        return X.grad, W.grad, B.grad

    X, W, GY = x.to(torch.float64), w.to(torch.float64), gy.to(torch.float64)
    return grads(X, W, GY), grads(X.abs(), W.abs(), GY.abs())


def k_forward(p):
    return p["c"] // p["ck"].get("groups", 1) * int(np.prod(p["k"])) + 1


def out_shape(p, x, w):
    with torch.no_grad():
        return crop(p, T_CONV[p["nsp"]](x.double(), w.double(), **p["tk"])).shape


# ------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", CASES)
def test_forward(p, dtype, engine):
    x, w, b = make_inputs(p, dtype, 1)
    y = ck_call(p, dtype, engine, CK_T[p["nsp"]], x, w, b, **p["ck"])
    assert isinstance(y, convkit.Tensor)
    want, absref = torch_forward(p, x, w, b)
    check(y, want, absref, dtype, k_forward(p), f"transposed forward {engine}")
    assert y.device == "cpu" and y.dtype == dtype
    assert y.stride() == tuple(torch.empty(want.shape).stride())  # channels-first in, channels-first out
    geometry = {k: v for k, v in p["ck"].items()}
    assert convkit.conv_transpose_output_shape(x.shape, w.shape, **geometry) == tuple(want.shape)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("p", SMALL)
def test_forward_16bit(p, fmt, dtype, engine):
    x, w, b = make_inputs(p, dtype, 2, fmt)
    y = ck_call(p, dtype, engine, CK_T[p["nsp"]], x, w, b, **p["ck"])
    want, absref = torch_forward(p, x, w, b)
    check(y, want, absref, dtype, k_forward(p), f"transposed forward {dtype} {fmt} {engine}")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("p", [c for c in CASES if c.id in ("1d", "2d_tuples", "2d_depthwise", "3d_groups")])
def test_forward_channels_last(p, dtype, engine):
    x, w, b = make_inputs(p, dtype, 3, "channels_last")
    y = ck_call(p, dtype, engine, CK_T[p["nsp"]], x, w, b, **p["ck"])
    want, absref = torch_forward(p, x, w, b)
    check(y, want, absref, dtype, k_forward(p), f"transposed forward channels_last {engine}")
    assert is_channels_last(as_torch(y)), f"channels_last input gave strides {y.stride()}"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("nsp", [1, 2, 3])
def test_forward_unbatched(nsp, engine):
    g = gen(4)
    x = rand((3,) + (4,) * nsp, "float32", g)
    w = rand((3, 5) + (3,) * nsp, "float32", g)
    b = rand((5,), "float32", g)
    y = CK_T[nsp](x, w, b, stride=2, padding=1, output_padding=1, engine=engine)
    kw = dict(stride=2, padding=1, output_padding=1)
    want = T_CONV[nsp](x.double(), w.double(), b.double(), **kw)
    absref = T_CONV[nsp](x.double().abs(), w.double().abs(), b.double().abs(), **kw)
    assert y.shape == (5,) + (8,) * nsp == convkit.conv_transpose_output_shape(x.shape, w.shape, **kw)
    check(y, want, absref, "float32", 3 * 3 ** nsp + 1, "unbatched")


@pytest.mark.parametrize("engine", ENGINES)
def test_forward_numpy_and_positional(engine):
    # PyTorch's positional order: stride, padding, output_padding, groups, dilation.
    rs = np.random.default_rng(7)
    x = rs.standard_normal((2, 4, 5, 6))
    w = rs.standard_normal((4, 3, 3, 3))
    b = rs.standard_normal(6)
    y = convkit.conv_transpose2d(x, w, b, (2, 1), (1, 0), (1, 0), 2, (1, 2), engine=engine)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    want = F.conv_transpose2d(tx, tw, tb, (2, 1), (1, 0), (1, 0), 2, (1, 2))
    absref = F.conv_transpose2d(tx.abs(), tw.abs(), tb.abs(), (2, 1), (1, 0), (1, 0), 2, (1, 2))
    check(y, want, absref, "float64", 2 * 9 + 1, "numpy f64")
    assert np.from_dlpack(y).dtype == np.float64


@pytest.mark.parametrize("engine", ENGINES)
def test_forward_strided_input_and_out(engine):
    g = gen(5)
    x = rand((2, 4, 5, 12), "float32", g)[:, :, :, ::2]  # not dense: read through a temporary
    w = rand((4, 3, 3, 3), "float32", g)
    want = F.conv_transpose2d(x.double(), w.double(), stride=2)
    absref = F.conv_transpose2d(x.double().abs(), w.double().abs(), stride=2)
    out = torch.full(tuple(want.shape), float("nan")).to(memory_format=torch.channels_last)
    y = convkit.conv_transpose2d(x, w, stride=2, out=out, engine=engine)
    assert y.data_ptr() == out.data_ptr()
    check(out, want, absref, "float32", 4 * 9, "strided input, channels-last out")


def test_engines_agree():
    if len(ENGINES) < 2:
        pytest.skip("one CPU engine in this build")
    g = gen(6)
    x, w, b = rand((2, 8, 6, 6), "float32", g), rand((8, 4, 3, 3), "float32", g), rand((8,), "float32", g)
    ys = [as_torch(convkit.conv_transpose2d(x, w, b, 2, 1, 1, 2, engine=e)).double() for e in ENGINES]
    absref = F.conv_transpose2d(x.double().abs(), w.double().abs(), b.double().abs(), 2, 1, 1, 2)
    bound = 2 * 2 * (4 * 9 + 3) * 2.0 ** -24 * absref + 1e-30
    assert bool(((ys[0] - ys[1]).abs() <= bound).all())


# ------------------------------------------------------------------------------------------------
# Backward
# ------------------------------------------------------------------------------------------------
def run_backward(p, dtype, engine, fmt, seed):
    x, w, _ = make_inputs(p, dtype, seed, fmt, bias=False)
    groups = p["ck"].get("groups", 1)
    gy = to_format(rand(out_shape(p, x, w), dtype, gen(seed + 100)), fmt)
    gx = ck_call(p, dtype, engine, convkit.conv_transpose_backward_data, gy, w, tuple(x.shape), **p["ck"])
    gw, gb = ck_call(p, dtype, engine, convkit.conv_transpose_backward_weights, gy, x, tuple(w.shape), bias=True,
                     **p["ck"])
    (tx, tw, tb), (ax, aw, ab) = torch_backward(p, x, w, gy)
    k_data = p["oc"] // groups * int(np.prod(p["k"]))
    k_wei = p["n"] * int(np.prod(gy.shape[2:]))
    check(gx, tx, ax, dtype, k_data, f"transposed backward_data {engine}")
    check(gw, tw, aw, dtype, k_wei, f"transposed backward_weights {engine}")
    check(gb, tb, ab, dtype, k_wei, f"transposed backward_bias {engine}")
    return as_torch(gx), as_torch(gw)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", CASES)
def test_backward(p, dtype, engine):
    run_backward(p, dtype, engine, "contiguous", 11)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("p", [c for c in CASES if c.id in ("1d_dilation", "2d_depthwise", "2d_asym_sides", "3d")])
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
@pytest.mark.parametrize("nsp", [1, 2, 3])
def test_backward_unbatched_and_buffers(nsp, engine):
    g = gen(15)
    x = rand((3,) + (4,) * nsp, "float64", g)
    w = rand((3, 4) + (3,) * nsp, "float64", g)
    kw = dict(stride=2, padding=1, output_padding=1)
    gy = rand((4,) + (8,) * nsp, "float64", g)
    gx_buf = torch.full(tuple(x.shape), float("nan"), dtype=torch.float64)
    gw_buf = torch.full(tuple(w.shape), float("nan"), dtype=torch.float64)
    gb_buf = torch.full((4,), float("nan"), dtype=torch.float64)
    gx = convkit.conv_transpose_backward_data(gy, w, x.shape, out=gx_buf, engine=engine, **kw)
    gw, gb = convkit.conv_transpose_backward_weights(gy, x, w.shape, out=gw_buf, bias_out=gb_buf, engine=engine,
                                                     **kw)  # bias_out implies bias=True
    assert (gx.data_ptr(), gw.data_ptr(), gb.data_ptr()) == (gx_buf.data_ptr(), gw_buf.data_ptr(), gb_buf.data_ptr())
    X, W = x.clone().requires_grad_(), w.clone().requires_grad_()
    B = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    T_CONV[nsp](X, W, B, **kw).backward(gy)
    torch.testing.assert_close(gx_buf, X.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw_buf, W.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb_buf, B.grad, rtol=1e-12, atol=1e-12)
    gw2, gb2 = convkit.conv_transpose_backward_weights(gy, x, w.shape, engine=engine, **kw)
    assert gb2 is None
    torch.testing.assert_close(as_torch(gw2), W.grad, rtol=1e-12, atol=1e-12)


def test_backward_bias_channels_with_groups():
    # bias gradient of [C_in, C_out / groups, k...] weights: C_out = weight_size[1] * groups values
    g = gen(16)
    x, gy = rand((2, 6, 4, 4), "float32", g), rand((2, 9, 6, 6), "float32", g)
    gw, gb = convkit.conv_transpose_backward_weights(gy, x, (6, 3, 3, 3), groups=3, bias=True)
    assert gw.shape == (6, 3, 3, 3) and gb.shape == (9,)
    torch.testing.assert_close(as_torch(gb), gy.sum(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Post-ops, fused on the transposed forward
# ------------------------------------------------------------------------------------------------
ELTWISE = [
    ("relu", F.relu, 1),
    ("relu:0.1", lambda y: F.leaky_relu(y, 0.1), 1),
    ("clip:-0.5:0.75", lambda y: y.clamp(-0.5, 0.75), 1),
    ("gelu_erf", F.gelu, 8),
    ("swish", lambda y: y * torch.sigmoid(y), 8),
    ("tanh", torch.tanh, 8),
    ("linear:2:0.5+logistic", lambda y: torch.sigmoid(2 * y + 0.5), 8),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("spec,fn,cond", ELTWISE, ids=[e[0] for e in ELTWISE])
def test_post_ops_eltwise(spec, fn, cond, engine):
    g = gen(21)
    x, w, b = rand((2, 4, 5, 5), "float32", g), rand((4, 5, 3, 3), "float32", g), rand((5,), "float32", g)
    y = convkit.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, post_ops=spec, engine=engine)
    kw = dict(stride=2, padding=1, output_padding=1)
    conv = F.conv_transpose2d(x.double(), w.double(), b.double(), **kw)
    absref = F.conv_transpose2d(x.double().abs(), w.double().abs(), b.double().abs(), **kw)
    want = fn(conv)
    # the convolution's own error passes through f with |f'| <= cond / 2 here (as test_functional)
    err = (as_torch(y).double() - want).abs()
    bound = cond * (2 * (37 + 2) * 2.0 ** -24 * absref + 8 * 2.0 ** -24 * want.abs()) + 1e-30
    assert bool((err <= bound).all()), f"{spec}: max error {err.max().item():.3g}"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_post_ops_binary_and_sum(dtype, engine):
    g = gen(23)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    x, w, b = rand((2, 4, 3, 3), dtype, g), rand((4, 3, 3, 3), dtype, g), rand((6,), dtype, g)
    full = rand((2, 6, 6, 6), dtype, g)
    per_c3 = rand((6, 1, 1), dtype, g)  # right-aligned: (1, 6, 1, 1)
    conv = F.conv_transpose2d(x.double(), w.double(), b.double(), **kw)
    absref = F.conv_transpose2d(x.double().abs(), w.double().abs(), b.double().abs(), **kw)
    d = lambda t: t.double()  # noqa: E731
    for spec, want, ab in (
            ([("add", full), "relu"], (conv + d(full)).relu(), absref + d(full).abs()),
            ([("mul", per_c3)], conv * d(per_c3), absref * d(per_c3).abs()),
            ([("max", full), ("sub", per_c3)], torch.maximum(conv, d(full)) - d(per_c3),
             absref + d(full).abs() + d(per_c3).abs())):
        y = convkit.conv_transpose2d(x, w, b, post_ops=spec, engine=engine, **kw)
        check(y, want, ab, dtype, 2 * 9 + 3, f"transposed binary {spec[0][0]}", widen=4)
    prev = rand((2, 6, 6, 6), dtype, g)
    out = prev.clone()
    y = convkit.conv_transpose2d(x, w, b, post_ops="sum:0.5+relu", out=out, engine=engine, **kw)
    assert y.data_ptr() == out.data_ptr()
    check(out, (conv + 0.5 * d(prev)).relu(), absref + 0.5 * d(prev).abs(), dtype, 2 * 9 + 3, "transposed sum",
          widen=4)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("nsp", [1, 3])
def test_post_ops_1d_3d_bf16_channels_last(nsp, engine):
    g = gen(24)
    x = rand((1, 8) + (3,) * nsp, "bfloat16", g, "channels_last")
    w = rand((8, 4) + (2,) * nsp, "bfloat16", g, "channels_last")
    b = rand((4,), "bfloat16", g)
    r = rand((1, 4) + (6,) * nsp, "bfloat16", g, "channels_last")
    y = CK_T[nsp](x, w, b, stride=2, post_ops=[("add", r), "relu"], engine=engine)
    conv = T_CONV[nsp](x.double(), w.double(), b.double(), stride=2)
    absref = T_CONV[nsp](x.double().abs(), w.double().abs(), b.double().abs(), stride=2) + r.double().abs()
    check(y, (conv + r.double()).relu(), absref, "bfloat16", 8 * 2 ** nsp + 2, "bf16 add+relu")
    assert is_channels_last(as_torch(y))


# ------------------------------------------------------------------------------------------------
# conv_transpose_output_shape
# ------------------------------------------------------------------------------------------------
def test_output_shape():
    f = convkit.conv_transpose_output_shape
    assert f((2, 4, 5, 5), (4, 3, 3, 3)) == (2, 3, 7, 7)
    assert f((2, 4, 5, 5), (4, 3, 3, 3), 2, 1, 1, 2) == (2, 6, 10, 10)
    assert f([4, 5, 5], [4, 3, 3, 3], stride=1, dilation=3, output_padding=2) == (3, 13, 13)  # unbatched
    assert f((1, 2, 7), (2, 1, 4), stride=3, padding=((2, 0),)) == (1, 1, 20)
    assert f((1, 2, 7), (2, 1, 4), stride=3, padding=1, padding_r=0) == (1, 1, 21)
    assert f(torch.Size([1, 2, 3, 4, 5]), (2, 5, 1, 2, 3), stride=(1, 2, 3)) == (1, 5, 3, 8, 15)
    with pytest.raises(convkit.InvalidArgumentError, match=r"output_padding w \(2\) must be smaller than either "
                                                           r"stride \(2\) or dilation \(1\)"):
        f((2, 4, 5, 5), (4, 3, 3, 3), stride=2, output_padding=(1, 2))
    with pytest.raises(convkit.InvalidArgumentError, match="conv_transpose_output_shape: .*would be"):
        f((2, 4, 1, 1), (4, 3, 1, 1), padding=1)
    with pytest.raises(convkit.InvalidArgumentError, match="input_size .* must have 4 values"):
        f((4, 5), (4, 3, 3, 3))
    with pytest.raises(convkit.InvalidArgumentError, match="weight_size .* must have 3 to 5 values"):
        f((2, 4, 5, 5), (4, 3))
    with pytest.raises(TypeError, match="'same' and 'valid' apply to convolutions"):
        f((2, 4, 5, 5), (4, 3, 3, 3), padding="same")


# ------------------------------------------------------------------------------------------------
# Errors: the class, a message naming the values, and the caller's buffers untouched
# ------------------------------------------------------------------------------------------------
def fails(exc, match, fn, *args, watch=(), **kwargs):
    tensors = [a for a in list(args) + list(kwargs.values()) + list(watch) if isinstance(a, torch.Tensor)]
    snap = [(t, t.clone()) for t in tensors]
    with pytest.raises(exc, match=match) as ei:
        fn(*args, **kwargs)
    for t, c in snap:
        assert torch.equal(t, c), "a buffer changed"
    return ei.value


@pytest.fixture
def bufs():
    g = gen(50)
    return dict(x=rand((2, 4, 5, 5), "float32", g), w=rand((4, 3, 3, 3), "float32", g),
                b=rand((3,), "float32", g), out=torch.full((2, 3, 11, 11), 7.0))


def torch_error(*args, **kwargs):
    try:
        F.conv_transpose2d(*args, **kwargs)
    except (RuntimeError, TypeError) as e:
        return str(e)
    raise AssertionError("PyTorch accepted the call")


def test_output_padding_errors(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    e = fails(convkit.InvalidArgumentError, r"conv_transpose_forward: output_padding h \(2\) must be smaller than "
              r"either stride \(2\) or dilation \(1\)", convkit.conv_transpose2d, x, w, stride=2, output_padding=2,
              out=out)
    assert isinstance(e, ValueError)
    # PyTorch checks the same rule (its text differs; both name the values)
    assert "output padding must be smaller than either stride or dilation" in \
        torch_error(x, w, stride=2, output_padding=2)
    fails(convkit.InvalidArgumentError, r"output_padding w \(3\) must be smaller than either stride \(3\) or "
          r"dilation \(2\)", convkit.conv_transpose2d, x, w, stride=3, dilation=2, output_padding=(1, 3), out=out)
    fails(convkit.InvalidArgumentError, "negative output_padding is not supported", convkit.conv_transpose2d, x, w,
          output_padding=-1, out=out)
    assert str(fails(convkit.InvalidArgumentError, None, convkit.conv_transpose2d, x, w, output_padding=(1, 1, 1),
                     out=out)) == torch_error(x, w, output_padding=(1, 1, 1))
    fails(convkit.InvalidArgumentError, r"output_padding h \(1\) must be smaller", convkit.conv_transpose_backward_data,
          out, w, x.shape, output_padding=1, watch=[x])
    gw = torch.full((4, 3, 3, 3), 7.0)
    fails(convkit.InvalidArgumentError, r"output_padding h \(1\) must be smaller",
          convkit.conv_transpose_backward_weights, out, x, w.shape, output_padding=1, out=gw)


def test_channel_and_group_errors(bufs):
    x, w, b, out = bufs["x"], bufs["w"], bufs["b"], bufs["out"]
    fails(convkit.InvalidArgumentError, r"weights has 6 input channels \(dim 0 of \[6, 3, 3, 3\], the transposed "
          r"layout \[IC, OC/groups, k...\]\) but src has 4 channels \[2, 4, 5, 5\]", convkit.conv_transpose2d,
          x, torch.randn(6, 3, 3, 3), out=out)
    fails(convkit.InvalidArgumentError, "src has 4 channels, which groups=3 does not divide",
          convkit.conv_transpose2d, x, w, groups=3, out=out)
    # groups=2 makes C_out 6: the out= buffer for 3 channels and the bias of 3 no longer fit
    fails(convkit.InvalidArgumentError, r"out has shape \[2, 3, 11, 11\] but the result has shape \[2, 6, 7, 7\]",
          convkit.conv_transpose2d, x, w, groups=2, out=out)
    fails(convkit.InvalidArgumentError, r"bias has sizes \[3\] but must be \[6\]", convkit.conv_transpose2d, x, w, b,
          groups=2, out=torch.full((2, 6, 7, 7), 7.0))
    fails(convkit.InvalidArgumentError, "weight must have 4 dimensions .in_channels, out_channels / groups",
          convkit.conv_transpose2d, x, w[0], out=out)
    fails(convkit.InvalidArgumentError, "groups=3 does not divide", convkit.conv_transpose_backward_data, out, w,
          x.shape, groups=3, watch=[x])
    fails(convkit.InvalidArgumentError, r"diff_dst has sizes \[2, 3, 11, 11\] but the transposed convolution of "
          r"diff_src \[2, 4, 5, 5\] with weights \[4, 3, 3, 3\] produces \[2, 3, 7, 7\]",
          convkit.conv_transpose_backward_data, out, w, x.shape, out=torch.full((2, 4, 5, 5), 7.0))
    gw, gb = torch.full((4, 3, 3, 3), 7.0), torch.full((3,), 7.0)
    fails(convkit.InvalidArgumentError, r"bias_out has shape \[3\] but the result has shape \[6\]",
          convkit.conv_transpose_backward_weights, torch.zeros(2, 6, 7, 7), x, (4, 3, 3, 3), groups=2, out=gw,
          bias_out=gb)


def test_argument_errors(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    for padding in ("same", "valid"):
        fails(TypeError, "conv_transpose2d\\(\\): argument 'padding' must be tuple of ints, not str",
              convkit.conv_transpose2d, x, w, padding=padding, out=out)
    assert "must be tuple of ints, not str" in torch_error(x, w, padding="same")
    for kwargs in (dict(padding=-1), dict(stride=0), dict(groups=0), dict(stride=(1, 1, 1))):
        e = fails(convkit.InvalidArgumentError, None, convkit.conv_transpose2d, x, w, out=out, **kwargs)
        assert str(e) == torch_error(x, w, **kwargs), kwargs
    fails(convkit.InvalidArgumentError, "non-positive dilation", convkit.conv_transpose2d, x, w, dilation=0, out=out)
    fails(convkit.InvalidArgumentError, r"dst size h would be -3 = \(5 - 1\) \* 1 - 5 - 5", convkit.conv_transpose2d,
          x, w, padding=5, out=out)
    fails(convkit.InvalidArgumentError, "Expected 3D .unbatched. or 4D .batched. input to conv_transpose2d, but got "
          r"input of size: \[2, 3\]", convkit.conv_transpose2d, torch.zeros(2, 3), w, out=out)
    fails(convkit.InvalidArgumentError, "weight has dtype float64 but input has dtype float32",
          convkit.conv_transpose2d, x, w.double(), out=out)
    fails(convkit.InvalidArgumentError, "post-op 'sum' adds the destination's previous contents",
          convkit.conv_transpose2d, x, w, post_ops="sum")
    fails(convkit.InvalidArgumentError, r"do not broadcast to dst \[2, 3, 11, 11\]", convkit.conv_transpose2d, x, w,
          stride=2, post_ops=[("add", torch.zeros(1, 3, 11, 10))], out=out)
    fails(convkit.InvalidArgumentError, "input_size .* must have 4 values", convkit.conv_transpose_backward_data,
          out, w, (2, 4, 5))
    fails(convkit.InvalidArgumentError, "both batched or both unbatched", convkit.conv_transpose_backward_weights,
          out[0], x, w.shape)
    fails(convkit.InvalidArgumentError, "stream= applies to CUDA tensors", convkit.conv_transpose2d, x, w, out=out,
          stream=0)
    pw = convkit.prepack_weights(torch.randn(3, 4, 3, 3), x.shape)
    fails(TypeError, "weight is a PackedWeights", convkit.conv_transpose2d, x, pw, out=out)
    # and the failures left nothing behind: the next call works
    convkit.conv_transpose2d(x, w, stride=2, out=out)
    torch.testing.assert_close(out, F.conv_transpose2d(x, w, stride=2), rtol=1e-5, atol=1e-5)


def test_docstrings_and_exports():
    for name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose_backward_data",
                 "conv_transpose_backward_weights", "conv_transpose_output_shape"):
        assert name in convkit.__all__
        assert "output_padding" in getattr(convkit, name).__doc__, name
    assert "(C_in, C_out / groups" in convkit.conv_transpose2d.__doc__


# ------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU and convkit's cuda engine)
# ------------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device and convkit's cuda engine")


@cuda_only
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("p", SMALL)
def test_cuda_all_directions(p, bias):
    old = convkit.allow_tf32()
    convkit.set_allow_tf32(False)  # true f32, as the bounds assume
    try:
        x, w, b = make_inputs(p, "float32", 60, bias=bias)
        xc, wc, bc = (None if t is None else t.cuda() for t in (x, w, b))
        y = CK_T[p["nsp"]](xc, wc, bc, **p["ck"])
        torch.cuda.synchronize()
        assert y.device.startswith("cuda")
        want, absref = torch_forward(p, x, w, b)
        check(torch.from_dlpack(y).cpu(), want, absref, "float32", k_forward(p), "cuda transposed forward")
        gy = rand(tuple(want.shape), "float32", gen(61))
        gx = convkit.conv_transpose_backward_data(gy.cuda(), wc, tuple(x.shape), **p["ck"])
        gw, gb = convkit.conv_transpose_backward_weights(gy.cuda(), xc, tuple(w.shape), bias=bias, **p["ck"])
        torch.cuda.synchronize()
        (tx, tw, tb), (ax, aw, ab) = torch_backward(p, x, w, gy)
        groups = p["ck"].get("groups", 1)
        k_wei = p["n"] * int(np.prod(gy.shape[2:]))
        check(torch.from_dlpack(gx).cpu(), tx, ax, "float32", p["oc"] // groups * int(np.prod(p["k"])), "cuda gx")
        check(torch.from_dlpack(gw).cpu(), tw, aw, "float32", k_wei, "cuda gw")
        if bias:
            check(torch.from_dlpack(gb).cpu(), tb, ab, "float32", k_wei, "cuda gb")
    finally:
        convkit.set_allow_tf32(old)


@cuda_only
def test_cuda_post_ops():
    g = gen(62)
    x, w, b = rand((2, 4, 5, 5), "float32", g), rand((4, 6, 3, 3), "float32", g), rand((6,), "float32", g)
    r = rand((2, 6, 10, 10), "float32", g)
    old = convkit.allow_tf32()
    convkit.set_allow_tf32(False)
    try:
        y = convkit.conv_transpose2d(x.cuda(), w.cuda(), b.cuda(), 2, 1, 1, post_ops=[("add", r.cuda()), "relu"])
        torch.cuda.synchronize()
    finally:
        convkit.set_allow_tf32(old)
    conv = F.conv_transpose2d(x.double(), w.double(), b.double(), 2, 1, 1)
    absref = F.conv_transpose2d(x.double().abs(), w.double().abs(), b.double().abs(), 2, 1, 1) + r.double().abs()
    check(torch.from_dlpack(y).cpu(), (conv + r.double()).relu(), absref, "float32", 4 * 9 + 2, "cuda add+relu")
