#!/usr/bin/python3
"""Two convkit builds side by side on the same batch file: `convkit bench --mode=perf` of each, in
alternating rounds, keeping each layer's best time over the rounds (a round disturbed by another
job on a shared machine does not count against either side). Prints the per-configuration sums
and the ratio B/A (> 1: B is slower). For "unchanged within noise" claims after a change.

  /usr/bin/python3 bench/ab_convkit.py --a=/tmp/base/build/convkit --b=build/convkit \\
      --dirs=FWD_B,BWD_D,BWD_WB --dts=f32 --tags=nhwc,nchw [--env ONEDNN_MAX_CPU_ISA=AVX2]
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(binary, args, d, dt, tag, env):
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as f:
        path = f.name
    cmd = [binary, "bench", "--mode=perf", "--engine=" + args.engine, "--batch=" + args.batch, "--mb=%d" % args.mb,
           "--dir=" + d, "--dt=" + dt, "--tag=" + tag, "--csv=" + path, "--max-ms-per-prb=%g" % args.max_ms]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    out = {row["name"]: float(row["time_min_ms"]) for row in csv.DictReader(open(path)) if row["status"] == "ok"}
    os.unlink(path)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="convkit binary A (e.g. before a change)")
    ap.add_argument("--b", required=True, help="convkit binary B (after)")
    ap.add_argument("--batch", default=os.path.join(ROOT, "inputs", "resnet_50"))
    ap.add_argument("--engine", default="cpu")
    ap.add_argument("--mb", type=int, default=1)
    ap.add_argument("--dirs", default="FWD_B,BWD_D,BWD_WB")
    ap.add_argument("--dts", default="f32")
    ap.add_argument("--tags", default="nhwc,nchw")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-ms", type=float, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--env", action="append", default=[], help="K=V for both sides (repeatable)")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for kv in args.env:
        k, v = kv.split("=", 1)
        env[k] = v
    header = subprocess.run([args.b, "bench", "--mode=perf", "--engine=" + args.engine, "--max-ms-per-prb=1",
                             "mb1ic16ih8oc16oh8kh3ph1"], check=True, capture_output=True, text=True, env=env)
    print("A %s vs B %s, %s, mb %d, %d rounds; %s" % (args.a, args.b, os.path.basename(args.batch), args.mb,
                                                     args.rounds, header.stdout.splitlines()[0].lstrip("# ")))
    configs = [(d, dt, tag) for d in args.dirs.split(",") for dt in args.dts.split(",") for tag in args.tags.split(",")]
    best = {}
    for r in range(args.rounds):
        for cfg in configs:
            for side, binary in (("a", args.a), ("b", args.b)):
                for name, t in bench(binary, args, *cfg, env).items():
                    key = (cfg, side)
                    best.setdefault(key, {})[name] = min(best.get(key, {}).get(name, float("inf")), t)
        print("round %d/%d done" % (r + 1, args.rounds), file=sys.stderr, flush=True)
    print("%-6s %-5s %-5s %10s %10s %7s" % ("dir", "dt", "tag", "A_ms", "B_ms", "B/A"))
    for cfg in configs:
        a = sum(best[(cfg, "a")].values())
        b = sum(best[(cfg, "b")].values())
        print("%-6s %-5s %-5s %10.2f %10.2f %6.3fx" % (cfg[0], cfg[1], cfg[2], a, b, b / a))


if __name__ == "__main__":
    main()
