#!/usr/bin/env python3
"""Draws `convkit bench --report=FILE.png` with matplotlib: per configuration (dir, dt, tag) a bar
per layer of convkit's time, with PyTorch's beside it when the run had --torch-csv, and per dtype
a roofline of the layers under the compute and memory peaks that the run measured.

convkit bench runs this script; it is not meant to be run by hand, but can be:
  python3 bench_report.py --check           exit 0 if matplotlib can be imported (3 if not)
  python3 bench_report.py < data.json > report.png
  python3 bench_report.py data.json report.png
The JSON is what tools/report.cpp's report_json() writes: engine, command, host, date,
torch_csv, memory {gbs, note}, compute [{dt, gflops, note}], layers [{config, name, descriptor,
dir, dt, tag, mb, status, ms, flops, bytes, torch_ms}] (ms, torch_ms and peaks null when absent).
The HTML report (tools/report.cpp) draws the same pictures."""
import io
import json
import math
import sys
import textwrap

CONVKIT_COLOR = "#1f77b4"
TORCH_COLOR = "#ff7f0e"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def import_matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display: the picture goes to a file
        import matplotlib.pyplot as plt
        return plt
    except ImportError as e:
        print("matplotlib is not installed for %s (%s; Debian: apt-get install python3-matplotlib)" %
              (sys.executable, e), file=sys.stderr)
        sys.exit(3)


def fmt3(v):
    """3 significant digits (all digits of integers from 100 up, so no exponents), as the HTML."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return "%.0f" % v if abs(v) >= 100 else "%.3g" % v


def timed(layer):
    return layer["ms"] is not None and layer["ms"] > 0 and layer["status"] != "unsupported"


def configs_of(layers):
    out = []
    for l in layers:
        if l["config"] not in out:
            out.append(l["config"])
    return out


def short(name, limit=28):
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def draw_bars(ax, config, rows, slots):
    """`slots`: rows on the y axis, the same in every configuration's chart, so bars have one
    thickness throughout."""
    torch = any(r["torch_ms"] is not None for r in rows)
    n = len(rows)
    h = 0.38 if torch else 0.7
    ys = list(range(n))
    ck = [r["ms"] if timed(r) else 0 for r in rows]
    ax.barh([y - (h / 2 if torch else 0) for y in ys], ck, height=h, color=CONVKIT_COLOR, label="convkit")
    vmax = max(ck + [r["torch_ms"] or 0 for r in rows]) or 1.0
    pad = vmax * 0.01
    for y, r in zip(ys, rows):
        yc = y - (h / 2 if torch else 0)
        if not timed(r):
            ax.text(pad, yc, r["status"], va="center", fontsize=7, color="#888")
            continue
        bad = r["status"] != "ok"
        ax.text(r["ms"] + pad, yc, fmt3(r["ms"]) + (" " + r["status"] if bad else ""), va="center", fontsize=7,
                color="#c00" if bad else "#222")
    if torch:
        pt = [r["torch_ms"] or 0 for r in rows]
        ax.barh([y + h / 2 for y in ys], pt, height=h, color=TORCH_COLOR, label="PyTorch")
        for y, r in zip(ys, rows):
            if r["torch_ms"] is None:
                continue
            label = fmt3(r["torch_ms"])
            if timed(r):
                ratio = r["torch_ms"] / r["ms"]
                label += "  %.2f\u00d7" % ratio
            ax.text(r["torch_ms"] + pad, y + h / 2, label, va="center", fontsize=7, color="#222")
    ax.set_yticks(ys)
    ax.set_yticklabels([short(r["name"]) for r in rows], fontsize=8)
    ax.set_ylim(max(n, slots) - 0.5, -0.5)
    ax.set_xlim(0, vmax * 1.22)
    ax.set_xlabel("time per call, ms (convkit: min over batches of calls)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#e0e0e0")
    ax.set_axisbelow(True)
    total = sum(r["ms"] for r in rows if timed(r))
    title = "%s: %d layers, convkit %s ms" % (config, n, fmt3(total))
    if torch:
        matched = [r for r in rows if r["torch_ms"] is not None]
        pt_total = sum(r["torch_ms"] for r in matched)
        ck_matched = sum(r["ms"] for r in matched if timed(r))
        title += ", PyTorch %s ms (%.2f\u00d7)" % (fmt3(pt_total), pt_total / ck_matched if ck_matched else float("nan"))
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")


def tick_label(v):
    """Plain numbers from 0.001 to 10000, "2e5" beyond (GPU rates run to 1e6 GFLOP/s)."""
    k = math.floor(math.log10(v) + 1e-9)
    return "%g" % v if -3 <= k <= 4 else "%de%d" % (round(v / 10 ** k), k)


def bounds(lo, hi):
    """A margin around the data and the ridge, at least a decade wide (as the HTML's axes)."""
    l0, l1 = math.log10(lo / 1.6), math.log10(hi * 1.6)
    if l1 - l0 < 1:
        c = (l0 + l1) / 2
        l0, l1 = c - 0.5, c + 0.5
    return 10 ** l0, 10 ** l1


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_roofline(fig, ax, data, dt, configs):
    pts = []
    for l in data["layers"]:
        if l["dt"] != dt or not timed(l) or not l["bytes"] or not l["flops"]:
            continue
        pts.append((l, l["flops"] / l["bytes"], l["flops"] / (l["ms"] * 1e6), configs.index(l["config"]) % 10))
    peak = next((p["gflops"] for p in data["compute"] if p["dt"] == dt), None)
    bw = data["memory"]["gbs"]
    xs = [p[1] for p in pts]
    ys = [p[2] for p in pts]
    ridge = peak / bw if peak and bw else None
    xlo, xhi = min(xs + ([ridge] if ridge else [])), max(xs + ([ridge] if ridge else []))
    # The compute roof stays in the plot even when a busy machine measured it under the layers.
    ylo, yhi = min(ys + ([peak] if peak else [])), max(ys + ([peak] if peak else []))
    x0, x1 = bounds(xlo, xhi)
    y0, y1 = bounds(ylo, yhi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    from matplotlib.ticker import FuncFormatter, LogLocator
    for axis, (lo, hi) in ((ax.xaxis, (x0, x1)), (ax.yaxis, (y0, y1))):
        # Plain numbers at the decades; with few decades 2 and 5 (and 3) too, or the axis would
        # carry one or two numbers.
        span = math.log10(hi / lo)
        shown = (2, 3, 5) if span <= 1.5 else (2, 5) if span <= 3.2 else ()
        axis.set_major_locator(LogLocator(base=10, numticks=30))
        axis.set_minor_locator(LogLocator(base=10, subs=range(2, 10), numticks=30))
        axis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v)))
        axis.set_minor_formatter(FuncFormatter(
            lambda v, _, shown=shown: tick_label(v) if round(v / 10 ** math.floor(math.log10(v) + 1e-9)) in shown
            else ""))
    ax.tick_params(which="both", labelsize=8)
    ax.grid(which="major", color="#d0d0d0")
    ax.grid(which="minor", color="#f0f0f0")
    ax.set_axisbelow(True)
    if bw:
        xe = ridge if ridge else x1
        ax.plot([x0, xe], [bw * x0, bw * xe], color="#555", lw=2, label="measured roof")
        if ridge:
            ax.plot([ridge, x1], [peak, bw * x1], color="#bbb", lw=1.5, ls="--", label="ceiling past the ridge")
    if peak:
        xs0 = ridge if ridge else x0
        ax.plot([xs0, x1], [peak, peak], color="#555", lw=2, label=None if bw else "measured roof")
        if ridge:
            ax.plot([x0, ridge], [peak, peak], color="#bbb", lw=1.5, ls="--")
    for ci in sorted(set(p[3] for p in pts)):
        sel = [p for p in pts if p[3] == ci]
        ax.scatter([p[1] for p in sel], [p[2] for p in sel], s=30, color=PALETTE[ci], alpha=0.85, edgecolors="white",
                   linewidths=0.6, zorder=3, label=configs[ci])
    ax.set_xlabel("arithmetic intensity, FLOP per byte of src + weights + dst", fontsize=9)
    ax.set_ylabel("achieved GFLOP/s (%s)" % dt, fontsize=9)
    ax.set_title("roofline %s: measured compute peak %s, memory bandwidth %s" % (
        dt, fmt3(peak) + " GFLOP/s" if peak else "n/a", fmt3(bw) + " GB/s" if bw else "n/a"), fontsize=9, loc="left")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)

    # Names where they cover no other name, point or the legend (display coordinates).
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken = []
    leg = ax.get_legend().get_window_extent(renderer)
    taken.append((leg.x0, leg.y0, leg.x1, leg.y1))
    box = ax.get_window_extent(renderer)
    disp = [ax.transData.transform((p[1], p[2])) for p in pts]
    for (px, py) in disp:
        taken.append((px - 4, py - 4, px + 4, py + 4))
    if peak:
        (lx, ly) = ax.transData.transform((x1, peak))
        text = "compute peak %s GFLOP/s" % fmt3(peak)
        w = 6.0 * len(text)
        # At the right end above or under the line, else just past the ridge; the title has the
        # number wherever the chart is too crowded for it.
        (rx, _) = ax.transData.transform((ridge, peak)) if ridge else ax.transData.transform((x0, peak))
        for (tx, ty, ha, va) in ((lx - 4, ly + 3, "right", "bottom"), (lx - 4, ly - 3, "right", "top"),
                                 (rx + 8 + w, ly + 3, "right", "bottom"), (rx + 8 + w, ly - 3, "right", "top")):
            b = (tx - w, ty if va == "bottom" else ty - 12, tx, ty + 12 if va == "bottom" else ty)
            if not any(overlaps(b, t) for t in taken):
                ax.annotate(text, (tx, ty), xycoords="figure pixels", ha=ha, va=va, fontsize=8, color="#333")
                taken.append(b)
                break
    if bw:
        # Along the visible part of the memory line, just above it, at the first of a few places
        # where it covers no point; boxes sampled along the rotated text keep the names off it.
        xs, xe = max(x0, y0 / bw), min(ridge or x1, y1 / bw)
        if xe > xs:
            (ax_, ay_), (bx_, by_) = ax.transData.transform((xs, bw * xs)), ax.transData.transform((xe, bw * xe))
            a = math.atan2(by_ - ay_, bx_ - ax_)
            nx, ny = -math.sin(a), math.cos(a)
            text = "memory %s GB/s" % fmt3(bw)
            length = 6.5 * len(text)
            for f in (0.2, 0.08, 0.35, 0.5, 0.65, 0.2):
                xm = 10 ** (math.log10(xs) + f * (math.log10(xe) - math.log10(xs)))
                px, py = ax.transData.transform((xm, bw * xm))
                boxes = []
                t = 0.0
                while t <= length:
                    cx, cy = px + t * math.cos(a) + 11 * nx, py + t * math.sin(a) + 11 * ny
                    boxes.append((cx - 5, cy - 5, cx + 5, cy + 5))
                    t += 8
                if not any(overlaps(b, o) for b in boxes for o in taken):
                    break
            taken.extend(boxes)
            ax.annotate(text, (xm, bw * xm), xytext=(4 * nx, 4 * ny), textcoords="offset points",
                        rotation=math.degrees(a), rotation_mode="anchor", ha="left", va="bottom", fontsize=8,
                        color="#333")
    for p, (px, py) in zip(pts, disp):
        name = p[0]["name"]
        w, hgt = 5.0 * len(name), 10
        for (dx, dy, ha) in ((7, -4, "left"), (-7, -4, "right"), (-w / 2, 6, "left"), (-w / 2, -16, "left")):
            x0b = px + dx if ha == "left" else px + dx - w
            b = (x0b, py + dy, x0b + w, py + dy + hgt)
            if b[0] < box.x0 or b[2] > box.x1 or b[1] < box.y0 or b[3] > box.y1:
                continue
            if any(overlaps(b, t) for t in taken):
                continue
            ax.annotate(name, (x0b, py + dy), xycoords="figure pixels", ha="left", va="bottom", fontsize=6.5,
                        color="#333")
            taken.append(b)
            break


def render(data, out):
    plt = import_matplotlib()
    from matplotlib.gridspec import GridSpec
    layers = data["layers"]
    configs = configs_of(layers)
    dts = []
    for l in layers:
        if l["dt"] not in dts and any(timed(x) and x["dt"] == l["dt"] for x in layers):
            dts.append(l["dt"])
    bar_cols = 1 if len(configs) <= 1 else 2
    bar_rows = math.ceil(len(configs) / bar_cols)
    per_config = {c: [l for l in layers if l["config"] == c] for c in configs}
    torch_rows = any(l["torch_ms"] is not None for l in layers)
    most = max([len(v) for v in per_config.values()] + [1])
    bar_h = 0.9 + most * (0.3 if torch_rows else 0.2)
    roof_cols = min(len(dts), 2) or 1
    roof_rows = math.ceil(len(dts) / roof_cols)
    roof_h = 5.0
    head_h = 1.3
    width = 15 if bar_cols == 2 or roof_cols == 2 else 10
    height = head_h + bar_rows * bar_h + roof_rows * roof_h + 0.75
    # Room on the left of each bar chart for its layer names (8 pt: about 0.075 in a character).
    label_in = 0.35 + 0.075 * max([len(short(l["name"])) for l in layers] + [6])
    right_in = 0.3
    axis_in = (width - label_in - right_in - (label_in if bar_cols == 2 else 0)) / 2
    fig = plt.figure(figsize=(width, height), dpi=100)
    gs = GridSpec(bar_rows + roof_rows, 2, figure=fig, height_ratios=[bar_h] * bar_rows + [roof_h] * roof_rows,
                  top=1 - head_h / height, bottom=0.75 / height, left=label_in / width, right=1 - right_in / width,
                  hspace=0.9 / ((bar_h + roof_h) / 2), wspace=label_in / axis_in if bar_cols == 2 else 0.32)
    cmd = "\n".join(textwrap.wrap(data["command"], 170)[:3])
    fig.text(0.01, 1 - 0.12 / height, "convkit bench report", fontsize=13, weight="bold", va="top")
    peaks = "measured peaks: memory %s; " % (fmt3(data["memory"]["gbs"]) + " GB/s" if data["memory"]["gbs"] else "n/a")
    peaks += "; ".join("compute %s %s" % (p["dt"], fmt3(p["gflops"]) + " GFLOP/s" if p["gflops"] else "n/a")
                       for p in data["compute"])
    if data.get("torch_csv"):
        n = sum(1 for l in layers if l["torch_ms"] is not None)
        peaks += "   |   PyTorch times: %d of %d layers (%s), ratio = PyTorch / convkit" % (n, len(layers),
                                                                                           data["torch_csv"])
    fig.text(0.01, 1 - 0.42 / height, "engine " + data["engine"] + "\n" + cmd + "\n" + peaks + "\n" + data["date"] +
             (" on " + data["host"] if data.get("host") else ""), fontsize=7.5, va="top", family="monospace")
    for i, c in enumerate(configs):
        r, col = divmod(i, bar_cols)
        ax = fig.add_subplot(gs[r, col] if bar_cols == 2 else gs[r, :])
        draw_bars(ax, c, per_config[c], most)
    for i, dt in enumerate(dts):
        r, col = divmod(i, roof_cols)
        ax = fig.add_subplot(gs[bar_rows + r, col] if roof_cols == 2 else gs[bar_rows + r, :])
        draw_roofline(fig, ax, data, dt, configs)
    fig.savefig(out, format="png")


def main():
    args = sys.argv[1:]
    if args == ["--check"]:
        import_matplotlib()
        return 0
    if len(args) not in (0, 2):
        print(__doc__, file=sys.stderr)
        return 2
    data = json.load(open(args[0], encoding="utf-8") if args else io.TextIOWrapper(sys.stdin.buffer, "utf-8"))
    buf = io.BytesIO()
    render(data, buf)
    if args:
        with open(args[1], "wb") as f:
            f.write(buf.getvalue())
    else:
        sys.stdout.buffer.write(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
