"""A short real fit for the pipeline tests: RunLogger + HealthGuard on the toy regression.

    python pipeline_train_script.py ROOT [--steps N] [--step-sleep S] [--nan-at N]
"""

from __future__ import annotations

import argparse
import warnings

import lightning as L

from lightning_track import HealthGuard, RunLogger
from lightning_track.training.toy import ToyRegression, regression_data

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("root")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--step-sleep", type=float, default=0.0)
parser.add_argument("--nan-at", type=int, default=None)
args = parser.parse_args()

trainer = L.Trainer(max_steps=args.steps, logger=RunLogger("toy", "pipeline", root=args.root, sinks=()),
                    callbacks=[HealthGuard(warmup_steps=5)], accelerator="cpu", devices=1,
                    enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                    log_every_n_steps=1)
trainer.fit(ToyRegression(step_sleep=args.step_sleep, nan_at=args.nan_at), regression_data())
