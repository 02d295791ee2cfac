#!/usr/bin/env python3
"""convkit's CUDA engine side by side with PyTorch's own cuDNN convolution, in one run.

Performance (default): for each config (bf16 NHWC, TF32 NHWC, f32 NCHW without TF32; mb 32 and
256) it runs `convkit bench --mode=perf --engine=cuda` on the ResNet-50 batch file and PyTorch
(torch.backends.cudnn.benchmark=True, timed as shared/anchors/torch_gpu_resnet50.py does) on the
same shapes, and prints per-direction totals and the ratio PyTorch/convkit (> 1: convkit faster).
Then the fused relu(conv(x, w) + b + r) case and the host overhead of a cached tiny convolution.

Correctness (--check DIR): compares the layers that `test_cuda --gtest_filter=TorchCheck.Dump`
wrote to DIR (CONVKIT_TORCH_CHECK_DIR) against PyTorch's CUDA convolution computed in f64.

Usage on the GPU machine (cuDNN from the PyTorch wheel on LD_LIBRARY_PATH):
  python3 bench/compare_torch_gpu.py --convkit build-gpu/convkit [--mbs 32,256] [--out DIR]
  python3 bench/compare_torch_gpu.py --check /tmp/dump
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_batch(path):
    """The 2D subset of benchdnn's descriptor syntax that convkit's network batch files use."""
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
        layers.append(dict(name=name.split('*')[0], g=d.get('g', 1), ic=d['ic'], oc=d['oc'], ih=ih, iw=d.get('iw', ih),
                           kh=kh, kw=d.get('kw', kh), s=d.get('sh', 1), p=d.get('ph', 0), dil=d.get('dh', 0) + 1))
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


def torch_totals(layers, mb, dtype, nhwc, tf32, csv_path):
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    tot = {'fwd': 0.0, 'bwd_d': 0.0, 'bwd_w': 0.0}
    per_layer = []
    for L in layers:
        x = torch.randn(mb, L['ic'], L['ih'], L['iw'], device='cuda', dtype=dtype)
        w = torch.randn(L['oc'], L['ic'] // L['g'], L['kh'], L['kw'], device='cuda', dtype=dtype)
        if nhwc:
            x = x.to(memory_format=torch.channels_last)
            w = w.to(memory_format=torch.channels_last)
        s, p, d, g = L['s'], L['p'], L['dil'], L['g']
        y = F.conv2d(x, w, stride=s, padding=p, dilation=d, groups=g)
        gy = torch.randn_like(y)
        args = (gy, x, w, None, [s, s], [p, p], [d, d], False, [0, 0], g)
        t = dict(fwd=cuda_time(lambda: F.conv2d(x, w, stride=s, padding=p, dilation=d, groups=g)),
                 bwd_d=cuda_time(lambda: torch.ops.aten.convolution_backward(*args, [True, False, False])),
                 bwd_w=cuda_time(lambda: torch.ops.aten.convolution_backward(*args, [False, True, False])))
        for k in tot:
            tot[k] += t[k]
        per_layer.append(dict(name=L['name'], **{k: round(v, 5) for k, v in t.items()}))
    with open(csv_path, 'w') as f:
        wr = csv.DictWriter(f, fieldnames=['name', 'fwd', 'bwd_d', 'bwd_w'])
        wr.writeheader()
        wr.writerows(per_layer)
    return tot


def convkit_totals(exe, batch, mb, dt, tag, tf32, out_dir, label, max_ms, tune):
    csv_path = os.path.join(out_dir, f'convkit_{label}_mb{mb}.csv')
    env = dict(os.environ)
    env['CONVKIT_ALLOW_TF32'] = '1' if tf32 else '0'
    # PyTorch runs with cudnn.benchmark=True (it times the candidate algorithms on first use), so
    # convkit autotunes too unless --no-autotune asks for heuristics only.
    env['CONVKIT_CUDA_AUTOTUNE'] = '1' if tune else '0'
    cmd = [exe, 'bench', '--mode=perf', '--engine=cuda', f'--batch={batch}', f'--mb={mb}', '--dir=FWD_D,BWD_D,BWD_W',
           f'--dt={dt}', f'--tag={tag}', f'--csv={csv_path}', f'--max-ms-per-prb={max_ms}']
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    with open(os.path.join(out_dir, f'convkit_{label}_mb{mb}.log'), 'w') as f:
        f.write(' '.join(cmd) + '\n' + r.stdout + r.stderr)
    if r.returncode != 0:
        print(f'convkit bench failed ({label} mb{mb}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}', flush=True)
    tot = {'fwd': 0.0, 'bwd_d': 0.0, 'bwd_w': 0.0}
    bad = []
    for row in csv.DictReader(open(csv_path)) if os.path.exists(csv_path) else []:
        if row['status'] != 'ok':
            bad.append(f"{row['name']} {row['dir']}: {row['status']}")
            continue
        tot[row['dir']] += float(row['time_min_ms'])
    return tot, bad, wall


def perf(args):
    os.makedirs(args.out, exist_ok=True)
    batch = os.path.join(ROOT, 'inputs/resnet_50')
    layers = parse_batch(batch)
    configs = [('bf16-nhwc', 'bf16', 'nhwc', torch.bfloat16, True, False),
               ('tf32-nhwc', 'f32', 'nhwc', torch.float32, True, True),
               ('f32-nchw', 'f32', 'nchw', torch.float32, False, False)]
    rows = []
    print(f"{'config':<10} {'mb':>4} {'dir':<6} {'torch_ms':>9} {'convkit_ms':>10} {'torch/convkit':>13}", flush=True)
    for mb in [int(m) for m in args.mbs.split(',')]:
        for label, dt, tag, tdt, nhwc, tf32 in configs:
            if mb > 32 and label == 'f32-nchw':
                continue  # as in the anchor table: mb 256 only for the tensor-core configs
            if args.configs and label not in args.configs.split(','):
                continue
            ck, bad, wall = convkit_totals(args.convkit, batch, mb, dt, tag, tf32, args.out, label, args.max_ms,
                                           not args.no_autotune)
            th = torch_totals(layers, mb, tdt, nhwc, tf32, os.path.join(args.out, f'torch_{label}_mb{mb}.csv'))
            for d in ('fwd', 'bwd_d', 'bwd_w'):
                ratio = th[d] / ck[d] if ck[d] > 0 else float('nan')
                rows.append(dict(config=label, mb=mb, dir=d, torch_ms=round(th[d], 4), convkit_ms=round(ck[d], 4),
                                 ratio=round(ratio, 3)))
                print(f'{label:<10} {mb:>4} {d:<6} {th[d]:9.3f} {ck[d]:10.3f} {ratio:13.2f}', flush=True)
            if bad:
                print(f'  convkit problems not ok: {bad}', flush=True)
            print(f'  (convkit bench wall time incl. plan building: {wall:.1f} s)', flush=True)

    if args.skip_extras:
        return
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
    with open(os.path.join(args.out, 'compare_torch_gpu.json'), 'w') as f:
        json.dump(dict(rows=rows, autotune=not args.no_autotune, fused_us=ck_fused, torch_eager_us=eager, torch_conv_us=conv_only, tiny_us=ck_tiny,
                       torch_tiny_us=torch_tiny, device=torch.cuda.get_device_name(), torch=torch.__version__,
                       cudnn=torch.backends.cudnn.version()), f, indent=1)


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
        if dirn == 'fwd':
            want, got = F.conv2d(src, wei, stride=s, padding=p, dilation=dil, groups=g), dst
        elif dirn == 'bwd_d':
            want = torch.ops.aten.convolution_backward(dst, src, wei, None, [s, s], [p, p], [dil, dil], False, [0, 0], g,
                                                       [True, False, False])[0]
            got = src
        else:
            want = torch.ops.aten.convolution_backward(dst, src, wei, None, [s, s], [p, p], [dil, dil], False, [0, 0], g,
                                                       [False, True, False])[1]
            got = wei
        err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
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
    ap.add_argument('--mbs', default='32,256')
    ap.add_argument('--out', default='/tmp/convkit_compare')
    ap.add_argument('--max-ms', type=float, default=100, help='convkit bench time budget per problem')
    ap.add_argument('--configs', default='', help='comma-separated subset of bf16-nhwc,tf32-nhwc,f32-nchw')
    ap.add_argument('--no-autotune', action='store_true', help='convkit on heuristics alone')
    ap.add_argument('--skip-extras', action='store_true', help='no fused / tiny measurements')
    ap.add_argument('--check', help='directory written by TorchCheck.Dump: compare instead of timing')
    args = ap.parse_args()
    if args.check:
        sys.exit(check(args))
    perf(args)


if __name__ == '__main__':
    main()
