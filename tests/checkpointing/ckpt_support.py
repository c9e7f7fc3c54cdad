"""Tiny real models and data for the checkpointing tests (CPU, a few dozen steps each)."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


class LineDataset(Dataset):
    """``n`` data lines; ``x[0]`` is the line number, so a training step can tell which lines it got."""

    def __init__(self, n: int = 64, dim: int = 4, with_ids: bool = False) -> None:
        self.n, self.dim, self.with_ids = n, dim, with_ids

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(index)
        x = torch.randn(self.dim, generator=g)
        x[0] = float(index)
        sample = {"x": x, "y": torch.tensor([float(x[1:].sum())])}
        if self.with_ids:
            sample["idx"] = index
        return sample


class TupleDataset(LineDataset):
    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        sample = super().__getitem__(index)
        return sample["x"], sample["y"]


class TinyModule(L.LightningModule):
    """Linear regression that records the line numbers each training step saw."""

    def __init__(self, dim: int = 4, hidden: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        self.seen: list[tuple[int, int, list[int]]] = []  # (global_step before the step, batch_idx, lines)
        self.losses: list[float] = []
        self.batch_keys: list[list[str]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, dict):
            self.batch_keys.append(sorted(batch))
            x, y = batch["x"], batch["y"]
        else:
            self.batch_keys.append([f"len={len(batch)}"])
            x, y = batch
        self.seen.append((self.global_step, batch_idx, [int(v) for v in x[:, 0].tolist()]))
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.losses.append(float(loss))
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def make_trainer(root: Any, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def loader(dataset: Dataset, batch_size: int = 4, shuffle: bool = True, seed: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))
