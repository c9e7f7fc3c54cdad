"""2-process DDP fit on CPU (gloo) with RunLogger + StepCheckpoint + BatchTracker.

Run as a script: Lightning's DDP launcher re-executes it for rank 1. Each rank writes the lines its
training steps saw to ``<root>/seen_rank<r>.json`` (the ground truth the test compares with).
"""

import json
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers.logger import DummyExperiment
from support.trainers import make_trainer
from torch.utils.data import DataLoader

from lightning_track import BatchTracker, RunLogger, StepCheckpoint, TrackedDataset
from lightning_track.training.toy import LineDataset, ToyRegression


class UsesExperiment(L.Callback):
    """TensorBoard-style code on every rank: ``logger.experiment.add_*`` (Lightning's DummyExperiment above 0)."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        experiment = trainer.logger.experiment
        self.seen = {"dummy": isinstance(experiment, DummyExperiment), "type": type(experiment).__name__,
                     "returns": repr(experiment.add_scalar(f"ddp/rank{trainer.global_rank}", 1.0, 1)),
                     "any_call": repr(experiment.whatever_method(1, x=2))
                     if isinstance(experiment, DummyExperiment) else None}


if __name__ == "__main__":
    root = Path(sys.argv[1])
    logger = RunLogger("lines", "ddp", root=root, sinks=())
    trainer = make_trainer(root, max_steps=6, strategy="ddp", devices=2, logger=logger,
                           callbacks=[StepCheckpoint(every_n_steps=3), BatchTracker(), uses := UsesExperiment()])
    module = ToyRegression(hidden=8, seed=None)
    trainer.fit(module, DataLoader(TrackedDataset(LineDataset(n=40)), batch_size=3, shuffle=True))
    seen = [lines for _, _, lines in module.seen]
    truth = {"lines": seen, "losses": module.losses, "experiment": uses.seen}
    (root / f"seen_rank{trainer.global_rank}.json").write_text(json.dumps(truth))
