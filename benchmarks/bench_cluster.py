"""Cluster readiness costs, each beside its anchor in the same run.

    python benchmarks/bench_cluster.py [--steps 1000] [--repeats 3]

* Fit overhead of ``PreemptionHandler`` (single process: it only wraps the signal handlers, so the
  per-step cost should be ~0): tiny-MLP fit, no logger, with vs without the callback.
* Stop latency: a subprocess fit gets SIGTERM; seconds from the signal to the process exit with
  ``PreemptionHandler`` (checkpoint + summary + signal file) vs plain Lightning (its own SIGTERM
  handling, no checkpoint), both launched the same way.
* ``from_config`` (build RunLogger + callbacks from YAML, parse included) vs constructing the same
  objects directly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader, TensorDataset

from lightning_track import PreemptionHandler, RunLogger, StepCheckpoint, from_config
from lightning_track.training.toy import tiny_mlp


def fit_time(steps: int, callbacks: list) -> float:
    data = TensorDataset(torch.randn(4096, 32), torch.randn(4096, 1))
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    start = time.perf_counter()
    trainer.fit(tiny_mlp(), DataLoader(data, batch_size=32, shuffle=True))
    return time.perf_counter() - start


CHILD = textwrap.dedent('''
    import sys, time, lightning as L, torch
    from pathlib import Path
    from torch.utils.data import DataLoader, TensorDataset
    sys.path.insert(0, sys.argv[3])
    from lightning_track.training.toy import tiny_mlp
    from lightning_track import PreemptionHandler, RunLogger, StepCheckpoint
    root, handler = Path(sys.argv[1]), sys.argv[2] == "1"
    class Ready(L.Callback):
        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == 20:
                (root / "ready").write_text("1")
            time.sleep(0.01)
    cbs = [Ready()] + ([PreemptionHandler(), StepCheckpoint(every_n_steps=10**6)] if handler else [])
    logger = RunLogger("bench", "stop", root=root, sinks=()) if handler else False
    trainer = L.Trainer(max_steps=100000, logger=logger, callbacks=cbs, enable_checkpointing=handler,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    data = TensorDataset(torch.randn(4096, 32), torch.randn(4096, 1))
    trainer.fit(tiny_mlp(), DataLoader(data, batch_size=32))
''')


def stop_latency(handler: bool) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        root = Path(tmp) / "runs"
        root.mkdir()
        proc = subprocess.Popen([sys.executable, str(script), str(root), "1" if handler else "0",
                                 str(Path(__file__).parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (root / "ready").exists():
            if proc.poll() is not None:
                raise RuntimeError("child exited early")
            time.sleep(0.02)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        return time.perf_counter() - sent, code


def build_time(repeats: int, tmp: Path) -> tuple[float, float]:
    yaml_text = OmegaConf.to_yaml(OmegaConf.create({
        "logger": {"dataset": "b", "method": "cfg", "root": str(tmp), "sinks": []},
        "callbacks": {"step_checkpoint": {"every_n_steps": 1, "start_step": 76}, "preemption": {}},
    }))
    direct, configured = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        plain_cfg = OmegaConf.to_container(OmegaConf.create(yaml_text))
        logger = RunLogger("b", "direct", root=tmp, sinks=(), config=plain_cfg)
        logger = RunLogger("b", "direct", root=tmp, sinks=(), config=plain_cfg)
        callbacks = [StepCheckpoint(every_n_steps=1, start_step=76), PreemptionHandler()]
        direct.append(time.perf_counter() - start)
        logger.finalize("success")
        start = time.perf_counter()
        logger, callbacks = from_config(OmegaConf.create(yaml_text))
        configured.append(time.perf_counter() - start)
        logger.finalize("success")
    return min(direct), min(configured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("SWANLAB_MODE", "offline")
    console = Console()
    plain: list[float] = []
    with_handler: list[float] = []
    stops: dict[bool, list[float]] = {False: [], True: []}
    codes: dict[bool, int] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("fits + stops", total=args.repeats * 4)
        fit_time(50, [])  # warm-up
        for _ in range(args.repeats):
            plain.append(fit_time(args.steps, []))
            progress.advance(task)
            with_handler.append(fit_time(args.steps, [PreemptionHandler()]))
            progress.advance(task)
            for handler in (False, True):
                latency, codes[handler] = stop_latency(handler)
                stops[handler].append(latency)
                progress.advance(task)
    with tempfile.TemporaryDirectory() as tmp:
        direct, configured = build_time(max(args.repeats, 5), Path(tmp))
    rows = [
        ("fit, no callback (anchor)", f"{min(plain):.3f} s", "1.00"),
        ("fit + PreemptionHandler", f"{min(with_handler):.3f} s", f"{min(with_handler) / min(plain):.3f}"),
        (f"SIGTERM -> exit, plain Lightning (anchor, exit {codes[False]})", f"{min(stops[False]):.3f} s", "1.00"),
        (f"SIGTERM -> exit, PreemptionHandler (ckpt+summary+signal, exit {codes[True]})",
         f"{min(stops[True]):.3f} s", f"{min(stops[True]) / min(stops[False]):.2f}"),
        ("build logger+callbacks directly (anchor)", f"{direct * 1e3:.1f} ms", "1.00"),
        ("from_config(cfg)", f"{configured * 1e3:.1f} ms", f"{configured / direct:.2f}"),
    ]
    lines = [f"## cluster (bench_cluster.py, {args.steps} steps, min of {args.repeats})", "",
             "| case | time | ratio to anchor |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(lines) + "\n"
    console.print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
