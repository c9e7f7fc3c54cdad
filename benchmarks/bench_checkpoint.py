"""StepCheckpoint and BatchTracker beside their anchors, in the same run.

    python benchmarks/bench_checkpoint.py [--mb 100] [--saves 5] [--steps 2000] [--repeats 3]
                                          [--out benchmarks/results/checkpointing.md]

1. Stall per checkpoint on the training thread (a ~100 MB model, SGD so the file is ~100 MB):
   Lightning's ModelCheckpoint + default TorchCheckpointIO (the anchor) vs StepCheckpoint sync
   (temp file beside the target + fsync + rename) vs StepCheckpoint async (AsyncCheckpointIO).
   The stall is the time spent inside the checkpoint callback's ``on_train_batch_end``. StepCheckpoint
   again with the hash taken while writing (what a RunLogger's checkpoints.json gets: SHA-256 of the bytes
   as torch.save streams them), beside the read it replaces (hashing the file back, timed alone).
2. BatchTracker overhead per optimizer step: tiny-MLP fit of N steps with TrackedDataset +
   BatchTracker vs the same fit without them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' helpers: support.*
warnings.filterwarnings("ignore")


def _timed(cls: type) -> type:
    """A subclass of a checkpoint callback that records how long each on_train_batch_end blocks."""

    class Timed(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stalls: list[float] = []

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            super().on_train_batch_end(*args, **kwargs)
            self.stalls.append(time.perf_counter() - start)

    return Timed


def _hashing(cls: type) -> type:
    """StepCheckpoint whose writer hashes every file as it writes it, as under a RunLogger (here the hash
    goes nowhere: the benchmark has no logger)."""

    class Hashing(cls):  # type: ignore[misc, valid-type]
        hashes: list[str] = []

        def _written_hook(self, trainer: Any) -> Any:
            return lambda path, digest, size: self.hashes.append(digest)

    return Hashing


def bench_stall(mb: int, saves: int, rounds: int = 1) -> dict[str, dict[str, float]]:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from support.trainers import make_trainer
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_track import StepCheckpoint

    width = 1024
    rows = max(1, mb * 1024 * 1024 // 4 // width)

    class Big(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.big = torch.nn.Parameter(torch.zeros(rows, width))
            self.head = torch.nn.Linear(width, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            (x,) = batch
            return self.head(x + self.big[:1]).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    variants = {
        "Lightning ModelCheckpoint (anchor)": lambda: _timed(ModelCheckpoint)(every_n_train_steps=1, save_top_k=-1),
        "StepCheckpoint sync": lambda: _timed(StepCheckpoint)(every_n_steps=1),
        "StepCheckpoint async": lambda: _timed(StepCheckpoint)(every_n_steps=1, async_save=True),
        "StepCheckpoint sync, hash while writing": lambda: _timed(_hashing(StepCheckpoint))(every_n_steps=1),
        "StepCheckpoint async, hash while writing":
            lambda: _timed(_hashing(StepCheckpoint))(every_n_steps=1, async_save=True),
    }
    data = DataLoader(TensorDataset(torch.randn(64, width)), batch_size=8)
    samples: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):  # variants interleaved, so a burst of load elsewhere hits every one alike
        for name, make in _progress(variants.items(), "checkpoint stall"):
            with tempfile.TemporaryDirectory() as tmp:
                callback = make()
                trainer = make_trainer(tmp, max_steps=saves + 1, logger=False, callbacks=[callback])
                start = time.perf_counter()
                trainer.fit(Big(), data)
                total = time.perf_counter() - start
                stalls = [s for s in callback.stalls if s > 0.0005][1:] or callback.stalls  # drop the warm-up
                files = [p for p in Path(tmp).rglob("*.ckpt") if not p.is_symlink()]
                size = max((p.stat().st_size for p in files), default=0)
                row = samples.setdefault(name, {"stall_s": [], "fit_s": [], "file_mb": []})
                row["stall_s"].append(statistics.median(stalls))
                row["fit_s"].append(total)
                row["file_mb"].append(size / 2**20)
                if name == "StepCheckpoint sync" and files:  # the read that hashing while writing saves
                    from lightning_track.folder.fileio import file_sha256

                    reads = []
                    for path in files:
                        start = time.perf_counter()
                        file_sha256(path)
                        reads.append(time.perf_counter() - start)
                    row = samples.setdefault("read back to hash (lineage thread)",
                                             {"stall_s": [], "fit_s": [], "file_mb": []})
                    row["stall_s"].append(statistics.median(reads))
                    row["fit_s"].append(0.0)
                    row["file_mb"].append(size / 2**20)
    # the best round of each: on a shared machine the least disturbed one is the closest to the cost itself
    return {name: {key: min(values) for key, values in row.items()} for name, row in samples.items()}


def bench_tracker(steps: int, repeats: int) -> dict[str, float]:
    from support.trainers import make_trainer

    from lightning_track import BatchTracker, TrackedDataset
    from lightning_track.training.toy import LineDataset, ToyRegression, line_loader

    timings: dict[str, list[float]] = {"none": [], "BatchTracker": []}
    hook_us: list[float] = []
    for _ in _progress(range(repeats), "batch tracker"):
        for kind in timings:
            with tempfile.TemporaryDirectory() as tmp:
                dataset = LineDataset(n=512)
                callbacks = []
                if kind == "BatchTracker":
                    dataset, callbacks = TrackedDataset(dataset), [_timed_hooks(BatchTracker)()]
                trainer = make_trainer(tmp, max_steps=steps, logger=False, callbacks=callbacks)
                start = time.perf_counter()
                trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(dataset, batch_size=8))
                timings[kind].append(time.perf_counter() - start)
                if callbacks:
                    hook_us.append(callbacks[0].spent / steps * 1e6)
    none, tracked = min(timings["none"]), min(timings["BatchTracker"])
    return {"none_s": none, "tracker_s": tracked, "per_step_us": (tracked - none) / steps * 1e6,
            "none_step_us": none / steps * 1e6, "hook_us": statistics.median(hook_us)}


def _timed_hooks(cls: type) -> type:
    """A BatchTracker that adds up the time its hooks take on the training thread."""

    class Timed(cls):  # type: ignore[misc, valid-type]
        spent = 0.0

    for hook in ("on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end"):
        def wrapper(self: Any, *args: Any, _hook: str = hook, **kwargs: Any) -> None:
            start = time.perf_counter()
            getattr(cls, _hook)(self, *args, **kwargs)
            self.spent += time.perf_counter() - start

        setattr(Timed, hook, wrapper)
    return Timed


def _progress(items: Any, label: str) -> Any:
    from rich.progress import track

    return track(list(items), description=label, transient=True)


def render(stall: dict[str, dict[str, float]], tracker: dict[str, float] | None, mb: int, saves: int,
           steps: int) -> str:
    anchor = stall["Lightning ModelCheckpoint (anchor)"]["stall_s"]
    lines = [
        "## Checkpointing (StepCheckpoint, BatchTracker)",
        "",
        "Measured by `python benchmarks/bench_checkpoint.py` on this machine (CPU), same run for every row.",
        "",
        f"### Stall per checkpoint, ~{mb} MB model, {saves} saves (median, training thread; best round)",
        "",
        "| writer | file | stall per save | vs anchor | whole fit |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in stall.items():
        if not row["fit_s"]:  # not a writer: the time of the read alone, off the training thread
            lines.append(f"| {name} | {row['file_mb']:.0f} MB | ({row['stall_s'] * 1000:.0f} ms, other thread) | "
                         "- | - |")
            continue
        lines.append(f"| {name} | {row['file_mb']:.0f} MB | {row['stall_s'] * 1000:.0f} ms | "
                     f"{row['stall_s'] / anchor:.2f}x | {row['fit_s']:.1f} s |")
    if tracker is None:
        return "\n".join(lines)
    lines += [
        "",
        f"### BatchTracker overhead, tiny MLP, {steps} steps (best of repeats)",
        "",
        "| fit | wall time | per step |",
        "| --- | --- | --- |",
        f"| no tracker (anchor) | {tracker['none_s']:.2f} s | {tracker['none_step_us']:.0f} µs |",
        f"| TrackedDataset + BatchTracker | {tracker['tracker_s']:.2f} s | "
        f"{tracker['per_step_us']:+.0f} µs ({tracker['tracker_s'] / tracker['none_s']:.2f}x) |",
        "",
        f"Time inside BatchTracker's hooks (ids, loss, one JSONL line): {tracker['hook_us']:.0f} µs per step"
        " (median over repeats); the fit-level difference is within run-to-run noise when it is smaller.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "checkpointing.md")
    parser.add_argument("--stall-only", action="store_true", help="skip the BatchTracker part")
    parser.add_argument("--stall-rounds", type=int, default=1, help="rounds of every writer; the best is shown")
    args = parser.parse_args(argv)
    stall = bench_stall(args.mb, args.saves, args.stall_rounds)
    if args.stall_only:
        text = render(stall, None, args.mb, args.saves, args.steps)
        print(text)
        return 0
    tracker = bench_tracker(args.steps, args.repeats)
    text = render(stall, tracker, args.mb, args.saves, args.steps)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
