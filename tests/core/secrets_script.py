"""A real training script that knows secrets three ways (its command line, its config, its environment) and
prints them, as careless code does. usage: python secrets_script.py ROOT [ARGS ...] (ARGS only recorded)."""

from __future__ import annotations

import os
import sys

import lightning as L

from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule


def main() -> None:
    root = sys.argv[1]
    config = {"model": {"hf_token": "hf_configsecret01", "max_new_tokens": 64, "tokenizer_name": "gpt2",
                        "pad_token_id": 0}, "author": "ada", "hub_model_id": "ada/tiny",
              "db": "postgres://ada:dbsecret99@db.example:5432/runs"}
    logger = RunLogger("ds", "m", root=root, config=config)
    trainer = L.Trainer(max_steps=3, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(DemoModule(max_steps=3), datamodule=DemoDataModule(n_train=64, n_val=16))
    print("argv", sys.argv[2:], "config token hf_configsecret01", "env", os.environ["WANDB_API_KEY"], flush=True)
    print(f"RUN_DIR={logger.run_dir}")


if __name__ == "__main__":
    main()
