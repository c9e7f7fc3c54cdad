"""Trains forever, saving a ~8 MB checkpoint every step; the test SIGKILLs it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ckpt_support import LineDataset, TinyModule, loader, make_trainer  # noqa: E402

from lightning_track import StepCheckpoint  # noqa: E402

if __name__ == "__main__":
    root = sys.argv[1]
    trainer = make_trainer(root, max_steps=100_000, logger=False, callbacks=[StepCheckpoint(every_n_steps=1)])
    trainer.fit(TinyModule(dim=4, hidden=1024), loader(LineDataset(n=32)))
