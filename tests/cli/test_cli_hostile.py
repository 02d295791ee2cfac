#!/usr/bin/env python3
"""`convkit run` under hostile conditions (issue 18): --out in a read-only or full directory (a
small tmpfs), an input file rewritten while it is read, inputs that are not regular files, the
process killed mid-write (SIGXFSZ from a file-size limit, deterministically) and SIGINT/SIGTERM at
random moments. Whatever happens, an existing --out file is either untouched or replaced by a
complete, correct result; a failure prints one clear line on stderr and exits with the documented
status (README: 0 success, 2 invalid input or usage, 1 other failures); nothing crashes or hangs.

The tmpfs cases run the program inside a user + mount namespace (`unshare -rm`), where an
unprivileged user (and a root that file permissions do not stop) can mount a small or read-only
tmpfs; they skip where unshare is not allowed. The same namespace hides /proc, which write_npy needs
to name a file made with O_TMPFILE: there it falls back to a named temporary file.

Usage: test_cli_hostile.py --convkit=PATH [unittest args]"""
import glob
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

CONVKIT = None
SENTINEL = b"precious bytes that must survive a failed run"


def slurp(path):
    with open(path, "rb") as f:
        return f.read()


def have_unshare():
    try:
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || exit 3"],
                           capture_output=True, timeout=20)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Hostile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.unshare = have_unshare()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        rng = np.random.default_rng(18)
        self.x = rng.uniform(-1, 1, (1, 8, 64, 64)).astype(np.float32)  # dst [1, 8, 64, 64]: 128 KiB
        self.w = rng.uniform(-1, 1, (8, 8, 3, 3)).astype(np.float32)
        np.save(self.p("x.npy"), self.x)
        np.save(self.p("w.npy"), self.w)

    def tearDown(self):
        self.tmp.cleanup()

    def p(self, name):
        return os.path.join(self.d, name)

    def args(self, out, src=None):
        return ["run", "--engine=ref", "--pad-l=1", "--pad-r=1", "--src=" + (src or self.p("x.npy")),
                "--wei=" + self.p("w.npy"), "--out=" + out]

    def expected(self):
        if not hasattr(self, "_want"):
            r = subprocess.run([CONVKIT, *self.args(self.p("want.npy"))], capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self._want = np.load(self.p("want.npy"))
        return self._want

    def assertOneLine(self, err, *needles):
        err = err.strip()
        self.assertTrue(err, "no message on stderr")
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        for n in needles:
            self.assertIn(n, err)
        for bad in ("AddressSanitizer", "runtime error", "Segmentation", "terminate called", "Aborted"):
            self.assertNotIn(bad, err)

    def assertIntactOrComplete(self, out, what):
        """`out` holds the sentinel, or a complete .npy with the right result."""
        with open(out, "rb") as f:
            data = f.read()
        if data == SENTINEL:
            return "old"
        try:
            y = np.load(out)
        except Exception as e:  # noqa: BLE001 - any failure to load is a damaged file
            self.fail(f"{what}: --out is neither the old file nor a readable .npy ({len(data)} bytes): {e}")
        np.testing.assert_allclose(y, self.expected(), rtol=1e-5, atol=1e-5, err_msg=what)
        return "new"

    def leftovers(self, directory, out_name):
        return sorted(os.path.basename(f) for f in glob.glob(os.path.join(directory, out_name + ".tmp.*")))

    # ---- --out on a small tmpfs: full, or read-only ----

    def in_tmpfs(self, size, readonly, hide_proc=False):
        """Runs convkit with --out on a fresh tmpfs holding the sentinel as out.npy; returns
        (exit status, stderr, out.npy's bytes afterwards, the tmpfs's file names afterwards).
        hide_proc: an empty tmpfs over /proc while convkit runs."""
        if not self.unshare:
            self.skipTest("unshare --user --mount is not allowed here")
        mnt = self.p("mnt")
        os.mkdir(mnt)
        with open(self.p("sentinel"), "wb") as f:
            f.write(SENTINEL)
        cmd = " ".join("'" + a + "'" for a in [CONVKIT, *self.args(os.path.join(mnt, "out.npy"))])
        script = f"""
            mount -t tmpfs -o size={size} tmpfs '{mnt}' || exit 90
            cp '{self.p("sentinel")}' '{mnt}/out.npy'
            {"mount -o remount,ro '" + mnt + "' || exit 91" if readonly else ""}
            {"mount -t tmpfs tmpfs /proc || exit 92" if hide_proc else ""}
            {cmd} 2>'{self.p("stderr")}'
            echo $? >'{self.p("status")}'
            cp '{mnt}/out.npy' '{self.p("after")}'
            ls -A '{mnt}' >'{self.p("listing")}'
        """
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, f"namespace script failed: {r.stdout} {r.stderr}")
        read = lambda n: slurp(self.p(n))  # noqa: E731
        return int(read("status")), read("stderr").decode(), read("after"), read("listing").decode().split()

    # A full or read-only disk is not invalid input: README's exit status for it is 1, not 2
    # (finding F5: write_npy reported I/O failures as invalid_argument).

    def test_out_in_full_directory(self):
        # 64 KiB of tmpfs for a 128 KiB result: the temporary file cannot be written.
        status, err, after, names = self.in_tmpfs("64k", readonly=False)
        self.assertEqual(status, 1, err)
        self.assertOneLine(err, "out.npy", "No space left on device")
        self.assertEqual(after, SENTINEL, "--out was modified")
        self.assertEqual(names, ["out.npy"], "the temporary file was left behind")

    def test_out_in_read_only_directory(self):
        status, err, after, names = self.in_tmpfs("1m", readonly=True)
        self.assertEqual(status, 1, err)
        self.assertOneLine(err, "out.npy", "Read-only file system")
        self.assertEqual(after, SENTINEL)
        self.assertEqual(names, ["out.npy"])

    def skip_without_proc_under_asan(self):
        # AddressSanitizer reads /proc/self/maps; with /proc hidden it misreads the stack and
        # reports false errors (a stack-use-after-scope at the first exception).
        r = subprocess.run(["ldd", CONVKIT], capture_output=True, text=True)
        if "libasan" in r.stdout:
            self.skipTest("an AddressSanitizer build cannot run without /proc")

    def test_out_without_proc_uses_a_named_temporary_file(self):
        self.skip_without_proc_under_asan()
        # No /proc: the O_TMPFILE file cannot be given a name, so write_npy writes a named
        # temporary file and renames it, as before: the result replaces --out, nothing is left.
        status, err, after, names = self.in_tmpfs("1m", readonly=False, hide_proc=True)
        self.assertEqual(status, 0, err)
        with open(self.p("after.npy"), "wb") as f:
            f.write(after)
        np.testing.assert_allclose(np.load(self.p("after.npy")), self.expected(), rtol=1e-5, atol=1e-5)
        self.assertEqual(names, ["out.npy"])

    def test_out_full_without_proc(self):
        self.skip_without_proc_under_asan()
        # The named temporary file of the fallback, on a full disk: removed, exit status 1.
        status, err, after, names = self.in_tmpfs("64k", readonly=False, hide_proc=True)
        self.assertEqual(status, 1, err)
        self.assertOneLine(err, "out.npy", "No space left on device", ".tmp.")
        self.assertEqual(after, SENTINEL)
        self.assertEqual(names, ["out.npy"])

    # ---- killed while writing ----

    def run_with_file_limit(self):
        out = self.p("out.npy")
        with open(out, "wb") as f:
            f.write(SENTINEL)

        def limit():
            # Writes beyond 4 KiB raise SIGXFSZ: the process dies inside write_npy, every time.
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        r = subprocess.run([CONVKIT, *self.args(out)], capture_output=True, text=True, timeout=120, preexec_fn=limit)
        return r, out

    def test_killed_mid_write_keeps_out_and_leaves_nothing(self):
        r, out = self.run_with_file_limit()
        # Killed by SIGXFSZ, or (if the program ignores it) a clean failure with status 1.
        self.assertIn(r.returncode, (-signal.SIGXFSZ, 1), r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), SENTINEL, "--out was damaged by a run killed mid-write")
        # Finding F6: the temporary file had its name (out.npy.tmp.PID.N) from the start, so the
        # kill left it, partial, beside --out. It has no name now until it is complete.
        self.assertEqual(self.leftovers(self.d, "out.npy"), [])

    def test_sigint_sigterm_at_random_times(self):
        self.expected()
        # A run long enough to be interrupted anywhere: bigger input, same weights.
        big = np.random.default_rng(5).uniform(-1, 1, (4, 8, 160, 160)).astype(np.float32)
        np.save(self.p("big.npy"), big)
        out = self.p("out.npy")
        t0 = time.monotonic()
        r = subprocess.run([CONVKIT, *self.args(self.p("big_want.npy"), self.p("big.npy"))], capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        runtime = time.monotonic() - t0
        big_want = np.load(self.p("big_want.npy"))
        rnd = random.Random(18)
        outcomes = {"old": 0, "new": 0}
        leftover_runs = 0
        for i in range(12):
            with open(out, "wb") as f:
                f.write(SENTINEL)
            sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
            # Anywhere in the run, and then mostly late, where the result is being written (a run's
            # time varies: some land after it ended).
            delay = runtime * (rnd.uniform(0.0, 1.0) if i < 4 else rnd.uniform(0.7, 1.3))
            proc = subprocess.Popen([CONVKIT, *self.args(out, self.p("big.npy"))], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
            what = f"run {i}: {sig.name} after {delay:.3f} s (exit {proc.returncode})"
            self.assertIn(proc.returncode, (0, -sig), f"{what}: {err}")
            for bad in ("AddressSanitizer", "runtime error", "Segmentation"):
                self.assertNotIn(bad, err, what)
            with open(out, "rb") as f:
                data = f.read()
            if data == SENTINEL:
                outcomes["old"] += 1
            else:
                np.testing.assert_allclose(np.load(out), big_want, rtol=1e-5, atol=1e-5, err_msg=what)
                outcomes["new"] += 1
            # The file is complete before it has a name; only a kill between its link to a
            # temporary name and the rename over --out (two system calls) leaves it, complete.
            for f in glob.glob(out + ".tmp.*"):
                leftover_runs += 1
                np.testing.assert_allclose(np.load(f), big_want, rtol=1e-5, atol=1e-5,
                                           err_msg=f"{what}: a partial temporary file was left: {f}")
                os.remove(f)
        print(f"\nSIGINT/SIGTERM: {outcomes['old']} runs left the old file, {outcomes['new']} wrote the new one, "
              f"{leftover_runs} left a (complete) temporary file", file=sys.stderr)

    # ---- inputs that change or are not regular files ----

    def test_input_rewritten_while_read(self):
        self.expected()
        src = self.p("moving.npy")
        good = slurp(self.p("x.npy"))
        other = self.p("other.npy")
        np.save(other, np.ones((1, 8, 32, 32), np.float32))
        other_bytes = slurp(other)
        stop = threading.Event()

        def churn():
            # In place (same inode): truncate, rewrite with another shape, write garbage, restore.
            rnd = random.Random(1)
            while not stop.is_set():
                with open(src, "r+b" if os.path.exists(src) else "wb") as f:
                    choice = rnd.randrange(4)
                    f.truncate(0)
                    f.write([good[: rnd.randrange(len(good))], other_bytes, os.urandom(4096), good][choice])
                time.sleep(rnd.uniform(0, 0.002))

        with open(src, "wb") as f:
            f.write(good)
        th = threading.Thread(target=churn)
        th.start()
        codes = {}
        try:
            for i in range(30):
                out = self.p("out.npy")
                with open(out, "wb") as f:
                    f.write(SENTINEL)
                r = subprocess.run([CONVKIT, *self.args(out, src)], capture_output=True, text=True, timeout=120)
                codes[r.returncode] = codes.get(r.returncode, 0) + 1
                what = f"run {i} (exit {r.returncode}): {r.stderr.strip()}"
                self.assertIn(r.returncode, (0, 2), what)
                if r.returncode == 2:
                    self.assertOneLine(r.stderr)
                    with open(out, "rb") as f:
                        self.assertEqual(f.read(), SENTINEL, what)
                else:
                    y = np.load(out)  # complete; its values are those of whichever version was read
                    self.assertIn(y.shape, ((1, 8, 64, 64), (1, 8, 32, 32)), what)
        finally:
            stop.set()
            th.join()
        print(f"\ninput rewritten while read: exit statuses {codes}", file=sys.stderr)

    def test_input_not_a_regular_file(self):
        out = self.p("out.npy")
        with open(out, "wb") as f:
            f.write(SENTINEL)
        os.mkdir(self.p("dir.npy"))
        for src, needle in ((self.p("dir.npy"), "directory"), ("/dev/zero", "dev/zero"),
                            (self.p("missing.npy"), "missing.npy")):
            r = subprocess.run([CONVKIT, *self.args(out, src)], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, f"{src}: {r.stderr}")
            self.assertOneLine(r.stderr, needle)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), SENTINEL)

    def test_input_from_a_fifo(self):
        # A pipe: not seekable. With a writer on the other end the run must end (read it, or refuse
        # it with a message), not hang.
        fifo = self.p("pipe.npy")
        os.mkfifo(fifo)
        data = slurp(self.p("x.npy"))

        def writer():
            try:
                with open(fifo, "wb") as f:
                    f.write(data)
            except BrokenPipeError:
                pass

        th = threading.Thread(target=writer, daemon=True)
        th.start()
        out = self.p("out.npy")
        with open(out, "wb") as f:
            f.write(SENTINEL)
        try:
            r = subprocess.run([CONVKIT, *self.args(out, fifo)], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("convkit run hangs on a FIFO input")
        finally:
            # Unblock the writer if the program never opened the pipe.
            try:
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        self.assertIn(r.returncode, (0, 2), r.stderr)
        if r.returncode == 2:
            self.assertOneLine(r.stderr, "pipe.npy")
            with open(out, "rb") as f:
                self.assertEqual(f.read(), SENTINEL)
        else:
            np.testing.assert_allclose(np.load(out), self.expected(), rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    for a in list(sys.argv[1:]):
        if a.startswith("--convkit="):
            CONVKIT = a.split("=", 1)[1]
            sys.argv.remove(a)
    if not CONVKIT:
        sys.exit("usage: test_cli_hostile.py --convkit=PATH")
    unittest.main(verbosity=2)
