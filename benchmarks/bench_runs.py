"""Run queries beside their anchors, in the same run: lt ls, load_runs, load_history, lt report.

    python benchmarks/bench_runs.py [--runs 1000] [--history-runs 10] [--steps 100000] [--metrics 10]
        [--tb-runs 2] [--mlflow-python PATH] [--repeats 3] [--out benchmarks/results/runs.md]

1. ``lt ls`` over ``--runs`` runs, each a fresh process as a person types it (table, ``--json``, and a
   config filter that reads every ``config.yaml``). Goal: <= 0.5 s.
2. ``load_runs`` over the same runs (in a process that already imported pandas). Goal: <= 1 s.
3. ``load_history`` of ``--history-runs`` runs x ``--steps`` steps x ``--metrics`` metrics (goal <= 1 s),
   beside TensorBoard's ``EventAccumulator`` loading the same values from the events our TensorBoard sink
   wrote (goal: >= 10x faster; measured on ``--tb-runs`` runs and compared per run, as it is slow).
4. MLflow (where it installs; its own interpreter ``--mlflow-python``, as it pins its own dependencies):
   the same runs imported into a store (``mlflow_anchor.py``, the import ``bench_scale.py`` uses too),
   ``search_runs`` beside ``load_runs`` and ``get_metric_history`` beside ``load_history``.
5. ``lt report`` of the history runs, a fresh process: goal <= 3 s and <= 2 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import orjson
import yaml

from lightning_track.folder.records import MetricRecord
from lightning_track.vocabulary import ENV_CACHE_DIR, iso_time

HERE = Path(__file__).resolve().parent
STATUSES = ["completed"] * 16 + ["failed", "failed", "interrupted", "running"]


def synthetic_summary(name: str, dataset: str, method: str, status: str, t0: float, pid: int,
                      metrics: dict[str, float], baseline: bool) -> dict:
    """A finished run's ``summary.json`` as RunLogger writes it (one attempt of 500 s, 300 steps)."""
    summary = {"run_name": name, "dataset": dataset, "method": method, "status": status,
               "start_time": iso_time(t0), "heartbeat": iso_time(t0 + 500),
               "attempts": [{"attempt": 1, "start_time": iso_time(t0), "status": status, "host": "gpu1",
                             "pid": pid, "end_time": iso_time(t0 + 500), "training_time_s": 500.0}],
               "config_digest": "sha256:0c13b8564694ef1f",
               "last_checkpoint": "checkpoints/checkpoint-step-300.ckpt",
               "final": {k: {"value": v, "step": 300} for k, v in metrics.items()},
               "best": {k: {"value": v, "step": 250, "mode": "max" if "acc" in k else "min"}
                        for k, v in metrics.items() if k != "lr"},
               "steps_logged": 300, "last_step": 300, "end_time": iso_time(t0 + 500), "training_time_s": 500.0,
               "wall_span_s": 500.0, "tags": ["baseline"] if baseline else []}
    if status == "failed":
        summary["failure"] = {"check": "nonfinite_loss", "reason": "loss is nan", "step": 120, "value": "NaN"}
        summary["reason"] = "HealthCheckFailed: loss is nan"
    return summary


def make_runs(root: Path, count: int) -> None:
    """``count`` runs with the files lt reads, of the sizes real ones have (summary ~1.5 KiB, 25 config keys)."""
    rng = np.random.default_rng(0)
    start = 1.79e9
    for i in range(count):
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(start + i * 600))
        dataset, method = f"ds{i % 5}", f"m{i % 7}"
        run = root / f"{dataset}_{method}_{stamp}"
        run.mkdir(parents=True)
        status = STATUSES[i % len(STATUSES)]
        t0 = start + i * 600
        metrics = {k: float(rng.random()) for k in ("train/loss", "val/loss", "val/acc", "train/acc", "lr")}
        summary = synthetic_summary(run.name, dataset, method, status, t0, 1000 + i, metrics, i % 10 == 0)
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
        (run / "meta.json").write_text(json.dumps({"dataset": dataset, "method": method, "run_name": run.name,
                                                   "created": iso_time(t0), "host": "gpu1", "pid": 1000 + i,
                                                   "argv": ["train.py", f"model.lr={10.0 ** -rng.integers(2, 6)}"],
                                                   "versions": {"python": "3.11", "torch": "2.13.0"}}, indent=2))
        config = {"model": {"lr": float(10.0 ** -rng.integers(2, 6)), "hidden": int(rng.integers(32, 512)),
                            "layers": int(rng.integers(1, 8)), "dropout": 0.1, "name": "mlp"},
                  "data": {"batch_size": 32, "n_train": 4096, "path": "/data/x.jsonl", "workers": 4},
                  "trainer": {"max_steps": 300, "precision": "bf16-mixed", "accumulate": 1, "clip": 1.0},
                  "seed": i, "optimizer": {"name": "adamw", "betas": [0.9, 0.999], "weight_decay": 0.01}}
        (run / "config.yaml").write_text(yaml.safe_dump(config))


def make_history_runs(root: Path, runs: int, steps: int, metrics: int) -> list[Path]:
    rng = np.random.default_rng(1)
    out = []
    for r in range(runs):
        run = root / f"hist_r{r}_20260101_0000{r:02d}"
        run.mkdir(parents=True)
        values = np.exp(-np.arange(steps) / (steps / 5))[:, None] + rng.normal(0, 0.01, (steps, metrics))
        keys = [f"train/m{k}" for k in range(metrics)]
        with open(run / "metrics.jsonl", "wb") as handle:
            rows = values.tolist()
            for i in range(steps):
                handle.write(orjson.dumps({"step": i + 1, "time": 1.79e9 + i * 0.1,
                                           "metrics": dict(zip(keys, rows[i], strict=True))}) + b"\n")
        (run / "summary.json").write_text(json.dumps({"status": "completed", "run_name": run.name,
                                                      "start_time": iso_time(1.79e9), "last_step": steps}))
        out.append(run)
    return out


def write_tensorboard(run: Path) -> None:
    """The same records through our TensorBoard sink (what a RunLogger run has in tensorboard_logs/)."""
    from lightning_track.folder.layout import RunLayout
    from lightning_track.folder.records import read_metrics
    from lightning_track.sinks.base import SinkContext
    from lightning_track.sinks.tensorboard import TensorBoardSink

    sink = TensorBoardSink()
    sink.open(SinkContext(layout=RunLayout(run), dataset="hist", method="m"))
    records = read_metrics(run / "metrics.jsonl")
    for i in range(0, len(records), 5000):
        sink.write([MetricRecord(r.step, r.time, r.metrics) for r in records[i:i + 5000]])
    sink.close("completed")


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def fresh(cmd: list[str], repeats: int, *, cold: bool = False) -> float:
    """Best wall time of ``cmd`` in a fresh process, the page cache warm. ``cold``: each run with an empty
    lightning_track cache (the first look at these runs); else the cache as the first run left it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd, check=True, capture_output=True, env=env)  # warm the page cache (and our cache) once

    def once() -> None:
        if cold:
            env[ENV_CACHE_DIR] = tempfile.mkdtemp(prefix="bench-cache-")
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        if cold:
            shutil.rmtree(env[ENV_CACHE_DIR], ignore_errors=True)

    return best_of(repeats, once)[0]


def cold_cache() -> None:
    """Point lightning_track's cache at a new empty folder (this process), dropping the previous one."""
    if os.environ.get(ENV_CACHE_DIR, "").startswith(tempfile.gettempdir()):
        shutil.rmtree(os.environ[ENV_CACHE_DIR], ignore_errors=True)
    os.environ[ENV_CACHE_DIR] = tempfile.mkdtemp(prefix="bench-cache-")


def tensorboard_load(run: Path) -> int:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard_logs"), size_guidance={"scalars": 0})
    acc.Reload()
    count = 0
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = np.array([e.step for e in events])
        values = np.array([e.value for e in events])
        count += len(steps) + 0 * len(values)
    return count


MLFLOW_SCRIPT = r'''
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])  # benchmarks/: the run folders imported as bench_scale.py imports them
from mlflow_anchor import EXPERIMENT, build
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
store, spec = sys.argv[1], json.load(open(sys.argv[2]))
t = time.perf_counter()
build(store, [Path(p) for p in spec["summary_runs"]], progress=lambda line: None)
mlflow.set_tracking_uri(store)
client = MlflowClient()  # after build: its store takes the engine build made for this URI
exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
hist_ids = []
for run_dir in spec["history_runs"]:
    r = client.create_run(exp, run_name=run_dir.rsplit("/", 1)[-1])
    batch = []
    for line in open(run_dir + "/metrics.jsonl", "rb"):
        rec = json.loads(line)
        ts = int(rec["time"] * 1000)
        batch += [Metric(k, v, ts, rec["step"]) for k, v in rec["metrics"].items()]
        if len(batch) >= 1000:
            client.log_batch(r.info.run_id, metrics=batch); batch = []
    if batch:
        client.log_batch(r.info.run_id, metrics=batch)
    hist_ids.append((r.info.run_id, list(rec["metrics"])))
import_s = time.perf_counter() - t
def search():
    return mlflow.search_runs(experiment_ids=[exp], max_results=100000)
def history():
    n = 0
    for run_id, keys in hist_ids:
        for k in keys:
            n += len(client.get_metric_history(run_id, k))
    return n
out = {"import_s": import_s}
for name, fn in (("search_runs", search), ("get_metric_history", history)):
    best = None
    for _ in range(spec["repeats"]):
        t = time.perf_counter(); res = fn(); d = time.perf_counter() - t
        best = d if best is None else min(best, d)
    out[name] = best
    out[name + "_rows"] = len(res) if not isinstance(res, int) else res
out["version"] = mlflow.__version__
print("RESULT " + json.dumps(out))
'''


def run_mlflow(python: str, store: str, summary_runs: list[Path], history_runs: list[Path], repeats: int) -> dict:
    spec = {"summary_runs": [str(p) for p in summary_runs], "history_runs": [str(p) for p in history_runs],
            "repeats": repeats}
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}  # MLflow 3.x refuses its file store unless asked
    with tempfile.NamedTemporaryFile("w", suffix=".json") as spec_file:  # a file: 10,000 paths overflow argv
        json.dump(spec, spec_file)
        spec_file.flush()
        done = subprocess.run([python, "-c", MLFLOW_SCRIPT, store, spec_file.name, str(HERE)], capture_output=True,
                              text=True, env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": " ".join(done.stderr.split())[-400:]}
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--history-runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--tb-runs", type=int, default=2)
    parser.add_argument("--mlflow-python", default=None, help="a Python with mlflow installed (its own venv)")
    parser.add_argument("--mlflow-history-runs", type=int, default=2)
    parser.add_argument("--mlflow-stores", default="file,sqlite", help="which MLflow stores, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "runs.md"))
    args = parser.parse_args()
    from lightning_track import load_history, load_runs

    tmp = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    try:
        root = tmp / "runs"
        make_runs(root, args.runs)
        lt = [sys.executable, "-m", "lightning_track.cli.lt"]
        for label, extra in (("lt ls", []), ("lt ls --json", ["--json"]),
                             ("lt ls -f 'model.lr<1e-3' (every config.yaml)", ["-f", "model.lr<1e-3"])):
            for cold in (True, False) if "-f" in extra else (False,):
                seconds = fresh([*lt, "ls", str(root), *extra], args.repeats, cold=cold)
                when = (", first look (cache empty)" if cold else ", again (config cache)") if "-f" in extra else ""
                rows.append((f"{label}, {args.runs} runs, fresh process{when}", f"{seconds:.2f} s", "-", "<= 0.5 s"))
        python_only = fresh([sys.executable, "-c", "pass"], args.repeats)
        notes.append(f"a bare `python -c pass` takes {python_only:.2f} s here (part of every fresh-process time)")
        import pandas  # noqa: F401 - outside the timing: a notebook has it imported

        seconds, frame = best_of(args.repeats, lambda: load_runs(root))
        rows.append((f"load_runs, {args.runs} runs ({frame.shape[1]} columns)", f"{seconds:.2f} s", "-", "<= 1 s"))

        hist_root = tmp / "history"
        hist = make_history_runs(hist_root, args.history_runs, args.steps, args.metrics)
        what = f"{len(hist)} runs x {args.steps:,} steps x {args.metrics} metrics"

        def cold_load(runs: list[Path]):
            cold_cache()
            return load_history(runs)

        seconds, frame = best_of(args.repeats, lambda: cold_load(hist))
        values = int(frame.iloc[:, 3:].notna().sum().sum())
        rows.append((f"load_history, {what} ({values:,} values), first look (cache empty; "
                     f"parsed on {min(len(hist), os.cpu_count() or 1)} cores)", f"{seconds:.2f} s", "-", "<= 1 s"))
        one_run, _ = best_of(args.repeats, lambda: cold_load(hist[:1]))
        rows.append(("load_history, 1 of those runs, first look", f"{one_run:.2f} s", "-", "-"))
        seconds, _ = best_of(args.repeats, lambda: load_history(hist))
        rows.append((f"load_history, {what}, again (history cache)", f"{seconds:.2f} s", "-", "<= 1 s"))
        ours_per_run = one_run
        tb_runs = hist[: args.tb_runs]
        for run in tb_runs:
            write_tensorboard(run)
        tb_seconds, counts = best_of(1, lambda: [tensorboard_load(run) for run in tb_runs])
        tb_per_run = tb_seconds / len(tb_runs)
        assert all(c == args.steps * args.metrics for c in counts), counts
        ratio = tb_per_run / ours_per_run
        rows.append((f"per run, first look: load_history vs TensorBoard EventAccumulator ({len(tb_runs)} runs)",
                     f"{ours_per_run:.3f} s", f"{tb_per_run:.2f} s", f">= 10x faster: {ratio:.0f}x"))

        if args.mlflow_python:
            for store_kind in args.mlflow_stores.split(","):
                store = (tmp / "mlruns").as_uri() if store_kind == "file" else f"sqlite:///{tmp / 'mlflow.db'}"
                few = hist[: args.mlflow_history_runs]
                result = run_mlflow(args.mlflow_python, store, sorted(root.iterdir()), few, args.repeats)
                if "error" in result:
                    notes.append(f"MLflow {store_kind} store: did not run ({result['error']})")
                    continue
                ours_few, _ = best_of(args.repeats, lambda few=few: cold_load(few))
                ours_runs, _ = best_of(args.repeats, lambda: load_runs(root))
                search, history = result["search_runs"], result["get_metric_history"]
                rows.append((f"MLflow {result['version']} {store_kind} store: search_runs vs load_runs "
                             f"({result['search_runs_rows']} runs)", f"{ours_runs:.2f} s", f"{search:.2f} s",
                             f"{search / ours_runs:.1f}x"))
                rows.append((f"MLflow {store_kind} store: get_metric_history vs load_history ({len(few)} runs, "
                             f"{result['get_metric_history_rows']:,} values)", f"{ours_few:.2f} s",
                             f"{history:.2f} s", f"{history / ours_few:.0f}x"))
                notes.append(f"MLflow {store_kind} store: importing the runs took {result['import_s']:.0f} s")
                shutil.rmtree(tmp / "mlruns", ignore_errors=True)
        else:
            notes.append("MLflow: not measured (pass --mlflow-python, a Python with mlflow installed)")

        html = tmp / "report.html"
        for cold in (True, False):
            seconds = fresh([*lt, "report", str(hist_root), "-o", str(html)], args.repeats, cold=cold)
            size = html.stat().st_size / 1024 / 1024
            when = "first look (cache empty)" if cold else "again (history cache)"
            rows.append((f"lt report, {what}, fresh process, {when}", f"{seconds:.2f} s, {size:.2f} MB", "-",
                         "<= 3 s, <= 2 MB"))
        for run in hist:  # a run still being written: 1,000 more records each
            with open(run / "metrics.jsonl", "ab") as handle:
                for step in range(args.steps + 1, args.steps + 1001):
                    handle.write(orjson.dumps({"step": step, "time": 1.9e9, "metrics": {"train/m0": 0.5}}) + b"\n")
        start = time.perf_counter()
        load_history(hist)
        rows.append((f"load_history, {what}, after 1,000 records appended to each (only those parsed)",
                     f"{time.perf_counter() - start:.2f} s", "-", "-"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [f"## Run queries: lt ls, load_runs, load_history, lt report ({date.today().isoformat()})", "",
             "| what | lightning_track | anchor | goal / ratio |", "| --- | --- | --- | --- |",
             *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows), ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", f"Command: `python benchmarks/bench_runs.py {' '.join(sys.argv[1:])}`. "
              f"Machine: {os.cpu_count()} cores, {platform.python_version()}."]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
