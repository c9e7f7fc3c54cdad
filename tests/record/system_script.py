"""A fit that samples system metrics every 0.2 s: ``python system_script.py ROOT [ddp-nodes]``.

With ``ddp-nodes`` it is one node of a two-node run (``torchrun --nnodes=2 --node_rank=K``).
"""

from __future__ import annotations

import sys
import time

import lightning as L

from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule

ROOT = sys.argv[1]
nodes = {"strategy": "ddp", "num_nodes": 2, "devices": 1} if sys.argv[2:] == ["ddp-nodes"] else {}


class Slow(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        time.sleep(0.05)


logger = RunLogger("system", "test", root=ROOT, sinks=("tensorboard",), system_interval=0.2)
trainer = L.Trainer(max_steps=40, logger=logger, callbacks=[Slow()], log_every_n_steps=1, enable_progress_bar=False,
                    enable_model_summary=False, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                    **nodes)
trainer.fit(DemoModule(max_steps=40), datamodule=DemoDataModule(n_train=512, n_val=32, num_workers=1))
