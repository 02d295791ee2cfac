"""Shared pieces of the Python suites (python/tests).

Run with the package on the path: PYTHONPATH=<build>/python /usr/bin/python3 -m pytest python/tests
(ctest's `python` entry does exactly that). Everything here is opt-in (fixtures and helpers);
nothing changes how the PyTorch-integration suites (test_torch*.py) run.
"""
import ctypes
import os

import numpy as np
import pytest

try:
    import convkit
except ImportError as e:  # pragma: no cover - a setup error, reported once and clearly
    raise ImportError(
        "convkit is not importable: build it (cmake --build build) and run with "
        "PYTHONPATH=<build>/python (ctest -R '^python$' does): " + str(e)) from e


def pytest_report_header(config):
    return [f"convkit {convkit.__version__} from {os.path.dirname(convkit.__file__)}; "
            f"engines {convkit.available_engines()}",
            f"cpu engine: {convkit.engine_info('cpu')}"]


# ------------------------------------------------------------------------------------------------
# A DLPack producer written with ctypes: a capsule over any memory, claiming any device, dtype,
# strides (or NULL strides) and byte offset, with a deleter that counts its calls. It lets the
# suites check what NumPy and PyTorch cannot show: the deleter runs exactly once, byte_offset and
# NULL strides are honoured, and tensors "on" a GPU are refused on a machine without one before
# anything is read or written.
# ------------------------------------------------------------------------------------------------
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                             ("deleter", _DELETER)]

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

DL_CPU, DL_CUDA = 1, 2
DL_INT, DL_UINT, DL_FLOAT, DL_BFLOAT = 0, 1, 2, 4


class FakeDLPack:
    """An object with __dlpack__/__dlpack_device__ over `array`'s memory (kept alive here).

    shape/strides in elements (strides=None exports NULL strides); byte_offset is added by the
    consumer; device=(type, id); dtype=(code, bits, lanes). `deleted` counts deleter calls and
    `exported` the capsules handed out; `streams` records the stream= arguments received.
    """

    def __init__(self, array, shape=None, strides=None, byte_offset=0, device=(DL_CPU, 0),
                 dtype=None, data_ptr=None):
        self.array = array
        self.shape = tuple(array.shape if shape is None else shape)
        self.strides = strides
        self.byte_offset = byte_offset
        self.device = device
        if dtype is None:
            dtype = (DL_FLOAT, array.dtype.itemsize * 8, 1)
        self.dtype = dtype
        self.data_ptr = array.ctypes.data if data_ptr is None else data_ptr
        self.deleted = 0
        self.exported = 0
        self.streams = []
        self._keep = []
        self._deleter = _DELETER(self._on_delete)

    def _on_delete(self, _ptr):
        self.deleted += 1

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        n = len(self.shape)
        shape = (ctypes.c_int64 * n)(*self.shape)
        strides = None if self.strides is None else (ctypes.c_int64 * n)(*self.strides)
        mt = _DLManagedTensor()
        t = mt.dl_tensor
        t.data = self.data_ptr
        t.device = _DLDevice(*self.device)
        t.ndim = n
        t.dtype = _DLDataType(*self.dtype)
        t.shape = shape
        t.strides = strides if strides is not None else ctypes.POINTER(ctypes.c_int64)()
        t.byte_offset = self.byte_offset
        mt.deleter = self._deleter
        self._keep.append((mt, shape, strides))
        self.exported += 1
        return _capsule_new(ctypes.addressof(mt), b"dltensor", None)


@pytest.fixture
def fake_dlpack():
    return FakeDLPack


class NoDLPack:
    """Looks like an array (shape, dtype) but offers no DLPack."""
    shape = (1, 4, 8, 8)
    dtype = "float32"


@pytest.fixture
def no_dlpack():
    return NoDLPack()


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)
