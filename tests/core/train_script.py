"""A real training script the process-level tests run as a subprocess.

usage: python train_script.py ROOT MAX_STEPS [--resume | --resume-no-ckpt] [--hang-at STEP] [--devices N] [--sleep S]
At --hang-at STEP it writes ROOT/hanging.txt (after a checkpoint at STEP is on disk) and sleeps,
so the test can SIGKILL it at a known point.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule


class HangAt(L.Callback):
    def __init__(self, step: int, marker: Path, sleep: float) -> None:
        self.step, self.marker, self.sleep = step, marker, sleep

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.sleep:
            time.sleep(self.sleep)
        if trainer.global_step == self.step and trainer.is_global_zero:
            trainer.loggers[0].flush()
            self.marker.write_text(str(self.step))
            time.sleep(600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--resume-no-ckpt", action="store_true", help="resume=True, training from step 0")
    parser.add_argument("--ckpt", help="resume=True from this checkpoint (instead of last)")
    parser.add_argument("--hang-at", type=int, default=-1)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    root = Path(args.root)
    L.seed_everything(0, verbose=False)
    logger = RunLogger("ds", "m", root=root, resume=args.resume or args.resume_no_ckpt or bool(args.ckpt),
                       config={"max_steps": args.max_steps}, sinks=("tensorboard", "swanlab"))  # + the opt-in sink
    callbacks = [ModelCheckpoint(every_n_train_steps=5, save_last=True, save_top_k=-1),
                 HangAt(args.hang_at, root / "hanging.txt", args.sleep)]
    trainer = L.Trainer(
        max_steps=args.max_steps, logger=logger, callbacks=callbacks, log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(DemoModule(max_steps=args.max_steps), datamodule=DemoDataModule(n_train=1024, n_val=64),
                ckpt_path=args.ckpt or ("last" if args.resume else None))
    if trainer.is_global_zero:
        print(f"RUN_DIR={logger.run_dir}")


if __name__ == "__main__":
    main()
