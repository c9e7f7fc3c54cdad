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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning_track.migrate import MigrateOptions, make_example, migrate
from lightning_track.migrate.checkpoints import find_checkpoints, lightning_checkpoint, load_checkpoint, save_checkpoint
from lightning_track.migrate.discover import discover_runs
from lightning_track.migrate.report import Notes


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def checkpoints_only(source: Path, scratch: Path) -> float:
    """Wall time of the part no optimisation removes: torch.load + torch.save of every legacy checkpoint."""
    scratch.mkdir()
    t = time.perf_counter()
    for run in discover_runs(source):
        for ck in find_checkpoints(run.path / "checkpoints", Notes()):
            try:
                loaded = load_checkpoint(ck, last_step_of_epoch=lambda epoch: epoch)
            except ValueError:
                continue
            save_checkpoint(lightning_checkpoint(loaded, prefix="model.", source=str(ck.path)),
                            scratch / f"{len(list(scratch.iterdir()))}.ckpt")
    elapsed = time.perf_counter() - t
    shutil.rmtree(scratch)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--ckpt-mb", type=float, default=5.0)
    parser.add_argument("--lines", type=int, default=30_000, help="batch-tracking lines (steps) per run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", default=None, help="work folder (default: a temp folder on the same disk as /tmp)")
    parser.add_argument("--profile", action="store_true", help="print the top functions of one migration")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (lt-migrate --jobs;"
                        " default: CPU count); the in-process --jobs 1 path is timed too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir=args.dir))
    try:
        source = work / "experiments"
        t0 = time.perf_counter()
        make_example(source, runs=args.runs, steps=args.lines, checkpoints=args.checkpoints, ckpt_mb=args.ckpt_mb,
                     logging_steps=max(10, args.lines // 1000), eval_steps=max(50, args.lines // 200))
        size = tree_bytes(source)
        print(f"legacy tree: {args.runs} runs x {args.checkpoints} checkpoints, {args.lines} tracking lines each,"
              f" {size / 1e6:.0f} MB (generated in {time.perf_counter() - t0:.1f}s)")
        cp_times, mig_times, serial_times, ck_times, notb_times, lines = [], [], [], [], [], 0
        for i in range(args.repeat):
            target = work / f"copy{i}"
            t = time.perf_counter()
            subprocess.run(["cp", "-r", str(source), str(target)], check=True)
            cp_times.append(time.perf_counter() - t)
            shutil.rmtree(target)
            out = work / f"runs{i}"
            t = time.perf_counter()
            if args.profile and i == 0:
                profiler = cProfile.Profile()
                report = profiler.runcall(migrate, source, out, options=MigrateOptions())
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            else:
                report = migrate(source, out, options=MigrateOptions())
            serial_times.append(time.perf_counter() - t)
            assert report.exit_code == 0 and all(r.status == "converted" for r in report.runs)
            lines = sum(r.tracked_lines for r in report.runs)
            shutil.rmtree(out)
            t = time.perf_counter()
            report = migrate(source, out, options=MigrateOptions(), jobs=args.jobs)
            mig_times.append(time.perf_counter() - t)
            assert report.exit_code == 0 and all(r.status == "converted" for r in report.runs)
            shutil.rmtree(out)
            t = time.perf_counter()
            migrate(source, out, options=MigrateOptions(tensorboard=False), jobs=args.jobs)
            notb_times.append(time.perf_counter() - t)
            shutil.rmtree(out)
            ck_times.append(checkpoints_only(source, work / f"ck{i}"))
        t = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "lightning_track.cli.migrate", str(source), "--out",
                              str(work / "cli"), "--jobs", str(args.jobs)], capture_output=True, text=True)
        cli_time = time.perf_counter() - t
        assert cli.returncode == 0, cli.stdout + cli.stderr
        cp, mig, notb, ck = min(cp_times), min(mig_times), min(notb_times), min(ck_times)
        serial = min(serial_times)
        print(f"cp -r (anchor):  {cp:7.2f} s  ({size / 1e6 / cp:.0f} MB/s)")
        print(f"lt-migrate --jobs {args.jobs}: {mig:7.2f} s  ({size / 1e6 / mig:.0f} MB/s)  library call, imports done"
              " (worker start-up included)")
        print(f"lt-migrate --jobs 1: {serial:7.2f} s  (in-process) = {serial / mig:.2f}x --jobs {args.jobs}")
        print(f"lt-migrate CLI --jobs {args.jobs}:  {cli_time:7.2f} s  (fresh process: Python + torch + lightning"
              " imports included)")
        print(f"  --no-tensorboard --jobs {args.jobs}: {notb:7.2f} s")
        print(f"  checkpoints only (torch.load + torch.save, irreducible): {ck:7.2f} s = {ck / cp:.2f}x cp -r,"
              f" {100 * ck / mig:.0f}% of lt-migrate")
        print(f"ratio lt-migrate / cp -r: {mig / cp:.2f}x  (goal <= 2x); --jobs 1: {serial / cp:.2f}x;"
              f" CLI: {cli_time / cp:.2f}x; --no-tensorboard: {notb / cp:.2f}x")
        print(f"tracking lines/s: {lines / mig:,.0f}  ({lines} lines, with metrics.jsonl + TensorBoard + tracking)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
