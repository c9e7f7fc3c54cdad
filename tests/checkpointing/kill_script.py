"""Trains forever, saving a ~8 MB checkpoint every step; the test SIGKILLs it."""

import sys

from support.trainers import make_trainer

from lightning_track import StepCheckpoint
from lightning_track.training.toy import LineDataset, ToyRegression, line_loader

if __name__ == "__main__":
    root = sys.argv[1]
    trainer = make_trainer(root, max_steps=100_000, logger=False, callbacks=[StepCheckpoint(every_n_steps=1)])
    trainer.fit(ToyRegression(dim=4, hidden=1024, seed=None), line_loader(LineDataset(n=32)))
