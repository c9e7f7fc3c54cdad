"""A pipeline step that evaluates one checkpoint (``{train.best_ckpt}``) in a run of its own.

    python pipeline_ckpt_eval_script.py ROOT CKPT
"""

from __future__ import annotations

import sys
import warnings

import torch

from lightning_track import RunLogger
from lightning_track.training.toy import ToyRegression, regression_data

warnings.filterwarnings("ignore")

root, ckpt = sys.argv[1], sys.argv[2]
model = ToyRegression.load_from_checkpoint(ckpt, map_location="cpu").eval()
with torch.no_grad():
    losses = [torch.nn.functional.mse_loss(model(x), y).item() for x, y in regression_data()]
logger = RunLogger("toy", "eval", root=root, sinks=(), console=False, system_interval=0)
logger.log_metrics({"eval/loss": sum(losses) / len(losses)}, step=0)
logger.finalize("success")
print(f"evaluated {ckpt}")
