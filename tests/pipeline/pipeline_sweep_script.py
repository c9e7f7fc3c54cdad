"""One trial of the sweep tests: a short real fit of the toy regression with config overrides.

    python pipeline_sweep_script.py ROOT [model.lr=0.01 model.hidden=8 trainer.max_steps=10 ...]

The overrides are OmegaConf dotlist words, as ``lt-demo`` and ``from_config`` scripts take them.
"""

from __future__ import annotations

import sys
import warnings

import lightning as L
from omegaconf import OmegaConf

from lightning_track import RunLogger
from lightning_track.training.toy import ToyRegression, regression_data

warnings.filterwarnings("ignore")

root, overrides = sys.argv[1], sys.argv[2:]
cfg = OmegaConf.merge(OmegaConf.create({"model": {"lr": 0.05, "hidden": 0}, "trainer": {"max_steps": 10}}),
                      OmegaConf.from_dotlist(overrides))
plain = OmegaConf.to_container(cfg)
trainer = L.Trainer(max_steps=cfg.trainer.max_steps, logger=RunLogger("toy", "sweep", root=root, sinks=(),
                                                                      config=plain),
                    accelerator="cpu", devices=1, enable_progress_bar=False, enable_checkpointing=False,
                    enable_model_summary=False, log_every_n_steps=1)
trainer.fit(ToyRegression(lr=cfg.model.lr, hidden=cfg.model.hidden), regression_data())
