#!/usr/bin/env python3
"""convkit's CUDA engine side by side with PyTorch's own cuDNN convolution, in one run.

Performance (default): for each config (--configs, default bf16 NHWC, TF32 NHWC, f32 NCHW without
TF32) and batch (--mbs) it times convkit and PyTorch (torch.backends.cudnn.benchmark=True unless
--no-autotune) on the layers of a batch file (--net, default inputs/resnet_50), and prints
per-direction totals and the ratio PyTorch/convkit (> 1: convkit faster); --per-layer adds each
layer's ratios. convkit is timed by `cuda_layers network` (bench/cuda_layers.cpp; --harness=test,
the default: tensors filled on the device, mean of 20 back-to-back calls after 3 warm-ups, as
PyTorch is timed here) or by `convkit bench --mode=perf` (--harness=bench: min over batches of
calls; it fills tensors on the host, minutes at mb 256). --env K=V passes settings to convkit only
(e.g. CONVKIT_CUDA_SPLIT_DGRAD=0). --extras adds the fused relu(conv(x, w) + b + r) case and the
host overhead of a cached tiny convolution.

First calls (--first-call): the wall time of the first call of each new shape, per direction,
summed over the net's layers: convkit in three fresh processes (heuristics; autotuning that saves
a tune file; a second process with that tune file) and PyTorch in two (benchmark off and on).

Correctness (--check DIR): compares the layers that `cuda_layers dump --dir=DIR`
wrote to DIR (CONVKIT_TORCH_CHECK_DIR) against PyTorch's CUDA convolution computed in f64.

Usage on the GPU machine (cuDNN from the PyTorch wheel on LD_LIBRARY_PATH):
  python3 bench/compare_torch_gpu.py [--mbs 32,256] [--configs f32-nchw] [--per-layer] [--out DIR]
  python3 bench/compare_torch_gpu.py --net inputs/mobilenet_v2_dw --configs bf16-nhwc
  python3 bench/compare_torch_gpu.py --first-call [--net inputs/resnet_50 --mbs 32 --configs bf16-nhwc]
  python3 bench/compare_torch_gpu.py --driver=deconv --net inputs/deconv_unet --mbs 32 --configs bf16-nhwc,f32-nchw
  python3 bench/compare_torch_gpu.py --check /tmp/dump

--layers-csv FILE (performance mode) writes one row per layer, direction, config and batch, the
per-layer file that `convkit bench --report=R.html --torch-csv=FILE` draws beside convkit's bars
(docs/cli.md): name,dir,dt,tag,mb,tf32,config,pytorch_ms,convkit_ms. pytorch_ms is the mean of 20
back-to-back calls (CUDA events) after 3 warm-ups, as the totals above; tf32 says whether f32 ran
with TF32 (convkit bench matches it against CONVKIT_ALLOW_TF32); convkit_ms is this script's own
convkit time for the layer (empty when the harness gave none).
  python3 bench/compare_torch_gpu.py --mbs 32 --configs bf16-nhwc --layers-csv /tmp/pt_gpu.csv
  build-gpu/convkit bench --mode=perf --engine=cuda --batch=inputs/resnet_50 --mb=32 --dir=FWD_D,BWD_D,BWD_W --dt=bf16 \
      --tag=nhwc --report=/tmp/resnet50_gpu.html --torch-csv=/tmp/pt_gpu.csv
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRS = ('fwd', 'bwd_d', 'bwd_w')
# label -> convkit dtype, convkit tag, torch dtype, channels_last, TF32
CONFIGS = {
    'bf16-nhwc': ('bf16', 'nhwc', torch.bfloat16, True, False),
    'bf16-nchw': ('bf16', 'nchw', torch.bfloat16, False, False),
    'tf32-nhwc': ('f32', 'nhwc', torch.float32, True, True),
    'tf32-nchw': ('f32', 'nchw', torch.float32, False, True),
    'f32-nchw': ('f32', 'nchw', torch.float32, False, False),
    'f32-nhwc': ('f32', 'nhwc', torch.float32, True, False),
    'f64-nchw': ('f64', 'nchw', torch.float64, False, False),
    'f64-nhwc': ('f64', 'nhwc', torch.float64, True, False),
}


def layer_flops(L, mb):
    """2 * multiply-adds of one direction of a (non-transposed) layer."""
    oh = (L['ih'] + 2 * L['p'] - L['dil'] * (L['kh'] - 1) - 1) // L['s'] + 1
    ow = (L['iw'] + 2 * L['p'] - L['dil'] * (L['kw'] - 1) - 1) // L['s'] + 1
    return 2.0 * mb * L['oc'] * oh * ow * (L['ic'] // L['g']) * L['kh'] * L['kw']


def dgemm_tflops(n=8192):
    """cuBLAS DGEMM's rate on this GPU, now (torch.matmul in f64, n x n x n)."""
    a = torch.randn(n, n, device='cuda', dtype=torch.float64)
    b = torch.randn(n, n, device='cuda', dtype=torch.float64)
    ms = min(cuda_time(lambda: torch.matmul(a, b), iters=5) for _ in range(3))
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e12


def parse_batch(path, deconv=False):
    """The 2D subset of benchdnn's descriptor syntax that convkit's network batch files use. With
    deconv (benchdnn's deconvolution driver) ic/ih are the input and oc/oh the output; an output
    larger than the padding gives is PyTorch's output_padding ('op')."""
    layers = []
    for line in open(path):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        m = re.match(r'^(.*?)n"([^"]*)"$', line)
        body, name = (m.group(1), m.group(2)) if m else (line, "")
        d = {k: int(v) for k, v in re.findall(r'([a-z]+)(\d+)', body)}
        ih = d['ih']
        kh = d.get('kh', 1)
        L = dict(name=name, g=d.get('g', 1), ic=d['ic'], oc=d['oc'], ih=ih, iw=d.get('iw', ih),
                 kh=kh, kw=d.get('kw', kh), s=d.get('sh', 1), p=d.get('ph', 0), dil=d.get('dh', 0) + 1, op=0)
        if deconv:
            natural = (ih - 1) * L['s'] - 2 * L['p'] + L['dil'] * (kh - 1) + 1
            L['op'] = d.get('oh', natural) - natural
            assert L['iw'] == ih and L['kw'] == kh, 'square deconvolution layers only'
        layers.append(L)
    return layers


def cuda_time(fn, iters=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    s = torch.cuda.Event(enable_timing=True)
    e = torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters


def torch_layer(L, mb, dtype, nhwc, first=None):
    """Tensors and the three calls of one layer, as the anchors scripts run them. The forward runs
    once here (for diff_dst's shape); with `first` (a dict) its wall time goes to first['fwd']."""
    x = torch.randn(mb, L['ic'], L['ih'], L['iw'], device='cuda', dtype=dtype)
    if L.get('deconv'):
        w = torch.randn(L['ic'], L['oc'] // L['g'], L['kh'], L['kw'], device='cuda', dtype=dtype)
    else:
        w = torch.randn(L['oc'], L['ic'] // L['g'], L['kh'], L['kw'], device='cuda', dtype=dtype)
    if nhwc:
        x = x.to(memory_format=torch.channels_last)
        w = w.to(memory_format=torch.channels_last)
    s, p, d, g = L['s'], L['p'], L['dil'], L['g']
    if L.get('deconv'):
        op = L['op']
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        y = F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=op, groups=g, dilation=d)
        torch.cuda.synchronize()
        if first is not None:
            first['fwd'] += (time.perf_counter() - t0) * 1e3
        gy = torch.randn_like(y)
        args = (gy, x, w, None, [s, s], [p, p], [d, d], True, [op, op], g)
        return dict(fwd=lambda: F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=op, groups=g, dilation=d),
                    bwd_d=lambda: torch.ops.aten.convolution_backward(*args, [True, False, False]),
                    bwd_w=lambda: torch.ops.aten.convolution_backward(*args, [False, True, False]))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    y = F.conv2d(x, w, stride=s, padding=p, dilation=d, groups=g)
    torch.cuda.synchronize()
    if first is not None:
        first['fwd'] += (time.perf_counter() - t0) * 1e3
    gy = torch.randn_like(y)
    args = (gy, x, w, None, [s, s], [p, p], [d, d], False, [0, 0], g)
    return dict(fwd=lambda: F.conv2d(x, w, stride=s, padding=p, dilation=d, groups=g),
                bwd_d=lambda: torch.ops.aten.convolution_backward(*args, [True, False, False]),
                bwd_w=lambda: torch.ops.aten.convolution_backward(*args, [False, True, False]))


def torch_totals(layers, mb, dtype, nhwc, tf32, dirs, csv_path, benchmark=True):
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.allow_tf32 = tf32
    tot = {k: 0.0 for k in dirs}
    per_layer = {}
    rows = []
    for L in layers:
        fns = torch_layer(L, mb, dtype, nhwc)
        t = {k: cuda_time(fns[k]) for k in dirs}
        for k in dirs:
            tot[k] += t[k]
            per_layer[(L['name'], k)] = t[k]
        rows.append(dict(name=L['name'], **{k: round(v, 5) for k, v in t.items()}))
        del fns
    with open(csv_path, 'w') as f:
        wr = csv.DictWriter(f, fieldnames=['name', *dirs])
        wr.writeheader()
        wr.writerows(rows)
    return tot, per_layer


def convkit_env(tf32, tune, extra):
    env = dict(os.environ)
    env['CONVKIT_ALLOW_TF32'] = '1' if tf32 else '0'
    # PyTorch runs with cudnn.benchmark=True (it times the candidate plans on first use), so convkit
    # autotunes too unless --no-autotune asks for heuristics only.
    env['CONVKIT_CUDA_AUTOTUNE'] = '1' if tune else '0'
    for kv in extra or []:
        k, v = kv.split('=', 1)
        env[k] = v
    return env


def convkit_harness(exe, batch, mb, dt, tag, dirs, env, log_path, driver='conv'):
    """bench/cuda_layers network: per (layer, dir) first-call and steady times, and totals."""
    cmd = [exe, 'network', '--batch=' + batch, '--mb=%d' % mb, '--dt=' + dt, '--tag=' + tag, '--dirs=' + ','.join(dirs),
           '--driver=' + driver]
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    with open(log_path, 'w') as f:
        f.write(' '.join(cmd) + '\n' + r.stdout + r.stderr)
    per_layer, first_tot, steady_tot, bad, plans = {}, {}, {}, [], ''
    for line in r.stdout.splitlines():
        m = re.match(r'^netperf (\S+) (\S+) first_ms ([\d.]+) steady_ms ([\d.]+)(?: (.*))?$', line)
        if m and m.group(1) == 'total':
            first_tot[m.group(2)] = float(m.group(3))
            steady_tot[m.group(2)] = float(m.group(4))
        elif m:
            per_layer[(m.group(1), m.group(2))] = (float(m.group(3)), float(m.group(4)), m.group(5) or '')
        elif line.startswith('netperf plans'):
            plans = line[len('netperf plans '):]
    if r.returncode != 0 or not steady_tot:
        bad.append(f'cuda_layers network failed (rc {r.returncode}): {r.stdout[-1500:]}{r.stderr[-1500:]}')
    return dict(per_layer=per_layer, first=first_tot, steady=steady_tot, bad=bad, wall=wall, plans=plans)


def convkit_bench(exe, batch, mb, dt, tag, dirs, env, csv_path, log_path, max_ms):
    """`convkit bench --mode=perf`: min over batches of calls (host-filled tensors)."""
    flag = {'fwd': 'FWD_D', 'bwd_d': 'BWD_D', 'bwd_w': 'BWD_W'}
    cmd = [exe, 'bench', '--mode=perf', '--engine=cuda', f'--batch={batch}', f'--mb={mb}',
           '--dir=' + ','.join(flag[d] for d in dirs), f'--dt={dt}', f'--tag={tag}', f'--csv={csv_path}',
           f'--max-ms-per-prb={max_ms}']
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    with open(log_path, 'w') as f:
        f.write(' '.join(cmd) + '\n' + r.stdout + r.stderr)
    per_layer, steady, bad = {}, {k: 0.0 for k in dirs}, []
    if r.returncode != 0:
        bad.append(f'convkit bench failed: {r.stdout[-1500:]}{r.stderr[-1500:]}')
    for row in csv.DictReader(open(csv_path)) if os.path.exists(csv_path) else []:
        if row['status'] != 'ok':
            bad.append(f"{row['name']} {row['dir']}: {row['status']}")
            continue
        steady[row['dir']] += float(row['time_min_ms'])
        per_layer[(row['name'], row['dir'])] = (float('nan'), float(row['time_min_ms']), '')
    return dict(per_layer=per_layer, first={}, steady=steady, bad=bad, wall=wall, plans='')


def perf(args):
    os.makedirs(args.out, exist_ok=True)
    batch = os.path.join(ROOT, args.net) if not os.path.isabs(args.net) else args.net
    net = os.path.basename(batch)
    deconv = args.driver == 'deconv'
    layers = parse_batch(batch, deconv)
    for L in layers:
        L['deconv'] = deconv
    dirs = args.dirs.split(',')
    labels = args.configs.split(',') if args.configs else ['bf16-nhwc', 'tf32-nhwc', 'f32-nchw']
    rows, layer_rows = [], []
    dgemm = dgemm_tflops() if any(CONFIGS[l][0] == 'f64' for l in labels) else 0
    if dgemm:
        print(f'cuBLAS DGEMM (torch.matmul f64 8192^3) on {torch.cuda.get_device_name()}: {dgemm:.1f} TFLOP/s', flush=True)
    print(f"{'config':<10} {'mb':>4} {'dir':<6} {'torch_ms':>9} {'convkit_ms':>10} {'torch/convkit':>13}  ({net}, "
          f"{'autotune' if not args.no_autotune else 'heuristics'}, harness {args.harness}"
          f"{', env ' + ' '.join(args.env) if args.env else ''})", flush=True)
    for mb in [int(m) for m in args.mbs.split(',')]:
        for label in labels:
            dt, tag, tdt, nhwc, tf32 = CONFIGS[label]
            env = convkit_env(tf32, not args.no_autotune, args.env)
            stem = os.path.join(args.out, f'{net}_{label}_mb{mb}{args.suffix}')
            if args.harness == 'test':
                ck = convkit_harness(args.cuda_layers, batch, mb, dt, tag, dirs, env, stem + '_convkit.log', args.driver)
            else:
                if deconv:
                    raise SystemExit('--driver=deconv times convkit with --harness=test')
                ck = convkit_bench(args.convkit, batch, mb, dt, tag, dirs, env, stem + '_convkit.csv',
                                   stem + '_convkit.log', args.max_ms)
            th, th_layer = torch_totals(layers, mb, tdt, nhwc, tf32, dirs, stem + '_torch.csv',
                                        benchmark=not args.no_autotune)
            for d in dirs:
                c = ck['steady'].get(d, 0.0)
                ratio = th[d] / c if c > 0 else float('nan')
                rows.append(dict(net=net, config=label, mb=mb, dir=d, torch_ms=round(th[d], 4), convkit_ms=round(c, 4),
                                 ratio=round(ratio, 3)))
                line = f'{label:<10} {mb:>4} {d:<6} {th[d]:9.3f} {c:10.3f} {ratio:13.2f}'
                if dt == 'f64' and c > 0 and not deconv:
                    tf = sum(layer_flops(L, mb) for L in layers) / (c * 1e-3) / 1e12
                    line += f'   convkit {tf:.1f} TFLOP/s = {100 * tf / dgemm:.0f}% of DGEMM'
                    rows[-1].update(tflops=round(tf, 2), dgemm_tflops=round(dgemm, 2))
                print(line, flush=True)
            for L in layers:
                for d in dirs:
                    c = ck['per_layer'].get((L['name'], d))
                    layer_rows.append(dict(name=L['name'], dir=d, dt=dt, tag=tag, mb=mb, tf32=int(tf32), config=label,
                                           pytorch_ms=round(th_layer[(L['name'], d)], 5),
                                           convkit_ms=round(c[1], 5) if c and c[1] > 0 else ''))
            if args.per_layer:
                for L in layers:
                    cells = []
                    for d in dirs:
                        c = ck['per_layer'].get((L['name'], d), (0, 0, ''))
                        t = th_layer[(L['name'], d)]
                        r = t / c[1] if c[1] > 0 else float('nan')
                        cells.append(f"{d} {t:.4f}/{c[1]:.4f}={r:.2f}{' <0.9' if r < 0.9 else ''}")
                    print(f"    {L['name']:<14} " + '  '.join(cells), flush=True)
            for b in ck['bad']:
                print(f'  convkit problem: {b}', flush=True)
            print(f"  (convkit wall time incl. plan building: {ck['wall']:.1f} s; plans: {ck['plans']})", flush=True)
    if args.layers_csv:
        with open(args.layers_csv, 'w', newline='') as f:
            wr = csv.DictWriter(f, fieldnames=['name', 'dir', 'dt', 'tag', 'mb', 'tf32', 'config', 'pytorch_ms',
                                               'convkit_ms'])
            wr.writeheader()
            wr.writerows(layer_rows)
    with open(os.path.join(args.out, f'compare_{net}{args.suffix}.json'), 'w') as f:
        json.dump(dict(rows=rows, autotune=not args.no_autotune, env=args.env, harness=args.harness,
                       device=torch.cuda.get_device_name(), torch=torch.__version__,
                       cudnn=torch.backends.cudnn.version()), f, indent=1)
    if args.extras:
        extras(args)


def extras(args):
    # Fused relu(conv(x, w) + b + r): x 32x256x56x56 bf16 NHWC, w 64x256x1x1.
    env = dict(os.environ)
    cmd = [args.convkit, 'bench', '--mode=perf', '--engine=cuda', '--dir=FWD_B', '--dt=bf16', '--tag=nhwc',
           '--attr-post-ops=add:bf16:per_tensor+relu', '--max-ms-per-prb=300', 'mb32ic256ih56oc64oh56kh1ph0n"fused"']
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    m = re.search(r'^fused\s+fwd\s+\S+\s+\S+\s+\d+\s+ok\s+([\d.]+)', r.stdout, re.M)
    ck_fused = float(m.group(1)) * 1e3 if m else float('nan')
    torch.backends.cudnn.benchmark = True
    x = torch.randn(32, 256, 56, 56, device='cuda', dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.randn(64, 256, 1, 1, device='cuda', dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    b = torch.randn(64, device='cuda', dtype=torch.bfloat16)
    rr = torch.randn(32, 64, 56, 56, device='cuda', dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    eager = cuda_time(lambda: torch.relu(F.conv2d(x, w, b) + rr), 100) * 1e3
    conv_only = cuda_time(lambda: F.conv2d(x, w), 100) * 1e3
    print(f'fused relu(conv+b+r) bf16 NHWC 32x256x56x56 -> 64: convkit {ck_fused:.1f} us, torch eager {eager:.1f} us '
          f'(conv alone {conv_only:.1f} us), eager/convkit {eager / ck_fused:.2f}x', flush=True)
    if not m:
        print(r.stdout[-1500:] + r.stderr[-1500:])

    # Host overhead of a cached tiny convolution (1x16x8x8, 16 filters 3x3, pad 1, bias), f32 NCHW.
    cmd = [args.convkit, 'bench', '--mode=perf', '--engine=cuda', '--dir=FWD_B', '--dt=f32', '--tag=nchw',
           '--max-ms-per-prb=500', 'mb1ic16ih8oc16oh8kh3ph1n"tiny"']
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    m = re.search(r'^tiny\s+fwd\s+\S+\s+\S+\s+\d+\s+ok\s+([\d.]+)\s+([\d.]+)', r.stdout, re.M)
    ck_tiny = float(m.group(1)) * 1e3 if m else float('nan')
    xt = torch.randn(1, 16, 8, 8, device='cuda')
    wt = torch.randn(16, 16, 3, 3, device='cuda')
    bt = torch.randn(16, device='cuda')
    for _ in range(100):
        F.conv2d(xt, wt, bt, padding=1)
    torch.cuda.synchronize()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        F.conv2d(xt, wt, bt, padding=1)
    torch.cuda.synchronize()
    torch_tiny = (time.perf_counter() - t0) / n * 1e6
    print(f'tiny cached conv 1x16x8x8 k3 +bias f32: convkit {ck_tiny:.2f} us/call, torch eager {torch_tiny:.2f} us/call',
          flush=True)
    if not m:
        print(r.stdout[-1500:] + r.stderr[-1500:])


def torch_first_call(args):
    """In a fresh process: first-call wall time of each layer's fwd, bwd_d, bwd_w (as
    shared/anchors/torch_gpu_more.py measures it), then steady times; one JSON line."""
    dt, tag, tdt, nhwc, tf32 = CONFIGS[args.configs.split(',')[0]]
    torch.backends.cudnn.benchmark = args.torch_first_call == 'benchmark'
    torch.backends.cudnn.allow_tf32 = tf32
    layers = parse_batch(os.path.join(ROOT, args.net))
    mb = int(args.mbs.split(',')[0])
    # Warm the library (handle creation, lazy module load) on an unrelated shape.
    x = torch.randn(2, 8, 9, 9, device='cuda')
    F.conv2d(x, torch.randn(8, 8, 3, 3, device='cuda'))
    torch.cuda.synchronize()
    first = {k: 0.0 for k in DIRS}
    steady = {k: 0.0 for k in DIRS}
    for L in layers:
        fns = torch_layer(L, mb, tdt, nhwc, first)  # times the forward's first call
        for d in ('bwd_d', 'bwd_w'):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fns[d]()
            torch.cuda.synchronize()
            first[d] += (time.perf_counter() - t0) * 1e3
        for d in DIRS:
            steady[d] += cuda_time(fns[d])
    print(json.dumps(dict(first_ms=first, steady_ms=steady)), flush=True)


def first_call(args):
    """convkit's first calls in three fresh processes, PyTorch's in two."""
    os.makedirs(args.out, exist_ok=True)
    batch = os.path.join(ROOT, args.net) if not os.path.isabs(args.net) else args.net
    net = os.path.basename(batch)
    label = args.configs.split(',')[0] if args.configs else 'bf16-nhwc'
    dt, tag, tdt, nhwc, tf32 = CONFIGS[label]
    mb = int(args.mbs.split(',')[0])
    tune_file = os.path.join(tempfile.mkdtemp(prefix='convkit_tune_'), 'tune.txt')
    results = []
    for name, tune, tf in (('convkit heuristics', False, None), ('convkit autotune, saving the tune file', True, tune_file),
                           ('convkit second process, tune file', True, tune_file)):
        env = convkit_env(tf32, tune, args.env)
        env.pop('CONVKIT_CUDA_TUNE_FILE', None)
        if tf:
            env['CONVKIT_CUDA_TUNE_FILE'] = tf
        ck = convkit_harness(args.cuda_layers, batch, mb, dt, tag, list(DIRS), env,
                             os.path.join(args.out, f'first_call_{net}_{label}_mb{mb}_{len(results)}.log'))
        for b in ck['bad']:
            print(f'  convkit problem: {b}', flush=True)
        results.append((name, ck['first'], ck['steady'], f"process wall {ck['wall']:.1f} s; plans: {ck['plans']}"))
    for name, mode in (('torch benchmark=False', 'heuristics'), ('torch benchmark=True', 'benchmark')):
        cmd = [sys.executable, os.path.abspath(__file__), '--torch-first-call', mode, '--net', args.net, '--mbs', str(mb),
               '--configs', label]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith('{')]
        if not line:
            print(f'{name}: failed\n{r.stdout[-1500:]}{r.stderr[-1500:]}', flush=True)
            continue
        j = json.loads(line[-1])
        results.append((name, j['first_ms'], j['steady_ms'], f'process wall {time.time() - t0:.1f} s'))
    print(f'first call of each new shape, {net} ({len(parse_batch(batch))} layers), {label} mb{mb}: '
          f'sum over layers, ms (steady-state sums after)', flush=True)
    print(f"{'who':<40} {'fwd':>9} {'bwd_d':>9} {'bwd_w':>9}   {'steady fwd/bwd_d/bwd_w':>24}", flush=True)
    for name, first, steady, note in results:
        print(f"{name:<40} {first.get('fwd', 0):9.1f} {first.get('bwd_d', 0):9.1f} {first.get('bwd_w', 0):9.1f}   "
              f"{steady.get('fwd', 0):.3f} / {steady.get('bwd_d', 0):.3f} / {steady.get('bwd_w', 0):.3f}   ({note})",
              flush=True)
    with open(os.path.join(args.out, f'first_call_{net}_{label}_mb{mb}.json'), 'w') as f:
        json.dump([dict(who=n, first_ms=a, steady_ms=b, note=c) for n, a, b, c in results], f, indent=1)


def load_npy(path, dtype):
    import numpy as np
    return torch.from_numpy(np.load(path)).to('cuda', dtype)


def check(args):
    """Each dumped layer: the cuda output against PyTorch in f64 on the GPU."""
    worst = {}
    failures = 0
    lines = open(os.path.join(args.check, 'manifest.txt')).read().split('\n')
    for line in lines:
        if not line.strip():
            continue
        stem, name, dirn, dt, g, s, p, dil = line.split()
        g, s, p, dil = int(g), int(s), int(p), int(dil)
        src = load_npy(stem + '_src.npy', torch.float64)
        wei = load_npy(stem + '_wei.npy', torch.float64)
        dst = load_npy(stem + '_dst.npy', torch.float64)
        nd = src.dim() - 2  # 2D or 3D layers
        conv = F.conv3d if nd == 3 else F.conv2d
        sv, pv, dv = [s] * nd, [p] * nd, [dil] * nd
        if dirn == 'fwd':
            want, got = conv(src, wei, stride=s, padding=p, dilation=dil, groups=g), dst
        elif dirn == 'bwd_d':
            want = torch.ops.aten.convolution_backward(dst, src, wei, None, sv, pv, dv, False, [0] * nd, g,
                                                       [True, False, False])[0]
            got = src
        else:
            want = torch.ops.aten.convolution_backward(dst, src, wei, None, sv, pv, dv, False, [0] * nd, g,
                                                       [False, True, False])[1]
            got = wei
        err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
        del want
        # f32 without TF32: ~1e-6 typical, Winograd/FFT engines up to ~1e-4; bf16 outputs: 2^-8.
        tol = 2e-4 if dt == 'f32' else 1.6e-2
        key = (dt, dirn)
        worst[key] = max(worst.get(key, 0.0), err)
        if not err <= tol:
            failures += 1
            print(f'FAILED {name} {dirn} {dt}: max error {err:.3e} > {tol:g}', flush=True)
    for (dt, dirn), e in sorted(worst.items()):
        print(f'torch check {dt:<5} {dirn:<6} worst relative error {e:.2e}', flush=True)
    print(f'torch check: {len([l for l in lines if l.strip()])} layer-directions, {failures} failures', flush=True)
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--convkit', default=os.path.join(ROOT, 'build-gpu/convkit'))
    ap.add_argument('--cuda-layers', default=os.path.join(ROOT, 'build-gpu/bench/cuda_layers'))
    ap.add_argument('--net', default='inputs/resnet_50', help='batch file (2D layers)')
    ap.add_argument('--driver', default='conv', choices=['conv', 'deconv'],
                    help='deconv: the batch file holds transposed convolutions (benchdnn deconv descriptors)')
    ap.add_argument('--mbs', default='32')
    ap.add_argument('--dirs', default='fwd,bwd_d,bwd_w')
    ap.add_argument('--out', default='/tmp/convkit_compare')
    ap.add_argument('--suffix', default='', help='appended to output file names')
    ap.add_argument('--harness', choices=['test', 'bench'], default='test')
    ap.add_argument('--max-ms', type=float, default=100, help='convkit bench time budget per problem')
    ap.add_argument('--configs', default='', help='comma-separated subset of ' + ','.join(CONFIGS))
    ap.add_argument('--no-autotune', action='store_true', help='heuristics only: convkit without autotuning, '
                    'PyTorch with cudnn.benchmark=False')
    ap.add_argument('--env', action='append', default=[], help='KEY=VALUE for the convkit processes')
    ap.add_argument('--per-layer', action='store_true')
    ap.add_argument('--layers-csv', help='write one row per layer, direction, config and batch (for convkit bench '
                    '--torch-csv)')
    ap.add_argument('--extras', action='store_true', help='fused and tiny-convolution measurements too')
    ap.add_argument('--first-call', action='store_true', help='first-call cost of each new shape')
    ap.add_argument('--torch-first-call', choices=['heuristics', 'benchmark'], help=argparse.SUPPRESS)
    ap.add_argument('--check', help='directory written by `cuda_layers dump`: compare instead of timing')
    args = ap.parse_args()
    if args.check:
        sys.exit(check(args))
    if args.torch_first_call:
        torch_first_call(args)
    elif args.first_call:
        first_call(args)
    else:
        perf(args)


if __name__ == '__main__':
    main()
