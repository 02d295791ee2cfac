"""Failing calls: the exception class and message (PyTorch's exact text where PyTorch has the same
check), and the caller's buffers (inputs and out=) unchanged afterwards."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
from conftest import DL_CUDA, DL_UINT


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # fixed seeds for the tests that draw from torch's global generator


def rnd(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.fixture
def bufs():
    """x (2, 4, 8, 8), w (6, 4, 3, 3), b (6,), out (2, 6, 6, 6) filled with 7."""
    return dict(x=rnd(2, 4, 8, 8, seed=1), w=rnd(6, 4, 3, 3, seed=2), b=rnd(6, seed=3),
                out=np.full((2, 6, 6, 6), 7.0, dtype=np.float32))


def snapshot(arrays):
    return [(a, np.array(a, copy=True)) for a in arrays if isinstance(a, np.ndarray)] + \
           [(a, a.clone()) for a in arrays if isinstance(a, torch.Tensor)]


def unchanged(snap):
    for a, c in snap:
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, c)
        else:
            assert torch.equal(a, c)


def fails(exc, match, fn, *args, watch=(), **kwargs):
    snap = snapshot(list(args) + list(kwargs.values()) + list(watch))
    with pytest.raises(exc, match=match) as ei:
        fn(*args, **kwargs)
    unchanged(snap)
    return ei.value


def torch_message(*args, **kwargs):
    try:
        F.conv2d(*args, **kwargs)
    except RuntimeError as e:
        return str(e)
    raise AssertionError("PyTorch accepted the call")


# ------------------------------------------------------------------------------------------------
def test_exception_classes():
    assert issubclass(convkit.Error, Exception)
    for cls, base in ((convkit.InvalidArgumentError, ValueError), (convkit.UnsupportedError, NotImplementedError),
                      (convkit.OutOfMemoryError, MemoryError), (convkit.BackendError, RuntimeError)):
        assert issubclass(cls, convkit.Error) and issubclass(cls, base)
        assert cls.__module__ == "convkit"


def test_wrong_dtypes(bufs, fake_dlpack):
    x, w, b, out = bufs["x"], bufs["w"], bufs["b"], bufs["out"]
    fails(TypeError, "conv2d: input has dtype int64", convkit.conv2d, x.astype(np.int64), w, out=out)
    fails(TypeError, "conv2d: weight has dtype int32", convkit.conv2d, x, w.astype(np.int32), out=out)
    fails(TypeError, "conv2d: bias has dtype (bool|uint8)", convkit.conv2d, x, w, torch.ones(6, dtype=torch.bool),
          out=out)
    fails(TypeError, "input has dtype complex64", convkit.conv2d, x.astype(np.complex64), w, out=out)
    fails(TypeError, "uint16", convkit.conv2d, fake_dlpack(x.view(np.uint16), dtype=(DL_UINT, 16, 1)), w, out=out)
    # Supported dtypes that disagree.
    e = fails(convkit.InvalidArgumentError, "weight has dtype float64 but input has dtype float32", convkit.conv2d,
              x, w.astype(np.float64), out=out)
    assert isinstance(e, ValueError)
    fails(convkit.InvalidArgumentError, "bias has dtype float16 but input has dtype float32", convkit.conv2d, x, w,
          b.astype(np.float16), out=out)
    fails(convkit.InvalidArgumentError, "out has dtype float64", convkit.conv2d, x, w, watch=[x],
          out=out.astype(np.float64))
    fails(convkit.InvalidArgumentError, "post-op operand has dtype float64", convkit.conv2d, x, w,
          post_ops=[("add", out.astype(np.float64))], out=out)


def test_mismatched_shapes(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    fails(convkit.InvalidArgumentError, "weights has 3 input channels per group but src has 4 channels",
          convkit.conv2d, x, rnd(6, 3, 3, 3), out=out)
    fails(convkit.InvalidArgumentError, "groups=3 does not divide", convkit.conv2d, x, w, groups=3, out=out)
    fails(convkit.InvalidArgumentError, r"out has shape \[2, 6, 6, 6\] but the result has shape \[2, 6, 8, 8\]",
          convkit.conv2d, x, w, padding=1, out=out, watch=[x, w])
    fails(convkit.InvalidArgumentError, "bias has sizes", convkit.conv2d, x, w, rnd(5), out=out)
    fails(convkit.InvalidArgumentError, "bias must have 1 dimension", convkit.conv2d, x, w, rnd(1, 6), out=out)
    fails(convkit.InvalidArgumentError, "smaller than the dilated kernel", convkit.conv2d, x, w, dilation=4, out=out)
    fails(convkit.InvalidArgumentError, "weight must have 4 dimensions", convkit.conv2d, x, rnd(6, 4, 3), out=out)
    fails(convkit.InvalidArgumentError, "do not broadcast", convkit.conv2d, x, w,
          post_ops=[("add", rnd(1, 6, 6, 5))], out=out)
    # PyTorch's text for an input of the wrong rank.
    msg = torch_message(torch.zeros(2, 3), torch.from_numpy(w))
    e = fails(convkit.InvalidArgumentError, "Expected 3D", convkit.conv2d, rnd(2, 3), w, out=out)
    assert str(e) == msg
    e = fails(convkit.InvalidArgumentError, "Expected 2D", convkit.conv1d, rnd(2, 4, 8, 8), w, out=out)
    assert "conv1d, but got input of size: [2, 4, 8, 8]" in str(e)


def test_devices_that_disagree(bufs, fake_dlpack):
    x, w, b, out = bufs["x"], bufs["w"], bufs["b"], bufs["out"]
    gpu_w = fake_dlpack(w, device=(DL_CUDA, 0), data_ptr=0x10)  # a bogus pointer: must never be read
    fails(convkit.InvalidArgumentError, "weight is on cuda:0 but input is on cpu", convkit.conv2d, x, gpu_w, out=out)
    gpu_b = fake_dlpack(b, device=(DL_CUDA, 0), data_ptr=0x10)
    fails(convkit.InvalidArgumentError, "bias is on cuda:0 but input is on cpu", convkit.conv2d, x, w, gpu_b, out=out)
    gpu_out = fake_dlpack(out, device=(DL_CUDA, 1), data_ptr=0x10)
    fails(convkit.InvalidArgumentError, "out is on cuda:1 but input is on cpu", convkit.conv2d, x, w, out=gpu_out,
          watch=[x, w])
    fails(convkit.InvalidArgumentError, "weight is on cuda:0 but grad_output is on cpu", convkit.conv_backward_data,
          out, gpu_w, x.shape)
    fails(convkit.InvalidArgumentError, "input is on cuda:0 but grad_output is on cpu", convkit.conv_backward_weights,
          out, fake_dlpack(x, device=(DL_CUDA, 0), data_ptr=0x10), w.shape)
    assert gpu_w.deleted == gpu_w.exported and gpu_out.deleted == gpu_out.exported
    fails(convkit.InvalidArgumentError, "stream= applies to CUDA tensors", convkit.conv2d, x, w, out=out, stream=0)


def test_read_only_out(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    out.setflags(write=False)
    fails(ValueError, "out is read-only", convkit.conv2d, x, w, out=out)
    view = convkit.from_dlpack(out)
    assert view.readonly
    fails(ValueError, "out is read-only", convkit.conv2d, x, w, out=view, watch=[out])
    gw = np.zeros((6, 4, 3, 3), dtype=np.float32)
    gw.setflags(write=False)
    fails(ValueError, "out is read-only", convkit.conv_backward_weights, np.zeros((2, 6, 6, 6), np.float32), x,
          gw.shape, out=gw)
    gb = np.zeros(6, dtype=np.float32)
    gb.setflags(write=False)
    fails(ValueError, "bias_out is read-only", convkit.conv_backward_weights, np.zeros((2, 6, 6, 6), np.float32), x,
          (6, 4, 3, 3), bias_out=gb)


def test_objects_without_dlpack(bufs, no_dlpack):
    x, w, b, out = bufs["x"], bufs["w"], bufs["b"], bufs["out"]
    e = fails(TypeError, "conv2d: input must be a tensor with DLPack support", convkit.conv2d, x.tolist(), w, out=out)
    assert "list" in str(e)
    fails(TypeError, "conv2d: weight must be a tensor with DLPack support", convkit.conv2d, x, no_dlpack, out=out)
    fails(TypeError, "conv2d: bias must be", convkit.conv2d, x, w, no_dlpack, out=out)
    fails(TypeError, "conv2d: out must be", convkit.conv2d, x, w, b, out=no_dlpack, watch=[x])
    fails(TypeError, "post_ops operand of 'add' must be", convkit.conv2d, x, w, post_ops=[("add", no_dlpack)], out=out)
    fails(TypeError, "conv_backward_data: grad_output must be", convkit.conv_backward_data, 3.0, w, x.shape)
    fails(TypeError, "conv_backward_weights: input must be", convkit.conv_backward_weights, out, None, w.shape)
    fails(TypeError, "from_dlpack: obj must be", convkit.from_dlpack, "not a tensor")
    fails(TypeError, "prepack_weights: weight must be", convkit.prepack_weights, no_dlpack, x.shape)


def test_padding_errors_match_pytorch(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    for kwargs in (dict(padding="foo"), dict(padding="SAME"), dict(padding="same", stride=2),
                   dict(padding="same", stride=(1, 2)), dict(stride=(1, 1, 1)), dict(padding=(1, 2, 3)),
                   dict(padding=-1), dict(stride=0), dict(dilation=0), dict(groups=0), dict(dilation=(1, -1))):
        msg = torch_message(tx, tw, **kwargs)
        e = fails(convkit.InvalidArgumentError, None, convkit.conv2d, x, w, out=out, **kwargs)
        if "dilation" in kwargs and "dilation should be greater than zero" in msg:
            # PyTorch 2.x checks negative dilation with this text; 1.13 (Debian's) with ours.
            msg = "non-positive dilation is not supported"
        assert str(e) == msg, kwargs
        assert isinstance(e, ValueError)
    assert str(fails(ValueError, None, convkit.conv2d, x, w, padding="same", stride=2, out=out)) == \
        "padding='same' is not supported for strided convolutions"


def test_padding_forms_refused(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    fails(convkit.InvalidArgumentError, "cannot be combined with padding='same'", convkit.conv2d, x, w,
          padding="same", padding_l=1, out=out)
    fails(convkit.InvalidArgumentError, r"cannot be combined with \(left, right\)", convkit.conv2d, x, w,
          padding=((1, 1), (0, 0)), padding_r=0, out=out)
    fails(convkit.InvalidArgumentError, "needs 2 pairs", convkit.conv2d, x, w, padding=((1, 1),) * 3, out=out)
    fails(TypeError, "padding", convkit.conv2d, x, w, padding=((1, 1, 1), (0, 0)), out=out)
    fails(TypeError, "padding", convkit.conv2d, x, w, padding=1.5, out=out)
    fails(TypeError, "stride", convkit.conv2d, x, w, stride=(1.0, 1), out=out)
    fails(TypeError, "groups", convkit.conv2d, x, w, groups="1", out=out)
    fails(convkit.InvalidArgumentError, "negative padding", convkit.conv2d, x, w, padding_l=(0, -1), out=out)


def test_post_op_errors(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    fails(convkit.InvalidArgumentError, "post-op 'add' needs an operand tensor", convkit.conv2d, x, w,
          post_ops="relu+add", out=out)
    fails(convkit.InvalidArgumentError, "post-op 'foo'", convkit.conv2d, x, w, post_ops="foo", out=out)
    fails(convkit.InvalidArgumentError, "clip needs 2 parameters", convkit.conv2d, x, w, post_ops="clip", out=out)
    fails(convkit.InvalidArgumentError, "clip needs 2 parameters", convkit.conv2d, x, w, post_ops=[("clip", 1.0)],
          out=out)
    fails(convkit.InvalidArgumentError, "post-op 'sum' adds the destination's previous contents", convkit.conv2d, x,
          w, post_ops="sum")
    fails(convkit.InvalidArgumentError, "takes exactly one operand", convkit.conv2d, x, w,
          post_ops=[("add", out, out)], out=out)
    fails(TypeError, "takes numbers", convkit.conv2d, x, w, post_ops=[("relu", "x")], out=out)
    fails(TypeError, "post_ops must be", convkit.conv2d, x, w, post_ops=5, out=out)
    fails(TypeError, "each post_ops item", convkit.conv2d, x, w, post_ops=["relu", 5], out=out)
    fails(convkit.InvalidArgumentError, "overlaps dst", convkit.conv2d, x, w, post_ops=[("add", out)], out=out)


def test_engine_and_option_errors(bufs):
    x, w, out = bufs["x"], bufs["w"], bufs["out"]
    fails(convkit.InvalidArgumentError, "unknown engine 'gpu'", convkit.conv2d, x, w, engine="gpu", out=out)
    fails(TypeError, "engine must be a str", convkit.conv2d, x, w, engine=1, out=out)
    # The cuda engine on CPU tensors: not compiled in (UnsupportedError) or not for CPU tensors.
    fails(convkit.Error, "engine 'cuda'", convkit.conv2d, x, w, engine="cuda", out=out)
    fails(convkit.InvalidArgumentError, "stream= applies to CUDA tensors", convkit.conv2d, x, w, stream="s", out=out)


def test_backward_argument_errors(bufs):
    x, w = bufs["x"], bufs["w"]
    gy = rnd(2, 6, 6, 6, seed=4)
    gx = np.full((2, 4, 8, 8), 7.0, dtype=np.float32)
    fails(convkit.InvalidArgumentError, "input_size .* must have 4 values", convkit.conv_backward_data, gy, w,
          (2, 4, 8), out=gx)
    fails(convkit.InvalidArgumentError, "out has shape", convkit.conv_backward_data, gy, w, (2, 4, 9, 9), out=gx)
    fails(convkit.InvalidArgumentError, "diff_dst has sizes", convkit.conv_backward_data, gy, w, (2, 4, 9, 9))
    fails(TypeError, "input_size must be a sequence", convkit.conv_backward_data, gy, w, 5, out=gx)
    gw = np.full((6, 4, 3, 3), 7.0, dtype=np.float32)
    fails(convkit.InvalidArgumentError, "weight_size .* must have 3 to 5 values", convkit.conv_backward_weights, gy, x,
          (6, 4), out=gw)
    fails(convkit.InvalidArgumentError, "out has shape", convkit.conv_backward_weights, gy, x, (6, 4, 2, 2), out=gw)
    fails(convkit.InvalidArgumentError, "diff_dst has sizes", convkit.conv_backward_weights, gy, x, (6, 4, 2, 2))
    fails(convkit.InvalidArgumentError, "both batched or both unbatched", convkit.conv_backward_weights, gy[0], x,
          (6, 4, 3, 3), out=gw)
    fails(convkit.InvalidArgumentError, "padding='same' is not supported for strided", convkit.conv_backward_data,
          gy, w, x.shape, 2, "same", out=gx)


def test_prepack_errors(bufs):
    x, w = bufs["x"], bufs["w"]
    fails(convkit.InvalidArgumentError, "input_size .* must have 4 values", convkit.prepack_weights, w, (2, 4))
    fails(convkit.InvalidArgumentError, "weights has 4 input channels per group", convkit.prepack_weights, w,
          (2, 3, 8, 8))
    pw = convkit.prepack_weights(w, x.shape)
    out = np.full((2, 6, 6, 6), 7.0, dtype=np.float32)
    fails(convkit.InvalidArgumentError, "dtype", convkit.conv2d, x.astype(np.float64), pw, out=out)


def test_still_works_after_failures(bufs):
    x, w, b, out = bufs["x"], bufs["w"], bufs["b"], bufs["out"]
    for _ in range(3):
        with pytest.raises(convkit.Error):
            convkit.conv2d(x, w, groups=3, out=out)
    convkit.conv2d(x, w, b, out=out)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
