"""Stress check for the torchrun hang: many short `torchrun --nproc_per_node=2` launches, each started
by a Python process that has a RunLogger of its own (a driver, a sweep script, a notebook).

Before the fix (the parent's folder inherited through the environment) this hung on the first launch;
the check counts launches that finished, hung (killed at --timeout) or failed, and that each launch's
two ranks wrote one run folder with every step once.

    python benchmarks/bench_torchrun_stress.py --launches 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIT_SCRIPT = REPO / "tests" / "cluster" / "fit_script.py"

PARENT = textwrap.dedent("""
    import subprocess, sys
    from lightning_track import RunLogger
    parent = RunLogger(dataset="parent", method="driver", root=sys.argv[1] + "/parent_runs", sinks=())
    parent.save()
    parent.log_metrics({"driver/launch": 1.0}, step=0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", sys.argv[2],
           sys.argv[1] + "/runs", sys.argv[3], "--strategy", "ddp", "--devices", "2", "--every", "2"]
    sys.exit(subprocess.run(cmd).returncode)
""")


def one_launch(workdir: Path, steps: int, timeout: float) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_TRACK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "cluster"), str(REPO / "tests"), str(REPO)])
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "parent.py"
    script.write_text(PARENT)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(workdir), str(FIT_SCRIPT), str(steps)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        return "hung", time.perf_counter() - start
    elapsed = time.perf_counter() - start
    if code != 0:
        return f"failed ({code})", elapsed
    runs = [p for p in (workdir / "runs").iterdir() if p.is_dir() and p.name != "signals"]
    if len(runs) != 1:
        return f"{len(runs)} run folders", elapsed
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    steps_seen = [json.loads(line)["step"] for line in lines if "train/loss" in json.loads(line)["metrics"]]
    return ("ok" if steps_seen == list(range(1, steps + 1)) else f"steps {steps_seen}"), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    outcomes: dict[str, int] = {}
    times = []
    with tempfile.TemporaryDirectory(prefix="lt-torchrun-stress-") as tmp:
        for i in range(args.launches):
            outcome, elapsed = one_launch(Path(tmp) / f"launch{i}", args.steps, args.timeout)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            times.append(elapsed)
            print(f"launch {i + 1}/{args.launches}: {outcome} in {elapsed:.1f} s", flush=True)
    print(json.dumps({"launches": args.launches, "outcomes": outcomes, "median_s": sorted(times)[len(times) // 2]}))


if __name__ == "__main__":
    main()
