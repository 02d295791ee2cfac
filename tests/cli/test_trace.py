#!/usr/bin/env python3
"""The trace replays: every exec line of a traced `convkit bench` run (CONVKIT_VERBOSE=1) carries
a `convkit bench` command line; run as printed (traced again), it executes the same problem: an
exec line with the same engine, primitive, implementation, direction, tensors, post-ops,
algorithm and problem fields, and the same command line. Covers convolution and deconvolution,
every direction, 1D/2D/3D, groups, dilation, strides with end padding, binary and eltwise post-ops,
f32/bf16/f64 and both layouts, on the ref and cpu engines. Also: CONVKIT_VERBOSE=2 adds plan and
dispatch lines, and a traced run's results equal an untraced one's.

Usage: test_trace.py --convkit=PATH [unittest args]"""
import os
import subprocess
import sys
import unittest

CONVKIT = None

# (driver, dirs, dts, tags, post-ops, descriptors)
RUNS = [
    ("conv", "FWD_B,BWD_D,BWD_WB", "f32,bf16", "nchw,nhwc", "", ["mb2ic4ih9oc6oh5kh3sh2ph1", "g2mb1ic4iw11oc6kw3dw1pw2"]),
    ("conv", "FWD_D", "f32", "nhwc", "relu+add:f32:per_oc+sum:0.5", ["mb1ic8ih7oc8oh4kh3sh2ph1"]),
    ("conv", "FWD_B", "f64", "nchw", "clip:-0.5:0.5", ["mb1ic3id5ih6iw7oc4od3oh4ow5kd3kh3kw3"]),
    ("conv", "BWD_W", "f32", "nchw", "", ["mb2ic3ih8oc5oh4kh1sh2ph0"]),  # 1x1 stride 2: padding_r -1
    ("deconv", "FWD_B,BWD_D,BWD_WB", "f32", "nchw,nhwc", "", ["mb2ic4ih5oc6oh10kh3sh2ph1", "g2mb1ic4iw6oc2ow13kw3sw2dw1pw1"]),
    ("deconv", "FWD_D", "bf16", "nhwc", "gelu_tanh", ["mb1ic8ih4oc4oh8kh4sh2ph1"]),
]


def bench(args, level=1):
    # The cpu engine's automatic choice between native and widened 16-bit kernels is measured at
    # run time, so two processes may pick differently (and print other implementations): fixed.
    env = dict(os.environ, CONVKIT_VERBOSE=str(level))
    env.setdefault("CONVKIT_CPU_WIDE", "1")
    r = subprocess.run([CONVKIT, "bench", *args], capture_output=True, text=True, timeout=300, env=env)
    return r


def lines(stderr, kind):
    return [l for l in stderr.splitlines() if l.startswith("convkit_verbose," + kind)]


def problem_fields(line):
    """engine .. problem_desc (oneDNN's fields 2-9) and the reproducer; not the time."""
    f = line.split(",")
    assert len(f) == 12, line
    return tuple(f[2:10]), f[11]


class TraceReplay(unittest.TestCase):
    def test_every_exec_line_replays_the_same_problem(self):
        seen = {}
        for driver, dirs, dts, tags, post, descs in RUNS:
            for engine in ("ref", "cpu"):
                args = ["--mode=corr", "--engine=" + engine, "--driver=" + driver, "--dir=" + dirs, "--dt=" + dts,
                        "--tag=" + tags, *descs]
                if post:
                    args.append("--attr-post-ops=" + post)
                r = bench(args)
                self.assertEqual(r.returncode, 0, f"{args}\n{r.stdout}\n{r.stderr}")
                execs = lines(r.stderr, "exec,")
                self.assertGreater(len(execs), 0, r.stderr)
                for l in execs:
                    fields, repro = problem_fields(l)
                    seen.setdefault(repro, fields)
        self.assertGreater(len(seen), 40, "too few distinct problems traced")
        for repro, fields in seen.items():
            words = repro.split()
            env_words = [w for w in words[:words.index("convkit")]]
            self.assertEqual(env_words, [], f"no switch was changed, yet: {repro}")
            self.assertEqual(words[:2], ["convkit", "bench"], repro)
            r = bench(words[2:])
            self.assertEqual(r.returncode, 0, f"{repro}\n{r.stdout}\n{r.stderr}")
            self.assertIn("correctness: all problems within tolerance", r.stdout, repro)
            replayed = [problem_fields(l) for l in lines(r.stderr, "exec,")]
            self.assertIn((fields, repro), replayed, f"{repro} did not run the traced problem:\n{r.stderr}")

    def test_level_two_adds_plan_and_dispatch_lines(self):
        r = bench(["--mode=corr", "--engine=cpu", "--dir=FWD_B", "mb1ic4ih8oc4kh3ph1"], level=2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(lines(r.stderr, "create:cache_miss,cpu,convolution,"), r.stderr)
        self.assertTrue(lines(r.stderr, "dispatch,cpu,convolution,engine:cpu,"), r.stderr)
        self.assertEqual(len(lines(r.stderr, "info,convkit ")), 1, "one header per process")

    def test_off_by_default_and_results_unchanged(self):
        env = {k: v for k, v in os.environ.items() if k != "CONVKIT_VERBOSE"}
        env.setdefault("CONVKIT_CPU_WIDE", "1")  # as bench() does
        args = [CONVKIT, "bench", "--mode=corr", "--engine=cpu", "--dir=FWD_B,BWD_D,BWD_WB", "mb2ic4ih9oc6kh3ph1"]
        plain = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(plain.returncode, 0, plain.stderr)
        self.assertNotIn("convkit_verbose", plain.stderr)
        traced = bench(args[2:])
        # Same rows (status and max error) with the trace on.
        # (a row: dir dt tag mb status min med GFLOP/s max_err first_ms, the name empty here)
        strip = lambda out: [l.split()[:5] + l.split()[-2:-1] for l in out.splitlines() if not l.startswith("#")]
        self.assertEqual(strip(plain.stdout), strip(traced.stdout))


if __name__ == "__main__":
    for a in list(sys.argv[1:]):
        if a.startswith("--convkit="):
            CONVKIT = a.split("=", 1)[1]
            sys.argv.remove(a)
    if not CONVKIT:
        sys.exit("usage: test_trace.py --convkit=PATH")
    unittest.main(verbosity=2)
