#!/usr/bin/env python3
"""Command-line behaviour of `convkit run` and `convkit bench`: a correct run, and every kind of
bad input (usage, validation, malformed .npy files) exits with status 2, prints one clear line on
stderr naming the problem, and leaves an existing --out file byte-for-byte untouched.

Usage: test_cli.py --convkit=PATH [unittest args]"""
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

CONVKIT = None


def run(*args, **kw):
    return subprocess.run([CONVKIT, *args], capture_output=True, text=True, timeout=120, **kw)


class CliTest(unittest.TestCase):
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
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        for n in needles:
            self.assertIn(n, err)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), self.sentinel, "--out was modified by a failed run")
        return err

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


if __name__ == "__main__":
    for a in list(sys.argv[1:]):
        if a.startswith("--convkit="):
            CONVKIT = a.split("=", 1)[1]
            sys.argv.remove(a)
    if not CONVKIT:
        sys.exit("usage: test_cli.py --convkit=PATH")
    unittest.main(verbosity=2)
