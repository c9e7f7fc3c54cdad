"""2-process DDP fit on CPU (gloo) with RunLogger + StepCheckpoint + BatchTracker.

Run as a script: Lightning's DDP launcher re-executes it for rank 1. Each rank writes the lines its
training steps saw to ``<root>/seen_rank<r>.json`` (the ground truth the test compares with).
"""

import json
import sys
from pathlib import Path

from support.trainers import make_trainer
from torch.utils.data import DataLoader

from lightning_track import BatchTracker, RunLogger, StepCheckpoint, TrackedDataset
from lightning_track.training.toy import LineDataset, ToyRegression

if __name__ == "__main__":
    root = Path(sys.argv[1])
    logger = RunLogger("lines", "ddp", root=root, sinks=())
    trainer = make_trainer(root, max_steps=6, strategy="ddp", devices=2, logger=logger,
                           callbacks=[StepCheckpoint(every_n_steps=3), BatchTracker()])
    module = ToyRegression(hidden=8, seed=None)
    trainer.fit(module, DataLoader(TrackedDataset(LineDataset(n=40)), batch_size=3, shuffle=True))
    seen = [lines for _, _, lines in module.seen]
    truth = {"lines": seen, "losses": module.losses}
    (root / f"seen_rank{trainer.global_rank}.json").write_text(json.dumps(truth))
