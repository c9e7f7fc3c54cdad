"""lt-migrate vs ``cp -r`` of the same legacy tree on the same disk, in the same run.

    python benchmarks/bench_migrate.py                       # scaled down (~1-2 min on 2 cores)
    python benchmarks/bench_migrate.py --runs 3 --checkpoints 50 --ckpt-mb 7 --lines 100000   # issue scale

``--ckpt-mb`` is the weights size; the HF-flavour runs also save an AdamW state (2x), so their
checkpoints are about 3x that. Prints the wall-time ratio (goal: within 2x of cp -r) and
tracking lines per second.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning_track.migrate import MigrateOptions, default_jobs, make_example, migrate, rawtensors
from lightning_track.migrate.checkpoints import find_checkpoints, lightning_checkpoint, load_checkpoint, save_checkpoint
from lightning_track.migrate.discover import discover_runs
from lightning_track.migrate.report import STATUS_CONVERTED, Notes


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def checkpoints_only(source: Path, scratch: Path, *, by_reference: bool = True) -> float:
    """Wall time of converting every legacy checkpoint alone: as lt-migrate does (tensors by reference,
    bytes copied file to file), or with ``by_reference=False`` the torch.load + torch.save way."""
    import torch

    scratch.mkdir()
    t = time.perf_counter()
    for run in discover_runs(source):
        for ck in find_checkpoints(run.path / "checkpoints", Notes()):
            try:
                loaded = load_checkpoint(ck, last_step_of_epoch=lambda epoch: epoch)
            except ValueError:
                continue
            checkpoint = lightning_checkpoint(loaded, prefix="model.", source=str(ck.path))
            target = scratch / f"{len(list(scratch.iterdir()))}.ckpt"
            if by_reference:
                save_checkpoint(checkpoint, target)
            else:
                torch.save(rawtensors.materialize(checkpoint), target)
    elapsed = time.perf_counter() - t
    shutil.rmtree(scratch)
    return elapsed


def settle(source: Path, *, cold: bool = False) -> bool:
    """Flush dirty pages (a previous step's output must not be written back during the next timing);
    with ``cold``, also drop the page cache (root only). Returns whether the cache could be dropped."""
    os.sync()
    if not cold:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--ckpt-mb", type=float, default=5.0)
    parser.add_argument("--lines", type=int, default=30_000, help="batch-tracking lines (steps) per run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", default=None, help="work folder (default: a temp folder on the same disk as /tmp)")
    parser.add_argument("--source", default=None, help="an existing legacy tree to use instead of generating one")
    parser.add_argument("--profile", action="store_true", help="print the top functions of one migration")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes (lt-migrate --jobs;"
                        " default: lt-migrate's, 1.5x the CPU count); the in-process --jobs 1 path is timed too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir=args.dir))
    try:
        source = Path(args.source) if args.source else work / "experiments"
        t0 = time.perf_counter()
        if not args.source:
            make_example(source, runs=args.runs, steps=args.lines, checkpoints=args.checkpoints, ckpt_mb=args.ckpt_mb,
                         logging_steps=max(10, args.lines // 1000), eval_steps=max(50, args.lines // 200))
        size = tree_bytes(source)
        if args.source:
            print(f"legacy tree: {source} ({size / 1e6:.0f} MB)")
        else:
            print(f"legacy tree: {args.runs} runs x {args.checkpoints} checkpoints, {args.lines} tracking lines each,"
                  f" {size / 1e6:.0f} MB (generated in {time.perf_counter() - t0:.1f}s)")
        settle(source)
        results: dict[str, list[float]] = {}
        cold_ok = os.access("/proc/sys/vm/drop_caches", os.W_OK)  # dropping the page cache needs root
        lines = 0

        def timed(key: str, fn: Any, *, cold: bool = False) -> Any:
            settle(source, cold=cold)
            t = time.perf_counter()
            value = fn()
            results.setdefault(key, []).append(time.perf_counter() - t)
            t = time.perf_counter()
            os.sync()  # until the output is on disk, too: cp -r leaves it dirty in the page cache
            results.setdefault(key + "+sync", []).append(results[key][-1] + time.perf_counter() - t)
            return value

        # lt-migrate's cache (Lightning's loop-state template, bundled for the tested Lightning version, else
        # learned once per version): empty, so the first CLI call below is a first run on a machine
        os.environ["LT_CACHE_DIR"] = str(work / "cache")

        def cli_run(name: str) -> float:
            settle(source)
            t = time.perf_counter()
            cli = subprocess.run([sys.executable, "-m", "lightning_track.cli.migrate", str(source), "--out",
                                  str(work / name), "--jobs", str(args.jobs)], capture_output=True, text=True)
            elapsed = time.perf_counter() - t
            assert cli.returncode == 0, cli.stdout + cli.stderr
            shutil.rmtree(work / name)
            return elapsed

        cli_first = cli_run("cli-first")
        for i in range(args.repeat):
            for cold in ((False, True) if cold_ok else (False,)):
                tag = " cold" if cold else ""
                target = work / f"copy{i}"
                copy = ["cp", "-r", str(source), str(target)]
                timed("cp" + tag, lambda copy=copy: subprocess.run(copy, check=True), cold=cold)
                shutil.rmtree(target)
                out = work / f"runs{i}"
                report = timed("jobs" + tag, lambda out=out: migrate(source, out, options=MigrateOptions(),
                                                                     jobs=args.jobs), cold=cold)
                assert report.exit_code == 0 and all(r.status == STATUS_CONVERTED for r in report.runs)
                lines = sum(r.tracked_lines for r in report.runs)
                shutil.rmtree(out)
            if args.profile and i == 0:
                profiler = cProfile.Profile()
                profiler.runcall(migrate, source, out, options=MigrateOptions())
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
                shutil.rmtree(out)
            report = timed("serial", lambda out=out: migrate(source, out, options=MigrateOptions()))
            assert report.exit_code == 0 and all(r.status == STATUS_CONVERTED for r in report.runs)
            shutil.rmtree(out)
            timed("notb", lambda out=out: migrate(source, out, options=MigrateOptions(tensorboard=False),
                                                  jobs=args.jobs))
            shutil.rmtree(out)
            results.setdefault("ck", []).append(checkpoints_only(source, work / f"ck{i}"))
            settle(source)
            results.setdefault("ck torch", []).append(checkpoints_only(source, work / f"ckt{i}", by_reference=False))
        cli_time = cli_run("cli")
        best = {key: min(values) for key, values in results.items()}
        cp, mig, ck = best["cp"], best["jobs"], best["ck"]
        print(f"cp -r (anchor, source in page cache): {cp:7.2f} s  ({size / 1e6 / cp:.0f} MB/s);"
              f" until synced: {best['cp+sync']:.2f} s")
        print(f"lt-migrate --jobs {args.jobs}: {mig:7.2f} s  library call (worker start-up included) ="
              f" {mig / cp:.2f}x cp -r;"
              f" until synced: {best['jobs+sync']:.2f} s = {best['jobs+sync'] / best['cp+sync']:.2f}x cp -r + sync")
        if cold_ok:
            print(f"cold page cache (dropped before each): cp -r {best['cp cold']:.2f} s, lt-migrate"
                  f" {best['jobs cold']:.2f} s = {best['jobs cold'] / best['cp cold']:.2f}x;"
                  f" until synced: {best['cp cold+sync']:.2f} s vs {best['jobs cold+sync']:.2f} s ="
                  f" {best['jobs cold+sync'] / best['cp cold+sync']:.2f}x")
            # each repetition times cp -r and lt-migrate back to back: their ratio shares the VM's mood
            for key in ("", "+sync"):
                pairs = [m / c for m, c in zip(results["jobs cold" + key], results["cp cold" + key], strict=True)]
                print(f"  paired cold ratios{' until synced' if key else ''}: "
                      + ", ".join(f"{r:.2f}x" for r in pairs) + f" (median {statistics.median(pairs):.2f}x)")
        print(f"lt-migrate --jobs 1: {best['serial']:7.2f} s  (in-process) ="
              f" {best['serial'] / mig:.2f}x --jobs {args.jobs}")
        print(f"lt-migrate CLI --jobs {args.jobs}:  {cli_time:7.2f} s  (fresh process, imports included) ="
              f" {cli_time / cp:.2f}x cp -r; first run on a machine (empty cache: the bundled loop-state template, or"
              f" learned from Lightning for an unbundled version): {cli_first:.2f} s")
        print(f"  --no-tensorboard --jobs {args.jobs}: {best['notb']:7.2f} s")
        print(f"  checkpoints only, as converted (by reference, bytes copied): {ck:7.2f} s = {ck / cp:.2f}x cp -r,"
              f" {100 * ck / mig:.0f}% of lt-migrate; torch.load + torch.save instead: {best['ck torch']:.2f} s")
        print(f"tracking lines/s: {lines / mig:,.0f}  ({lines} lines, with metrics.jsonl + TensorBoard + tracking)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
