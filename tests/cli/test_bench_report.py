#!/usr/bin/env python3
"""`convkit bench --report=FILE.html|png` (docs/cli.md): the HTML page parses and holds one bar per
layer and configuration with the layer names, PyTorch's bars (with the ratio) for the layers the
--torch-csv file has, a roofline point per layer and the measured peaks as positive numbers; the
PNG is a valid image of sane size with the bars' colours in it; bench/compare_torch_cpu.py's
--layers-csv file is what --torch-csv reads. Bad requests (extension, missing or malformed
--torch-csv, --mode=corr, no python/matplotlib/script) exit with status 2 and one line on stderr
before any benchmarking, and create nothing; a run that fails while writing leaves an existing
FILE byte for byte and no temporary file beside it.

Usage: test_bench_report.py --convkit=PATH [unittest args]"""
import csv
import html.parser
import math
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

CONVKIT = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SENTINEL = b"precious bytes that must survive a failed run"
# Small layers, so a run takes a second or two (most of it measuring the peaks).
LAYERS = ['mb1ic16ih14oc32oh14kh3ph1n"conv_a"', 'mb1ic32ih14oc32oh7kh1sh2ph0n"conv_b"',
          'g8mb1ic32ih14oc32oh14kh3ph1n"dw_c"']
NAMES = ["conv_a", "conv_b", "dw_c"]
BASE = ["bench", "--mode=perf", "--dir=fwd,BWD_D", "--dt=f32", "--tag=nhwc", "--max-ms-per-prb=5"]


def run(args, env=None, **kw):
    e = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    # The python that runs these tests has matplotlib (Debian's python3-matplotlib); PATH's may not.
    e.setdefault("CONVKIT_PYTHON", sys.executable)
    e.update(env or {})
    return subprocess.run([CONVKIT, *args], capture_output=True, text=True, timeout=600, env=e, **kw)


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], ""

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def all_text(self):
        return self.text + "".join(c.all_text() for c in self.children)

    def classes(self):
        return self.attrs.get("class", "").split()


VOID = {"meta", "br", "img", "hr", "link", "input"}


class TreeBuilder(html.parser.HTMLParser):
    """A strict tree: every element but the void ones must be closed, in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", [], None)
        self.cur = self.root
        self.errors = []

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if self.cur.tag != tag:
            self.errors.append(f"</{tag}> closes <{self.cur.tag}> at {self.getpos()}")
            return
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.text += data


def parse_html(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    p = TreeBuilder()
    p.feed(text)
    p.close()
    return p, text


def ancestor(node, tag):
    while node is not None and node.tag != tag:
        node = node.parent
    return node


def leftovers(directory, name):
    return [f for f in os.listdir(directory) if f != name and f.startswith(name)]


def png_size(data):
    """(width, height) after checking the signature, every chunk's CRC and the closing IEND."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks, size = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xffffffff == crc, f"bad CRC in {kind}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks, chunks
    return size


def write_torch_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "dir", "dt", "tag", "mb", "pytorch_ms", "pytorch_mean_ms", "convkit_ms"])
        w.writeheader()
        for r in rows:
            w.writerow(dict(dict(mb=1, pytorch_mean_ms="", convkit_ms=""), **r))


# PyTorch times for two of the three layers, fwd only, plus rows this run does not have.
TORCH_ROWS = [dict(name="conv_a", dir="fwd", dt="f32", tag="nhwc", pytorch_ms=0.0421),
              dict(name="conv_b", dir="fwd", dt="f32", tag="nhwc", pytorch_ms=0.0123),
              dict(name="conv_a", dir="fwd", dt="f32", tag="nhwc", mb=32, pytorch_ms=9.5),
              dict(name="conv_a", dir="fwd", dt="bf16", tag="nhwc", pytorch_ms=7.0),
              dict(name="other", dir="bwd_w", dt="f32", tag="nchw", pytorch_ms=1.0)]


class Reports(unittest.TestCase):
    """One HTML and one PNG run with a --torch-csv, shared by the content checks."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.torch_csv = os.path.join(d, "pt.csv")
        write_torch_csv(cls.torch_csv, TORCH_ROWS)
        cls.html = os.path.join(d, "r.html")
        with open(cls.html, "wb") as f:
            f.write(SENTINEL)  # replaced by a successful run
        cls.html_run = run(BASE + ["--report=" + cls.html, "--torch-csv=" + cls.torch_csv, *LAYERS])
        cls.png = os.path.join(d, "r.png")
        cls.png_run = run(BASE + ["--report=" + cls.png, "--torch-csv=" + cls.torch_csv, *LAYERS])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def stdout_peaks(self, out):
        mem = re.search(r"^# peak memory: ([\d.]+) GB/s", out, re.M)
        comp = re.search(r"^# peak compute f32: ([\d.]+) GFLOP/s", out, re.M)
        self.assertTrue(mem and comp, out)
        return float(mem.group(1)), float(comp.group(1))

    def test_html_structure(self):
        r = self.html_run
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("# report: " + self.html + " (6 layers, PyTorch times for 2)", r.stdout)
        self.assertEqual(leftovers(self.tmp.name, "r.html"), [])
        p, text = parse_html(self.html)
        self.assertEqual(p.errors, [])
        self.assertIs(p.cur, p.root, "unclosed elements at the end")
        self.assertTrue(text.startswith("<!DOCTYPE html>"))
        # Self-contained: no scripts, no external references.
        tags = [n for n in p.root.iter()]
        self.assertFalse([n for n in tags if n.tag in ("script", "link", "img", "iframe")])
        self.assertFalse(re.search(r'(src|href)="(?!#)', text), "external reference")
        # Titled with the engine line bench prints (engine, ISA, threads) and the command line.
        engine_line = r.stdout.splitlines()[0]
        self.assertTrue(engine_line.startswith("# engine "), engine_line)
        engine = engine_line[len("# engine "):]
        title = next(n for n in tags if n.tag == "title" and n.parent.tag == "head").all_text()
        self.assertIn(engine, title)
        self.assertIn(engine, next(n for n in tags if n.attrs.get("id") == "engine").all_text())
        command = next(n for n in tags if n.attrs.get("id") == "command").all_text()
        self.assertIn("convkit bench --mode=perf --dir=fwd,BWD_D", command)
        self.assertIn("--report=" + self.html, command)
        self.assertIn("'mb1ic16ih14oc32oh14kh3ph1n\"conv_a\"'", command)  # shell-quoted

    def test_html_bars(self):
        p, _ = parse_html(self.html)
        sections = [n for n in p.root.iter() if n.tag == "section" and "config" in n.classes()]
        self.assertEqual([s.attrs["data-config"] for s in sections], ["fwd f32 nhwc", "bwd_d (BWD_D) f32 nhwc"])
        for s in sections:
            svg = next(n for n in s.iter() if n.tag == "svg")
            W, H = float(svg.attrs["width"]), float(svg.attrs["height"])
            bars = [n for n in s.iter() if n.tag == "rect" and "bar" in n.classes()]
            ck = [b for b in bars if "convkit" in b.classes()]
            pt = [b for b in bars if "pytorch" in b.classes()]
            # One convkit bar per layer, in the bench's order, with its name beside it.
            self.assertEqual([b.attrs["data-layer"] for b in ck], NAMES)
            labels = [n.text.strip() for n in s.iter() if n.tag == "text" and "layer" in n.classes()]
            self.assertEqual(labels, NAMES)
            for b in bars:
                x, y, w, h = (float(b.attrs[k]) for k in ("x", "y", "width", "height"))
                self.assertTrue(0 <= x and x + w <= W and 0 <= y and y + h <= H, b.attrs)
                self.assertGreater(float(b.attrs["data-ms"]), 0)
            # Bar lengths are proportional to the times, on one scale per configuration.
            scale = [float(b.attrs["width"]) / float(b.attrs["data-ms"]) for b in bars if float(b.attrs["width"]) > 2]
            self.assertTrue(scale)
            for k in scale:
                self.assertAlmostEqual(k / scale[0], 1, delta=0.02)
            if s.attrs["data-config"].startswith("fwd"):
                # PyTorch's bars for the two layers the CSV has, with its times and the ratio.
                self.assertEqual([b.attrs["data-layer"] for b in pt], ["conv_a", "conv_b"])
                ck_ms = {b.attrs["data-layer"]: float(b.attrs["data-ms"]) for b in ck}
                for b, want in zip(pt, (0.0421, 0.0123)):
                    self.assertAlmostEqual(float(b.attrs["data-ms"]), want, delta=1e-9)
                    self.assertAlmostEqual(float(b.attrs["data-ratio"]), want / ck_ms[b.attrs["data-layer"]],
                                           delta=want / ck_ms[b.attrs["data-layer"]] * 1e-3)
                self.assertIn("\u00d7", s.all_text())
            else:
                self.assertEqual(pt, [])

    def test_html_peaks_and_roofline(self):
        p, _ = parse_html(self.html)
        nodes = list(p.root.iter())
        mem = next(n for n in nodes if n.attrs.get("id") == "peak-memory")
        comp = next(n for n in nodes if n.attrs.get("id") == "peak-compute-f32")
        gbs, gflops = float(mem.attrs["data-gbs"]), float(comp.attrs["data-gflops"])
        for v in (gbs, gflops):
            self.assertTrue(0 < v < math.inf, v)
        self.assertIn("GB/s", mem.all_text())
        self.assertIn("GFLOP/s", comp.all_text())
        # The same figures on stdout (printed to one decimal).
        out_gbs, out_gflops = self.stdout_peaks(self.html_run.stdout)
        self.assertAlmostEqual(out_gbs, gbs, delta=0.051)
        self.assertAlmostEqual(out_gflops, gflops, delta=0.051)
        roof = [n for n in nodes if n.tag == "svg" and "roofline" in n.classes()]
        self.assertEqual([s.attrs["data-dt"] for s in roof], ["f32"])
        svg = roof[0]
        W, H = float(svg.attrs["width"]), float(svg.attrs["height"])
        pts = [n for n in svg.iter() if n.tag == "circle" and "point" in n.classes()]
        self.assertEqual(sorted(n.attrs["data-layer"] for n in pts), sorted(NAMES * 2))
        # conv_a: 2*14*14*32*16*9 flops over (16*196 + 32*16*9 + 32*196) * 4 bytes.
        flops, nbytes = 2 * 14 * 14 * 32 * 16 * 9, (16 * 196 + 32 * 16 * 9 + 32 * 196) * 4
        a = [n for n in pts if n.attrs["data-layer"] == "conv_a"]
        for n in a:
            self.assertAlmostEqual(float(n.attrs["data-ai"]), flops / nbytes, delta=1e-3)
        for n in pts:
            cx, cy = float(n.attrs["cx"]), float(n.attrs["cy"])
            self.assertTrue(0 < cx < W and 0 < cy < H, n.attrs)
            self.assertGreater(float(n.attrs["data-gflops"]), 0)
        # Both ceilings drawn, the memory one rising to the flat compute one.
        mem_line = next(n for n in svg.iter() if n.tag == "line" and "memory" in n.classes())
        comp_line = next(n for n in svg.iter() if n.tag == "line" and "compute" in n.classes())
        self.assertLess(float(mem_line.attrs["y2"]), float(mem_line.attrs["y1"]))
        self.assertEqual(comp_line.attrs["y1"], comp_line.attrs["y2"])
        self.assertAlmostEqual(float(mem_line.attrs["y2"]), float(comp_line.attrs["y1"]), delta=0.02)
        labels = " ".join(n.all_text() for n in svg.iter() if n.tag == "text")
        self.assertIn("GFLOP/s", labels)
        self.assertIn("GB/s", labels)
        table = next(n for n in nodes if n.attrs.get("id") == "layers")
        self.assertEqual(len([n for n in table.iter() if n.tag == "tr"]), 1 + 6)

    def test_png(self):
        r = self.png_run
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("# report: " + self.png + " (6 layers, PyTorch times for 2)", r.stdout)
        self.assertEqual(leftovers(self.tmp.name, "r.png"), [])
        gbs, gflops = self.stdout_peaks(r.stdout)
        self.assertGreater(gbs, 0)
        self.assertGreater(gflops, 0)
        with open(self.png, "rb") as f:
            data = f.read()
        w, h = png_size(data)
        self.assertTrue(600 <= w <= 4000 and 400 <= h <= 20000, (w, h))
        import matplotlib.image
        img = matplotlib.image.imread(self.png)
        self.assertEqual(img.shape[:2], (h, w))
        rgb = (img[:, :, :3] * 255).round().astype(int)

        def count(color):
            c = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
            return int(((abs(rgb - c)).sum(axis=2) <= 6).sum())
        # convkit's blue bars and PyTorch's orange ones are there, on a mostly white page.
        self.assertGreater(count("#1f77b4"), 200)
        self.assertGreater(count("#ff7f0e"), 50)
        self.assertGreater(count("#ffffff"), 0.5 * w * h)


class Errors(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def p(self, name):
        return os.path.join(self.d, name)

    def assertRefused(self, args, *needles, env=None, existing=None):
        """Exit 2, one line on stderr holding the needles, no benchmark run, and the report file
        as it was: absent, or `existing` with the sentinel."""
        target = existing or next((a.split("=", 1)[1] for a in args if a.startswith("--report=")), None)
        if existing:
            with open(existing, "wb") as f:
                f.write(SENTINEL)
        before = sorted(os.listdir(self.d))
        existed = target is not None and os.path.lexists(target)
        r = run(args, env=env)
        self.assertEqual(r.returncode, 2, f"{args}\n{r.stdout}\n{r.stderr}")
        err = r.stderr.strip()
        self.assertEqual(len(err.splitlines()), 1, err)
        for n in needles:
            self.assertIn(n, err)
        self.assertEqual(r.stdout, "", "benchmarks ran before the error")
        self.assertEqual(sorted(os.listdir(self.d)), before, "files created or removed")
        if existing:
            with open(existing, "rb") as f:
                self.assertEqual(f.read(), SENTINEL)
        elif target:
            self.assertEqual(os.path.lexists(target), existed)
        return err

    def test_bad_extension(self):
        self.assertRefused(BASE + ["--report=" + self.p("r.pdf"), *LAYERS], "--report", "'.pdf'", ".html", ".png")
        self.assertRefused(BASE + ["--report=" + self.p("report"), *LAYERS], "--report", "extension is missing")
        self.assertRefused(BASE + ["--report=" + self.p("r.svg"), *LAYERS], "'.svg'", existing=self.p("r.svg"))

    def test_corr_only(self):
        self.assertRefused(["bench", "--mode=corr", "--report=" + self.p("r.html"), *LAYERS], "--mode=corr",
                           "--mode=perf")
        self.assertRefused(["bench", "--mode=C", "--report=" + self.p("r.html"), *LAYERS], "--mode=corr",
                           existing=self.p("r.html"))

    def test_torch_csv_problems(self):
        missing = self.p("missing.csv")
        self.assertRefused(BASE + ["--report=" + self.p("r.html"), "--torch-csv=" + missing, *LAYERS], "--torch-csv",
                           missing)
        self.assertRefused(BASE + ["--report=" + self.p("r.html"), "--torch-csv=" + missing, *LAYERS], missing,
                           existing=self.p("r.html"))
        self.assertRefused(BASE + ["--torch-csv=" + missing, *LAYERS], "--torch-csv", "--report")
        bad = self.p("bad.csv")
        with open(bad, "w") as f:
            f.write("name,dir,dt,tag\nconv_a,fwd,f32,nhwc\n")
        self.assertRefused(BASE + ["--report=" + self.p("r.html"), "--torch-csv=" + bad, *LAYERS], "'pytorch_ms' column")
        with open(bad, "w") as f:
            f.write("name,dir,dt,tag,pytorch_ms\nconv_a,fwd,f32,nhwc,0.1\nconv_b,fwd,f32,nhwc,fast\n")
        self.assertRefused(BASE + ["--report=" + self.p("r.html"), "--torch-csv=" + bad, *LAYERS], "line 3", "'fast'")
        with open(bad, "w") as f:
            f.write("name,dir,dt,tag,pytorch_ms\nconv_a,fwd,f32,nhwc,0.1\nconv_a,FWD_B,f32,nhwc,0.2\n")
        self.assertRefused(BASE + ["--report=" + self.p("r.html"), "--torch-csv=" + bad, *LAYERS], "line 3", "line 2")
        write_torch_csv(bad, [dict(name="conv_a", dir="fwd", dt="f32", tag="nhwc", mb=32, pytorch_ms=1.0)])
        self.assertRefused(BASE + ["--report=" + self.p("r.html"), "--torch-csv=" + bad, *LAYERS], "none of its 1",
                           "mb")

    def test_unwritable_destination(self):
        self.assertRefused(BASE + ["--report=" + self.p("no/such/dir/r.html"), *LAYERS], "no/such/dir")
        os.mkdir(self.p("adir.html"))
        self.assertRefused(BASE + ["--report=" + self.p("adir.html"), *LAYERS], "is a directory")

    def test_png_needs_python_and_script(self):
        self.assertRefused(BASE + ["--report=" + self.p("r.png"), *LAYERS], "CONVKIT_REPORT_SCRIPT",
                           env={"CONVKIT_REPORT_SCRIPT": self.p("nope.py")})
        nomod = self.p("nomod.py")
        with open(nomod, "w") as f:
            f.write("import sys\nimport no_such_module_matplotlib\n")
        self.assertRefused(BASE + ["--report=" + self.p("r.png"), *LAYERS], "matplotlib", "no_such_module_matplotlib",
                           env={"CONVKIT_REPORT_SCRIPT": nomod}, existing=self.p("r.png"))
        self.assertRefused(BASE + ["--report=" + self.p("r.png"), *LAYERS], "matplotlib", "/no/such/python3",
                           env={"CONVKIT_PYTHON": "/no/such/python3"})


class KeepsExistingFile(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def sentinel(self, name):
        path = os.path.join(self.d, name)
        with open(path, "wb") as f:
            f.write(SENTINEL)
        return path

    def assertIntact(self, path):
        with open(path, "rb") as f:
            self.assertEqual(f.read(), SENTINEL, "the report file was damaged by a failed run")
        self.assertEqual(leftovers(self.d, os.path.basename(path)), [])

    def test_drawing_fails(self):
        # The script passes the check, then fails while drawing, after the benchmarks.
        script = os.path.join(self.d, "fails.py")
        with open(script, "w") as f:
            f.write("import sys\nif sys.argv[1:] == ['--check']: sys.exit(0)\n"
                    "sys.stdout.write('\\x89PNG half a picture'); sys.stdout.flush()\n"
                    "sys.exit('drawing went wrong')\n")
        out = self.sentinel("r.png")
        r = run(BASE + ["--report=" + out, *LAYERS], env={"CONVKIT_REPORT_SCRIPT": script})
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("drawing went wrong", r.stderr)
        self.assertIn("# peak memory", r.stdout)  # it failed at the end, not before
        self.assertIntact(out)
        # Output that is not a PNG is refused too.
        with open(script, "w") as f:
            f.write("import sys\nif sys.argv[1:] == ['--check']: sys.exit(0)\nprint('not a png')\n")
        r = run(BASE + ["--report=" + out, *LAYERS], env={"CONVKIT_REPORT_SCRIPT": script})
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("not a PNG", r.stderr)
        self.assertIntact(out)

    def test_killed_while_writing(self):
        # Writes beyond 4 KiB raise SIGXFSZ: the process dies inside the report's write, every time,
        # and takes its temporary file with it.
        out = self.sentinel("r.html")

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        r = run(BASE + ["--report=" + out, *LAYERS], preexec_fn=limit)
        self.assertEqual(r.returncode, -signal.SIGXFSZ, r.stdout + r.stderr)
        self.assertIntact(out)


class ScriptLookup(unittest.TestCase):
    """CONVKIT_REPORT_SCRIPT, then <exe>/../share/convkit/bench_report.py, then the source tree."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def fake(self, path, marker):
        # A valid 1x1 PNG carrying `marker` in a tEXt chunk.
        def chunk(kind, body):
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)
        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) +
               chunk(b"tEXt", b"Comment\0" + marker.encode()) + chunk(b"IDAT", zlib.compress(b"\0\0")) +
               chunk(b"IEND", b""))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("import sys\nif sys.argv[1:] == ['--check']: sys.exit(0)\nsys.stdin.read()\n"
                    "sys.stdout.buffer.write(%r)\n" % png)
        return png

    def test_lookup_order(self):
        exe = os.path.join(self.d, "prefix", "bin", "convkit")
        os.makedirs(os.path.dirname(exe))
        shutil.copy2(CONVKIT, exe)
        installed = self.fake(os.path.join(self.d, "prefix", "share", "convkit", "bench_report.py"), "installed")
        env_png = self.fake(os.path.join(self.d, "env.py"), "from the environment")
        out = os.path.join(self.d, "r.png")
        env = {k: v for k, v in os.environ.items() if k != "CONVKIT_REPORT_SCRIPT"}
        env["CONVKIT_PYTHON"] = sys.executable
        r = subprocess.run([exe, *BASE, "--report=" + out, LAYERS[0]], capture_output=True, text=True, timeout=600,
                           env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), installed)
        env["CONVKIT_REPORT_SCRIPT"] = os.path.join(self.d, "env.py")
        r = subprocess.run([exe, *BASE, "--report=" + out, LAYERS[0]], capture_output=True, text=True, timeout=600,
                           env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), env_png)


class ComparisonScript(unittest.TestCase):
    """bench/compare_torch_cpu.py --layers-csv writes what --torch-csv reads."""

    def test_layers_csv_round_trip(self):
        try:
            import torch  # noqa: F401  (Debian's python3-torch)
        except ImportError:
            self.skipTest("PyTorch is not installed")
        if run(["bench", "--mode=perf", "--engine=cpu", "--max-ms-per-prb=1", LAYERS[0]]).returncode != 0:
            self.skipTest("no cpu engine in this build")
        with tempfile.TemporaryDirectory() as d:
            batch = os.path.join(d, "batch")
            with open(batch, "w") as f:
                f.write("# two layers\n" + "\n".join(LAYERS[:2]) + "\n")
            layers_csv = os.path.join(d, "pt.csv")
            r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "compare_torch_cpu.py"),
                                "--convkit=" + CONVKIT, "--batch=" + batch, "--dirs=fwd,bwd_d", "--dts=f32",
                                "--tags=nhwc", "--prepacked=", "--rounds=1", "--calls=2", "--max-ms=5",
                                "--layers-csv=" + layers_csv], capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            with open(layers_csv) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([(x["name"], x["dir"]) for x in rows],
                             [("conv_a", "fwd"), ("conv_b", "fwd"), ("conv_a", "bwd_d"), ("conv_b", "bwd_d")])
            for x in rows:
                self.assertEqual((x["dt"], x["tag"], x["mb"]), ("f32", "nhwc", "1"))
                self.assertGreater(float(x["pytorch_ms"]), 0)
            report = os.path.join(d, "r.html")
            r = run(BASE + ["--engine=cpu", "--report=" + report, "--torch-csv=" + layers_csv, *LAYERS[:2]])
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            p, _ = parse_html(report)
            pt = [n for n in p.root.iter() if n.tag == "rect" and "pytorch" in n.classes()]
            self.assertEqual(len(pt), 4)
            want = {(x["name"], x["dir"]): float(x["pytorch_ms"]) for x in rows}
            for n in pt:
                cfg = ancestor(n, "section").attrs["data-config"].split()[0]
                self.assertAlmostEqual(float(n.attrs["data-ms"]), want[(n.attrs["data-layer"], cfg)], delta=1e-4)


if __name__ == "__main__":
    for a in list(sys.argv[1:]):
        if a.startswith("--convkit="):
            CONVKIT = os.path.abspath(a.split("=", 1)[1])
            sys.argv.remove(a)
    if not CONVKIT:
        sys.exit("usage: test_bench_report.py --convkit=PATH")
    unittest.main(verbosity=2)
