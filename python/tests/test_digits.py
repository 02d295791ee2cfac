"""Training end to end: python/examples/train_digits.py's CNN on scikit-learn's digits, five epochs
on PyTorch's convolutions and five with convkit.torch.enable(), same seed, same batches.

Tolerance on the loss curves: 1e-4 absolute on each epoch's mean training loss. The two runs
differ only by the rounding of f32 convolutions (~1e-7 relative per call: convkit and PyTorch sum
in different orders), and SGD with momentum amplifies such perturbations step after step: measured
on 2 cores, the per-epoch difference is ~2e-8 after the first epoch and below 1e-6 after the fifth
(it reaches ~1e-4..1e-3 only after eight or more epochs, when the loss is near 0.01 and the
trajectories have separated). 1e-4 leaves two orders of margin at five epochs while a small real
mistake is caught: with every bias gradient scaled by 1.001 (a 0.1% error) the curves differ by
6e-5 after the first epoch and 1.2e-3 after the second. Final test accuracy: within 1 percentage point (4.5 of the 450 test
images).
"""
import importlib.util
import os

import pytest
import torch

import convkit.torch as ckt

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "train_digits.py")
EPOCHS = 5
LOSS_TOL = 1e-4


def _example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runs():
    ckt.disable()
    return _example().compare(epochs=EPOCHS, seed=0, device="cpu")


def test_loss_curves_agree(runs):
    ref, got, diff = runs
    assert len(ref["losses"]) == len(got["losses"]) == EPOCHS
    assert diff <= LOSS_TOL, "loss curves: pytorch %s, convkit %s" % (ref["losses"], got["losses"])
    # the curves are real training curves: the loss falls by an order of magnitude
    assert got["losses"][-1] < 0.1 * got["losses"][0]


def test_final_accuracy_agrees(runs):
    ref, got, _ = runs
    assert abs(ref["test_acc"][-1] - got["test_acc"][-1]) <= 0.01
    assert got["test_acc"][-1] >= 0.9  # a working classifier, not two equally broken runs


def test_convkit_computed_the_convolutions(runs):
    ref, got, _ = runs
    s = got["stats"]
    # 1347 training images in batches of 32: 43 steps per epoch, two convolutions each
    assert s["backward"] == EPOCHS * 43 * 2
    assert s["forward"] >= EPOCHS * 43 * 2  # plus the evaluation passes
    assert s["fallback_forward"] == 0 and s["fallback_backward"] == 0
    r = ref["stats"]
    assert r["forward"] == 0 and r["backward"] == 0  # the reference run never reached convkit
    assert not ckt.is_enabled()


@pytest.mark.skipif(not (torch.cuda.is_available() and "cuda" in __import__("convkit").available_engines()),
                    reason="needs a CUDA device and convkit's cuda engine")
def test_cuda_training_agrees():
    tf32, det = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = False, True
    try:
        ref, got, diff = _example().compare(epochs=EPOCHS, seed=0, device="cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = tf32, det
    assert diff <= LOSS_TOL
    assert abs(ref["test_acc"][-1] - got["test_acc"][-1]) <= 0.01
    assert got["stats"]["forward"] > 0 and got["stats"]["fallback_forward"] == 0
