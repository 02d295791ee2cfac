#!/usr/bin/python3
"""Per-call cost of convkit's Python API against torch.nn.functional.conv2d, side by side.

A cached tiny conv2d (1x16x8x8 input, 16 filters 3x3, padding 1, bias, CPU, float32): torch
tensors in, a convkit.Tensor out, against F.conv2d on the same tensors. Both run in the same
process with the same thread count (torch.set_num_threads / convkit.set_num_threads), in
alternating rounds so that a noisy machine hits both alike; the figure is the median over rounds
of the per-call mean of each round.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_overhead.py [--threads=2]
        [--format=nchw|nhwc|both] [--iters=2000] [--rounds=21] [--max-ratio=1.5]

--max-ratio makes the exit status 1 when convkit's time exceeds that multiple of PyTorch's.
"""
import argparse
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import convkit


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def per_call_us(fn, iters):
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters * 1e6


def measure(fmt, iters, rounds):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, 8, generator=g)
    w = torch.randn(16, 16, 3, 3, generator=g)
    b = torch.randn(16, generator=g)
    if fmt == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    conv2d = convkit.conv2d

    def run_torch():
        F.conv2d(x, w, b, 1, 1)

    def run_convkit():
        conv2d(x, w, b, 1, 1)

    # The same answer, and both warm (convkit's plan cached, PyTorch's kernels chosen).
    got = torch.from_dlpack(conv2d(x, w, b, 1, 1))
    want = F.conv2d(x, w, b, 1, 1)
    err = (got - want).abs().max().item()
    assert err < 1e-4, f"convkit and PyTorch disagree by {err}"
    for _ in range(max(200, iters // 4)):
        run_torch()
        run_convkit()
    t_torch, t_convkit = [], []
    for r in range(rounds):
        # Alternate which goes first so that neither always follows the other's cache state.
        if r % 2 == 0:
            t_torch.append(per_call_us(run_torch, iters))
            t_convkit.append(per_call_us(run_convkit, iters))
        else:
            t_convkit.append(per_call_us(run_convkit, iters))
            t_torch.append(per_call_us(run_torch, iters))
    return statistics.median(t_torch), statistics.median(t_convkit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--format", choices=["nchw", "nhwc", "both"], default="nchw")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--max-ratio", type=float, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    convkit.set_num_threads(a.threads)
    print(f"CPU: {cpu_name()}")
    print(f"torch {torch.__version__}, convkit {convkit.__version__}; {convkit.engine_info('cpu')}")
    print(f"conv2d 1x16x8x8, 16 filters 3x3, padding 1, bias, float32, {a.threads} threads; "
          f"median of {a.rounds} rounds of {a.iters} calls")
    worst = 0.0
    for fmt in (["nchw", "nhwc"] if a.format == "both" else [a.format]):
        tt, tc = measure(fmt, a.iters, a.rounds)
        ratio = tc / tt
        worst = max(worst, ratio)
        print(f"{fmt}: torch.nn.functional.conv2d {tt:8.2f} us   convkit.conv2d {tc:8.2f} us   "
              f"ratio {ratio:.2f}x")
    if a.max_ratio is not None and worst > a.max_ratio:
        print(f"FAIL: ratio {worst:.2f}x exceeds {a.max_ratio}x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
