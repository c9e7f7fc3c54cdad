"""The default RunLogger's whole-process cost, A/B: interleaved rounds of fresh-process fits, several code trees.

    python benchmarks/ab_logger.py [--rounds 8] [--steps 2000] [--kinds none,TensorBoardLogger,RunLogger]
                                   [--tree before=/path/to/older/checkout] [--out FILE.md]

Each round runs every (tree, kind) once, in a fresh process (``bench_logger.py --fit-one KIND``, bytecode
compiled first as an installed copy has it), in the same order; rounds repeat that. The table gives the best
and the median of each column over the rounds; "extra CPU" is the median CPU minus the ``none`` row's median,
and its ratio to TensorBoardLogger's extra CPU is issue 21's CPU goal (≤ 0.5×); "vs none" on the best process
wall is its wall goal (≤ +5 %). Kinds other than ``none``/``TensorBoardLogger`` run once per tree (label
``KIND @ TREE``); ``none`` and ``TensorBoardLogger`` only from this checkout (their code is Lightning's).

Read the load average printed before and after: on a shared machine only the CPU columns mean anything.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from installed import installed_env

HERE = Path(__file__).resolve().parent
ANCHORS = ("none", "TensorBoardLogger")


def compiled_env(tree: Path) -> dict[str, str]:
    """The environment of a fresh fit from ``tree``: its package first, with bytecode."""
    return installed_env(None, tree, tree / "benchmarks" / "bench_logger.py")


def fit(tree: Path, env: dict[str, str], kind: str, steps: int) -> tuple[float, float, float]:
    """(fit wall s, process wall s, CPU s of the process and every process it started) of one fresh fit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_logger.py"), "--fit-one", kind,
                          "--steps", str(steps)], capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    fit_s = float(next(line for line in out.stdout.splitlines() if line.startswith("FIT ")).split()[1])
    return fit_s, wall, cpu


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--kinds", default="none,TensorBoardLogger,RunLogger")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="another checkout to run the non-anchor kinds from (this one is 'this')")
    parser.add_argument("--out", help="also write the table here (markdown)")
    args = parser.parse_args()
    trees = {"this": HERE.parent}
    for spec in args.tree:
        name, sep, path = spec.partition("=")
        if not sep or not (Path(path) / "benchmarks" / "bench_logger.py").is_file():
            parser.error(f"--tree {spec!r}: expected NAME=PATH of a lightning_track checkout with "
                         "benchmarks/bench_logger.py")
        trees[name] = Path(path).resolve()
    envs = {name: compiled_env(path) for name, path in trees.items()}
    runs: list[tuple[str, str, str]] = []  # (label, tree name, kind)
    for kind in args.kinds.split(","):
        for name in (["this"] if kind in ANCHORS else trees):
            runs.append((kind if len(trees) == 1 or kind in ANCHORS else f"{kind} @ {name}", name, kind))
    print(f"load average before: {load()}", flush=True)
    got: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in runs}
    for round_ in range(args.rounds):
        for label, name, kind in runs:
            got[label].append(fit(trees[name], envs[name], kind, args.steps))
            fit_s, wall, cpu = got[label][-1]
            print(f"  round {round_ + 1}: {label:40s} fit {fit_s:6.2f} s  process {wall:6.2f} s  CPU {cpu:6.2f} s",
                  flush=True)
    print(f"load average after: {load()}", flush=True)
    table = lines(got, args)
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text("\n".join(table) + "\n")


def lines(got: dict[str, list[tuple[float, float, float]]], args: argparse.Namespace) -> list[str]:
    def col(label: str, i: int) -> list[float]:
        return [r[i] for r in got[label]]

    none_wall, none_cpu = min(col("none", 1)), statistics.median(col("none", 2))
    tb_extra = statistics.median(col("TensorBoardLogger", 2)) - none_cpu if "TensorBoardLogger" in got else None
    out = [f"{args.steps}-step fit, {args.rounds} interleaved rounds, fresh processes | fit wall, best |"
           " process wall, best | vs none | process wall, median | CPU, best | CPU, median | extra CPU (median) |"
           " vs TensorBoardLogger's", "| --- |" + " ---: |" * 8]
    out[0] = "| " + out[0] + " |"
    for label in got:
        extra = statistics.median(col(label, 2)) - none_cpu
        ratio = f"{extra / tb_extra:.2f}×" if tb_extra else "-"
        wall, cpu = col(label, 1), col(label, 2)
        out.append(f"| {label} | {min(col(label, 0)):.2f} s | {min(wall):.2f} s |"
                   f" {(min(wall) / none_wall - 1) * 100:+.1f} % | {statistics.median(wall):.2f} s |"
                   f" {min(cpu):.2f} s | {statistics.median(cpu):.2f} s |"
                   f" {extra:+.2f} s | {ratio} |")
    return out


if __name__ == "__main__":
    main()
