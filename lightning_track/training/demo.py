"""A small, real training job on built-in synthetic data: what ``lt-demo`` runs.

Also the tiny model the tests and benchmarks train, so every part is exercised on a real fit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..run.config import load_config

__all__ = ["BlobsDataset", "DemoModule", "DemoDataModule", "DEMO_CONFIG", "load_demo_config"]

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "resources" / "demo.yaml"


class BlobsDataset(Dataset):
    """Gaussian blobs, one per class; items are dicts with ``x``, ``y`` and the line id ``idx``."""

    def __init__(self, n: int = 2048, dim: int = 16, classes: int = 4, seed: int = 0, noise: float = 1.0) -> None:
        generator = torch.Generator().manual_seed(seed)
        centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) * 2.0
        self.y = torch.randint(0, classes, (n,), generator=generator)
        self.x = centers[self.y] + noise * torch.randn(n, dim, generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"x": self.x[index], "y": self.y[index], "idx": index}


class DemoModule(L.LightningModule):
    """An MLP classifier with a linear-warmup, cosine-decay learning rate."""

    def __init__(
        self,
        dim: int = 16,
        hidden: int = 64,
        classes: int = 4,
        lr: float = 0.01,
        warmup_steps: int = 10,
        max_steps: int = 200,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        logits = self(batch["x"])
        loss = nn.functional.cross_entropy(logits, batch["y"])
        acc = (logits.argmax(-1) == batch["y"]).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True)
        self.log(f"{stage}/acc", acc, on_step=on_step, on_epoch=not on_step)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        warmup, total = self.hparams.warmup_steps, max(self.hparams.max_steps, 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class DemoDataModule(L.LightningDataModule):
    def __init__(self, n_train: int = 2048, n_val: int = 512, dim: int = 16, classes: int = 4,
                 batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.train_set = BlobsDataset(hp.n_train, hp.dim, hp.classes, seed=0)
        self.val_set = BlobsDataset(hp.n_val, hp.dim, hp.classes, seed=1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)


def load_demo_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """The demo config (``configs/demo.yaml``) merged with ``key=value`` overrides."""
    return load_config(path or DEMO_CONFIG, overrides)
