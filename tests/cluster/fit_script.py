"""A real training script the cluster tests run as a subprocess (plain python, torchrun, ddp_spawn).

usage: python fit_script.py ROOT MAX_STEPS [--resume] [--ready-at STEP] [--sleep S]
                            [--strategy auto|ddp|ddp_spawn] [--devices N] [--nodes N] [--every N]
                            [--system-interval S] [--stall-floor S]

RunLogger + StepCheckpoint(every_n_steps=--every) + HealthGuard + PreemptionHandler on the demo model.
At --ready-at STEP rank 0 writes ROOT/ready.txt; from then on every step sleeps --sleep seconds,
so a test can send a real signal while training is running. Prints RUN_DIR=... on rank 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L

from lightning_track import HealthGuard, PreemptionHandler, RunLogger, StepCheckpoint
from lightning_track.training.demo import DemoDataModule, DemoModule


class ReadyAt(L.Callback):
    def __init__(self, step: int, marker: Path, sleep: float) -> None:
        self.step, self.marker, self.sleep = step, marker, sleep

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if self.step >= 0 and trainer.global_step >= self.step:
            if trainer.global_step == self.step and trainer.is_global_zero:
                trainer.loggers[0].flush()
                self.marker.write_text(str(self.step))
            time.sleep(self.sleep)


def build(root: Path, max_steps: int, *, resume: bool = False, ready_at: int = -1, sleep: float = 0.0,
          strategy: str = "auto", devices: int = 1, every: int = 10, nodes: int = 1,
          system_interval: float = 10.0, stall_floor: float | None = None) -> tuple[L.Trainer, RunLogger]:
    """The trainer every cluster test uses (also in-process, for resuming)."""
    logger = RunLogger("blobs", "cluster", root=root, resume=resume, sinks=("tensorboard",),
                       config={"max_steps": max_steps, "strategy": strategy}, system_interval=system_interval)
    guard = HealthGuard(warmup_steps=3, loss_threshold=None, stall_timeout="auto" if stall_floor else None,
                        stall_floor=stall_floor, stall_grace=3)
    callbacks = [PreemptionHandler(), guard,
                 StepCheckpoint(every_n_steps=every), ReadyAt(ready_at, root / "ready.txt", sleep)]
    trainer = L.Trainer(
        max_steps=max_steps, logger=logger, callbacks=callbacks, log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=devices,
        num_nodes=nodes, strategy=strategy, num_sanity_val_steps=0, limit_val_batches=0,
    )
    return trainer, logger


def fit(trainer: L.Trainer, max_steps: int, resume: bool) -> None:
    trainer.fit(DemoModule(max_steps=max_steps), datamodule=DemoDataModule(n_train=1024, n_val=64),
                ckpt_path="last" if resume else None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ready-at", type=int, default=-1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--system-interval", type=float, default=10.0)
    parser.add_argument("--stall-floor", type=float, help="HealthGuard(stall_timeout='auto') with this floor")
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    trainer, logger = build(Path(args.root), args.max_steps, resume=args.resume, ready_at=args.ready_at,
                            sleep=args.sleep, strategy=args.strategy, devices=args.devices, every=args.every,
                            nodes=args.nodes, system_interval=args.system_interval,
                            stall_floor=args.stall_floor)
    fit(trainer, args.max_steps, args.resume)
    if trainer.is_global_zero:
        print(f"RUN_DIR={logger.run_dir}", flush=True)


if __name__ == "__main__":
    main()
