"""The config filter at many runs: ``lt ls -f 'model.lr<1e-3'`` and what its first look spends on config.yaml.

    python benchmarks/bench_config.py [--runs 100000] [--repeats 1] [--before TREE] [--out benchmarks/results/scale.md]

On ``--runs`` synthetic runs (``bench_scale.make_runs``: a 25-key config.yaml each), measured:

1. one file's parse, CPU: ``yaml.load`` with PyYAML's C loader (the anchor) beside ``config_read.load_yaml``
   (the same value), 3,000 files, alternated;
2. the process pool's own cost: ``parse_many`` of 100 and of 10,000 files here and in the pool (wall, and
   CPU of this process and its workers), alternated;
3. ``lt ls -f`` in fresh processes: first look (empty cache: every run read, every config.yaml parsed) and
   again, beside ``lt ls`` without a filter (the catalog's own first look) and the plain read (catalog off);
   ``--before TREE``: also the same commands with the ``lightning_track`` of TREE (an earlier commit's
   ``git archive``), alternated with this tree's.

CPU = user + system of the process and its children (the pool's workers): the steadier figure on a shared
machine; the load average is printed beside.

    python benchmarks/bench_config.py --valgrind 2000 [--before TREE]

Instead: the instructions (valgrind's cachegrind, ``I refs``) of the same ``lt ls`` processes on 2,000
runs, each tree's bytecode compiled beforehand (``PYTHONPYCACHEPREFIX``, as an installed package has it),
on one core (``taskset``: no pool, every parse counted in the one process). Instructions do not depend on
the machine's load: the figure to compare code by on a shared machine (it leaves out the kernel's work).
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml
from bench_scale import HERE, LAST_CPU, PLAIN_LT, fresh, make_runs, write_first

from lightning_track.query import catalog as catalog_module
from lightning_track.query.config_read import load_yaml, parse_many
from lightning_track.vocabulary import ENV_CACHE_DIR

ROOT = HERE.parent


def cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def per_file(files: list[str]) -> list[str]:
    datas = [Path(f).read_bytes() for f in files[:3000]]
    best = {"yaml.load (C loader)": 1e9, "load_yaml": 1e9}
    for _ in range(3):
        for name, fn in (("yaml.load (C loader)", lambda d: yaml.load(d, Loader=yaml.CSafeLoader)),
                         ("load_yaml", load_yaml)):
            started = cpu()
            for data in datas:
                fn(data)
            best[name] = min(best[name], (cpu() - started) / len(datas) * 1e6)
    return [f"- one config.yaml (25 keys), CPU a file, best of 3 alternated over {len(datas):,} files: "
            f"yaml.load {best['yaml.load (C loader)']:.0f} us, load_yaml {best['load_yaml']:.0f} us (load {load()})"]


def pool_cost(files: list[str]) -> list[str]:
    lines = ["", "| parse_many of | here: wall / CPU | pool of 2: wall / CPU (with its workers) |",
             "| --- | --- | --- |"]
    for count in (100, 10_000):
        paths = files[:count]
        best: dict[int, tuple[float, float]] = {}
        for _ in range(3):
            for workers in (1, 2):
                wall, started = time.perf_counter(), cpu()
                for _parsed in parse_many(paths, workers=workers, least=0):
                    pass
                took = (time.perf_counter() - wall, cpu() - started)
                best[workers] = min(best.get(workers, took), took)
        lines.append(f"| {count:,} files | {best[1][0]:.3f} s / {best[1][1]:.3f} s | "
                     f"{best[2][0]:.3f} s / {best[2][1]:.3f} s |")
    return lines + ["", f"(best of 3 alternated; load {load()} at the end)"]


def fresh_in(where: Path, cmd: list[str], env: dict[str, str]) -> float:
    """:func:`bench_scale.fresh` started in ``where``: ``python -m``/``-c`` put the working folder first on
    sys.path, so started in a source tree they would import that tree's package whatever PYTHONPATH says."""
    here = os.getcwd()
    os.chdir(where)
    try:
        return fresh(cmd, env)
    finally:
        os.chdir(here)


def looks(root: Path, tmp: Path, repeats: int, before: str | None) -> list[str]:
    trees = [("this tree", str(ROOT))] + ([("before", before)] if before else [])
    lines = ["", "| lt ls, fresh process | " + " | ".join(f"{name}: wall / CPU" for name, _ in trees) + " |",
             "| --- |" + " --- |" * len(trees)]
    ls = [sys.executable, "-m", "lightning_track.cli.lt", "ls", str(root)]
    plain = [sys.executable, "-c", PLAIN_LT, "ls", str(root)]
    flt = ["-f", "model.lr<1e-3"]
    cases = [("lt ls, first look (empty cache)", ls, True), ("lt ls -f, first look (empty cache)", ls + flt, True),
             ("lt ls -f, again", ls + flt, False),
             ("plain read (catalog off): lt ls -f, config cache empty", plain + flt, True)]
    for what, cmd, empty in cases:
        best: dict[str, tuple[float, float]] = {}
        for _ in range(repeats):
            for name, tree in trees:
                cache = tmp / f"cache-{name.replace(' ', '-')}"
                if empty:
                    shutil.rmtree(cache, ignore_errors=True)
                env = {**os.environ, "PYTHONWARNINGS": "ignore", ENV_CACHE_DIR: str(cache), "PYTHONPATH": tree}
                took = (fresh_in(tmp, cmd, env), LAST_CPU[0])
                best[name] = min(best.get(name, took), took)
            if empty:
                time.sleep(catalog_module.RACY_S + 0.5)  # what the first look kept is settled for the next
        lines.append(f"| {what} | " + " | ".join(f"{best[n][0]:.2f} s / {best[n][1]:.2f} s" for n, _ in trees) + " |")
    return lines + ["", f"(best of {repeats}, trees alternated; load average at the end: "
                    + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores)"]


def instructions(root: Path, tmp: Path, before: str | None) -> list[str]:
    trees = [("this tree", str(ROOT))] + ([("before", before)] if before else [])
    lines = ["| lt ls, fresh process, instructions (cachegrind) | " + " | ".join(name for name, _ in trees)
             + " |", "| --- |" + " --- |" * len(trees)]
    ls = ["taskset", "-c", "0", "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
          sys.executable, "-m", "lightning_track.cli.lt", "ls", str(root)]
    flt = ["-f", "model.lr<1e-3"]
    cases = [("lt ls, first look (empty cache)", ls, True), ("lt ls -f, first look (empty cache)", ls + flt, True),
             ("lt ls -f, again", ls + flt, False), ("lt ls, again", ls, False)]
    counts: dict[tuple[str, str], float] = {}
    for what, cmd, empty in cases:
        for name, tree in trees:
            cache = tmp / f"cache-{name.replace(' ', '-')}"
            if empty:
                shutil.rmtree(cache, ignore_errors=True)
            env = {**os.environ, "PYTHONWARNINGS": "ignore", ENV_CACHE_DIR: str(cache), "PYTHONPATH": tree,
                   "PYTHONPYCACHEPREFIX": str(tmp / "pyc" / name.replace(" ", "-"))}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            if what == cases[0][0]:  # every module's bytecode compiled and kept before the first counted process
                warm = [*ls[ls.index(sys.executable):], *flt]
                subprocess.run(warm, env=env, capture_output=True, check=True, cwd=tmp)
                shutil.rmtree(cache, ignore_errors=True)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tmp)  # fresh_in
            refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
            counts[what, name] = int(refs[1].replace(",", "")) / 1e9 if refs else math.nan
        if empty:
            time.sleep(catalog_module.RACY_S + 0.5)
        lines.append(f"| {what} | " + " | ".join(f"{counts[what, n]:.3f} G" for n, _ in trees) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--before", help="a folder holding an earlier lightning_track (git archive COMMIT | tar -x)")
    parser.add_argument("--root", help="runs made before by make_runs (else made here, in a temporary folder)")
    parser.add_argument("--out", default=str(HERE / "results" / "scale.md"))
    parser.add_argument("--valgrind", type=int, help="instead: instructions of each lt ls on this many runs")
    args = parser.parse_args()
    if args.valgrind:
        args.runs = args.valgrind
    tmp = Path(tempfile.mkdtemp(prefix="bench-config-"))
    try:
        root = Path(args.root) if args.root else tmp / "runs"
        if not args.root:
            make_runs(root, args.runs)
            time.sleep(catalog_module.RACY_S + 0.5)
        files = sorted(glob.glob(str(root / "*" / "config.yaml")))
        if args.valgrind:
            body = instructions(root, tmp, args.before)
        else:
            body = per_file(files) + pool_cost(files) + looks(root, tmp, args.repeats, args.before)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    what = "instructions" if args.valgrind else "lt ls -f 'model.lr<1e-3'"
    title = f"## The config filter at {len(files):,} runs: {what}"
    command = (f"--valgrind {len(files)}" if args.valgrind else f"--runs {len(files)} --repeats {args.repeats}")
    command += " --before TREE" if args.before else ""
    text = "\n".join([f"{title} ({date.today().isoformat()})", "", *body, "",
                      f"Command: `python benchmarks/bench_config.py {command}`. Python {platform.python_version()}.",
                      ""])
    print(text)
    write_first(Path(args.out), title, text)


if __name__ == "__main__":
    main()
