#!/usr/bin/env python3
"""Command-line behaviour of `convkit run` and `convkit bench`: a correct run, and every kind of
bad input (usage, validation, malformed .npy files) exits with status 2, prints one clear line on
stderr naming the problem, and leaves an existing --out file byte-for-byte untouched. The same for
`convkit run --op=deconv` (checked against torch's conv_transpose and its autograd, ONNX's
output_shape/auto_pad padding rules worked out by hand) and `convkit bench --driver=deconv`.

Usage: test_cli.py --convkit=PATH [unittest args]"""
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # Debian's python3-torch; the deconv value checks need it
    torch = None

CONVKIT = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, **kw):
    return subprocess.run([CONVKIT, *args], capture_output=True, text=True, timeout=120, **kw)


class CliBase(unittest.TestCase):
    """Inputs in a temporary directory and an --out file that a failed run must not touch."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        rng = np.random.default_rng(0)
        self.x = rng.uniform(-1, 1, (2, 4, 6, 6)).astype(np.float32)
        self.w = rng.uniform(-1, 1, (3, 4, 3, 3)).astype(np.float32)
        self.b = rng.uniform(-1, 1, (3,)).astype(np.float32)
        for n, a in (("x", self.x), ("w", self.w), ("b", self.b)):
            np.save(self.p(n + ".npy"), a)
        self.out = self.p("out.npy")
        with open(self.out, "wb") as f:
            f.write(b"precious bytes that must survive a failed run")
        with open(self.out, "rb") as f:
            self.sentinel = f.read()

    def tearDown(self):
        self.tmp.cleanup()

    def p(self, name):
        return os.path.join(self.d, name)

    def fwd(self, *extra):
        return ["run", "--dir=fwd", "--engine=ref", "--src=" + self.p("x.npy"), "--wei=" + self.p("w.npy"),
                "--out=" + self.out, *extra]

    def assertBad(self, args, *needles, code=2):
        r = run(*args)
        self.assertEqual(r.returncode, code, f"args {args}\nstdout {r.stdout}\nstderr {r.stderr}")
        err = r.stderr.strip()
        self.assertTrue(err, "no message on stderr")
        lines = err.splitlines()
        if len(lines) == 2 and lines[1].startswith("reproduce: "):
            # An error of the problem itself (not of a file or an option) adds the `convkit bench`
            # line that fails the same way: same exit status, one line naming the problem.
            self.assertReproduces(lines[1], code)
            err = lines[0]
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        for n in needles:
            self.assertIn(n, err)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), self.sentinel, "--out was modified by a failed run")
        return err


    def assertReproduces(self, line, code):
        words = line[len("reproduce: "):].split()
        env = dict(os.environ)
        while words and "=" in words[0] and not words[0].startswith("--"):
            k, v = words.pop(0).split("=", 1)
            env[k] = v
        self.assertEqual(words[:2], ["convkit", "bench"], line)
        r = subprocess.run([CONVKIT, *words[1:]], capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(r.returncode, code, f"{line}\nstdout {r.stdout}\nstderr {r.stderr}")
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("descriptor", r.stderr)


class CliTest(CliBase):
    def test_correct_run(self):
        r = run(*self.fwd("--bia=" + self.p("b.npy"), "--pad-l=1", "--pad-r=1"))
        self.assertEqual(r.returncode, 0, r.stderr)
        y = np.load(self.out)
        # Direct evaluation of the same convolution in numpy (float64).
        xp = np.pad(self.x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        want = np.zeros((2, 3, 6, 6))
        for kh in range(3):
            for kw in range(3):
                want += np.einsum("nchw,oc->nohw", xp[:, :, kh:kh + 6, kw:kw + 6], self.w[:, :, kh, kw])
        want += self.b[None, :, None, None]
        self.assertEqual(y.shape, (2, 3, 6, 6))
        self.assertEqual(y.dtype, np.float32)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)

    def test_usage(self):
        r = run()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage", r.stderr)
        self.assertBad(["frobnicate"], "unknown command 'frobnicate'")
        self.assertBad(self.fwd("--no-such-flag=1"), "--no-such-flag")
        self.assertBad(self.fwd("--dir=sideways"), "--dir")
        self.assertBad(self.fwd("--dt=f8"), "--dt")
        self.assertBad(["run", "--dir=fwd", "--wei=" + self.p("w.npy"), "--out=" + self.out], "--src is required")
        self.assertBad(["run", "--dir=fwd", "--src=" + self.p("x.npy"), "--wei=" + self.p("w.npy")], "--out is required")
        self.assertBad(["run", "--dir=bwd_d", "--diff-dst=" + self.p("x.npy"), "--wei=" + self.p("w.npy"),
                        "--out=" + self.out], "--src-shape")
        self.assertBad(["run", "--dir=bwd_w", "--diff-dst=" + self.p("x.npy"), "--src=" + self.p("x.npy"),
                        "--out=" + self.out], "--wei-shape")
        self.assertBad(self.fwd("--src-shape=1,2,3,3"), "do not apply to --dir=fwd")

    def test_validation_errors(self):
        self.assertBad(self.fwd("--groups=3"), "groups=3")
        self.assertBad(self.fwd("--groups=0"), "groups must be >= 1")
        self.assertBad(self.fwd("--stride=0"), "stride h must be >= 1, got 0")
        self.assertBad(self.fwd("--stride=1,a"), "--stride", "'a'")
        self.assertBad(self.fwd("--dilation=1,1,1"), "dilation has 3 values")
        self.assertBad(self.fwd("--pad-l=-1"), "padding_l h must be >= 0")
        self.assertBad(self.fwd("--dilation=4"), "smaller than the dilated kernel")
        np.save(self.p("b5.npy"), np.zeros(5, np.float32))
        self.assertBad(self.fwd("--bia=" + self.p("b5.npy")), "bias has sizes [5] but must be [3]")
        np.save(self.p("w5.npy"), np.zeros((3, 5, 3, 3), np.float32))
        self.assertBad(["run", "--dir=fwd", "--engine=ref", "--src=" + self.p("x.npy"), "--wei=" + self.p("w5.npy"),
                        "--out=" + self.out], "weights has 5 input channels per group but src has 4 channels")
        self.assertBad(["run", "--dir=bwd_d", "--engine=ref", "--diff-dst=" + self.p("x.npy"), "--wei=" + self.p("w.npy"),
                        "--src-shape=2,4,6,6", "--out=" + self.out], "--diff-dst", "gives dst [2, 3, 4, 4]")

    def test_post_op_errors(self):
        self.assertBad(self.fwd("--post-ops=relu+bogus"), "unknown post-op 'bogus'")
        self.assertBad(self.fwd("--post-ops=add"), "needs an operand file")
        np.save(self.p("op.npy"), np.zeros((1, 2, 1, 1), np.float32))
        self.assertBad(self.fwd("--post-ops=add:" + self.p("op.npy")), "do not broadcast to dst [2, 3, 4, 4]")
        self.assertBad(self.fwd("--post-ops=sum"), "--dst-init")
        np.save(self.p("init.npy"), np.zeros((2, 3, 5, 4), np.float32))
        self.assertBad(self.fwd("--post-ops=sum", "--dst-init=" + self.p("init.npy")), "--dst-init", "[2, 3, 5, 4]")
        self.assertBad(self.fwd("--post-ops=add:" + self.p("missing.npy")), "missing.npy")

    def test_malformed_files(self):
        def bad_file(name, data):
            with open(self.p(name), "wb") as f:
                f.write(data)
            return ["run", "--dir=fwd", "--engine=ref", "--src=" + self.p(name), "--wei=" + self.p("w.npy"),
                    "--out=" + self.out]
        self.assertBad(bad_file("garbage.npy", b"this is not numpy at all"), "garbage.npy", "not an .npy file")
        self.assertBad(bad_file("empty.npy", b""), "empty.npy")
        with open(self.p("x.npy"), "rb") as f:
            good = f.read()
        self.assertBad(bad_file("trunc.npy", good[: len(good) - 10]), "trunc.npy")
        np.save(self.p("be.npy"), self.x.astype(">f4"))
        self.assertBad(["run", "--dir=fwd", "--engine=ref", "--src=" + self.p("be.npy"), "--wei=" + self.p("w.npy"),
                        "--out=" + self.out], "big-endian")
        np.save(self.p("int.npy"), self.x.astype(np.int32))
        self.assertBad(["run", "--dir=fwd", "--engine=ref", "--src=" + self.p("int.npy"), "--wei=" + self.p("w.npy"),
                        "--out=" + self.out], "<i4")
        np.save(self.p("fort.npy"), np.asfortranarray(self.x))
        self.assertBad(["run", "--dir=fwd", "--engine=ref", "--src=" + self.p("fort.npy"), "--wei=" + self.p("w.npy"),
                        "--out=" + self.out], "Fortran")
        self.assertBad(["run", "--dir=fwd", "--engine=ref", "--src=" + self.p("nope.npy"), "--wei=" + self.p("w.npy"),
                        "--out=" + self.out], "nope.npy")
        # A header claiming a huge shape must be rejected before any allocation.
        hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000, 1000, 1000), }"
        hdr += " " * (118 - len(hdr)) + "\n"
        self.assertBad(bad_file("huge.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode()), "huge.npy")

    def test_unwritable_out(self):
        r = run("run", "--dir=fwd", "--engine=ref", "--src=" + self.p("x.npy"), "--wei=" + self.p("w.npy"),
                "--out=" + self.p("no/such/dir/out.npy"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("no/such/dir/out.npy", r.stderr)

    def test_bench_errors(self):
        self.assertBad(["bench", "--engine=ref", "--mode=corr", "ic4ih0oc4kh3"], "ih")
        self.assertBad(["bench", "--engine=ref", "--dir=sideways", "ic4ih5oc4kh3"], "--dir")
        self.assertBad(["bench", "--engine=ref", "--batch=" + self.p("none")], "none")
        self.assertBad(["bench", "--engine=ref"], "no problems")

    def test_bench_runs(self):
        csv = self.p("r.csv")
        r = run("bench", "--engine=ref", "--mode=both", "--dir=FWD_B,BWD_D,BWD_WB", "--dt=f32,f64",
                "--tag=nchw,nhwc", "--max-ms-per-prb=5", "--csv=" + csv, 'g2mb2ic4ih7oc6oh4kh3sh2ph1n"tiny"')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(csv) as f:
            rows = f.read().splitlines()
        self.assertEqual(rows[0], "name,dir,dt,tag,mb,descriptor,status,time_min_ms,time_med_ms,gflops,first_ms")
        self.assertEqual(len(rows), 1 + 3 * 2 * 2)
        for row in rows[1:]:
            self.assertIn(",ok,", row)
            # Timings are checked for form only (a unit test asserts nothing about speed): each is
            # a positive finite number, the minimum is at most the median, and GFLOP/s is the
            # descriptor's 2*mb*oc*oh*ow*(ic/g)*kh*kw = 6912 flops over the minimum time.
            t_min, t_med, gflops, first = (float(x) for x in row.split(",")[-4:])
            for t in (t_min, t_med, first):
                self.assertTrue(0 < t < math.inf, row)
            self.assertLessEqual(t_min, t_med, row)
            self.assertAlmostEqual(gflops * t_min * 1e6 / 6912, 1, delta=1e-4, msg=row)


def conv_transpose_ref(x, w, b=None, stride=1, pad_l=(0, 0), pad_r=(0, 0), output_padding=0, dilation=1, groups=1):
    """torch's conv_transpose2d in float64 with asymmetric padding: torch pads symmetrically, so
    compute the unpadded result and crop pad_l rows from the front and pad_r from the back."""
    y = F.conv_transpose2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                           None if b is None else torch.from_numpy(b.astype(np.float64)), stride=stride,
                           padding=0, output_padding=output_padding, dilation=dilation, groups=groups)
    return y[:, :, pad_l[0]:y.shape[2] - pad_r[0], pad_l[1]:y.shape[3] - pad_r[1]]


@unittest.skipIf(torch is None, "needs torch (Debian's python3-torch)")
class DeconvTest(CliBase):
    """convkit run --op=deconv and convkit bench --driver=deconv."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(1)
        # src [N=2, IC=4, 5, 6]; weights [IC=4, OC/g=3, 3, 2], groups 2 -> dst has OC = 6
        self.dx = rng.uniform(-1, 1, (2, 4, 5, 6)).astype(np.float32)
        self.dw = rng.uniform(-1, 1, (4, 3, 3, 2)).astype(np.float32)
        self.db = rng.uniform(-1, 1, (6,)).astype(np.float32)
        for n, a in (("dx", self.dx), ("dw", self.dw), ("db", self.db)):
            np.save(self.p(n + ".npy"), a)

    def deconv(self, *extra, direction="fwd", src="dx", wei="dw"):
        args = ["run", "--op=deconv", "--dir=" + direction, "--engine=ref", "--out=" + self.out]
        if direction == "fwd":
            args += ["--src=" + self.p(src + ".npy"), "--wei=" + self.p(wei + ".npy")]
        return args + list(extra)

    def ok(self, args):
        r = run(*args)
        self.assertEqual(r.returncode, 0, f"args {args}\nstderr {r.stderr}")
        return np.load(self.out)

    def test_forward(self):
        # stride 2,3; asymmetric padding; output_padding 1,2 (< stride); groups; bias; a post-op
        common = ["--groups=2", "--stride=2,3", "--pad-l=1,0", "--pad-r=0,2", "--output-padding=1,2"]
        for tag in ("nchw", "nhwc"):
            y = self.ok(self.deconv("--bia=" + self.p("db.npy"), "--tag=" + tag, *common))
            want = conv_transpose_ref(self.dx, self.dw, self.db, stride=(2, 3), pad_l=(1, 0), pad_r=(0, 2),
                                      output_padding=(1, 2), groups=2).numpy()
            self.assertEqual(y.shape, (2, 6, 11, 17))   # (5-1)*2-1-0+2+1+1, (6-1)*3-0-2+1+2+1
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        y = self.ok(self.deconv("--bia=" + self.p("db.npy"), "--post-ops=relu", *common))
        np.testing.assert_allclose(y, np.maximum(want, 0), rtol=1e-5, atol=1e-5)
        # output_padding >= stride is allowed where the dilation is larger (PyTorch's rule)
        y = self.ok(self.deconv("--groups=2", "--dilation=3", "--output-padding=2"))
        want = conv_transpose_ref(self.dx, self.dw, dilation=3, output_padding=2, groups=2).numpy()
        self.assertEqual(y.shape, (2, 6, 13, 11))
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        # f64 in, f64 out
        np.save(self.p("dx64.npy"), self.dx.astype(np.float64))
        np.save(self.p("dw64.npy"), self.dw.astype(np.float64))
        y = self.ok(self.deconv("--dt=f64", "--groups=2", "--stride=2", src="dx64", wei="dw64"))
        self.assertEqual(y.dtype, np.float64)
        np.testing.assert_allclose(y, conv_transpose_ref(self.dx, self.dw, stride=2, groups=2).numpy(), rtol=1e-12, atol=1e-12)

    def test_backward(self):
        kw = dict(stride=(2, 3), pad_l=(1, 0), pad_r=(0, 2), output_padding=(1, 2), groups=2)
        common = ["--groups=2", "--stride=2,3", "--pad-l=1,0", "--pad-r=0,2", "--output-padding=1,2"]
        x = torch.from_numpy(self.dx.astype(np.float64)).requires_grad_(True)
        w = torch.from_numpy(self.dw.astype(np.float64)).requires_grad_(True)
        b = torch.from_numpy(self.db.astype(np.float64)).requires_grad_(True)
        y = conv_transpose_ref(x.detach().numpy(), w.detach().numpy(), None, **kw)  # for the shape
        g = np.random.default_rng(2).uniform(-1, 1, tuple(y.shape)).astype(np.float32)
        np.save(self.p("g.npy"), g)
        yt = F.conv_transpose2d(x, w, b, stride=(2, 3), output_padding=(1, 2), groups=2)
        yt = yt[:, :, 1:yt.shape[2], 0:yt.shape[3] - 2]
        yt.backward(torch.from_numpy(g.astype(np.float64)))
        for tag in ("nchw", "nhwc"):
            dx = self.ok(self.deconv("--diff-dst=" + self.p("g.npy"), "--wei=" + self.p("dw.npy"),
                                     "--src-shape=2,4,5,6", "--tag=" + tag, *common, direction="bwd_d"))
            np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-5, atol=1e-5)
            out_b = self.p("ob.npy")
            dw = self.ok(self.deconv("--diff-dst=" + self.p("g.npy"), "--src=" + self.p("dx.npy"),
                                     "--wei-shape=4,3,3,2", "--out-bia=" + out_b, "--tag=" + tag, *common,
                                     direction="bwd_w"))
            np.testing.assert_allclose(dw, w.grad.numpy(), rtol=1e-5, atol=1e-5)
            db = np.load(out_b)
            self.assertEqual(db.shape, (6,))    # OC = weights[1] * groups, not weights[0]
            np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-5, atol=1e-5)

    def test_output_shape_and_auto_pad(self):
        # h: in 5, k 3, stride 2 -> (5-1)*2 + 3 = 11 rows without padding; w: in 6, k 2 -> 12.
        full = conv_transpose_ref(self.dx, self.dw, stride=2, groups=2).numpy()
        self.assertEqual(full.shape[2:], (11, 12))
        g2 = ["--groups=2", "--stride=2"]
        # --output-shape=8,12: total padding h 3, w 0. SAME_UPPER (the default): h front 1, back 2.
        want = full[:, :, 1:9, :]
        np.testing.assert_allclose(self.ok(self.deconv("--output-shape=8,12", *g2)), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(self.ok(self.deconv("--output-shape=8,12", "--auto-pad=SAME_UPPER", *g2)),
                                   want, rtol=1e-5, atol=1e-5)
        # SAME_LOWER: the larger half in front, h front 2, back 1.
        np.testing.assert_allclose(self.ok(self.deconv("--output-shape=8,12", "--auto-pad=SAME_LOWER", *g2)),
                                   full[:, :, 2:10, :], rtol=1e-5, atol=1e-5)
        # output_padding enters the total: h 11 + 1 = 12 rows, output 9 -> total 3 again
        fullop = conv_transpose_ref(self.dx, self.dw, stride=2, output_padding=1, groups=2).numpy()
        np.testing.assert_allclose(self.ok(self.deconv("--output-shape=9,10", "--output-padding=1", *g2)),
                                   fullop[:, :, 1:10, 1:11], rtol=1e-5, atol=1e-5)
        # SAME_* without --output-shape: out = in * stride = 10 x 12, total h 1, w 0
        y = self.ok(self.deconv("--auto-pad=SAME_UPPER", *g2))
        np.testing.assert_allclose(y, full[:, :, 0:10, :], rtol=1e-5, atol=1e-5)
        y = self.ok(self.deconv("--auto-pad=SAME_LOWER", *g2))
        np.testing.assert_allclose(y, full[:, :, 1:11, :], rtol=1e-5, atol=1e-5)
        # VALID: no padding
        np.testing.assert_allclose(self.ok(self.deconv("--auto-pad=VALID", *g2)), full, rtol=1e-5, atol=1e-5)
        # bwd_d and bwd_w derive the same padding
        g = np.random.default_rng(3).uniform(-1, 1, (2, 6, 8, 12)).astype(np.float32)
        np.save(self.p("g8.npy"), g)
        x = torch.from_numpy(self.dx.astype(np.float64)).requires_grad_(True)
        F.conv_transpose2d(x, torch.from_numpy(self.dw.astype(np.float64)), stride=2, groups=2)[:, :, 1:9, :].backward(
            torch.from_numpy(g.astype(np.float64)))
        dx = self.ok(self.deconv("--diff-dst=" + self.p("g8.npy"), "--wei=" + self.p("dw.npy"), "--src-shape=2,4,5,6",
                                 "--output-shape=8,12", *g2, direction="bwd_d"))
        np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-5, atol=1e-5)
        dw = self.ok(self.deconv("--diff-dst=" + self.p("g8.npy"), "--src=" + self.p("dx.npy"), "--wei-shape=4,3,3,2",
                                 "--output-shape=8,12", *g2, direction="bwd_w"))
        self.assertEqual(dw.shape, (4, 3, 3, 2))

    def test_deconv_errors(self):
        g2 = ["--groups=2", "--stride=2"]
        self.assertBad(self.deconv("--groups=2", "--output-padding=1"),
                       "output_padding h (1) must be smaller than either stride (1) or dilation (1)")
        self.assertBad(self.deconv("--groups=2", "--stride=2", "--output-padding=2,1"),
                       "output_padding h (2) must be smaller than either stride (2) or dilation (1)")
        self.assertBad(self.deconv("--groups=3"), "groups=3")
        np.save(self.p("w5.npy"), np.zeros((5, 3, 3, 2), np.float32))
        self.assertBad(self.deconv("--groups=2", wei="w5"), "weights has 5 input channels", "src has 4 channels")
        # conv-layout weights [OC, IC/g, k...] for a deconv: dim 0 is not src's channels
        np.save(self.p("wconv.npy"), np.zeros((6, 2, 3, 2), np.float32))
        self.assertBad(self.deconv("--groups=2", wei="wconv"), "[IC, OC/groups, k...]")
        self.assertBad(self.fwd("--output-padding=1"), "--output-padding", "only to --op=deconv")
        self.assertBad(self.fwd("--output-shape=4,4"), "only to --op=deconv")
        self.assertBad(self.fwd("--auto-pad=VALID"), "only to --op=deconv")
        self.assertBad(self.deconv("--op=sideways"), "--op")
        self.assertBad(self.deconv("--output-shape=13,12", *g2),
                       "--output-shape h 13 is larger than the transposed convolution produces", "= 11",
                       "total padding would be -2")
        self.assertBad(self.deconv("--auto-pad=SAME_UPPER", "--groups=2", "--stride=4"),
                       "in * stride = 5 * 4 = 20", "= 19", "total padding would be -1")
        self.assertBad(self.deconv("--output-shape=0,12", *g2), "--output-shape h must be >= 1, got 0")
        self.assertBad(self.deconv("--output-shape=8,12,3", *g2), "--output-shape has 3 values", "2 spatial dims")
        self.assertBad(self.deconv("--output-shape=8,12", "--pad-l=1", *g2), "--pad-l/--pad-r cannot be combined")
        self.assertBad(self.deconv("--output-shape=8,12", "--auto-pad=NOTSET", *g2), "--auto-pad=NOTSET")
        self.assertBad(self.deconv("--output-shape=8,12", "--auto-pad=VALID", *g2), "VALID means no padding")
        self.assertBad(self.deconv("--auto-pad=SIDEWAYS", *g2), "--auto-pad")
        self.assertBad(self.deconv("--pad-l=6", "--pad-r=6", *g2), "dst size h would be -1")
        np.save(self.p("g.npy"), np.zeros((2, 6, 10, 12), np.float32))
        self.assertBad(self.deconv("--diff-dst=" + self.p("g.npy"), "--wei=" + self.p("dw.npy"), "--src-shape=2,4,5,6",
                                   *g2, direction="bwd_d"), "--diff-dst", "gives dst [2, 6, 11, 12]")
        self.assertBad(self.deconv("--diff-dst=" + self.p("g.npy"), "--src=" + self.p("dx.npy"), *g2,
                                   direction="bwd_w"), "--wei-shape=IC,OC/G")
        self.assertBad(self.deconv("--diff-dst=" + self.p("g.npy"), "--src=" + self.p("dx.npy"), *g2,
                                   "--wei-shape=4,3,3,2", direction="bwd_w"), "gives dst [2, 6, 11, 12]")

    def test_bench_deconv(self):
        # The DCGAN generator's transposed convolutions, every direction, the chosen engine
        # against the reference; mb1 keeps it to a few seconds.
        r = run("bench", "--driver=deconv", "--mode=corr", "--mb=1", "--dir=FWD_B,BWD_D,BWD_WB",
                "--batch=" + os.path.join(ROOT, "inputs", "deconv_dcgan"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("correctness: all problems within tolerance", r.stdout)
        self.assertEqual(sum(1 for l in r.stdout.splitlines() if l.startswith("convt_")), 15)
        csv = self.p("d.csv")
        # benchdnn's deconv rule: oh = (ih-1)*sh - 2*ph + (kh-1)*(dh+1) + 1 = 11; oh12 -> output_padding 1
        r = run("bench", "--driver=deconv", "--engine=ref", "--mode=both", "--dir=FWD_B,BWD_D,BWD_WB",
                "--max-ms-per-prb=5", "--csv=" + csv, 'g2mb2ic4ih5oc6kh3sh2ph0n"tiny"', 'g2mb2ic4ih5oc6oh12kh3sh2ph0n"op"')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(csv) as f:
            rows = f.read().splitlines()[1:]
        self.assertEqual(len(rows), 6)
        for row in rows:
            self.assertIn(",ok,", row)
            t_min, gflops = float(row.split(",")[-4]), float(row.split(",")[-2])
            # 2 * mb * ic * ih * iw * (oc/g) * kh * kw = 2*2*4*25*3*9
            self.assertAlmostEqual(gflops * t_min * 1e6 / 10800, 1, delta=1e-4, msg=row)
        self.assertIn('g2ic4ih5oc6oh11kh3sh2ph0n"tiny"', rows[0])
        self.assertIn('g2ic4ih5oc6oh12kh3sh2ph0n"op"', rows[1])

    def test_bench_deconv_errors(self):
        self.assertBad(["bench", "--driver=deconv", "--engine=ref", "ic4ih5oc4oh13kh3sh2ph0"],
                       "deconv descriptor", "output_padding 2", "smaller than sh")
        self.assertBad(["bench", "--driver=deconv", "--engine=ref", "ic4ih2oc4kh3ph3"], "deconv descriptor", "oh would be -2 = (ih 2 - 1)")
        self.assertBad(["bench", "--driver=deconv", "--engine=ref", "--prepack", "ic4ih5oc4kh3"], "--prepack")
        self.assertBad(["bench", "--driver=sideways", "--engine=ref", "ic4ih5oc4kh3"], "--driver")


if __name__ == "__main__":
    for a in list(sys.argv[1:]):
        if a.startswith("--convkit="):
            CONVKIT = a.split("=", 1)[1]
            sys.argv.remove(a)
    if not CONVKIT:
        sys.exit("usage: test_cli.py --convkit=PATH")
    unittest.main(verbosity=2)
