"""RunLogger beside its anchors, in the same run: hot-path cost, fit overhead, SIGKILL durability.

    python benchmarks/bench_logger.py [--calls 3000] [--steps 2000] [--repeats 3] [--out benchmarks/results/logger.md]

1. ``log_metrics`` + ``save`` per call (5 scalars) on the training thread: RunLogger (jsonl +
   TensorBoard + SwanLab in the sink host process)
   vs Lightning's TensorBoardLogger and CSVLogger and SwanLab's SwanLabLogger.
2. Tiny-MLP fit, N steps, ``log_every_n_steps=1``: wall time vs ``logger=False`` (RunLogger with the
   sink host and with ``sink_process=False``, the previous design, in the same run); then the same
   fits each in a fresh process, as users run them (every logger pays its own imports).
3. SIGKILL durability: share of steps logged more than 1 s before the kill that are on disk.
4. finalize: from ``on_train_end`` to ``fit``'s return, each fit in a fresh process (``--only finalize``
   runs this alone and replaces its section of the results file). The sink host's close of TensorBoard and
   SwanLab is not in it: it finishes after the return (``RunLogger.wait()`` after the timing waits for it).
5. The default sinks' cost (``--only sinks``): the fresh-process fit of the default RunLogger beside
   TensorBoardLogger and the opt-in SwanLab sink, in its own section of the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from installed import ROOT as ROOT_TREE
from installed import installed_env

os.environ.setdefault("SWANLAB_MODE", "offline")


def make_loggers(kind: str, root: Path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning_track import RunLogger

    if kind == "RunLogger":
        return RunLogger("bench", "m", root=root)
    if kind == "RunLogger (sinks in-process)":  # the previous design: every sink on the writer thread
        return RunLogger("bench", "m", root=root, sink_process=False)
    if kind == "RunLogger (SwanLab offline)":  # no board database beside SwanLab's record
        return RunLogger("bench", "m", root=root, sinks=("tensorboard", "swanlab"), swanlab_mode="offline")
    if kind == SWANLAB_LOCAL:  # the opt-in live SwanLab sink, with the board's files
        return RunLogger("bench", "m", root=root, sinks=("tensorboard", "swanlab"))
    if kind == "RunLogger (TensorBoard only)":  # TensorBoardLogger's format alone, plus jsonl, console, system
        return RunLogger("bench", "m", root=root, sinks=("tensorboard",))
    if kind == "RunLogger (TensorBoard + mlflow)":  # the live MLflow sink beside TensorBoard (bench_export --live)
        return RunLogger("bench", "m", root=root, sinks=("tensorboard", "mlflow"),
                         mlflow_uri=os.environ["BENCH_MLFLOW_URI"])
    if kind == "MLFlowLogger":  # Lightning's own, against the same server
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name="bench", tracking_uri=os.environ["BENCH_MLFLOW_URI"])
    if kind == "RunLogger (jsonl only)":
        return RunLogger("bench", "m", root=root, sinks=())
    if kind == "TensorBoardLogger":
        return TensorBoardLogger(root)
    if kind == "CSVLogger":
        return CSVLogger(root)
    if kind == "SwanLabLogger":
        from swanlab.integration.pytorch_lightning import SwanLabLogger

        os.environ["SWANLAB_ROOT"] = str(root / "swanlab_home")
        return SwanLabLogger(project="bench", mode="offline", log_dir=str(root / "swanlog"))
    if kind == NOOP:
        return NullLogger()
    if kind == "none":
        return False
    raise ValueError(kind)


NOOP = "no-op Logger (Lightning floor)"
SWANLAB_LOCAL = "RunLogger + swanlab sink (local)"


def _null_logger_class():
    from lightning.pytorch.loggers.logger import Logger

    class NullLogger(Logger):
        """Does nothing: what Lightning's own per-step logging path costs with any logger at all."""

        name, version = "null", 0

        def log_metrics(self, metrics, step=None) -> None:  # noqa: ANN001
            pass

        def log_hyperparams(self, params, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
            pass

    return NullLogger


def NullLogger():  # noqa: N802 - reads as the class it builds (imported lazily with lightning)
    return _null_logger_class()()


def bench_calls(calls: int) -> dict[str, float]:
    """Microseconds per log_metrics+save call on the calling (training) thread."""
    results = {}
    for kind in ["RunLogger", "RunLogger (jsonl only)", "TensorBoardLogger", "CSVLogger", "SwanLabLogger"]:
        with tempfile.TemporaryDirectory() as tmp:
            logger = make_loggers(kind, Path(tmp))
            _ = logger.experiment  # lazy SDK start-up is not part of the per-call cost
            metrics = {f"train/m{i}": 0.5 for i in range(5)}
            for step in range(50):  # warm-up
                logger.log_metrics(metrics, step=step)
                logger.save()
            start = time.perf_counter()
            for step in range(50, 50 + calls):
                metrics["train/m0"] = 1.0 / step
                logger.log_metrics(metrics, step=step)
                logger.save()
            per_call = (time.perf_counter() - start) / calls * 1e6
            t = time.perf_counter()
            logger.finalize("success")
            if kind == "SwanLabLogger":
                import swanlab

                swanlab.finish()  # SwanLabLogger leaves its run open; SwanLab allows one per process
            results[kind] = per_call
            print(f"  {kind:24s} {per_call:8.1f} us/call   (finalize {time.perf_counter() - t:.2f} s)", flush=True)
    return results


def fit_once(kind: str, steps: int) -> float:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_track.training.toy import tiny_mlp

    torch.manual_seed(0)
    x = torch.randn(steps * 8, 32)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        logger = make_loggers(kind, Path(tmp))
        trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                            default_root_dir=tmp)
        start = time.perf_counter()
        trainer.fit(tiny_mlp(), data)
        took = time.perf_counter() - start
        if hasattr(logger, "wait"):
            logger.wait()  # RunLogger's plot, drawn after fit returns, before its folder is removed
        return took


def bench_fit(steps: int, repeats: int) -> dict[str, float]:
    kinds = ["none", NOOP, "RunLogger", "RunLogger (sinks in-process)", "TensorBoardLogger", "CSVLogger"]
    best = {k: float("inf") for k in kinds}
    fit_once("none", 50)  # import and JIT warm-up
    for _ in range(repeats):  # interleaved, best of N: the machine's noise hits all alike
        for kind in kinds:
            best[kind] = min(best[kind], fit_once(kind, steps))
    for kind in kinds:
        print(f"  {kind:30s} {best[kind]:7.2f} s  ({(best[kind] / best['none'] - 1) * 100:+.1f} %)", flush=True)
    return best


SOURCE_ONLY = False  # --source-only: fresh processes compile lightning_track from source, as this machine's env says


def fresh_env() -> dict[str, str]:
    """The fresh processes' environment: lightning_track with its bytecode (installed.installed_env), or compiled
    from source in every process with ``--source-only``."""
    return dict(os.environ) if SOURCE_ONLY else installed_env(None, ROOT_TREE, Path(__file__))


def fit_fresh(kind: str, steps: int) -> tuple[float, float, float]:
    """One fit in a fresh interpreter, as a user runs one: every logger pays its own imports and start-up.

    ``(fit wall s, process wall s, CPU s of the process and every process it started)``: the CPU comes
    from ``RUSAGE_CHILDREN``, which counts the sink host and the console relay too (each is waited for
    by the training process before it exits)."""
    env = fresh_env()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # after the one-time compile
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--fit-one", kind, "--steps", str(steps)], capture_output=True,
                         text=True, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(next(line for line in out.stdout.splitlines() if line.startswith("FIT ")).split()[1]), wall, cpu


FRESH_KINDS = ["none", NOOP, "RunLogger", "RunLogger (SwanLab offline)", "RunLogger (TensorBoard only)",
               "RunLogger (sinks in-process)", "TensorBoardLogger", "CSVLogger"]


def bench_fit_fresh(steps: int, repeats: int, kinds: Sequence[str] = tuple(FRESH_KINDS)
                    ) -> dict[str, tuple[float, float, float]]:
    """Best of ``repeats`` for each of fit wall, process wall and CPU (interleaved runs)."""
    best = {k: (float("inf"),) * 3 for k in kinds}
    for _ in range(repeats):
        for kind in kinds:
            got = fit_fresh(kind, steps)
            best[kind] = tuple(min(a, b) for a, b in zip(best[kind], got, strict=True))  # type: ignore[assignment]
    none = best["none"]
    for kind in kinds:
        fit, wall, cpu = best[kind]
        print(f"  {kind:30s} fit {fit:6.2f} s ({(fit / none[0] - 1) * 100:+.1f} %)  process {wall:6.2f} s "
              f"({(wall / none[1] - 1) * 100:+.1f} %)  CPU {cpu:6.2f} s (+{cpu - none[2]:.2f})", flush=True)
    return best


FINALIZE_KINDS = ["none", "CSVLogger", "TensorBoardLogger", "RunLogger (jsonl only)", "RunLogger (TensorBoard only)",
                  "RunLogger"]
FINALIZE_HEADING = "## finalize: on_train_end → fit return"


def finalize_once(kind: str, steps: int) -> float:
    """Seconds from the last ``on_train_end`` callback to ``trainer.fit`` returning (the logger's
    finalize and Lightning's teardown), after a logger-free warm-up fit in the same process."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_track.training.toy import tiny_mlp

    class TrainEnd(Callback):
        at = 0.0

        def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.at = time.perf_counter()

    fit_once("none", 20)  # Lightning's own first-fit costs are no logger's
    torch.manual_seed(0)
    x = torch.randn(steps * 8, 32)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        end, logger = TrainEnd(), make_loggers(kind, Path(tmp))
        trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                            default_root_dir=tmp, callbacks=[end])
        trainer.fit(tiny_mlp(), data)
        took = time.perf_counter() - end.at
        if hasattr(logger, "wait"):
            logger.wait()  # RunLogger's plot, drawn after fit returns, before its folder is removed
        return took


def bench_finalize(steps: Sequence[int], repeats: int) -> dict[tuple[str, int], list[float]]:
    """Each (logger, steps) fit in a fresh process, interleaved, ``repeats`` times."""
    got: dict[tuple[str, int], list[float]] = {(k, n): [] for n in steps for k in FINALIZE_KINDS}
    for _ in range(repeats):
        for kind, n in got:
            out = subprocess.run([sys.executable, __file__, "--finalize-one", kind, "--steps", str(n)],
                                 capture_output=True, text=True, check=True, env=fresh_env())
            got[kind, n].append(float(next(line for line in out.stdout.splitlines()
                                           if line.startswith("FINALIZE ")).split()[1]))
    for (kind, n), values in got.items():
        print(f"  {kind:30s} {n:5d} steps  median {statistics.median(values):.3f} s  "
              f"(min {min(values):.3f}, max {max(values):.3f})", flush=True)
    return got


def finalize_lines(got: dict[tuple[str, int], list[float]], repeats: int) -> list[str]:
    steps = sorted({n for _, n in got})
    kinds = list(dict.fromkeys(k for k, _ in got))
    med = {key: statistics.median(values) for key, values in got.items()}
    return [
        FINALIZE_HEADING,
        "",
        f"`python benchmarks/bench_logger.py --only finalize --finalize-steps {','.join(map(str, steps))} --repeats"
        f" {repeats}` — seconds from the last `on_train_end` callback to `trainer.fit` returning, each fit in a"
        " fresh process after a logger-free warm-up fit; median (min–max) of the interleaved repeats. 2 shared"
        " CPU cores (other engineers' tests running): read the medians, not single values.",
        "",
        "| finalize: on_train_end → fit return | " + " | ".join(f"{n} steps" for n in steps)
        + " | " + " | ".join(f"{n} steps vs none" for n in steps) + " |",
        "| --- |" + " ---: |" * (2 * len(steps)),
        *["| " + kind + " | " + " | ".join(
            f"{med[kind, n]:.3f} ({min(got[kind, n]):.3f}–{max(got[kind, n]):.3f})" for n in steps) + " | "
          + " | ".join(f"{med[kind, n] - med['none', n]:+.3f} s" for n in steps) + " |" for kind in kinds],
        "",
        "Goal: RunLogger's finalize ≤ 0.1 s beyond the no-logger fit. Two things finish in the background after"
        " `fit` returns, and `RunLogger.wait()` and the interpreter's exit wait for them: the sink host closes the"
        " viewers' files (TensorBoard's events, the SwanLab run), and `plots/metrics.png` (with its link in"
        " `report_draft.md`) is drawn on a thread; every other file (`summary.json` with the last system sample"
        " included) is complete at the return.",
        "",
    ]


SINKS_KINDS = ["none", "TensorBoardLogger", "RunLogger", "RunLogger (TensorBoard only)", SWANLAB_LOCAL,
               "RunLogger (SwanLab offline)"]
SINKS_HEADING = "## The default sinks' cost (issue 21)"


def sinks_lines(fresh: dict[str, tuple[float, float, float]], steps: int, repeats: int) -> list[str]:
    none, tb_cpu = fresh["none"], fresh["TensorBoardLogger"][2] - fresh["none"][2]
    default = fresh["RunLogger"]
    return [
        SINKS_HEADING,
        "",
        f"`python benchmarks/bench_logger.py --only sinks --steps {steps} --repeats {repeats}"
        f"{' --source-only' if SOURCE_ONLY else ''}` — each fit in a fresh"
        " process (best of the interleaved repeats); CPU of the training process and every process it started"
        " (sink host, console relay). "
        + ("lightning_track compiled from source in every process (`--source-only`)." if SOURCE_ONLY else
           "lightning_track with its bytecode, as installed (`fresh_env`; `--source-only`: without)."),
        "",
        f"| tiny-MLP fit, {steps} steps, fresh process | fit wall s | whole process wall s | vs none | CPU s |"
        " extra CPU | vs TensorBoardLogger's extra CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {k} | {f:.2f} | {w:.2f} | {_pct(w, none[1])} | {c:.2f} | {c - none[2]:+.2f} s |"
          f" {(c - none[2]) / max(tb_cpu, 1e-9):.2f}× |" for k, (f, w, c) in fresh.items()],
        "",
        f"Goal: the default RunLogger ≤ +5 % whole-process wall and ≤ 0.5× TensorBoardLogger's extra CPU →"
        f" {_pct(default[1], none[1])} and {(default[2] - none[2]) / max(tb_cpu, 1e-9):.2f}×.",
        "",
    ]


def write_section(path: Path, heading: str, lines: list[str]) -> None:
    """Replace the section that starts with ``heading`` (up to the next ``## ``) in ``path``, or append it."""
    text = path.read_text() if path.exists() else ""
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + ("\n\n" if text else "") + "\n".join(lines)
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + "\n".join(lines) + (text[end + 1:] if end >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


CHILD = r"""
import os, sys, time
kind, root, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
if kind == "RunLogger":
    from lightning_track import RunLogger
    logger = RunLogger("bench", "kill", root=root, sinks=("tensorboard",))
    log = lambda step: logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
else:
    import swanlab
    os.environ["SWANLAB_ROOT"] = root + "/home"
    run = swanlab.init(project="bench", mode="offline", log_dir=root + "/swanlog")
    log = lambda step: run.log({"loss": 1.0 / (step + 1)}, step=step)
t0 = time.time()
print(f"T0 {t0}", flush=True)
step = 0
while True:
    target = t0 + step / rate
    delay = target - time.time()
    if delay > 0:
        time.sleep(delay)
    log(step)
    step += 1
"""


def _readable_swanlab_steps(path: Path, key: str) -> set[int]:
    """Steps of ``key`` in a SwanLab file up to its first torn or corrupt record (a SIGKILL leaves one)."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    steps: set[int] = set()
    reader = DataStoreReader()
    try:
        reader.open(str(path))
        while (data := reader.scan()) is not None:
            record = Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "scalar" and record.scalar.key == key:
                steps.add(record.scalar.step)
    except Exception:  # noqa: BLE001 - SwanLab's reader raises on a torn tail (checksum): keep what came before
        pass
    try:
        reader.close()
    except Exception:  # noqa: BLE001
        pass
    return steps


def bench_kill(seconds: float = 4.0, rate: float = 200.0) -> dict[str, float]:
    from lightning_track import RunLayout, read_metrics

    results = {}
    for kind in ["RunLogger", "SwanLab"]:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, kind, tmp, str(rate)], stdout=subprocess.PIPE,
                                    text=True)
            try:
                line = ""
                while not line.startswith("T0 "):  # SwanLab prints its own banner first
                    line = proc.stdout.readline()
                    if not line and proc.poll() is not None:
                        raise RuntimeError(f"the {kind} child exited before logging")
                t0 = float(line.split()[1])
                time.sleep(seconds)
                killed = time.time()
            finally:  # never leave the logging child behind, whatever happened here
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            old_enough = int((killed - 1.0 - t0) * rate)  # steps logged more than 1 s before the kill
            if kind == "RunLogger":
                steps = {r.step for r in read_metrics(RunLayout.list_runs(tmp)[0].metrics_jsonl)}
            else:
                files = list(Path(tmp, "swanlog").glob("run-*/run-*.swanlab"))
                steps = _readable_swanlab_steps(files[0], "loss") if files else set()
            kept = len([s for s in steps if s < old_enough]) / max(old_enough, 1)
            results[kind] = kept
            print(f"  {kind:24s} {kept * 100:6.1f} % of {old_enough} steps older than 1 s survived", flush=True)
    return results


def _pct(value: float, base: float) -> str:
    return f"{(value / base - 1) * 100:+.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "logger.md"))
    parser.add_argument("--finalize-steps", default="40,1000", help="fit lengths of the finalize row")
    parser.add_argument("--only", choices=["finalize", "sinks"], help="run one part and replace its section of --out")
    parser.add_argument("--source-only", action="store_true",
                        help="fresh processes compile lightning_track from source (no bytecode), see fresh_env")
    parser.add_argument("--fit-one", help=argparse.SUPPRESS)  # internal: one fresh-process fit, prints its time
    parser.add_argument("--finalize-one", help=argparse.SUPPRESS)  # internal: one fresh-process finalize time
    args = parser.parse_args()
    global SOURCE_ONLY
    SOURCE_ONLY = args.source_only
    finalize_steps = [int(n) for n in args.finalize_steps.split(",")]
    if args.finalize_one:
        print(f"FINALIZE {finalize_once(args.finalize_one, args.steps)}")
        return
    if args.only == "finalize":
        print(f"finalize: on_train_end -> fit return, fresh processes ({args.repeats} repeats):")
        write_section(Path(args.out), FINALIZE_HEADING,
                      finalize_lines(bench_finalize(finalize_steps, args.repeats), args.repeats))
        return
    if args.only == "sinks":
        print(f"the default sinks' cost, fresh processes (best of {args.repeats}):")
        write_section(Path(args.out), SINKS_HEADING,
                      sinks_lines(bench_fit_fresh(args.steps, args.repeats, SINKS_KINDS), args.steps, args.repeats))
        return
    if args.fit_one:
        fit_once("none", 20)  # Lightning's own first-fit warm-up is not the logger's cost
        print(f"FIT {fit_once(args.fit_one, args.steps)}")
        return
    print("log_metrics + save, 5 scalars, training thread:")
    calls = bench_calls(args.calls)
    print(f"tiny-MLP fit, {args.steps} steps, log_every_n_steps=1 (best of {args.repeats}):")
    fit = bench_fit(args.steps, args.repeats)
    print(f"the same, each fit in a fresh process (best of {args.repeats}):")
    fresh = bench_fit_fresh(args.steps, args.repeats)
    print("SIGKILL durability (200 logs/s, kill after 4 s):")
    kill = bench_kill()
    print(f"finalize: on_train_end -> fit return, fresh processes ({args.repeats} repeats):")
    finalize = bench_finalize(finalize_steps, args.repeats)
    tb = calls["TensorBoardLogger"]
    tb_cpu = fresh["TensorBoardLogger"][2] - fresh["none"][2]
    lines = [
        "## RunLogger (issue: RunLogger and the run folder)",
        "",
        f"`python benchmarks/bench_logger.py --calls {args.calls} --steps {args.steps} --repeats {args.repeats}`"
        " — 2 cores, CPU, all anchors in the same run.",
        "",
        "| log_metrics + save, 5 scalars (training thread) | µs/call | vs TensorBoardLogger |",
        "| --- | ---: | ---: |",
        *[f"| {k} | {v:.1f} | {v / tb:.3f}× |" for k, v in calls.items()],
        "",
        f"Goal: RunLogger ≤ 1/10 of TensorBoardLogger → measured {calls['RunLogger'] / tb:.3f}×.",
        "",
        f"| tiny-MLP fit, {args.steps} steps, log every step | wall s (best of {args.repeats})"
        " | overhead vs no logger |",
        "| --- | ---: | ---: |",
        *[f"| {k} | {v:.2f} | {(v / fit['none'] - 1) * 100:+.1f} % |" for k, v in fit.items()],
        "",
        f"Goal: RunLogger ≤ +5 % → measured {(fit['RunLogger'] / fit['none'] - 1) * 100:+.1f} % over no logger;"
        f" {(fit['RunLogger'] / fit[NOOP] - 1) * 100:+.1f} % over a no-op Logger (the per-step logging path"
        " Lightning itself runs for any logger, which no logger can avoid).",
        "",
        "The same fits, each in a fresh process (one run per process, as users run them: every logger pays"
        " its own imports and start-up; above, repeated fits in one process share them):",
        "",
        f"| tiny-MLP fit, {args.steps} steps, fresh process (best of {args.repeats}) | fit wall s | vs none "
        "| whole process wall s | vs none | CPU s, all processes | extra CPU | extra CPU vs TensorBoardLogger's |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {k} | {f:.2f} | {(f / fresh['none'][0] - 1) * 100:+.1f} % | {w:.2f} | "
          f"{(w / fresh['none'][1] - 1) * 100:+.1f} % | {c:.2f} | {c - fresh['none'][2]:+.2f} s | "
          f"{(c - fresh['none'][2]) / max(tb_cpu, 1e-9):.2f}× |" for k, (f, w, c) in fresh.items()],
        "",
        f"Goals (fresh process): RunLogger's wall ≤ +5 % → fit {_pct(fresh['RunLogger'][0], fresh['none'][0])},"
        f" whole process {_pct(fresh['RunLogger'][1], fresh['none'][1])}; extra CPU of all its processes"
        f" ≤ 0.25× TensorBoardLogger's → {(fresh['RunLogger'][2] - fresh['none'][2]) / max(tb_cpu, 1e-9):.2f}×."
        " Fit wall: `trainer.fit` alone, after a warm-up fit (the logger's start and finalize inside it); whole"
        " process: from launch to exit, imports and the sink host's exit included.",
        "",
        "| SIGKILL after 4 s at 200 logs/s | steps older than 1 s that survived |",
        "| --- | ---: |",
        *[f"| {k} | {v * 100:.1f} % |" for k, v in kill.items()],
        "",
        "Goal: RunLogger ≥ 99 %.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    write_section(Path(args.out), FINALIZE_HEADING, finalize_lines(finalize, args.repeats))
    print(json.dumps({"calls_us": calls, "fit_s": fit, "fit_fresh_s": fresh, "kill_kept": kill}, indent=1))


if __name__ == "__main__":
    main()
