"""A real training script for the health tests: ToyModule in-process, or ``python health_train_script.py``."""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class ToyModule(L.LightningModule):
    """A linear regression whose loss can be broken on purpose at a given optimizer step."""

    def __init__(self, lr: float = 0.05, nan_at: int | None = None, nan_rank: int | None = None,
                 scale_at: int | None = None, scale: float = 1.0, offset: float = 0.0, sleep_at: int | None = None,
                 sleep_s: float = 0.0, raise_at: int | None = None, raise_exc: BaseException | None = None,
                 nan_grad_at: int | None = None, frozen: bool = False, lr_warmup: int | None = None,
                 step_sleep: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.lr, self.nan_at, self.nan_rank = lr, nan_at, nan_rank
        self.scale_at, self.scale, self.offset = scale_at, scale, offset
        self.sleep_at, self.sleep_s = sleep_at, sleep_s
        self.raise_at, self.raise_exc = raise_at, raise_exc
        self.nan_grad_at, self.frozen, self.lr_warmup = nan_grad_at, frozen, lr_warmup
        self.step_sleep = step_sleep  # every step this slow: warmup takes long (lt-run's health timeout)
        self.layer.weight.register_hook(self._grad_hook)

    def _grad_hook(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan") if self.global_step == self.nan_grad_at else grad

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y) + self.offset
        if self.frozen:
            loss = (self.layer.weight * 0).sum() + 1.0
        step = self.global_step
        if step == self.nan_at and (self.nan_rank is None or self.global_rank == self.nan_rank):
            loss = loss * float("nan")
        if step == self.scale_at:
            loss = loss * self.scale
        if step == self.sleep_at:
            time.sleep(self.sleep_s)
        if self.step_sleep:
            time.sleep(self.step_sleep)
        if step == self.raise_at and self.raise_exc is not None:
            raise self.raise_exc
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        if self.lr_warmup is None:
            return opt
        warm = self.lr_warmup
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / warm))  # starts at lr 0
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def toy_data(n: int = 512, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[0.5], [-0.3], [0.2], [0.4]]) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def main() -> None:
    from lightning_track import HealthGuard, RunLogger

    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--nan-at", type=int)
    p.add_argument("--nan-rank", type=int)
    p.add_argument("--sleep-at", type=int)
    p.add_argument("--sleep-s", type=float, default=0.0)
    p.add_argument("--stall-timeout", type=float)
    p.add_argument("--stall-grace", type=float, default=30.0)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--ddp", action="store_true")
    p.add_argument("--no-guard", action="store_true", help="a RunLogger and no HealthGuard")
    a = p.parse_args()
    ddp = {"strategy": "ddp", "devices": 2} if a.ddp else {"devices": 1}
    trainer = L.Trainer(
        max_steps=a.max_steps, accelerator="cpu", logger=RunLogger("toy", "script", root=a.root, sinks=()),
        callbacks=[] if a.no_guard else [HealthGuard(warmup_steps=a.warmup, stall_timeout=a.stall_timeout,
                                                     stall_grace=a.stall_grace)],
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
        **ddp,
    )
    trainer.fit(ToyModule(nan_at=a.nan_at, nan_rank=a.nan_rank, sleep_at=a.sleep_at, sleep_s=a.sleep_s,
                          step_sleep=a.step_sleep), toy_data())


if __name__ == "__main__":
    main()
