#!/usr/bin/python3
"""Every Python module the tests and benchmarks import comes from a Debian
package that scripts/deps installs (issue 18 item 2).

python3-thrift on Debian 12 imports `six` without depending on python3-six:
on the development machine six happened to be there, on a fresh root every
Thrift interop test failed with "No module named 'six'". So checking that a
test's imports resolve *here* proves nothing; this checks where they come
from:

  1. every Python file under tests/, bench/, scripts/, tools/ and examples/
     (*.py, or a python shebang) is parsed; its imports that are neither
     standard library nor modules of this tree (a .py beside it, or a module
     generated at run time from a .thrift IDL in the tree) are third-party;
     lines "# imports-at-run-time: a, b" name modules that a third-party
     package imports lazily on the test's behalf (thrift's SASL transport
     imports puresasl inside a function);
  2. each such module (and each submodule or name imported from it) is
     imported in a fresh /usr/bin/python3, and every file that import loaded
     from outside the standard library is mapped to its Debian package with
     `dpkg -S`;
  3. that package must be in the closure (Depends and Pre-Depends,
     recursively) of the packages `scripts/deps --list GROUP` installs:
     GROUP is bench for files under bench/, test otherwise. A file owned by
     no package (pip, a stray copy) fails too.
Files of the bench group are checked only when every bench package is
installed here (`make test` does not install them); it says so otherwise.

Environment: KNIT_TOP (repository), KNIT_BUILD (the check does not depend
on it: it says "skipped" against build-asan).
"""
import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import time

TOP = os.environ.get("KNIT_TOP", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
PY = "/usr/bin/python3"
DIRS = ("tests", "bench", "scripts", "tools", "examples", "fuzz")
RUNTIME_RE = re.compile(r"^\s*#\s*imports-at-run-time:\s*(.+)$", re.M)

passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + name)
    else:
        failed += 1
        print("FAIL " + name + (("\n     " + detail) if detail else ""))
    return cond


def run(cmd, what, timeout=120, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise SystemExit("FAIL %s: no answer within %d s (%s)" % (what, timeout, cmd[0]))


def python_files():
    out = []
    for d in DIRS:
        for root, dirs, files in os.walk(os.path.join(TOP, d)):
            dirs[:] = [x for x in dirs if x not in ("__pycache__", "corpus")]
            for f in files:
                p = os.path.join(root, f)
                if f.endswith(".py"):
                    out.append(p)
                    continue
                if not os.access(p, os.X_OK):
                    continue
                try:
                    with open(p, "rb") as fh:
                        first = fh.readline(200)
                except OSError:
                    continue
                if first.startswith(b"#!") and b"python" in first:
                    out.append(p)
    return sorted(out)


def idl_modules():
    """Modules generated at run time by `thrift --gen py` from IDLs in the tree."""
    mods = set()
    for root, dirs, files in os.walk(TOP):
        dirs[:] = [x for x in dirs if not x.startswith(("build", ".git"))]
        for f in files:
            if f.endswith(".thrift"):
                mods.add(f[:-len(".thrift")])
    return mods


def imports_of(path):
    """(module, [names imported from it]) for each absolute import, plus the
    modules named on '# imports-at-run-time:' lines."""
    with open(path, errors="replace") as f:
        src = f.read()
    res = []
    for node in ast.walk(ast.parse(src, path)):
        if isinstance(node, ast.Import):
            res += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            res.append((node.module, [a.name for a in node.names if a.name != "*"]))
    for m in RUNTIME_RE.finditer(src):
        text = m.group(1).split("(")[0]  # a note in parentheses may follow
        res += [(x.strip(), []) for x in text.split(",") if x.strip()]
    return res


def group_of(path):
    return "bench" if os.path.relpath(path, TOP).startswith("bench" + os.sep) else "test"


# A child python imports MODULE (and each NAME from it, as a submodule when
# there is one) and prints the files of every module that import loaded from
# outside the standard library (not what the interpreter loaded at start-up:
# a .pth file of some unrelated package installed here imports its own).
PROBE = r"""
import importlib, json, sys, sysconfig
mod, names = sys.argv[1], json.loads(sys.argv[2])
std = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")})
before = set(sys.modules)
try:
    m = importlib.import_module(mod)
    for n in names:
        if not hasattr(m, n):
            try:
                importlib.import_module(mod + "." + n)
            except ImportError:
                pass
except Exception as e:
    print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
    sys.exit(0)
files = set()
for name, m in list(sys.modules.items()):
    if name in before:  # loaded at start-up (site, .pth files), not by this import
        continue
    f = getattr(m, "__file__", None)
    if f and not f.startswith(std):
        files.add(f)
print(json.dumps({"files": sorted(files)}))
"""


def installed_closure(roots):
    """Installed packages reachable from ROOTS through Depends/Pre-Depends."""
    r = run(["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\t${Depends}\t"
             "${Pre-Depends}\t${Provides}\n"], "dpkg-query")
    deps, provides, installed = {}, {}, set()
    for line in r.stdout.splitlines():
        f = line.split("\t")
        if len(f) < 5 or not f[1].startswith("ii"):
            continue
        pkg = f[0]
        installed.add(pkg)
        deps[pkg] = ", ".join(x for x in (f[2], f[3]) if x)
        for p in f[4].split(","):
            p = p.strip().split(" ")[0]
            if p:
                provides.setdefault(p, set()).add(pkg)

    def names(alt):
        n = alt.strip().split(" ")[0].split(":")[0]
        return ({n} if n in installed else set()) | provides.get(n, set())

    seen, todo = set(), [p for p in roots if p in installed]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for clause in deps.get(p, "").split(","):
            for alt in clause.split("|"):
                todo.extend(names(alt) - seen)
    return seen, installed


def owners(files):
    """file -> Debian package (None when no package owns it)."""
    res = {f: None for f in files}
    if not files:
        return res
    r = run(["dpkg", "-S"] + sorted(files), "dpkg -S")
    for line in r.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        if path in res:
            res[path] = pkg.split(":")[0].split(",")[0].strip()
    # dpkg records /usr/lib/... or /lib/... as shipped; try the real path too
    missing = [f for f, p in res.items() if p is None and os.path.realpath(f) != f]
    if missing:
        r = run(["dpkg", "-S"] + [os.path.realpath(f) for f in missing], "dpkg -S")
        for line in r.stdout.splitlines():
            pkg, _, path = line.partition(": ")
            for f in missing:
                if os.path.realpath(f) == path:
                    res[f] = pkg.split(":")[0].split(",")[0].strip()
    return res


def main():
    if "asan" in os.path.basename(os.path.normpath(BUILD)):
        print("skipped: independent of the build under test; runs in the plain stage")
        print("0 passed, 0 failed")
        return 0
    t0 = time.time()
    groups = {}
    for g in ("test", "bench"):
        r = run([os.path.join(TOP, "scripts", "deps"), "--list", g], "scripts/deps --list")
        if not check(r.returncode == 0, "scripts/deps --list %s" % g, r.stderr):
            return finish()
        groups[g] = r.stdout.split()
    closure, installed = {}, None
    for g, pkgs in groups.items():
        closure[g], installed = installed_closure(pkgs)
    bench_ready = all(p in installed for p in groups["bench"])
    local_idl = idl_modules()
    std = set(sys.stdlib_module_names)

    # module -> {(names...)}, and who imports it
    wanted = {}
    for path in python_files():
        rel = os.path.relpath(path, TOP)
        g = group_of(path)
        if g == "bench" and not bench_ready:
            continue
        here = os.path.dirname(path)
        try:
            imps = imports_of(path)
        except SyntaxError as e:
            check(False, "%s parses" % rel, str(e))
            continue
        for mod, names in imps:
            top = mod.split(".")[0]
            if top in std or top == "__future__" or top in local_idl:
                continue
            if os.path.exists(os.path.join(here, top + ".py")) or \
                    os.path.isdir(os.path.join(here, top)):
                continue
            key = (mod, tuple(sorted(names)), g)
            if rel not in wanted.setdefault(key, []):
                wanted[key].append(rel)
    if not bench_ready:
        print("note: bench packages not all installed here (scripts/deps bench): "
              "bench/ scripts not checked")

    problems = {}
    for (mod, names, g), users in sorted(wanted.items()):
        r = run([PY, "-I", "-c", PROBE, mod, json.dumps(list(names))], "importing " + mod)
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            res = {"error": "probe failed: " + r.stderr[-500:]}
        if "error" in res:
            problems.setdefault((mod, g), []).append(
                "%s (imported by %s) does not import here: %s; add its Debian package "
                "to scripts/deps %s" % (mod, ", ".join(users), res["error"], g))
            continue
        own = owners(res["files"])
        for f, pkg in sorted(own.items()):
            if pkg is None:
                problems.setdefault((mod, g), []).append(
                    "%s (imported by %s) loads %s, which no Debian package owns "
                    "(installed by hand?)" % (mod, ", ".join(users), f))
            elif pkg not in closure[g]:
                problems.setdefault((mod, g), []).append(
                    "%s (imported by %s) loads %s from Debian package %s, which "
                    "`scripts/deps %s` does not install (not in the dependencies of what it "
                    "lists): add %s to scripts/deps" % (mod, ", ".join(users), f, pkg, g, pkg,))
    mods = sorted({(m, g) for (m, _, g) in wanted})
    for m, g in mods:
        p = problems.get((m, g), [])
        check(not p, "%s comes with scripts/deps %s" % (m, g), "\n     ".join(sorted(set(p))))
    print("took %.1f s" % (time.time() - t0))
    return finish()


def finish():
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
