#!/usr/bin/python3
"""runtime_packages: which Debian/Ubuntu packages a runtime image must install so that the given
ELF binaries start: for every NEEDED library (objdump -p) the file the loader picks (ldd), and the
package that owns it (dpkg-query -S). Packages of the base system (the Essential packages, apt,
and everything they depend on: what every debian/ubuntu image already has) are left out.
Libraries under the CUDA root (a toolkit installed from a tarball, not by dpkg) come with the
nvidia/cuda *-cudnn-runtime base image and are reported as such.

Used twice, so the two can never disagree: by tests/deploy/test_images.py on this machine's
build (is every library of the CPU image's binaries installed by deploy/Dockerfile?), and by the
build stage of deploy/Dockerfile.cuda, whose runtime stage installs exactly what it prints.

    deploy/runtime_packages.py build/worker/segq-worker            # one package per line
    deploy/runtime_packages.py --json build/worker/segq-worker     # every library, resolved

Exit status 1 (with the library named on stderr) when a NEEDED library is not found or no package
owns it: an image built from such a list would not start.
"""
import argparse
import json
import os
import re
import subprocess
import sys

CUDA_ROOTS = ("/usr/local/cuda",)
BASE_ROOTS = ("apt",)  # plus every package marked Essential


def needed(binary):
    """The DT_NEEDED sonames of an ELF file, in order."""
    out = subprocess.run(["objdump", "-p", binary], check=True, capture_output=True,
                         text=True).stdout
    return [m.group(1) for m in re.finditer(r"^\s*NEEDED\s+(\S+)", out, re.M)]


def ldd_paths(binary):
    """{soname: path or None} as the dynamic loader resolves them for this binary (ldd)."""
    res = subprocess.run(["ldd", binary], capture_output=True, text=True)
    paths = {}
    for line in res.stdout.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(not found|\S+)", line)
        if m:
            paths[m.group(1)] = None if m.group(2) == "not found" else m.group(2)
            continue
        m = re.match(r"\s*(/\S+)\s+\(0x", line)  # the loader itself: "/lib64/ld-linux... (0x..)"
        if m:
            paths.setdefault(os.path.basename(m.group(1)), m.group(1))
    return paths


def _candidates(path):
    """Spellings of one file that dpkg may have recorded: as given, the symlink resolved, and
    both with and without the /usr prefix (merged /usr: /lib -> /usr/lib)."""
    out = []
    for p in (path, os.path.realpath(path)):
        for q in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
            if q not in out:
                out.append(q)
    return out


def owner(path):
    """The package owning path (arch qualifier dropped), or None."""
    for p in _candidates(path):
        res = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        for line in res.stdout.splitlines():
            if line.startswith("diversion ") or ": " not in line:
                continue
            pkgs, _, _ = line.partition(": ")
            return pkgs.split(",")[0].strip().split(":")[0]
    return None


def _dep_names(field, installed):
    """Package names of a Depends/Pre-Depends field, first installed alternative of each."""
    names = []
    for group in filter(None, (g.strip() for g in field.split(","))):
        alts = [re.split(r"[\s(:]", a.strip(), maxsplit=1)[0] for a in group.split("|")]
        pick = next((a for a in alts if a in installed), None)
        if pick:
            names.append(pick)
    return names


def base_packages():
    """The base system as installed here: Essential packages, apt, and their dependency closure.
    A debian:12-slim or ubuntu image holds at least these."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Essential}\t${Pre-Depends}\t${Depends}\t"
         "${Provides}\t${db:Status-Abbrev}\n"], check=True, capture_output=True, text=True).stdout
    rows = {}
    provides = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 6 or not parts[5].startswith("ii"):
            continue
        rows[parts[0]] = parts
        for p in filter(None, (x.strip() for x in parts[4].split(","))):
            provides.setdefault(re.split(r"[\s(]", p, maxsplit=1)[0], parts[0])
    installed = set(rows) | set(provides)
    todo = [p for p, r in rows.items() if r[1] == "yes"] + [p for p in BASE_ROOTS if p in rows]
    seen = set()
    while todo:
        p = todo.pop()
        p = p if p in rows else provides.get(p, p)
        if p in seen or p not in rows:
            continue
        seen.add(p)
        todo += _dep_names(rows[p][2], installed) + _dep_names(rows[p][3], installed)
    return seen


def resolve(binaries, cuda_roots=CUDA_ROOTS):
    """{binary: [{soname, path, package, source}]} where source is "package" (install it),
    "base" (in every image) or "cuda" (from the nvidia/cuda base image); path/package None and
    source "missing" / "unowned" for what cannot be resolved."""
    roots = [os.path.realpath(r) for r in cuda_roots] + list(cuda_roots)
    base = base_packages()
    report = {}
    for b in binaries:
        paths = ldd_paths(b)
        libs = []
        for so in needed(b):
            path = paths.get(so)
            entry = {"soname": so, "path": path, "package": None}
            if path is None:
                entry["source"] = "missing"
            else:
                pkg = owner(path)
                entry["package"] = pkg
                real = os.path.realpath(path)
                if pkg is None and any(real.startswith(r.rstrip("/") + "/") for r in roots):
                    entry["source"] = "cuda"
                elif pkg is None:
                    entry["source"] = "unowned"
                else:
                    entry["source"] = "base" if pkg in base else "package"
            libs.append(entry)
        report[b] = libs
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--json", action="store_true", help="print every library, resolved")
    ap.add_argument("--cuda-root", action="append", default=None,
                    help="a CUDA toolkit installed outside dpkg (default /usr/local/cuda)")
    a = ap.parse_args(argv)
    report = resolve(a.binaries, tuple(a.cuda_root) if a.cuda_root else CUDA_ROOTS)
    bad = [(b, e) for b, libs in report.items() for e in libs
           if e["source"] in ("missing", "unowned")]
    if a.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for pkg in sorted({e["package"] for libs in report.values() for e in libs
                           if e["source"] == "package"}):
            print(pkg)
        for b, libs in report.items():
            for e in libs:
                if e["source"] == "cuda":
                    print("runtime_packages: %s: %s comes with the nvidia/cuda cudnn-runtime image"
                          % (b, e["soname"]), file=sys.stderr)
    for b, e in bad:
        print("runtime_packages: %s: %s %s" % (
            b, e["soname"], "not found by the loader" if e["source"] == "missing" else
            "(%s) is owned by no package" % e["path"]), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
