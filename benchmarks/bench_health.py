"""HealthGuard overhead: a tiny-MLP fit of 2000 steps with and without the guard, in the same run.

    python benchmarks/bench_health.py [--steps 2000] [--repeats 3]

Configurations (each run ``--repeats`` times, interleaved; min and median reported, min being the
least disturbed by other load on a shared machine). The direct cost is also measured: the time
spent inside the guard's per-step hooks.
* ``no guard``: the anchor.
* ``HealthGuard()`` defaults: 100 closely checked warmup steps (loss sync, foreach grad norm, one
  all-reduce per step), then cheap device-side accumulation looked at every 100 steps.
* ``HealthGuard(warmup_steps=steps)``: every step closely checked (the worst case).
* ``HealthGuard(stall_timeout=60)``: the defaults plus the stall watchdog thread.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader, TensorDataset

from lightning_track import HealthGuard
from lightning_track.training.toy import tiny_mlp


class TimedGuard(HealthGuard):
    """HealthGuard that also adds up the time spent inside its per-step hooks (the direct cost)."""

    hook_seconds = 0.0

    def _timed(name: str):  # noqa: N805 - a decorator factory used in the class body
        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            start = time.perf_counter()
            try:
                return getattr(HealthGuard, name)(self, *args, **kwargs)
            finally:
                self.hook_seconds += time.perf_counter() - start
        return wrapper

    on_before_backward = _timed("on_before_backward")
    on_before_optimizer_step = _timed("on_before_optimizer_step")
    on_train_batch_end = _timed("on_train_batch_end")


def fit_seconds(steps: int, callbacks: list, root: Path) -> float:
    torch.manual_seed(0)
    x, y = torch.randn(4096, 32), torch.randn(4096, 1)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=root, log_every_n_steps=1)
    data = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    start = time.perf_counter()
    trainer.fit(tiny_mlp(), data)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    configs = {
        "no guard (anchor)": lambda: [],
        "HealthGuard() defaults": lambda: [TimedGuard()],
        f"HealthGuard(warmup_steps={args.steps})": lambda: [TimedGuard(warmup_steps=args.steps)],
        "HealthGuard(stall_timeout=60)": lambda: [TimedGuard(stall_timeout=60)],
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    hooks: dict[str, list[float]] = {name: [] for name in configs}
    console = Console()
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console, transient=True) as progress:
        fit_seconds(50, [], Path(tmp))  # warm up imports and allocator
        task = progress.add_task("fits", total=args.repeats * len(configs))
        for _ in range(args.repeats):
            for name, make in configs.items():
                callbacks = make()
                times[name].append(fit_seconds(args.steps, callbacks, Path(tmp)))
                hooks[name].append(sum(c.hook_seconds for c in callbacks))
                progress.advance(task)
    anchor = statistics.median(times["no guard (anchor)"])
    best_anchor = min(times["no guard (anchor)"])
    lines = [f"| configuration | fit time, {args.steps} steps (min / median of {args.repeats}) | ratio vs no guard"
             " (min / median) | time inside the guard's hooks per step (median) |",
             "| --- | --- | --- | --- |"]
    for name, values in times.items():
        low, med = min(values), statistics.median(values)
        inside = statistics.median(hooks[name]) / args.steps * 1e6
        lines.append(f"| {name} | {low:.2f} s / {med:.2f} s | {low / best_anchor:.3f}× / {med / anchor:.3f}× |"
                     f" {inside:.1f} µs |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
