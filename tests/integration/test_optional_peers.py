#!/usr/bin/python3
"""Optional benchmark peers on a machine that lacks them (issue 18 item 1).

A fresh machine runs `make` / `make run` before `scripts/deps test` has
installed libuv. This configures a throwaway build directory with libuv
hidden from pkg-config (PKG_CONFIG_LIBDIR pointing at a directory holding
every .pc file of the default search path except libuv's), and checks that
meson says the libuv benchmarks are skipped and that no target built from a
source including <uv.h> is left in the build (before the fix bench-xthread
was, and failed to link). Then it un-hides libuv and runs scripts/configure
on the same directory, as `make` does: it must notice and reconfigure, the
libuv targets must appear and build, and a third run must be a no-op.

Building the whole hidden tree takes minutes, so by default only the cheap
checks run; KNIT_TEST_FULL_BUILD=1 also builds everything with libuv hidden.
The test does not depend on the build under test, so it runs once, in the
plain integration stage (it says "skipped" against build-asan).

Environment: KNIT_TOP (repository), KNIT_BUILD, KNIT_TEST_FULL_BUILD.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

TOP = os.environ.get("KNIT_TOP", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
CONFIGURE = os.path.join(TOP, "scripts", "configure")
TIMEOUT = 900  # one meson configure on a loaded 2-vCPU machine, with margin

passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + name)
    else:
        failed += 1
        print("FAIL " + name + (("\n" + detail) if detail else ""))
    return cond


def run(cmd, env, what, timeout=TIMEOUT):
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit("FAIL %s: no answer within %d s (%s)" % (what, timeout, " ".join(cmd)))


def uv_sources():
    """Every C source under bench/ that includes <uv.h>."""
    out = set()
    for path in glob.glob(os.path.join(TOP, "bench", "**", "*.c"), recursive=True):
        with open(path, errors="replace") as f:
            if "#include <uv.h>" in f.read():
                out.add(os.path.realpath(path))
    return out


def targets(builddir, env):
    r = run(["meson", "introspect", "--targets", builddir], env, "meson introspect")
    if r.returncode != 0:
        raise SystemExit("FAIL meson introspect: " + r.stderr)
    res = {}
    for t in json.loads(r.stdout):
        srcs = set()
        for s in t.get("target_sources", []):
            srcs.update(os.path.realpath(x) for x in s.get("sources", []))
        res[t["name"]] = (t["filename"][0] if t.get("filename") else "", srcs)
    return res


def main():
    if "asan" in os.path.basename(os.path.normpath(BUILD)):
        print("skipped: independent of the build under test; runs in the plain stage")
        print("0 passed, 0 failed")
        return 0
    for tool in ("meson", "ninja", "pkg-config"):
        if not shutil.which(tool):
            print("FAIL %s not installed" % tool)
            print("0 passed, 1 failed")
            return 1
    if subprocess.run(["pkg-config", "--exists", "libuv"], timeout=60).returncode != 0:
        print("skipped: libuv is not installed (libuv1-dev, scripts/deps test): nothing to hide")
        print("0 passed, 0 failed")
        return 0
    uv = uv_sources()
    check(len(uv) >= 4, "bench sources using libuv found", sorted(uv))
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="knit-optional-") as work:
        # a pkg-config directory with everything but libuv
        pcdir = os.path.join(work, "pc")
        os.mkdir(pcdir)
        pc_path = subprocess.run(["pkg-config", "--variable", "pc_path", "pkg-config"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        for d in pc_path.split(":"):
            for pc in glob.glob(os.path.join(d, "*.pc")):
                name = os.path.basename(pc)
                if name.startswith("libuv") or os.path.exists(os.path.join(pcdir, name)):
                    continue
                os.symlink(pc, os.path.join(pcdir, name))
        hidden = dict(os.environ, PKG_CONFIG_LIBDIR=pcdir)
        hidden.pop("PKG_CONFIG_PATH", None)
        visible = dict(os.environ)
        bdir = os.path.join(work, "b")

        r = run([CONFIGURE, bdir, "-Dbench=true"], hidden, "configure with libuv hidden")
        out = r.stdout + r.stderr
        if not check(r.returncode == 0, "configures with libuv hidden", out[-3000:]):
            return finish()
        check("libuv found: NO" in out, "libuv really hidden from meson", out[-3000:])
        for msg in ("bench/reactor: libuv not found (libuv1-dev): skipping bench-timers and "
                    "bench-xthread",
                    "bench/pool: libuv not found (libuv1-dev): skipping bench_pool_uv",
                    "bench/stream: libuv not found (libuv1-dev): skipping uv-stream-echo"):
            check("Message: " + msg in out, "says: " + msg, out[-3000:])
        tg = targets(bdir, hidden)
        leftover = sorted(n for n, (_, s) in tg.items() if s & uv)
        check(not leftover, "no target built from a <uv.h> source without libuv",
              "still declared: %s" % leftover)
        if os.environ.get("KNIT_TEST_FULL_BUILD"):
            b = run(["ninja", "-C", bdir, "-j2"], hidden, "full build with libuv hidden",
                    timeout=3600)
            check(b.returncode == 0, "the whole tree builds with libuv hidden",
                  b.stdout[-3000:])

        r = run([CONFIGURE, bdir, "-Dbench=true"], visible, "configure with libuv back")
        out = r.stdout + r.stderr
        check(r.returncode == 0 and "reconfigure" in out,
              "the same build directory notices libuv arrived and reconfigures", out[-3000:])
        tg = targets(bdir, visible)
        with_uv = {n: f for n, (f, s) in tg.items() if s & uv}
        for name in ("bench-timers", "bench-xthread", "bench_pool_uv", "uv-stream-echo"):
            check(name in with_uv, "%s is declared once libuv is visible" % name,
                  sorted(with_uv))
        # the two peers that do not link knit build in seconds: prove they link
        outs = [os.path.relpath(with_uv[n], bdir) for n in ("bench_pool_uv", "uv-stream-echo")
                if n in with_uv]
        b = run(["ninja", "-C", bdir, "-j2"] + outs, visible, "building the libuv peers")
        check(b.returncode == 0, "the libuv peers build after the reconfigure",
              b.stdout[-3000:] + b.stderr[-1000:])

        r = run([CONFIGURE, bdir, "-Dbench=true"], visible, "configure again")
        check(r.returncode == 0 and "reconfigure" not in r.stdout + r.stderr,
              "a third configure with nothing changed is a no-op", r.stdout + r.stderr)
    print("took %.1f s" % (time.time() - t0))
    return finish()


def finish():
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
