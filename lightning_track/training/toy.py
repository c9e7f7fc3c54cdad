"""The toy model the tests and benchmarks train (as Lightning ships ``demos.BoringModel``).

A small regression that a CPU trains in milliseconds a step, so a fit of a few dozen steps exercises
every part of a run folder, and framework overhead shows in a benchmark. It can be broken on purpose
at a chosen optimizer step (NaN loss or gradient, a scaled loss, a sleep, an exception) for the
health checks, and it remembers which data lines each step saw for batch tracking. Pure torch and
Lightning: nothing of lightning_track is needed to use it.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["ToyRegression", "tiny_mlp", "LineDataset", "TupleLineDataset", "regression_data", "line_loader"]

# Knobs of ToyRegression beside its shape, with their defaults (a set one is a hyperparameter).
_KNOBS: dict[str, Any] = {
    "activation": "tanh", "nan_at": None, "nan_rank": None, "nan_grad_at": None, "scale_at": None, "scale": 1.0,
    "offset": 0.0, "sleep_at": None, "sleep_s": 0.0, "raise_at": None, "frozen": False, "lr_warmup": None,
    "step_sleep": 0.0,
}


class ToyRegression(L.LightningModule):
    """``dim`` inputs -> 1 output: linear (``hidden=0``) or one hidden layer.

    Faults (each at ``trainer.global_step`` before the optimizer step, i.e. in the batch that makes
    step N + 1): ``nan_at`` (on ``nan_rank`` only, if given), ``nan_grad_at``, ``scale_at`` (loss x
    ``scale``), ``sleep_at`` (``sleep_s``), ``raise_at`` (``raise_exc``); ``offset`` added to every
    loss, ``frozen`` (a constant loss: no improvement), ``lr_warmup`` (a linear warmup from 0),
    ``step_sleep`` (every step this slow).

    Records: ``seen`` (global step, batch index, data lines: ``x[:, 0]`` of a :class:`LineDataset`),
    ``losses``, ``batch_keys``.
    """

    def __init__(self, dim: int = 4, hidden: int = 0, lr: float = 0.05, activation: str = "tanh",
                 seed: int | None = 0, record: bool = True, nan_at: int | None = None, nan_rank: int | None = None,
                 nan_grad_at: int | None = None, scale_at: int | None = None, scale: float = 1.0, offset: float = 0.0,
                 sleep_at: int | None = None, sleep_s: float = 0.0, raise_at: int | None = None,
                 raise_exc: BaseException | None = None, frozen: bool = False, lr_warmup: int | None = None,
                 step_sleep: float = 0.0) -> None:
        super().__init__()
        given = dict(locals())
        # The model's hyperparameters are its shape and learning rate; a fault or knob is one only when
        # set (so a saved config.json reads {"dim": 4, "hidden": 8, "lr": 0.05}, and rebuilds the model).
        self.save_hyperparameters({
            "dim": dim, "hidden": hidden, "lr": lr,
            **{k: given[k] for k, default in _KNOBS.items() if given[k] != default},
        })
        self.knobs = {k: given[k] for k in _KNOBS}
        self.record = record
        if seed is not None:
            torch.manual_seed(seed)
        act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
        self.net = (torch.nn.Linear(dim, 1) if hidden <= 0 else
                    torch.nn.Sequential(torch.nn.Linear(dim, hidden), act(), torch.nn.Linear(hidden, 1)))
        self.raise_exc = raise_exc
        self.seen: list[tuple[int, int, list[int]]] = []
        self.losses: list[float] = []
        self.batch_keys: list[list[str]] = []
        first = self.net if isinstance(self.net, torch.nn.Linear) else self.net[0]
        first.weight.register_hook(self._grad_hook)

    def _grad_hook(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan") if self.global_step == self.knobs["nan_grad_at"] else grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        k = self.knobs
        if isinstance(batch, dict):
            x, y = batch["x"], batch["y"]
        else:
            x, y = batch[0], batch[1]
        if self.record:  # (a benchmark switches this off: it costs a device sync per step)
            self.batch_keys.append(sorted(batch) if isinstance(batch, dict) else [f"len={len(batch)}"])
            self.seen.append((self.global_step, batch_idx, [int(v) for v in x[:, 0].tolist()]))
        loss = torch.nn.functional.mse_loss(self(x), y) + k["offset"]
        if k["frozen"]:
            loss = sum((p * 0).sum() for p in self.parameters()) + 1.0
        step = self.global_step
        if step == k["nan_at"] and (k["nan_rank"] is None or self.global_rank == k["nan_rank"]):
            loss = loss * float("nan")
        if step == k["scale_at"]:
            loss = loss * k["scale"]
        if step == k["sleep_at"]:
            time.sleep(k["sleep_s"])
        if k["step_sleep"]:
            time.sleep(k["step_sleep"])
        if step == k["raise_at"] and self.raise_exc is not None:
            raise self.raise_exc
        if self.record:
            self.losses.append(float(loss))
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        if self.knobs["lr_warmup"] is None:
            return opt
        warm = self.knobs["lr_warmup"]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / warm))  # starts at lr 0
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def tiny_mlp() -> ToyRegression:
    """The fit benchmarks' model: 32 -> 64 -> 1, small enough that a framework's overhead shows;
    it records nothing (a record costs a device sync per step)."""
    return ToyRegression(dim=32, hidden=64, lr=0.01, activation="relu", seed=None, record=False)


def regression_data(n: int = 512, dim: int = 4, batch_size: int = 8, seed: int = 1, shuffle: bool = False
                    ) -> DataLoader:
    """A fixed linear target plus noise; without shuffling, batch k holds samples k*batch_size.."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.tensor([0.5, -0.3, 0.2, 0.4] * (dim // 4 + 1))[:dim].unsqueeze(1)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


class LineDataset(Dataset):
    """``n`` data lines; ``x[0]`` is the line number, so a training step can tell which lines it got."""

    def __init__(self, n: int = 64, dim: int = 4, with_ids: bool = False) -> None:
        self.n, self.dim, self.with_ids = n, dim, with_ids

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        g = torch.Generator().manual_seed(index)
        x = torch.randn(self.dim, generator=g)
        x[0] = float(index)
        sample: dict[str, Any] = {"x": x, "y": torch.tensor([float(x[1:].sum())])}
        if self.with_ids:
            sample["idx"] = index
        return sample


class TupleLineDataset(LineDataset):
    """The same lines as ``(x, y)`` tuples."""

    def __getitem__(self, index: int) -> Any:
        sample = super().__getitem__(index)
        return sample["x"], sample["y"]


def line_loader(dataset: Dataset, batch_size: int = 4, shuffle: bool = True, seed: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))
