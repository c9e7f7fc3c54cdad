"""Submission to the training job's start: ``lt run --pipeline --slurm`` vs a hand-written ``sbatch``.

    python benchmarks/bench_slurm.py [--repeats 7] [--out benchmarks/results/slurm.md]

Starts its own single-node Slurm exactly as the tests' ``slurm`` fixture does
(``tests/pipeline/slurm_support.start``: munged, slurmctld, slurmd on 127.0.0.1). The training job's command
writes ``time.time()`` to a file as the first thing it does; the clock starts just before the submitting
process is started (a fresh process each time, as a person typing the command). Three ways, interleaved
within each repeat (the order rotates), each job waited for to the end so the node is idle for the next:

* ``hand sbatch``: the anchor, a hand-written script (``#SBATCH`` lines, then the command) through ``sbatch``;
* ``lt run --pipeline --slurm``: a one-step pipeline file; the CLI reads it, checks the script with
  ``sbatch --test-only``, submits it, writes the state file; in the job lt-run starts the command;
* ``hand sbatch of lt's script``: the script lt wrote, submitted by hand: what lt-run inside the job costs,
  apart from the CLI's own submission.

Ratios of medians (and of minima, the least disturbed by other load) against the anchor, end to end; and the
parts: Slurm's own launch (the same whoever submits, and what swings most), the submitting process, and the
batch script's first line to the command's start (a line written into the hand-submitted scripts).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from installed import installed_env

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "pipeline")]  # support.*, slurm_support
import slurm_support  # noqa: E402  (the same Slurm the tests start)

STAMP = "import sys, time; t = time.time(); open(sys.argv[1], 'w').write(repr(t))"
WAYS = ("hand sbatch", "lt run --pipeline --slurm", "hand sbatch of lt's script")
SHORT = dict(zip(WAYS, ("hand", "lt", "ltscript"), strict=True))


def wait_stamp(path: Path, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
            if text:
                return float(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise TimeoutError(f"{path}: the job did not start within {timeout} s")


def wait_idle(env: dict[str, str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip():
        if time.monotonic() > deadline:
            raise TimeoutError("jobs still in the queue")
        time.sleep(0.05)


BATCH_START = 'echo "$(date +%s.%N)" > {}'  # a script's first line, where a batch start is recorded


def hand_script(folder: Path, stamp: Path) -> Path:
    script = folder / f"hand-{stamp.stem}.sbatch"
    script.write_text("\n".join([
        "#!/bin/bash", "#SBATCH --job-name=train", f"#SBATCH --output={folder}/hand-%j.out", "",
        BATCH_START.format(shlex.quote(str(stamp.with_suffix(".batch")))),
        f"{shlex.quote(sys.executable)} -c {shlex.quote(STAMP)} {shlex.quote(str(stamp))}", ""]))
    return script


def one(way: str, folder: Path, i: int, env: dict[str, str]) -> dict[str, float]:
    """``total``: submission to the command's start; ``submit``: the submitting process; ``in_job``: the batch
    script's first line to the command's start (not for lt's CLI, whose script is lt's own)."""
    stamp = folder / f"{SHORT[way]}-{i}.stamp"
    if way == "hand sbatch":
        args = ["sbatch", "--parsable", str(hand_script(folder, stamp))]
    elif way == "lt run --pipeline --slurm":
        pipeline = folder / f"lt{i}.yaml"
        cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(STAMP)} {shlex.quote(str(stamp))}"
        pipeline.write_text(yaml.safe_dump({"root": str(folder / f"runs{i}"), "steps": {"train": {"cmd": cmd}}}))
        args = [sys.executable, "-m", "lightning_track.cli.pipeline", "--pipeline", str(pipeline), "--slurm"]
    else:  # the script lt wrote for this repeat, its own stamp, and the batch start recorded first
        written = (folder / f"runs{i}" / "slurm" / f"lt{i}_train.sbatch").read_text()
        written = written.replace(str(folder / f"lt-{i}.stamp"), str(stamp))
        first = BATCH_START.format(shlex.quote(str(stamp.with_suffix(".batch"))))
        script = folder / f"lt-script-{i}.sbatch"
        script.write_text(written.replace("set -euo pipefail\n", f"set -euo pipefail\n{first}\n", 1))
        args = ["sbatch", "--parsable", str(script)]
    t0 = time.time()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=folder)
    submitted = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{way}: {done.stderr.strip()}")
    started = wait_stamp(stamp)
    wait_idle(env)
    out = {"total": started - t0, "submit": submitted - t0}
    batch = stamp.with_suffix(".batch")
    if batch.exists():
        out["in_job"] = started - float(batch.read_text())
        out["launch"] = float(batch.read_text()) - submitted
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "slurm.md")
    args = parser.parse_args()
    why = slurm_support.missing()
    if why:
        sys.exit(f"bench_slurm: {why}")
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        folder = Path(tmp)
        (folder / "slurm").mkdir()
        t0 = time.monotonic()
        cluster = slurm_support.start(folder / "slurm")
        up = time.monotonic() - t0
        env = installed_env({**os.environ, **cluster.env, "PYTHONPATH": str(HERE.parent)})
        times: dict[str, list[dict[str, float]]] = {w: [] for w in WAYS}
        try:
            one("hand sbatch", folder, -1, env)  # warm-up: the first job of a fresh slurmd is slower
            for i in range(args.repeats):
                order = list(WAYS[:2])[:: 1 if i % 2 == 0 else -1] + [WAYS[2]]  # lt's script needs lt's run first
                for way in order:
                    times[way].append(one(way, folder, i, env))
                    print(f"repeat {i + 1}: {way}: " + ", ".join(f"{k} {v:.3f} s" for k, v in times[way][-1].items()),
                          flush=True)
        finally:
            cluster.stop()
    write(args.out, times, up, args.repeats)
    print(args.out.read_text())


def _med(values: list[float]) -> float:
    return statistics.median(values)


def write(out: Path, times: dict[str, list[dict[str, float]]], up: float, repeats: int) -> None:
    total = {w: [r["total"] for r in rs] for w, rs in times.items()}
    base_med, base_min = _med(total[WAYS[0]]), min(total[WAYS[0]])
    rows = []
    for way, values in total.items():
        med, low = _med(values), min(values)
        rows.append(f"| {way} | {low:.3f} s | {med:.3f} s | {max(values):.3f} s | {med / base_med:.2f}× | "
                    f"{low / base_min:.2f}× |")
    hand, cli, script = (times[w] for w in WAYS)
    launches = [r["launch"] for r in hand + script]
    launch = _med(launches)  # Slurm's part, the same whoever submits
    sub_hand, sub_lt = _med([r["submit"] for r in hand]), _med([r["submit"] for r in cli])
    job_hand, job_lt = _med([r["in_job"] for r in hand]), _med([r["in_job"] for r in script])
    anchor, ours = launch + sub_hand + job_hand, launch + sub_lt + job_lt
    measured = _med(total[WAYS[1]]) / base_med
    verdict = "met" if ours / anchor <= 1.2 else "not met"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([
        "## Slurm: submission to the training job's start (`benchmarks/bench_slurm.py`)",
        "",
        f"A single-node Slurm 22.05 (Debian's slurmctld, slurmd, munge) started by the benchmark as the tests' "
        f"fixture does (up in {up:.1f} s; the scheduler looks at the queue every second). The job's command writes "
        "`time.time()` first thing; the clock starts before the submitting process is started (fresh processes; "
        "the package's modules compiled beforehand, as in an installed package). "
        f"{repeats} repeats, the ways interleaved, each job run to its end before the next submission. Python "
        f"{platform.python_version()}, {os.cpu_count()} cores.",
        "",
        "End to end (submission to the command's start):",
        "",
        "| way | min | median | max | ratio of medians | ratio of minima |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "The parts (medians): Slurm's own launch (the submitting process's return to the batch script's first "
        "line, the same whoever submits), the submitting process, and the batch script's first line to the "
        "command's start:",
        "",
        "| part | hand-written sbatch | lt run --pipeline --slurm |",
        "| --- | --- | --- |",
        f"| Slurm's launch | {launch:.3f} s | {launch:.3f} s |",
        f"| submitting process | {sub_hand:.3f} s (`sbatch`) | {sub_lt:.3f} s (the CLI: an interpreter, the "
        "pipeline file, `sbatch --test-only`, `sbatch`, the state file) |",
        f"| in the job, to the command | {job_hand:.3f} s (bash) | {job_lt:.3f} s (bash, then lt-run: an "
        "interpreter and its imports, the console relay) |",
        f"| **sum** | **{anchor:.3f} s** | **{ours:.3f} s ({ours / anchor:.2f}×)** |",
        "",
        f"Goal: within 1.2× of a hand-written `sbatch`: {verdict} ({ours / anchor:.2f}× from the parts' medians; "
        f"{measured:.2f}× from the end-to-end medians, which Slurm's launch time swings by itself: from "
        f"{min(launches):.2f} s to {max(launches):.2f} s here, depending on where the controller is in its cycle). "
        "lt adds a fixed "
        f"{ours - anchor:.2f} s (two Python interpreters, one to submit and lt-run in the job); on a cluster "
        "where a job waits seconds to hours in the queue that is the whole difference.",
        "",
    ]))


if __name__ == "__main__":
    main()
