"""lt export into a real MLflow server (SQLite backend, local) beside MLflow's own fastest path.

    python benchmarks/bench_export.py [--steps 10000] [--metrics 10] [--out benchmarks/results/export.md]

1. Anchor: a tight ``MlflowClient.log_batch`` loop of the same values in 1,000-metric batches, into a
   fresh run of the same server.
2. ``export_run`` of a run folder holding those values (plus its params, tags and small files). Goal:
   <= 1.25x the anchor (the server is the limit).
3. ``export_run`` again with nothing new. Goal: <= 0.5 s.

``--live``: the live ``"mlflow"`` sink instead. The tiny-MLP fit of ``bench_logger.py`` (``--fit-steps``
steps, logging every step), each in a fresh process, interleaved, best of ``--repeats``: no logger,
RunLogger with TensorBoard only, RunLogger with TensorBoard and the mlflow sink, and Lightning's
``MLFlowLogger``, the last two against the same local server. Goal: the mlflow sink's added fit time within
2 points of TensorBoard only. Written as its own section of ``--out``.

The two are timed in the same process against the same server, ``--repeats`` times, each going first in
turn.

    python benchmarks/bench_export.py --wandb [--steps 10000] [--out benchmarks/results/export_wandb.md]

W&B (offline, no server): ``lt export --to wandb`` of the same run folder beside W&B's own fastest path,
``wandb.init(mode="offline")`` + one ``wandb.log`` per step of the same values + ``finish``, in the same
process (W&B's service started once before both), and again with nothing new.

    python benchmarks/bench_export.py --wandb-sink [--steps 2000] [--repeats 3]

The live ``"wandb"`` sink: a tiny-MLP fit of N steps (logging every step), each in a fresh process, with
``sinks=("tensorboard",)`` and with ``("tensorboard", "wandb")``, interleaved; whole-process wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np

from lightning_track.folder.fileio import JsonlAppender, atomic_write_json, json_line
from lightning_track.vocabulary import iso_time

HERE = Path(__file__).resolve().parent


def start_server(folder: Path, cpus: str | None = None) -> tuple[subprocess.Popen, str]:
    """A local ``mlflow server`` (SQLite); ``cpus``: pinned to those cores (``taskset -c``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mlflow = shutil.which("mlflow") or "mlflow"
    pin = ["taskset", "-c", cpus] if cpus else []
    proc = subprocess.Popen([*pin, mlflow, "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=open(folder / "server.log", "ab"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"mlflow server did not start: {(folder / 'server.log').read_text()[-1000:]}")


def make_run(root: Path, steps: int, metrics: int) -> tuple[Path, list[tuple[int, float, dict[str, float]]]]:
    rng = np.random.default_rng(0)
    run = root / "bench_export_20260101_000000"
    run.mkdir(parents=True)
    t0 = 1.79e9
    records = [(s, t0 + s * 0.01, {f"m{k}": float(v) for k, v in enumerate(rng.random(metrics))})
               for s in range(1, steps + 1)]
    with JsonlAppender(run / "metrics.jsonl") as out:
        for i in range(0, len(records), 10_000):
            out.write_lines([json_line({"step": s, "time": t, "metrics": m}) for s, t, m in records[i:i + 10_000]])
    atomic_write_json(run / "summary.json", {"dataset": "bench", "method": "export", "status": "completed",
                                             "start_time": iso_time(t0), "end_time": iso_time(t0 + steps * 0.01),
                                             "attempts": [{"attempt": 1, "host": "bench", "status": "completed"}]})
    atomic_write_json(run / "meta.json", {"host": "bench", "user": "bench", "git": None})
    (run / "config.yaml").write_text("model:\n  lr: 0.001\n  hidden: 64\nseed: 0\n")
    return run, records


def timed(call, *args, **kw):
    started = time.perf_counter()
    return call(*args, **kw), time.perf_counter() - started


def cpu_of(proc: subprocess.Popen, call, *args, **kw):
    """``call``'s result and the CPU seconds it took here and in the server (its process tree, psutil)."""
    here, server = time.process_time(), server_cpu(proc)
    got = call(*args, **kw)
    return got, (time.process_time() - here, server_cpu(proc) - server)


def anchor(client, experiment_id: str, records: list[tuple[int, float, dict[str, float]]]) -> float:
    from mlflow.entities import Metric

    started = time.perf_counter()
    run_id = client.create_run(experiment_id).info.run_id
    batch: list[Metric] = []
    for step, when, values in records:
        stamp = int(when * 1000)
        for key, value in values.items():
            batch.append(Metric(key, value, stamp, step))
            if len(batch) == 1000:
                client.log_batch(run_id, metrics=batch)
                batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--wandb", action="store_true", help="W&B offline instead of MLflow")
    parser.add_argument("--wandb-sink", action="store_true", help="the live wandb sink's cost in a fit")
    parser.add_argument("--live", action="store_true", help="the live mlflow sink's fit overhead instead")
    parser.add_argument("--fit-steps", type=int, default=2000)
    parser.add_argument("--server-cpus", default=None,
                        help="--live: pin the mlflow server to these cores (taskset -c), e.g. 1")
    parser.add_argument("--skip-mlflowlogger", action="store_true",
                        help="--live: leave Lightning's MLFlowLogger out (~11 ms a step, minutes at --fit-steps 10000)")
    args = parser.parse_args()
    if args.wandb:
        return wandb_main(args)
    if args.wandb_sink:
        return wandb_sink_main(args)
    args.out = args.out or str(HERE / "results" / "export.md")
    if args.live:
        kinds = [k for k in LIVE_KINDS if not (args.skip_mlflowlogger and k == "MLFlowLogger")]
        return bench_live(args.fit_steps, args.repeats, Path(args.out), kinds, args.server_cpus)
    from mlflow.tracking import MlflowClient

    from lightning_track.export import export_run, open_exporter

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    proc, uri = start_server(work)
    settle(proc, uri)  # the server's start-up CPU kept out of the first timed call
    try:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("anchor")
        anchor(client, experiment_id, [(s, 1.79e9 + s, {"warm": 1.0}) for s in range(2000)])  # the server's first calls
        rows, cpus = [], []
        load = os.getloadavg()[0]
        for repeat in range(args.repeats):
            run, records = make_run(work / f"runs{repeat}", args.steps, args.metrics)
            if repeat % 2 == 0:  # the anchor first, then second: neither gains from going first
                base, base_cpu = cpu_of(proc, anchor, client, experiment_id, records)
            with open_exporter(uri) as exporter:
                (first, ours), ours_cpu = cpu_of(proc, timed, export_run, run, exporter=exporter)
                started = time.perf_counter()
                again = export_run(run, exporter=exporter)
                nothing = time.perf_counter() - started
            if repeat % 2 == 1:
                base, base_cpu = cpu_of(proc, anchor, client, experiment_id, records)
            assert first.values == args.steps * args.metrics and again.nothing_new
            rows.append((base, ours, nothing))
            cpus.append((*base_cpu, *ours_cpu))
            print(f"repeat {repeat + 1}: log_batch loop {base:.2f} s (CPU client {base_cpu[0]:.2f} s, server "
                  f"{base_cpu[1]:.2f} s), lt export {ours:.2f} s (CPU client {ours_cpu[0]:.2f} s, server "
                  f"{ours_cpu[1]:.2f} s; {ours / base:.2f}x), again with nothing new {nothing:.3f} s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    base, ours, nothing = (min(column) for column in zip(*rows, strict=True))
    ratios = ", ".join(f"{o / b:.2f}x" for b, o, _ in rows)
    values = args.steps * args.metrics
    text = (f"# lt export into MLflow ({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {sys.version.split()[0]})\n\n"
            f"A run of {args.steps:,} steps x {args.metrics} metrics ({values:,} values) into a local `mlflow server` "
            f"(SQLite), best of {args.repeats}:\n\n"
            "| what | time | ratio | CPU s: client, server (best) |\n| --- | --- | --- | --- |\n"
            f"| `MlflowClient.log_batch` loop, 1,000-metric batches (anchor) | {base:.2f} s | 1.00x | "
            f"{min(c[0] for c in cpus):.2f}, {min(c[1] for c in cpus):.2f} |\n"
            f"| `lt export` (metrics, params, tags, files, status; one batch in flight, record after each) | "
            f"{ours:.2f} s | {ours / base:.2f}x (goal <= 1.25x) | {min(c[2] for c in cpus):.2f}, "
            f"{min(c[3] for c in cpus):.2f} |\n"
            f"| `lt export` again, nothing new | {nothing:.3f} s | goal <= 0.5 s | |\n\n"
            f"Each repeat's ratio (lt export / anchor): {ratios}. Load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end.\n")
    old = Path(args.out).read_text() if Path(args.out).exists() else ""
    live = old[old.index(LIVE_HEADING):] if LIVE_HEADING in old else ""  # kept: --live writes it
    Path(args.out).write_text(text + ("\n" + live if live else ""))
    print(text)


LIVE_HEADING = "## The live `mlflow` sink: fit overhead"
LIVE_KINDS = ["none", "RunLogger (TensorBoard only)", "RunLogger (TensorBoard + mlflow)", "MLFlowLogger"]


def server_cpu(proc: subprocess.Popen) -> float:
    """CPU seconds the server and its workers have used so far (user + system)."""
    import psutil

    total = 0.0
    root = psutil.Process(proc.pid)
    for each in [root, *root.children(recursive=True)]:
        try:
            times = each.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def settle(proc: subprocess.Popen, uri: str) -> None:
    """Wait until the server has done its start-up work (it answers /health before its workers finish
    initialising, which took ~12 s of CPU inside the first timed fit): one tracking call, then its CPU still."""
    with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=300):
        pass
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        before = server_cpu(proc)
        time.sleep(1.0)
        if server_cpu(proc) - before < 0.05:
            return


def bench_live(steps: int, repeats: int, out: Path, kinds: list[str], cpus: str | None) -> None:
    """Fresh-process fits (bench_logger's), each kind in turn, against one local server; the server's own CPU
    during each fit measured apart (it is not a child of the fit's process)."""
    sys.path.insert(0, str(HERE))
    from bench_logger import fit_fresh, write_section

    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    proc, uri = start_server(work, cpus)
    settle(proc, uri)
    os.environ["BENCH_MLFLOW_URI"] = uri
    best = {kind: (float("inf"),) * 4 for kind in kinds}
    load = os.getloadavg()[0]
    try:
        for repeat in range(repeats):
            for kind in kinds:
                before = server_cpu(proc)
                got = (*fit_fresh(kind, steps), server_cpu(proc) - before)
                best[kind] = tuple(min(a, b) for a, b in zip(best[kind], got, strict=True))
                print(f"repeat {repeat + 1} {kind:34s} fit {got[0]:6.2f} s  process {got[1]:6.2f} s  "
                      f"CPU {got[2]:6.2f} s  server CPU {got[3]:5.2f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    none = best["none"]
    pct = {kind: (best[kind][0] / none[0] - 1) * 100 for kind in kinds}
    command = (f"python benchmarks/bench_export.py --live --fit-steps {steps} --repeats {repeats}"
               + (f" --server-cpus {cpus}" if cpus else "") + (" --skip-mlflowlogger" if "MLFlowLogger" not in kinds
                                                                else ""))
    heading = LIVE_HEADING + (f" ({steps} steps, server on core {cpus})" if cpus else
                              f" ({steps} steps)" if steps != 2000 else "")
    lines = [
        heading, "",
        f"`{command}` ({date.today()}, load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end): "
        f"the tiny-MLP fit of bench_logger.py, {steps} steps, a value logged every step, each fit in a fresh "
        f"process, best of {repeats}; the mlflow sink"
        + (" and Lightning's `MLFlowLogger` against the same" if "MLFlowLogger" in kinds else " against a")
        + " local `mlflow server` (SQLite" + (f", pinned to core {cpus} with taskset" if cpus else "")
        + "); lightning_track with its bytecode, as installed (bench_logger's `fresh_env`).", "",
        "| logger | fit wall s | added fit time vs no logger | whole process wall s | CPU s, all processes | "
        "server CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {kind} | {best[kind][0]:.2f} | {pct[kind]:+.1f} % | {best[kind][1]:.2f} | {best[kind][2]:.2f} | "
          f"{best[kind][3]:.2f} |" for kind in kinds], "",
        f"Goal: the mlflow sink's added fit time within 2 points of TensorBoard only → "
        f"{pct['RunLogger (TensorBoard + mlflow)'] - pct['RunLogger (TensorBoard only)']:+.1f} points. The sink "
        "imports MLflow's client when its first pass is due (2 s after the run opens) or at close, whichever "
        "comes first, and its last pass runs after `fit` returns: both are in the whole process's wall and CPU. "
        "The server's CPU (not a child of the fit's process) is the last column, each fit's own.", "",
    ]
    write_section(out, heading, lines)
    print("\n".join(lines))


def wandb_anchor(work: Path, records: list[tuple[int, float, dict[str, float]]]) -> float:
    import wandb

    started = time.perf_counter()
    run = wandb.init(mode="offline", dir=str(work), project="anchor", config={"model": {"lr": 0.001}},
                     settings=wandb.Settings(silent=True, x_disable_stats=True, x_disable_meta=True,
                                             x_save_requirements=False, disable_git=True, console="off"))
    for step, _, values in records:
        run.log(values, step=step)
    run.finish()
    return time.perf_counter() - started


def wandb_main(args: argparse.Namespace) -> None:
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    from lightning_track.export import export_run, open_exporter, wandb_target

    work = Path(tempfile.mkdtemp(prefix="bench-export-wandb-"))
    try:
        wandb_anchor(work / "warm", [(s, 0.0, {"warm": 1.0}) for s in range(100)])  # W&B's service started
        rows = []
        for repeat in range(args.repeats):
            run, records = make_run(work / f"runs{repeat}", args.steps, args.metrics)
            (run / "logs.txt").write_text("".join(f"line {i}\n" for i in range(1000)))
            if repeat % 2 == 0:
                base = wandb_anchor(work / f"anchor{repeat}", records)
            with open_exporter(wandb_target(work / f"out{repeat}")) as exporter:
                started = time.perf_counter()
                first = export_run(run, exporter=exporter)
                ours = time.perf_counter() - started
                started = time.perf_counter()
                again = export_run(run, exporter=exporter)
                nothing = time.perf_counter() - started
            if repeat % 2 == 1:
                base = wandb_anchor(work / f"anchor{repeat}", records)
            assert first.values == args.steps * args.metrics and again.nothing_new
            rows.append((base, ours, nothing))
            print(f"repeat {repeat + 1}: wandb.log loop {base:.2f} s, lt export --to wandb {ours:.2f} s "
                  f"({ours / base:.2f}x), again with nothing new {nothing:.3f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base, ours, nothing = (min(column) for column in zip(*rows, strict=True))
    ratios = ", ".join(f"{o / b:.2f}x" for b, o, _ in rows)
    import wandb

    text = (f"# lt export into W&B offline runs ({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {sys.version.split()[0]}, wandb {wandb.__version__})\n\n"
            f"A run of {args.steps:,} steps x {args.metrics} metrics ({args.steps * args.metrics:,} values), "
            f"best of {args.repeats}:\n\n"
            "| what | time | ratio |\n| --- | --- | --- |\n"
            f"| `wandb.init(mode=\"offline\")` + `wandb.log` per step + `finish` (anchor) | {base:.2f} s | 1.00x |\n"
            f"| `lt export --to wandb` (history, config, summary, tags, notes, 1,000 console lines, exit code; "
            f"the record) | {ours:.2f} s | {ours / base:.2f}x |\n"
            f"| `lt export --to wandb` again, nothing new | {nothing:.3f} s | |\n\n"
            f"Each repeat's ratio (lt export / anchor): {ratios}.\n")
    Path(args.out or HERE / "results" / "export_wandb.md").write_text(text)
    print(text)


_FIT = """
import sys, lightning as L
from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule
steps, root, sinks = int(sys.argv[1]), sys.argv[2], tuple(sys.argv[3].split(","))
L.seed_everything(0, verbose=False)
trainer = L.Trainer(max_steps=steps, logger=RunLogger("bench", "sink", root=root, sinks=sinks), log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", limit_val_batches=0,
                    num_sanity_val_steps=0, enable_checkpointing=False)
trainer.fit(DemoModule(max_steps=steps), datamodule=DemoDataModule())
"""


def wandb_sink_main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-wandb-sink-"))
    configs = {"tensorboard": "tensorboard", "tensorboard + wandb": "tensorboard,wandb"}
    walls: dict[str, list[float]] = {name: [] for name in configs}
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    try:
        for repeat in range(args.repeats):
            order = list(configs) if repeat % 2 == 0 else list(reversed(configs))
            for name in order:
                started = time.perf_counter()
                subprocess.run([sys.executable, "-c", _FIT, str(args.steps), str(work / f"{repeat}"), configs[name]],
                               check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                walls[name].append(time.perf_counter() - started)
                print(f"repeat {repeat + 1}: {name} {walls[name][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = min(walls["tensorboard"])
    lines = [f"| `sinks=({', '.join(repr(s) for s in configs[name].split(','))})` | {min(w):.2f} s | "
             f"{statistics.median(w):.2f} s | {min(w) / base:.2f}x |" for name, w in walls.items()]
    text = (f"# The live wandb sink ({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs)\n\n"
            f"Tiny-MLP fit of {args.steps:,} steps, logging every step, fresh process each, {args.repeats} "
            "interleaved repeats (whole-process wall):\n\n| sinks | best | median | best vs tensorboard |\n"
            "| --- | --- | --- | --- |\n" + "\n".join(lines) + "\n")
    Path(args.out or HERE / "results" / "wandb_sink.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
