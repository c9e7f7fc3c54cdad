"""A short real fit for the pipeline tests: RunLogger + HealthGuard on the toy regression.

    python pipeline_train_script.py ROOT [--steps N] [--step-sleep S] [--nan-at N]
                                         [--preempt] [--every N] [--devices N] [--nodes N] [--checkpoints]

``--preempt``: as a job that Slurm may stop and requeue: a PreemptionHandler and a StepCheckpoint every
``--every`` steps; a requeued job (``SLURM_RESTART_COUNT`` > 0) continues its run (``resume=True``; the
step's script names the folder in ``LIGHTNING_TRACK_RUN_DIR``) from ``last``. ``--devices N``: DDP over N
CPU processes (gloo); under ``srun --ntasks=N`` each task is one rank (Lightning's SLURMEnvironment).
``--checkpoints``: a StepCheckpoint and a ModelCheckpoint keeping the two best by ``train/loss``, every ``--every``.
"""

from __future__ import annotations

import argparse
import os
import warnings

import lightning as L

from lightning_track import HealthGuard, PreemptionHandler, RunLogger, StepCheckpoint
from lightning_track.training.toy import ToyRegression, regression_data

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("root")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--step-sleep", type=float, default=0.0)
parser.add_argument("--nan-at", type=int, default=None)
parser.add_argument("--preempt", action="store_true")
parser.add_argument("--every", type=int, default=5)
parser.add_argument("--devices", type=int, default=1)
parser.add_argument("--nodes", type=int, default=1)
parser.add_argument("--checkpoints", action="store_true")
args = parser.parse_args()

resume = args.preempt and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
callbacks: list[L.Callback] = [HealthGuard(warmup_steps=5)]
if args.preempt:
    callbacks += [PreemptionHandler(), StepCheckpoint(every_n_steps=args.every)]
if args.checkpoints:
    from lightning.pytorch.callbacks import ModelCheckpoint

    callbacks += [StepCheckpoint(every_n_steps=args.every),
                  ModelCheckpoint(monitor="train/loss", mode="min", every_n_train_steps=args.every, save_top_k=2)]
trainer = L.Trainer(max_steps=args.steps, logger=RunLogger("toy", "pipeline", root=args.root, sinks=(), resume=resume),
                    callbacks=callbacks, accelerator="cpu", devices=args.devices, num_nodes=args.nodes,
                    strategy="ddp" if args.devices > 1 else "auto", enable_progress_bar=False,
                    enable_checkpointing=args.preempt or args.checkpoints, enable_model_summary=False,
                    log_every_n_steps=1)
trainer.fit(ToyRegression(step_sleep=args.step_sleep, nan_at=args.nan_at), regression_data(),
            ckpt_path="last" if resume else None)
