"""The code and environment capture (run/capture.py) on a repository of 10,000 tracked files with a 1 MB diff.

    python benchmarks/bench_capture.py [--files 10000] [--repeats 3] [--out benchmarks/results/capture.md]

Two figures, each beside its anchor in the same run:

* the capture's cost: wall and CPU seconds of the capture thread plus the CPU of the git processes it
  starts (goal: ≤ 1 s CPU in all);
* the first training step: seconds from ``trainer.fit`` to the first batch of a tiny fit run in the
  repository, with the capture and with it switched off (goal: no later with it; the capture runs beside
  training);
* W&B's own code capture beside it (when its SDK is installed): ``wandb.init(mode="offline", save_code=True)``
  in the same repository, a fresh process each, with its git capture (``diff.patch``) on and off; the
  difference is what W&B's capture costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=b", "-c", "user.email=b@example.com"]


def make_repository(root: Path, files: int, diff_bytes: int) -> Path:
    repo = root / "repo"
    repo.mkdir()
    subprocess.run([*GIT, "init", "-q"], cwd=repo, check=True)
    for i in range(files):
        folder = repo / f"pkg{i % 100:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i:05d}.py").write_text(f"VALUE = {i}\n")
    subprocess.run([*GIT, "add", "."], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", "many files"], cwd=repo, check=True)
    per_file = 10_000
    for i in range(diff_bytes // per_file):  # ~1 MB of changes over 100 files
        (repo / f"pkg{i % 100:02d}" / f"mod{i:05d}.py").write_text("# changed\n" * (per_file // 10))
    (repo / "helper.py").write_text("SCALE = 2.0\n")
    return repo


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def capture_cost(repo: Path, out: Path) -> tuple[float, float, float, int]:
    """(wall s, capture thread CPU s, git CPU s, patch bytes) of one capture, on its own thread."""
    from lightning_track.run.capture import capture_code
    from lightning_track.run.environment import capture_environment

    result: dict[str, float] = {}

    def work() -> None:
        cpu = time.thread_time()
        capture_code(out, cwd=repo, argv=["train.py"])
        capture_environment()
        result["cpu"] = time.thread_time() - cpu

    before, start = children_cpu(), time.perf_counter()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return time.perf_counter() - start, result["cpu"], children_cpu() - before, (out / "diff.patch").stat().st_size


def first_step(repo: Path, root: Path, capture: bool) -> float:
    """Seconds from ``trainer.fit`` to the first training batch, in ``repo``."""
    import os

    import lightning as L

    from lightning_track import RunLogger
    from lightning_track.run import lifecycle
    from lightning_track.training.toy import ToyRegression, regression_data

    class Off:
        def join(self) -> bool:
            return True

    class FirstBatch(L.Callback):
        at: float | None = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
            if self.at is None:
                self.at = time.perf_counter()

    original = lifecycle.start_capture
    if not capture:
        lifecycle.start_capture = lambda layout, attempt, training=None, config=None: Off()  # type: ignore[assignment]
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        first = FirstBatch()
        trainer = L.Trainer(max_steps=3, logger=RunLogger("bench", "capture", root=root, sinks=(), console=False,
                                                          system_interval=0),
                            callbacks=[first], accelerator="cpu", enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1)
        start = time.perf_counter()
        trainer.fit(ToyRegression(), regression_data(n=64))
        assert first.at is not None
        return first.at - start
    finally:
        os.chdir(cwd)
        lifecycle.start_capture = original


WANDB_CHILD = """
import sys, wandb
run = wandb.init(mode="offline", dir=sys.argv[1], project="bench-capture",
                 settings=wandb.Settings(save_code=True, disable_git=sys.argv[2] == "off"))
run.log({"x": 1.0})
run.finish()
"""


def wandb_capture(repo: Path, out: Path, git: bool) -> tuple[float, float, int]:
    """(wall s, CPU s of the process and what it waited for, diff.patch bytes) of one offline W&B run in
    ``repo``, in a fresh process as a user's script is."""
    out.mkdir(parents=True)
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    before, start = children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-c", WANDB_CHILD, str(out), "on" if git else "off"], cwd=repo, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - start, children_cpu() - before
    patches = list(out.glob("wandb/offline-run-*/files/diff.patch"))
    return wall, cpu, patches[0].stat().st_size if patches else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--diff-bytes", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "capture.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        repo = make_repository(tmp_path, args.files, args.diff_bytes)
        costs = [capture_cost(repo, tmp_path / f"code{i}") for i in range(args.repeats)]
        first_step(repo, tmp_path / "warm", True)  # imports and Lightning's first-fit work out of the timing
        steps: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeats):
            for capture in (False, True):
                steps[capture].append(first_step(repo, tmp_path / f"runs{i}", capture))
        wandb_runs: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
        if importlib.util.find_spec("wandb") is not None:
            for i in range(args.repeats):  # alternated: the machine's noise hits both alike
                for git in (False, True):
                    wandb_runs[git].append(wandb_capture(repo, tmp_path / f"wandb{i}-{git}", git))
    wall, cpu, git_cpu = (statistics.median(c[k] for c in costs) for k in range(3))
    without, with_ = statistics.median(steps[False]), statistics.median(steps[True])
    text = "\n".join([
        "## Code and environment capture (issue 22)", "",
        f"`python benchmarks/bench_capture.py --files {args.files} --repeats {args.repeats}` — a repository of "
        f"{args.files:,} tracked files with a {costs[0][3] / 1e6:.1f} MB diff and one untracked file; medians.", "",
        "| capture (code/diff.patch, untracked, environment.json) | s |", "| --- | ---: |",
        f"| wall | {wall:.2f} |", f"| CPU of the capture thread | {cpu:.2f} |",
        f"| CPU of its git processes | {git_cpu:.2f} |",
        f"| CPU in all | {cpu + git_cpu:.2f} |", "",
        "| tiny fit in that repository: trainer.fit to the first batch | s | vs without |", "| --- | ---: | ---: |",
        f"| without capture | {without:.3f} | 1.00× |", f"| with capture (beside training) | {with_:.3f} | "
        f"{with_ / without:.2f}× |", "",
        "Goals: capture CPU ≤ 1 s in all; the first step no later with the capture than without.",
        *wandb_lines(wandb_runs),
    ])
    Path(args.out).write_text(text + "\n")
    print(text)


def wandb_lines(runs: dict[bool, list[tuple[float, float, int]]]) -> list[str]:
    if not runs[True]:
        return ["", "W&B's code capture is not measured beside it: its SDK is not installed here."]
    import wandb

    wall = {git: statistics.median(r[0] for r in runs[git]) for git in runs}
    cpu = {git: statistics.median(r[1] for r in runs[git]) for git in runs}
    patch = max(r[2] for r in runs[True])
    return ["", f"W&B's own capture beside it (wandb {wandb.__version__}): `wandb.init(mode=\"offline\", "
            "save_code=True)` + one `log` + `finish` in the same repository, a fresh process each, alternated, "
            "medians; its git capture writes a diff.patch of "
            f"{patch / 1e6:.1f} MB.", "",
            "| offline W&B run in the repository | wall s | CPU s (process and what it waited for) |",
            "| --- | ---: | ---: |",
            f"| git capture off (`disable_git=True`) | {wall[False]:.2f} | {cpu[False]:.2f} |",
            f"| git capture on (the default) | {wall[True]:.2f} | {cpu[True]:.2f} |",
            f"| W&B's code capture (the difference) | {wall[True] - wall[False]:+.2f} | "
            f"{cpu[True] - cpu[False]:+.2f} |"]


if __name__ == "__main__":
    main()
