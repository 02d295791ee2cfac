"""Zero-copy exchange: convkit.from_dlpack views, out= buffers, results handed to NumPy and
PyTorch, capsule ownership (the producer's deleter runs exactly once), read-only arrays, and the
CUDA stream rules (skipped without a GPU and the cuda engine)."""
import gc
import sys
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
from conftest import DL_BFLOAT, DL_CUDA, DL_FLOAT, DL_INT

CUDA = torch.cuda.is_available() and "cuda" in convkit.available_engines()
cuda = pytest.mark.skipif(not CUDA, reason="needs torch.cuda and convkit's cuda engine (a GPU)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # fixed seeds for the tests that draw from torch's global generator


def rnd(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------------------
# Views of NumPy arrays and torch tensors
# ------------------------------------------------------------------------------------------------
def test_view_of_numpy():
    a = rnd(2, 3, 4, 5)
    t = convkit.from_dlpack(a)
    assert t.data_ptr() == a.ctypes.data
    assert t.shape == (2, 3, 4, 5) and t.stride() == (60, 20, 5, 1) and t.dtype == "float32"
    assert t.device == "cpu" and t.__dlpack_device__() == (1, 0) and not t.readonly
    assert "convkit.Tensor" in repr(t)
    b = a.transpose(0, 2, 3, 1)  # a non-contiguous view: strides kept, nothing copied
    tb = convkit.from_dlpack(b)
    assert tb.data_ptr() == a.ctypes.data and tb.stride() == (60, 5, 1, 20)
    assert convkit.from_dlpack(t) is t


@pytest.mark.parametrize("dtype,name", [(torch.float32, "float32"), (torch.float64, "float64"),
                                        (torch.bfloat16, "bfloat16"), (torch.float16, "float16")])
def test_view_of_torch(dtype, name):
    base = torch.randn(3, 8, 6, 6, generator=torch.Generator().manual_seed(1)).to(dtype)
    x = base[1:, :, 1:, :]  # a storage offset and non-dense strides
    t = convkit.from_dlpack(x)
    assert t.data_ptr() == x.data_ptr() and t.shape == tuple(x.shape) and t.stride() == x.stride()
    assert t.dtype == name
    cl = base.contiguous(memory_format=torch.channels_last)
    assert convkit.from_dlpack(cl).stride() == cl.stride()
    # requires_grad tensors are read as they are (convkit's functions record no autograd).
    w = torch.randn(4, 8, 3, 3, requires_grad=True)
    assert convkit.from_dlpack(w).data_ptr() == w.data_ptr()


def test_view_keeps_owner_alive():
    a = rnd(1, 4, 6, 6, seed=2)
    expect = a.copy()
    ref = weakref.ref(a) if hasattr(a, "__weakref__") else None
    t = convkit.from_dlpack(a)
    del a
    gc.collect()
    np.testing.assert_array_equal(np.from_dlpack(t), expect)  # the memory is still there
    if ref is not None:
        assert ref() is not None
    del t
    gc.collect()
    if ref is not None:
        assert ref() is None


def test_results_shared_with_numpy_and_torch():
    x, w = rnd(1, 4, 6, 6, seed=3), rnd(5, 4, 3, 3, seed=4)
    y = convkit.conv2d(x, w, padding=1)
    n = np.from_dlpack(y)
    t = torch.from_dlpack(y)
    assert n.ctypes.data == y.data_ptr() == t.data_ptr()
    assert n.shape == y.shape and t.stride() == y.stride()
    t[0, 0, 0, 0] = 123.0
    assert n[0, 0, 0, 0] == 123.0  # one memory
    assert np.asarray(y).ctypes.data == y.data_ptr()  # the array interface too
    # The consumers keep the result alive after the convkit object goes.
    want = n.copy()
    del y, n
    gc.collect()
    np.testing.assert_array_equal(t.numpy(), want)


def test_bf16_result_to_torch():
    x = torch.randn(1, 4, 6, 6).bfloat16()
    w = torch.randn(4, 4, 3, 3).bfloat16()
    y = convkit.conv2d(x, w)
    t = torch.from_dlpack(y)
    assert t.dtype == torch.bfloat16 and t.data_ptr() == y.data_ptr()
    with pytest.raises(AttributeError):
        y.__array_interface__  # NumPy has no bfloat16


def test_channels_last_result_strides_through_dlpack():
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 8, 3, 3)
    y = torch.from_dlpack(convkit.conv2d(x, w, padding=1))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# out=
# ------------------------------------------------------------------------------------------------
def test_out_numpy_written_in_place():
    x, w, b = rnd(2, 3, 7, 7, seed=5), rnd(4, 3, 3, 3, seed=6), rnd(4, seed=7)
    out = np.full((2, 4, 5, 5), np.nan, dtype=np.float32)
    y = convkit.conv2d(x, w, b, out=out)
    assert y.data_ptr() == out.ctypes.data
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_out_torch_and_backward_out():
    x, w = torch.randn(2, 3, 7, 7), torch.randn(4, 3, 3, 3)
    gy = torch.randn(2, 4, 5, 5)
    gx = torch.empty(2, 3, 7, 7)
    gw = torch.empty(4, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    gb = torch.empty(4)
    r = convkit.conv_backward_data(gy, w, x.shape, out=gx)
    assert r.data_ptr() == gx.data_ptr()
    rw, rb = convkit.conv_backward_weights(gy, x, w.shape, out=gw, bias_out=gb)
    assert rw.data_ptr() == gw.data_ptr() and rb.data_ptr() == gb.data_ptr()
    torch.testing.assert_close(gx, torch.nn.grad.conv2d_input(x.shape, w, gy), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, torch.nn.grad.conv2d_weight(x, w.shape, gy), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gb, gy.sum((0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_out_unbatched():
    x, w = torch.randn(3, 6, 6), torch.randn(2, 3, 3, 3)
    out = torch.zeros(2, 4, 4)
    y = convkit.conv2d(x, w, out=out)
    assert y.shape == (2, 4, 4) and y.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, F.conv2d(x, w), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Read-only arrays
# ------------------------------------------------------------------------------------------------
def test_read_only_numpy():
    a = rnd(1, 4, 6, 6, seed=8)
    a.setflags(write=False)
    with pytest.raises(BufferError):
        a.__dlpack__()  # why the array interface is needed
    t = convkit.from_dlpack(a)
    assert t.readonly and t.data_ptr() == a.ctypes.data
    with pytest.raises(ValueError, match="read-only"):
        convkit.from_dlpack(a, writable=True)
    with pytest.raises(BufferError):
        t.__dlpack__()
    w = rnd(4, 4, 3, 3, seed=9)
    w.setflags(write=False)
    y = convkit.conv2d(a, w, padding=1)  # read-only inputs are fine
    want = F.conv2d(torch.from_numpy(a.copy()), torch.from_numpy(w.copy()), padding=1)
    torch.testing.assert_close(torch.from_dlpack(y), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Capsule ownership, with a ctypes producer (conftest.FakeDLPack)
# ------------------------------------------------------------------------------------------------
def test_deleter_called_once_per_capsule(fake_dlpack):
    arr = rnd(1, 2, 5, 5, seed=10)
    f = fake_dlpack(arr)
    t = convkit.from_dlpack(f)
    assert t.data_ptr() == arr.ctypes.data and f.exported == 1 and f.deleted == 0
    exported = torch.from_dlpack(t)  # the view lives on in torch
    del t
    gc.collect()
    assert f.deleted == 0
    del exported
    gc.collect()
    assert f.deleted == 1
    # Within a call: the input is released when the call ends, exactly once.
    w = fake_dlpack(rnd(3, 2, 3, 3, seed=11))
    y = convkit.conv2d(f, w)
    assert f.exported == 2 and f.deleted == 2 and w.deleted == 1
    want = F.conv2d(torch.from_numpy(arr), torch.from_numpy(w.array))
    torch.testing.assert_close(torch.from_dlpack(y), want, rtol=1e-5, atol=1e-5)
    # A refused import releases the capsule as well.
    bad = fake_dlpack(arr, dtype=(DL_INT, 32, 1))
    with pytest.raises(TypeError, match="int32"):
        convkit.from_dlpack(bad)
    assert bad.deleted == bad.exported == 1


def test_null_strides_and_byte_offset(fake_dlpack):
    base = rnd(64, seed=12)
    # A (1, 2, 3, 4) C-contiguous tensor starting 8 elements in, strides NULL.
    f = fake_dlpack(base, shape=(1, 2, 3, 4), strides=None, byte_offset=8 * 4)
    t = convkit.from_dlpack(f)
    assert t.data_ptr() == base.ctypes.data + 32 and t.stride() == (24, 12, 4, 1)
    np.testing.assert_array_equal(np.from_dlpack(t), base[8:32].reshape(1, 2, 3, 4))
    # Explicit strides: every other element.
    g = fake_dlpack(base, shape=(1, 1, 4, 4), strides=(32, 32, 8, 2))
    np.testing.assert_array_equal(np.from_dlpack(convkit.from_dlpack(g)), base[:32].reshape(1, 1, 4, 8)[..., ::2])


def test_dtypes_and_devices_refused(fake_dlpack):
    arr = rnd(1, 2, 4, 4, seed=13)
    for dt, name in [((DL_INT, 64, 1), "int64"), ((DL_FLOAT, 32, 4), "lanes"), ((DL_FLOAT, 8, 1), "float8"),
                     ((5, 64, 1), "complex64")]:
        with pytest.raises(TypeError, match=name):
            convkit.conv2d(fake_dlpack(arr, dtype=dt), arr.reshape(2, 1, 4, 4)[:, :, :3, :3].copy())
    with pytest.raises(ValueError, match="DLPack device type 4"):
        convkit.from_dlpack(fake_dlpack(arr, device=(4, 0)))
    bf = fake_dlpack(arr.view(np.uint16)[..., ::2].copy(), dtype=(DL_BFLOAT, 16, 1))
    assert convkit.from_dlpack(bf).dtype == "bfloat16"


def test_unconsumed_export_is_freed():
    a = rnd(1, 2, 4, 4, seed=14)
    t = convkit.from_dlpack(a)
    before = sys.getrefcount(a)
    caps = [t.__dlpack__() for _ in range(10)]
    del caps  # never consumed: the capsule destructors release them
    gc.collect()
    assert sys.getrefcount(a) == before
    del t
    gc.collect()
    assert sys.getrefcount(a) == before - 1  # the view's reference too


def test_export_options():
    y = convkit.conv1d(rnd(1, 2, 8), rnd(3, 2, 3))
    c = torch.from_dlpack(y.__dlpack__(copy=True))  # a copy
    assert c.data_ptr() != y.data_ptr()
    torch.testing.assert_close(c, torch.from_dlpack(y))
    with pytest.raises(BufferError):
        y.__dlpack__(dl_device=(2, 0))
    assert torch.from_dlpack(y.__dlpack__(dl_device=(1, 0), max_version=(1, 0))).data_ptr() == y.data_ptr()


def test_generic_dlpack_path_for_torch():
    # The fast path reads torch tensors through torch's C exporter; the generic path calls their
    # __dlpack__ like any other object's. Both give the same view and the same result.
    x = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(15))
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(16))
    fast = torch.from_dlpack(convkit.conv2d(x, w, padding=1)).clone()
    convkit._convkit._set_torch_fast_path(False)
    try:
        assert convkit.from_dlpack(x).data_ptr() == x.data_ptr()
        slow = torch.from_dlpack(convkit.conv2d(x, w, padding=1))
    finally:
        convkit._convkit._set_torch_fast_path(True)
    assert torch.equal(fast, slow)


def test_fake_cuda_tensor_never_touched(fake_dlpack):
    # A tensor claiming to be on cuda:0 with a bogus pointer: refused before anything is read.
    arr = rnd(1, 4, 6, 6, seed=17)
    fake = fake_dlpack(arr, device=(DL_CUDA, 0), data_ptr=0x10)
    w = rnd(4, 4, 3, 3, seed=18)
    out = np.full((1, 4, 4, 4), 5.0, dtype=np.float32)
    with pytest.raises(convkit.InvalidArgumentError, match="weight is on cpu but input is on cuda:0"):
        convkit.conv2d(fake, w, out=out)
    assert fake.deleted == fake.exported == 1
    assert fake.streams == [1]  # a CUDA producer is asked for the legacy default stream
    assert (out == 5.0).all()


# ------------------------------------------------------------------------------------------------
# CUDA (run on a GPU machine; skipped here)
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def exact_cuda():
    """Full-precision float32 on both sides (no TF32) for the comparisons."""
    ck, th = convkit.allow_tf32(), torch.backends.cudnn.allow_tf32
    convkit.set_allow_tf32(False)
    torch.backends.cudnn.allow_tf32 = False
    yield
    convkit.set_allow_tf32(ck)
    torch.backends.cudnn.allow_tf32 = th


def cuda_inputs(seed, n=8, c=32, hw=40, fmt=torch.contiguous_format):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, hw, hw, generator=g).cuda().contiguous(memory_format=fmt)
    w = torch.randn(c, c, 3, 3, generator=g).cuda().contiguous(memory_format=fmt)
    b = torch.randn(c, generator=g).cuda()
    return x, w, b


@cuda
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_cuda_current_torch_stream(fmt, exact_cuda):
    x, w, b = cuda_inputs(1, fmt=fmt)
    want = F.conv2d(x * 2, w, b, padding=1)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(50_000_000)  # keep s busy: a missing dependency would show
        x2 = x * 2                      # produced on s
        y = convkit.conv2d(x2, w, b, padding=1)  # stream=None: torch's current stream, s
        assert y.device == "cuda:%d" % x.device.index and y.__dlpack_device__() == (2, x.device.index)
        yt = torch.from_dlpack(y)       # consumed on s
        got = yt.clone()
    s.synchronize()                      # the only synchronisation the caller needs
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert yt.is_contiguous(memory_format=fmt)


@cuda
def test_cuda_explicit_stream_and_cross_stream_consumer(exact_cuda):
    x, w, b = cuda_inputs(2)
    want = F.conv2d(x, w, b, padding=1)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(50_000_000)
    y = convkit.conv2d(x, w, b, padding=1, stream=s.cuda_stream)  # runs after the sleep on s
    # Consumed on the default stream: torch.from_dlpack passes it, convkit makes it wait for s.
    got = torch.from_dlpack(y).clone()
    torch.cuda.current_stream().synchronize()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # A torch.cuda.Stream object is accepted as well.
    y2 = convkit.conv2d(x, w, b, padding=1, stream=s)
    s.synchronize()
    torch.testing.assert_close(torch.from_dlpack(y2), want, rtol=1e-4, atol=1e-4)


@cuda
def test_cuda_inputs_from_another_stream(exact_cuda):
    # Inputs produced on s1 (torch's current stream), convolution on s2: s2 waits for s1.
    x, w, b = cuda_inputs(3)
    want = F.conv2d(x + 1, w, b, padding=1)
    torch.cuda.synchronize()
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(50_000_000)
        x1 = x + 1
        y = convkit.conv2d(x1, w, b, padding=1, stream=s2.cuda_stream)
    with torch.cuda.stream(s2):
        got = torch.from_dlpack(y).clone()
    s2.synchronize()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # A convkit result used as an input on another stream waits for the stream it came from.
    want2 = F.conv2d(F.conv2d(x, w, b, padding=1), w, padding=1)
    torch.cuda.synchronize()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(50_000_000)
        z = convkit.conv2d(x, w, b, padding=1)  # on s1, after the sleep
    y2 = convkit.conv2d(z, w, padding=1, stream=s2.cuda_stream)
    with torch.cuda.stream(s2):
        got2 = torch.from_dlpack(y2).clone()
    s2.synchronize()
    torch.testing.assert_close(got2, want2, rtol=1e-3, atol=1e-3)


@cuda
def test_cuda_out_and_backward(exact_cuda):
    x, w, b = cuda_inputs(4, n=2, c=16, hw=20)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = torch.empty(2, 16, 20, 20, device=x.device)
        y = convkit.conv2d(x, w, b, padding=1, out=out, post_ops="relu")
        assert y.data_ptr() == out.data_ptr()
        gy = torch.randn_like(out)
        gx = convkit.conv_backward_data(gy, w, x.shape, padding=1)
        gw, gb = convkit.conv_backward_weights(gy, x, w.shape, padding=1, bias=True)
        gx, gw, gb = (torch.from_dlpack(t).clone() for t in (gx, gw, gb))
    s.synchronize()
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1).relu(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx, torch.nn.grad.conv2d_input(x.shape, w, gy, padding=1), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gw, torch.nn.grad.conv2d_weight(x, w.shape, gy, padding=1), rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(gb, gy.sum((0, 2, 3)), rtol=1e-4, atol=1e-3)


@cuda
def test_cuda_errors_leave_buffers(exact_cuda):
    x, w, _ = cuda_inputs(5, n=1, c=8, hw=10)
    out = torch.full((1, 8, 8, 8), 3.0, device=x.device)
    with pytest.raises(convkit.InvalidArgumentError, match="is on cpu but input is on cuda"):
        convkit.conv2d(x, w.cpu(), out=out)
    with pytest.raises(convkit.InvalidArgumentError):
        convkit.conv2d(x, w, padding=1, out=out)  # wrong out shape
    torch.cuda.synchronize()
    assert bool((out == 3.0).all())
