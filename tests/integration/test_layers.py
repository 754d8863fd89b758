#!/usr/bin/python3
"""DESIGN.md's layers hold: core <- loop <- streams <- protocols <- app.

A module uses only modules of its own layer or the layers above it in
DESIGN.md's table (a lower-numbered layer below). Checked three ways:
  - symbols: every knit_ symbol an object of libknit.a needs (undefined,
    strong or weak) is defined by a module of the same or a lower layer —
    this is what a `#pragma weak` reach into a higher layer looked like;
  - includes: src/NAME/* and include/knit/NAME.h include no header of a
    higher layer, and public headers include only public headers;
  - no `#pragma weak` anywhere in src/ (a higher layer registers instead,
    STYLE.md item 17);
  - every public header is in tests/headers/meson.build (which compiles each
    alone), and knit-thriftc's generated code in the build names no
    knit__/KNIT__ (internal) symbol;
  - examples/ and tools/ are compiled with include/ only (no src/ directory
    on their include path, from $KNIT_BUILD/compile_commands.json).
Reads $KNIT_BUILD/libknit.a and the sources under $KNIT_TOP; runs no process
but nm (about a second)."""
import glob, os, re, subprocess, sys

TOP = os.environ.get("KNIT_TOP", os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
results = []


def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name)
    if not cond and detail:
        print("     " + detail.replace("\n", "\n     "))


# DESIGN.md's table, by source directory / header name.
LAYERS = [
    ("core", ["core", "error", "log", "clock", "buf"]),
    ("loop", ["reactor", "deferred", "pool", "task"]),
    ("streams", ["stream", "tls", "endpoint", "client", "udp", "process"]),  # process: children as streams; client: ClientService; udp: datagrams (issue 12)
    ("protocols", ["http", "httpc", "thrift", "manhole", "db"]),
    ("app", ["flag", "service", "metrics"]),
]
LAYER = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def lname(m):
    return "%s (%s)" % (m, LAYERS[LAYER[m]][0])


# ---- symbols ------------------------------------------------------------------------

lib = os.path.join(BUILD, "libknit.a")
out = subprocess.run(["nm", "-A", lib], capture_output=True, text=True)
check("nm reads libknit.a", out.returncode == 0, out.stderr)
defined, needed = {}, []
unknown_objs = set()
for line in out.stdout.splitlines():
    m = re.match(r".*?:src_([a-z]+)_[^:]*\.o:\s*(?:[0-9a-f]+\s+)?([A-Za-z])\s+(\S+)$", line)
    if not m:
        continue
    mod, kind, sym = m.groups()
    if mod not in LAYER:
        unknown_objs.add(mod)
        continue
    if not sym.startswith("knit_"):
        continue
    if kind in "Uw":
        needed.append((mod, sym, kind))
    elif kind in "TDBRWV":
        defined[sym] = mod
check("every object of libknit.a belongs to a module of DESIGN.md's table",
      not unknown_objs, "unknown: " + ", ".join(sorted(unknown_objs)))
check("libknit.a defines knit_ symbols (the nm output was understood)", len(defined) > 100)
bad = sorted({"%s needs %s%s from %s" % (lname(u), s, " (weak)" if k == "w" else "", lname(defined[s]))
              for u, s, k in needed if s in defined and LAYER[defined[s]] > LAYER[u]})
check("no module needs a symbol of a higher layer", not bad, "\n".join(bad))

# ---- includes ------------------------------------------------------------------------

def includes(path):
    with open(path, errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = re.match(r'\s*#\s*include\s*"([^"]+)"', line)
            if m:
                yield n, m.group(1)


def included_module(inc):
    m = re.match(r"(?:knit/)?([a-z_]+)(?:/[a-z_]+)?\.h$", inc)
    return m.group(1) if m else None


bad = []
files = [(f, f.split(os.sep)[-2]) for f in glob.glob(os.path.join(TOP, "src/*/*.[ch]"))]
files += [(f, os.path.basename(f)[:-2]) for f in glob.glob(os.path.join(TOP, "include/knit/*.h"))]
files += [(f, f.split(os.sep)[-2]) for f in glob.glob(os.path.join(TOP, "include/knit/*/*.h"))]
for f, mod in files:
    if mod not in LAYER:
        bad.append("%s: module %s is not in DESIGN.md's table" % (os.path.relpath(f, TOP), mod))
        continue
    for n, inc in includes(f):
        im = included_module(inc)
        if im in LAYER and LAYER[im] > LAYER[mod]:
            bad.append("%s:%d: %s includes %s, %s" % (os.path.relpath(f, TOP), n, lname(mod), inc,
                                                     lname(im)))
check("no source or header includes a header of a higher layer", not bad, "\n".join(bad))

# Within a layer modules may use each other, but never both ways: a cycle
# (stream <-> endpoint was the last, over the PROXY header; issue 16) means
# two modules are one. The graph: module -> modules whose headers it
# includes (public or internal), from src/ and include/.
graph = {}
for f, mod in files:
    if mod not in LAYER:
        continue
    for n, inc in includes(f):
        im = included_module(inc)
        if im in LAYER and im != mod:
            graph.setdefault(mod, {}).setdefault(im, "%s:%d" % (os.path.relpath(f, TOP), n))
cycles = []
for a in sorted(graph):
    for b in sorted(graph[a]):
        if a < b and a in graph.get(b, {}):
            cycles.append("%s <-> %s (%s, %s)" % (a, b, graph[a][b], graph[b][a]))
check("no two modules include each other's headers", not cycles, "\n".join(cycles))

# No source file over 1,200 lines (issue 16 part 3).
bad = []
for f in glob.glob(os.path.join(TOP, "src/**/*.[ch]"), recursive=True):
    rel = os.path.relpath(f, TOP)
    with open(f, errors="replace") as fh:
        n = sum(1 for _ in fh)
    if n > 1200:
        bad.append("%s: %d lines" % (rel, n))
check("no source file over 1,200 lines", not bad, "\n".join(bad))

bad = []
for f in glob.glob(os.path.join(TOP, "include/knit/**/*.h"), recursive=True):
    for n, inc in includes(f):
        if not inc.startswith("knit/") or not os.path.exists(os.path.join(TOP, "include", inc)):
            bad.append("%s:%d: includes \"%s\"" % (os.path.relpath(f, TOP), n, inc))
check("public headers include only public headers (knit/...)", not bad, "\n".join(bad))

bad = []
for f in glob.glob(os.path.join(TOP, "src/**/*.[ch]"), recursive=True):
    with open(f, errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if re.match(r"\s*#\s*pragma\s+weak\b", line):
                bad.append("%s:%d: %s" % (os.path.relpath(f, TOP), n, line.strip()))
check("no #pragma weak in src/ (higher layers register instead)", not bad, "\n".join(bad))

# ---- public headers and generated code ---------------------------------------------------

with open(os.path.join(TOP, "tests/headers/meson.build")) as f:
    listed = set(re.findall(r"'(knit/[a-z_/]+\.h)'", f.read()))
headers = {os.path.relpath(f, os.path.join(TOP, "include"))
           for f in glob.glob(os.path.join(TOP, "include/knit/**/*.h"), recursive=True)}
check("every public header is compiled on its own (tests/headers/meson.build lists it)",
      headers and headers <= listed, "missing: " + ", ".join(sorted(headers - listed)))

gen = glob.glob(os.path.join(BUILD, "**/*_thrift.[ch]"), recursive=True)
bad = []
for f in gen:
    with open(f, errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            for m in re.findall(r"\b(?:knit__|KNIT__)\w*", line):
                bad.append("%s:%d: %s" % (os.path.relpath(f, BUILD), n, m))
check("knit-thriftc's generated code (%d files) calls only public names" % len(gen),
      gen and not bad, "\n".join(bad[:20]))

# ---- examples and tools see include/ only ----------------------------------------------

import json
cc_path = os.path.join(BUILD, "compile_commands.json")
with open(cc_path) as f:
    commands = json.load(f)
src_dir = os.path.realpath(os.path.join(TOP, "src"))
checked, bad = 0, []
for c in commands:
    out = c.get("output", "")
    if not (out.startswith("examples/") or out.startswith("tools/")):
        continue
    checked += 1
    args = c["command"].split() if "command" in c else c["arguments"]
    for i, a in enumerate(args):
        d = None
        for opt in ("-I", "-isystem", "-iquote", "-idirafter"):
            if a == opt and i + 1 < len(args):
                d = args[i + 1]
            elif a.startswith(opt) and len(a) > len(opt) and opt == "-I":
                d = a[2:]
        if d is None:
            continue
        real = os.path.realpath(os.path.join(c["directory"], d))
        if real == src_dir or real.startswith(src_dir + os.sep):
            bad.append("%s: %s %s" % (out, a, d) if a in ("-isystem", "-iquote", "-idirafter", "-I")
                       else "%s: %s" % (out, a))
check("examples and tools are compiled with include/, never src/, on the path (%d objects)"
      % checked, checked > 0 and not bad, "\n".join(sorted(set(bad))[:20]))

passed = sum(1 for _, ok in results if ok)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
