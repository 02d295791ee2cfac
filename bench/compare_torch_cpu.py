#!/usr/bin/python3
"""convkit's CPU engine against PyTorch (Debian python3-torch, oneDNN 2.6 inside) on the same
convolution layers, same threads, same layout, in one run.

For each direction / dtype / layout it runs `convkit bench --mode=perf --engine=cpu` over a batch
file and times PyTorch on the same shapes, then prints the sum of the per-layer times and the ratio
PyTorch / convkit (> 1: convkit is faster). `pytorch_ms` is PyTorch's steady state (best call);
`pytorch_mean_ms` is timed the way anchors/torch_cpu_resnet50.py does it (one warm-up call, mean
of the next five), which is how the figures in ANCHORS.md were taken. The dev machine is shared, so both sides are measured in
alternating rounds and each layer keeps its best time over the rounds (min over rounds of the min
over calls): a round disturbed by someone else's job does not count against either side.

`prepacked` rows time convkit's forward with weights packed once by prepack_weights()
(build/bench/bench_cpu_resnet50) against PyTorch's ordinary forward call.
f64 rows also print GFLOP/s and the fraction of this machine's dgemm rate (2048^3, same threads).

  /usr/bin/python3 bench/compare_torch_cpu.py --mb=1 --dirs=fwd,bwd_d,bwd_w --dts=f32 --tags=nhwc,nchw

`--first-calls` prints instead the cost of first use: each layer's first call in a fresh process
(plan build, reorders, kernel JIT on both sides) minus its steady time, summed over the layers.

  /usr/bin/python3 bench/compare_torch_cpu.py --first-calls --dts=f32 --tags=nhwc

`--max-isa=AVX2` runs both sides as on a CPU without AVX-512: ONEDNN_MAX_CPU_ISA caps the oneDNN
inside convkit and inside PyTorch (the same system libdnnl.so.2), ATEN_CPU_CAPABILITY PyTorch's
own kernels. f16 has no PyTorch CPU convolution (1.13: "not implemented for 'Half'"); its rows
say so. With f32 among --dts, `vs_f32` is convkit's time over convkit's own f32 time.

  /usr/bin/python3 bench/compare_torch_cpu.py --max-isa=AVX2 --dts=f32,bf16,f16 --tags=nhwc --prepacked=

`--driver=deconv` reads the batch file as transposed convolutions (benchdnn's deconv descriptors)
and times PyTorch's conv_transpose2d; `--post-ops=relu` adds an activation that convkit fuses into
its forward and PyTorch runs as its own op after it.

  /usr/bin/python3 bench/compare_torch_cpu.py --driver=deconv --batch=inputs/deconv_unet --dts=f32,bf16 --mb=1

`--layers-csv=FILE` writes one row per layer and configuration, the per-layer file that
`convkit bench --report=R.html --torch-csv=FILE` draws beside convkit's bars (docs/cli.md):
name,dir,dt,tag,mb,pytorch_ms,pytorch_mean_ms,convkit_ms, with pytorch_ms PyTorch's best call
over the rounds, pytorch_mean_ms the anchors' mean and convkit_ms this script's own convkit time.
Configurations PyTorch cannot run (f16) have no rows; prepacked rows are convkit-only, so none.

  /usr/bin/python3 bench/compare_torch_cpu.py --dirs=fwd --dts=f32 --tags=nhwc --prepacked= --layers-csv=/tmp/pt.csv
  build/convkit bench --mode=perf --engine=cpu --batch=inputs/resnet_50 --mb=1 --dir=fwd --dt=f32 --tag=nhwc \
      --report=/tmp/resnet50.html --torch-csv=/tmp/pt.csv
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_DT = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16, "f64": torch.float64}


DECONV = False  # --driver=deconv: the batch file's descriptors are transposed convolutions
POST_OPS = ""   # --post-ops: convkit fuses them into its forward, PyTorch runs them after it


def parse_batch(path):
    """2D benchdnn descriptors of a batch file -> [(name, ic, oc, ih, iw, kh, kw, sh, sw, ph, pw, g, oph, opw)].
    op*: a deconvolution's output_padding (its descriptor's output larger than the padding gives)."""
    layers = []
    for line in open(path):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name = re.search(r'n"([^"]*)"', line)
        d = dict((k, int(v)) for k, v in re.findall(r"([a-z]+)(\d+)", re.sub(r'n"[^"]*"', "", line)))
        ih = d.get("ih", d.get("iw"))
        iw = d.get("iw", ih)
        kh = d.get("kh", d.get("kw", 1))
        kw = d.get("kw", kh)
        sh = d.get("sh", d.get("sw", 1))
        sw = d.get("sw", sh)
        ph = d.get("ph", d.get("pw", 0))
        pw = d.get("pw", ph)
        oph = opw = 0
        if DECONV:
            nat_h, nat_w = (ih - 1) * sh - 2 * ph + kh, (iw - 1) * sw - 2 * pw + kw
            oh = d.get("oh", nat_h)
            oph, opw = oh - nat_h, d.get("ow", oh if iw == ih else nat_w) - nat_w
        layers.append((name.group(1) if name else line, d["ic"], d["oc"], ih, iw, kh, kw, sh, sw, ph, pw, d.get("g", 1),
                       oph, opw))
    return layers


def flops(layer, mb):
    _, ic, oc, ih, iw, kh, kw, sh, sw, ph, pw, g, _, _ = layer
    if DECONV:  # every input element meets every tap once
        return 2.0 * mb * ic * (oc // g) * kh * kw * ih * iw
    oh = (ih + 2 * ph - kh) // sh + 1
    ow = (iw + 2 * pw - kw) // sw + 1
    return 2.0 * mb * oc * (ic // g) * kh * kw * oh * ow


def convkit_times(args, direction, dt, tag):
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as f:
        path = f.name
    cmd = [args.convkit, "bench", "--mode=perf", "--engine=cpu", "--batch=" + args.batch, "--mb=%d" % args.mb,
           "--dir=" + direction, "--dt=" + dt, "--tag=" + tag, "--csv=" + path, "--max-ms-per-prb=%g" % args.max_ms]
    if DECONV:
        cmd.append("--driver=deconv")
    if POST_OPS and direction == "fwd":
        cmd.append("--attr-post-ops=" + POST_OPS)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    out = {}
    for row in csv.DictReader(open(path)):
        if row["status"] != "ok":
            raise RuntimeError("convkit bench: %s %s %s %s: %s" % (row["name"], direction, dt, tag, row["status"]))
        out[row["name"]] = float(row["time_min_ms"])
    os.unlink(path)
    return out


def prepacked_times(args, dt, tag):
    exe = os.path.join(os.path.dirname(args.convkit), "bench", "bench_cpu_resnet50")
    cmd = [exe, "--mb=%d" % args.mb, "--benchmark_filter=^fwd/%s/%s/prepacked/" % (dt, tag), "--benchmark_format=csv"]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    out = {}
    rows = list(csv.reader(res.stdout.splitlines()))
    header = next(r for r in rows if r and r[0] == "name")
    col = header.index("min_ms")
    for row in rows:
        if row and row[0].strip('"').startswith("fwd/"):
            out[row[0].strip('"').split("/")[4]] = float(row[col])
    return out


def best_of(fn, calls):
    """(min, mean) over `calls` timed calls after one warm-up call, in ms. The mean is what
    anchors/torch_cpu_resnet50.py reports; it includes PyTorch's second-call costs (its output
    allocation falls outside malloc's cache until the mmap threshold adapts), which the min
    does not."""
    fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3, sum(times) / len(times) * 1e3


def torch_call(layer, mb, tdt, tag, direction):
    """(name, fn): one PyTorch call of `layer` in `direction` on fresh random tensors in the user
    layout `tag`. Nothing runs the shape before fn does (diff_dst is made, not computed), so the
    first fn() is that shape's first call. convkit's fwd is FWD_B, so PyTorch's gets the bias too."""
    name, ic, oc, ih, iw, kh, kw, sh, sw, ph, pw, g, oph, opw = layer
    if DECONV:
        return name, deconv_call(layer, mb, tdt, tag, direction)
    oh = (ih + 2 * ph - kh) // sh + 1
    ow = (iw + 2 * pw - kw) // sw + 1
    x = torch.randn(mb, ic, ih, iw, dtype=tdt)
    w = torch.randn(oc, ic // g, kh, kw, dtype=tdt)
    b = torch.randn(oc, dtype=tdt)
    gy = torch.randn(mb, oc, oh, ow, dtype=tdt)
    if tag == "nhwc":
        x, w, gy = (t.to(memory_format=torch.channels_last) for t in (x, w, gy))
    if direction == "fwd":
        return name, lambda: F.conv2d(x, w, b, stride=(sh, sw), padding=(ph, pw), groups=g)
    mask = [True, False, False] if direction == "bwd_d" else [False, True, False]
    return name, lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [sh, sw], [ph, pw], [1, 1], False, [0, 0],
                                                             g, mask)


def post_ops_fn():
    """PyTorch's ops after the convolution for --post-ops (eltwise ones, in order)."""
    fns = {"relu": F.relu, "gelu_erf": F.gelu, "tanh": torch.tanh, "logistic": torch.sigmoid, "swish": F.silu}
    chain = [fns[op] for op in POST_OPS.split("+")] if POST_OPS else []

    def apply(y):
        for f in chain:
            y = f(y)
        return y
    return apply


def deconv_call(layer, mb, tdt, tag, direction):
    """PyTorch's transposed convolution of `layer` (weights [IC, OC/g, k, k]); fwd with the bias
    (convkit's FWD_B) and the --post-ops after it; backward through aten::convolution_backward."""
    name, ic, oc, ih, iw, kh, kw, sh, sw, ph, pw, g, oph, opw = layer
    x = torch.randn(mb, ic, ih, iw, dtype=tdt)
    w = torch.randn(ic, oc // g, kh, kw, dtype=tdt)
    b = torch.randn(oc, dtype=tdt)
    oh, ow = (ih - 1) * sh - 2 * ph + kh + oph, (iw - 1) * sw - 2 * pw + kw + opw
    gy = torch.randn(mb, oc, oh, ow, dtype=tdt)
    if tag == "nhwc":
        x, w, gy = (t.to(memory_format=torch.channels_last) for t in (x, w, gy))
    if direction == "fwd":
        after = post_ops_fn()
        return lambda: after(F.conv_transpose2d(x, w, b, stride=(sh, sw), padding=(ph, pw), output_padding=(oph, opw),
                                                groups=g))
    mask = [True, False, False] if direction == "bwd_d" else [False, True, False]
    return lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [sh, sw], [ph, pw], [1, 1], True, [oph, opw], g,
                                                       mask)


def torch_times(args, layers, direction, dt, tag):
    """{layer: (min, mean)}, or a string: why PyTorch cannot run this configuration."""
    out = {}
    tdt = TORCH_DT[dt]
    # PyTorch 1.13 sends bf16 to oneDNN only when cpuinfo reports avx512bw/vl/dq (its
    # mkldnn_bf16_device_check reads the hardware, not ONEDNN_MAX_CPU_ISA); on a real AVX2 CPU it
    # takes its own slow_conv2d path. Under an AVX2 cap, oneDNN would refuse bf16, so PyTorch's
    # bf16 calls run with mkldnn off: the path they take on such a CPU.
    below_avx512 = args.max_isa and not args.max_isa.upper().startswith("AVX512")
    with torch.backends.mkldnn.flags(enabled=not (below_avx512 and dt == "bf16")):
        for layer in layers:
            name, fn = torch_call(layer, args.mb, tdt, tag, direction)
            try:
                out[name] = best_of(fn, args.calls)
            except RuntimeError as e:
                return str(e).splitlines()[0]
    return out


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def convkit_engine_line(args):
    """convkit bench's header line: oneDNN version, the ISA in effect, threads, 16-bit path."""
    res = subprocess.run([args.convkit, "bench", "--mode=perf", "--engine=cpu", "--max-ms-per-prb=1",
                          "mb1ic16ih8oc16oh8kh3ph1"], check=True, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    return res.stdout.splitlines()[0].lstrip("# ")


def convkit_first_calls(args, direction, dt, tag):
    """{layer: (first_ms, steady_ms)} from one fresh `convkit bench` process: each layer's first
    call (plan build, weight reorder, kernel JIT) and its best steady call."""
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as f:
        path = f.name
    cmd = [args.convkit, "bench", "--mode=perf", "--engine=cpu", "--batch=" + args.batch, "--mb=%d" % args.mb,
           "--dir=" + direction, "--dt=" + dt, "--tag=" + tag, "--csv=" + path, "--max-ms-per-prb=%g" % args.max_ms]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    out = {row["name"]: (float(row["first_ms"]), float(row["time_min_ms"])) for row in csv.DictReader(open(path))}
    os.unlink(path)
    return out


def torch_first_calls_worker(args, direction, dt, tag):
    """Runs in a fresh interpreter: per layer, the first call of that shape, then the best of
    args.calls steady calls; prints 'first <name> <first_ms> <steady_ms>' lines."""
    torch.set_num_threads(args.threads)
    tdt = TORCH_DT[dt]
    for layer in parse_batch(args.batch):
        name, fn = torch_call(layer, args.mb, tdt, tag, direction)
        t = time.perf_counter()
        fn()
        first = (time.perf_counter() - t) * 1e3
        steady = best_of(fn, args.calls)[0]
        print("first %s %.4f %.4f" % (name, first, steady), flush=True)


def torch_first_calls(args, direction, dt, tag):
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-first-worker=%s:%s:%s" % (direction, dt, tag),
           "--batch=" + args.batch, "--mb=%d" % args.mb, "--threads=%d" % args.threads, "--calls=%d" % args.calls]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    out = {}
    for line in res.stdout.splitlines():
        if line.startswith("first "):
            _, name, first, steady = line.split()
            out[name] = (float(first), float(steady))
    return out


def first_call_table(args, layers):
    """Fresh processes on both sides (so every layer is seen for the first time), alternating
    rounds; per layer the min over rounds of the first call and of the steady time. The cost of
    first use is sum(first) - sum(steady)."""
    configs = [(d, dt, tag) for d in args.dirs.split(",") for dt in args.dts.split(",") for tag in args.tags.split(",")]
    best = {}
    for r in range(args.rounds):
        for cfg in configs:
            for who, fn in (("convkit", convkit_first_calls), ("pytorch", torch_first_calls)):
                for name, (f, st) in fn(args, *cfg).items():
                    cur = best.setdefault((cfg, who), {}).get(name, (float("inf"), float("inf")))
                    best[(cfg, who)][name] = (min(cur[0], f), min(cur[1], st))
        print("round %d/%d done" % (r + 1, args.rounds), file=sys.stderr, flush=True)
    print("%-6s %-5s %-5s %4s | %12s %12s %12s | %12s %12s %12s | %7s" % (
        "dir", "dt", "tag", "mb", "ck_first_ms", "ck_steady_ms", "ck_extra_ms", "pt_first_ms", "pt_steady_ms",
        "pt_extra_ms", "ratio"))
    rows = []
    for cfg in configs:
        ck, pt = best[(cfg, "convkit")], best[(cfg, "pytorch")]
        ckf, cks = sum(v[0] for v in ck.values()), sum(v[1] for v in ck.values())
        ptf, pts = sum(v[0] for v in pt.values()), sum(v[1] for v in pt.values())
        print("%-6s %-5s %-5s %4d | %12.2f %12.2f %12.2f | %12.2f %12.2f %12.2f | %6.2fx" % (
            cfg[0], cfg[1], cfg[2], args.mb, ckf, cks, ckf - cks, ptf, pts, ptf - pts, (ptf - pts) / (ckf - cks)),
            flush=True)
        rows.append(dict(dir=cfg[0], dt=cfg[1], tag=cfg[2], mb=args.mb, convkit_first_ms=round(ckf, 3),
                         convkit_steady_ms=round(cks, 3), pytorch_first_ms=round(ptf, 3),
                         pytorch_steady_ms=round(pts, 3)))
    if args.per_layer:
        for cfg in configs:
            print("%s %s %s first calls (ms):" % cfg)
            for name in best[(cfg, "convkit")]:
                print("    %-14s convkit %8.3f  pytorch %8.3f" % (name, best[(cfg, "convkit")][name][0],
                                                                best[(cfg, "pytorch")][name][0]))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)


def dgemm_gflops(threads):
    a = torch.randn(2048, 2048, dtype=torch.float64)
    b = torch.randn(2048, 2048, dtype=torch.float64)
    t = best_of(lambda: torch.mm(a, b), 3)[0]
    return 2.0 * 2048 ** 3 / (t * 1e6)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convkit", default=os.path.join(ROOT, "build", "convkit"))
    ap.add_argument("--batch", default=os.path.join(ROOT, "inputs", "resnet_50"))
    ap.add_argument("--mb", type=int, default=1)
    ap.add_argument("--dirs", default="fwd,bwd_d,bwd_w")
    ap.add_argument("--dts", default="f32,bf16,f64")
    ap.add_argument("--tags", default="nhwc,nchw")
    ap.add_argument("--prepacked", default="f32:nhwc,bf16:nhwc",
                    help="dt:tag pairs that get a prepacked fwd row ('' for none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating convkit/PyTorch rounds; best per layer")
    ap.add_argument("--calls", type=int, default=5, help="timed PyTorch calls per layer per round")
    ap.add_argument("--max-ms", type=float, default=100, help="convkit bench time budget per layer per round")
    ap.add_argument("--csv", help="write one row per configuration")
    ap.add_argument("--layers-csv", help="write one row per layer and configuration (for convkit bench --torch-csv)")
    ap.add_argument("--per-layer", action="store_true", help="also print each layer's times")
    ap.add_argument("--first-calls", action="store_true",
                    help="instead: the cost of each layer's first call (fresh processes), beside PyTorch's")
    ap.add_argument("--max-isa", help="cap both sides' instruction set, e.g. AVX2 (ONEDNN_MAX_CPU_ISA)")
    ap.add_argument("--driver", default="conv", choices=["conv", "deconv"],
                    help="deconv: the batch file holds transposed convolutions (benchdnn deconv descriptors)")
    ap.add_argument("--post-ops", default="", help="forward: post-ops convkit fuses (benchdnn spelling, eltwise "
                    "relu/gelu_erf/tanh/logistic/swish) and PyTorch runs after the convolution")
    ap.add_argument("--torch-first-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global DECONV, POST_OPS
    DECONV = args.driver == "deconv"
    POST_OPS = args.post_ops
    if DECONV:
        args.prepacked = ""  # prepack_weights packs a convolution's forward weights
    if args.max_isa and os.environ.get("ONEDNN_MAX_CPU_ISA") != args.max_isa:
        # oneDNN reads the cap once, at its first use in a process: start over with it set (the
        # convkit processes inherit it).
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=args.max_isa, ATEN_CPU_CAPABILITY=args.max_isa.lower())
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    torch.set_num_threads(args.threads)
    if args.torch_first_worker:
        torch_first_calls_worker(args, *args.torch_first_worker.split(":"))
        return
    layers = parse_batch(args.batch)
    if args.first_calls:
        if args.layers_csv:
            ap.error("--layers-csv writes the timing table's layers; --first-calls has none")
        first_call_table(args, layers)
        return
    total_flops = sum(flops(l, args.mb) for l in layers)

    configs = []
    for d in args.dirs.split(","):
        for dt in args.dts.split(","):
            for tag in args.tags.split(","):
                configs.append((d, dt, tag, False))
    for pair in filter(None, args.prepacked.split(",")):
        dt, tag = pair.split(":")
        if "fwd" in args.dirs.split(",") and dt in args.dts.split(","):
            configs.append(("fwd", dt, tag, True))

    print("convkit %s vs PyTorch %s, %s%s%s, mb %d, %d threads, %d rounds, %d layers (%.2f GFLOP per direction)"
          % (args.convkit, torch.__version__, os.path.basename(args.batch), " (transposed)" if DECONV else "",
             ", fwd + bias + " + POST_OPS if POST_OPS else "", args.mb, args.threads, args.rounds,
             len(layers), total_flops / 1e9), flush=True)
    print("%s; ONEDNN_MAX_CPU_ISA=%s; %s" % (cpu_name(), os.environ.get("ONEDNN_MAX_CPU_ISA", "(none)"),
                                            convkit_engine_line(args)), flush=True)
    dgemm = dgemm_gflops(args.threads) if "f64" in args.dts.split(",") else None
    if dgemm:
        print("dgemm 2048^3 through PyTorch (the system OpenBLAS): %.1f GFLOP/s" % dgemm, flush=True)

    best_ck, best_pt, best_pt_mean = {}, {}, {}
    for r in range(args.rounds):
        for cfg in configs:
            d, dt, tag, packed = cfg
            ck = prepacked_times(args, dt, tag) if packed else convkit_times(args, d, dt, tag)
            pt = torch_times(args, layers, d, dt, tag) if not packed or (d, dt, tag, False) not in configs else None
            for name, t in ck.items():
                best_ck.setdefault(cfg, {})[name] = min(best_ck.get(cfg, {}).get(name, float("inf")), t)
            if isinstance(pt, str):
                best_pt[cfg] = best_pt_mean[cfg] = pt
            elif pt:
                for name, (tmin, tmean) in pt.items():
                    best_pt.setdefault(cfg, {})[name] = min(best_pt.get(cfg, {}).get(name, float("inf")), tmin)
                    best_pt_mean.setdefault(cfg, {})[name] = min(best_pt_mean.get(cfg, {}).get(name, float("inf")), tmean)
        print("round %d/%d done" % (r + 1, args.rounds), file=sys.stderr, flush=True)

    if args.per_layer:
        for cfg in configs:
            base = cfg if cfg in best_pt else (cfg[0], cfg[1], cfg[2], False)
            print("%s %s %s %s:" % (cfg[0], cfg[1], cfg[2], "prepacked" if cfg[3] else "plain"))
            for name, t in best_ck[cfg].items():
                if isinstance(best_pt[base], str):
                    print("    %-14s convkit %8.3f  pytorch n/a" % (name, t))
                    continue
                p = best_pt[base][name]
                print("    %-14s convkit %8.3f  pytorch %8.3f  %6.2fx" % (name, t, p, p / t))
    rows = []
    print("%-6s %-5s %-5s %-10s %4s %11s %7s %11s %7s %15s %9s %9s" % (
        "dir", "dt", "tag", "variant", "mb", "convkit_ms", "vs_f32", "pytorch_ms", "ratio", "pytorch_mean_ms",
        "ratio_mn", "GFLOP/s"))
    notes = []
    for cfg in configs:
        d, dt, tag, packed = cfg
        ck = sum(best_ck[cfg].values())
        f32_cfg = (d, "f32", tag, packed)
        vs = "%6.2fx" % (ck / sum(best_ck[f32_cfg].values())) if f32_cfg in best_ck else "      "
        base = cfg if cfg in best_pt else (d, dt, tag, False)
        gf = total_flops / (ck * 1e6)
        extra = " (%.0f%% of dgemm)" % (100 * gf / dgemm) if dt == "f64" and dgemm else ""
        variant = "prepacked" if packed else "plain"
        if isinstance(best_pt[base], str):
            print("%-6s %-5s %-5s %-10s %4d %11.2f %7s %11s %7s %15s %9s %9.1f  (PyTorch: n/a*)" % (
                d, dt, tag, variant, args.mb, ck, vs, "n/a", "", "n/a", "", gf), flush=True)
            if best_pt[base] not in notes:
                notes.append(best_pt[base])
            pt = ptm = float("nan")
        else:
            pt = sum(best_pt[base].values())
            ptm = sum(best_pt_mean[base].values())
            print("%-6s %-5s %-5s %-10s %4d %11.2f %7s %11.2f %6.2fx %15.2f %8.2fx %9.1f%s" % (
                d, dt, tag, variant, args.mb, ck, vs, pt, pt / ck, ptm, ptm / ck, gf, extra), flush=True)
        rows.append(dict(dir=d, dt=dt, tag=tag, variant=variant, mb=args.mb, convkit_ms=round(ck, 3),
                         pytorch_ms=round(pt, 3), ratio=round(pt / ck, 3), pytorch_mean_ms=round(ptm, 3),
                         ratio_mean=round(ptm / ck, 3), gflops=round(gf, 1)))
    for n in notes:
        print("* PyTorch fails: %s" % n)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    if args.layers_csv:
        write_layers_csv(args.layers_csv, configs, best_ck, best_pt, best_pt_mean, args.mb)


def write_layers_csv(path, configs, best_ck, best_pt, best_pt_mean, mb):
    """PyTorch's time per layer of every configuration it ran, beside this script's convkit time."""
    rows = []
    for cfg in configs:
        d, dt, tag, packed = cfg
        if packed or isinstance(best_pt.get(cfg), str) or cfg not in best_pt:
            continue
        for name, t in best_pt[cfg].items():
            rows.append(dict(name=name, dir=d, dt=dt, tag=tag, mb=mb, pytorch_ms=round(t, 5),
                             pytorch_mean_ms=round(best_pt_mean[cfg][name], 5),
                             convkit_ms=round(best_ck[cfg][name], 5) if name in best_ck.get(cfg, {}) else ""))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "dir", "dt", "tag", "mb", "pytorch_ms", "pytorch_mean_ms", "convkit_ms"])
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
