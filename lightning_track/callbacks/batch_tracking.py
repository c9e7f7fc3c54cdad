"""BatchTracker: which data lines trained in each optimizer step, and before which checkpoint.

Why: to answer "which checkpoint had seen line 873?" (data attribution, contamination checks,
re-running from the checkpoint before a bad line). The file formats are those of
:mod:`lightning_track.folder.tracking`, shared with ``lt-migrate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import Dataset
from typing_extensions import override

from ..errors import one_line
from ..folder.fileio import JsonlAppender, keep_jsonl_before
from ..folder.layout import RunLayout
from ..folder.records import record_step
from ..folder.tracking import CheckpointMappings, checkpoint_name
from ..vocabulary import iso_time
from .health.checks import HealthCheckFailed
from .targets import find_layout, find_run_logger, training_starts

__all__ = ["BatchTracker", "TrackedDataset"]


class TrackedDataset(Dataset):
    """Wrap a map-style dataset so every sample carries its index (the data line id).

    Dict samples get ``sample[id_key] = index``; tuple/list samples get the index appended. A
    :class:`BatchTracker` in the same fit reads the ids and removes them from the batch before
    ``training_step``, so the model sees the samples it always saw.
    """

    def __init__(self, dataset: Any, id_key: str = "idx") -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"TrackedDataset needs a map-style dataset (with __getitem__ and __len__), got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.id_key = id_key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        sample = self.dataset[index]
        if isinstance(sample, Mapping):
            if self.id_key in sample:
                raise ValueError(
                    f"TrackedDataset: sample {index} already has a key {self.id_key!r}; pick another id_key"
                )
            return {**sample, self.id_key: int(index)}
        if isinstance(sample, (tuple, list)):
            return (*sample, int(index))
        raise TypeError(
            f"TrackedDataset: sample {index} is a {type(sample).__name__}; return a dict or a tuple from the dataset"
        )


def _to_ids(value: Any, where: str) -> list[int]:
    if isinstance(value, torch.Tensor):
        flat = value.reshape(-1).tolist()
        return flat if not value.is_floating_point() else [int(v) for v in flat]
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        try:
            return [int(v) for v in value]
        except (TypeError, ValueError):
            pass
    raise ValueError(f"BatchTracker: {where} must hold integer line ids, got {type(value).__name__}: {value!r:.80}")


class BatchTracker(Callback):
    """Write one ``batch_tracking.jsonl`` record per optimizer step and keep the mapping files.

    Args:
        id_key: the batch key with the data line ids (``batch[id_key]``); with a
            :class:`TrackedDataset` its own ``id_key`` is used and the ids are removed from the batch.

    Records: step (``trainer.global_step`` after the step), epoch, batch_idx (the last micro-batch),
    line_indices (all micro-batches, all ranks), loss (mean over micro-batches and ranks),
    learning_rate (first param group, as used by the step), timestamp; with gradient accumulation
    also ``micro_batches`` (batch_idx and ids of each). Under DDP, ids are gathered to rank 0, which
    alone writes. On resume, records after the restored step are dropped first (no duplicates).
    ``checkpoint_mapping.json`` / ``line_checkpoint_mapping.json`` follow StepCheckpoint's saves.

    A fit that ends on an exception (a HealthGuard stop, a NaN, an OOM) still records the batch in
    flight, because that batch is the evidence: the record gets ``"failed": true`` when its step
    was never applied (its step is the one it would have completed) and ``reason``, the exception
    in one line; its loss is the one backward saw, or null. Under DDP that record holds rank 0's
    lines only (``"ranks": [0]``): gathering from ranks that may be stuck in a collective could hang.
    """

    def __init__(self, id_key: str = "idx") -> None:
        super().__init__()
        self.id_key = id_key
        self._strip = False
        self._tuple_ids = False
        self._layout: RunLayout | None = None
        self._appender: JsonlAppender | None = None
        self._mappings: CheckpointMappings | None = None
        self._pending: list[tuple[int, list[int]]] = []
        self._losses: list[torch.Tensor] = []
        self._inflight_loss: torch.Tensor | None = None  # backward's loss of a batch whose end hooks have not run
        self._lr: float | None = None
        self._last_step = 0
        self.records_written = 0

    # -- setup -----------------------------------------------------------------------------------
    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        training_starts(trainer)  # a refused resume raises here, before the trim below
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if isinstance(dataset, TrackedDataset):
            self._strip = True
            self.id_key = dataset.id_key
        self._last_step = trainer.global_step
        self._pending, self._losses, self._lr, self._inflight_loss = [], [], None, None
        self._layout = find_layout(trainer)
        if trainer.is_global_zero:
            self._layout.run_dir.mkdir(parents=True, exist_ok=True)
            logger = find_run_logger(trainer)
            attempt = logger.attempt if logger is not None else None
            seen = self._trim_after(self._layout, trainer.global_step, attempt)
            self._mappings = CheckpointMappings(self._layout)
            self._mappings.load()
            for name, entry in list(self._mappings.checkpoints.items()):
                if int(entry.get("step", -1)) > trainer.global_step:
                    self._mappings.remove_checkpoint(name)
            self._mappings.seen_lines = seen
            self._appender = JsonlAppender(self._layout.batch_tracking_jsonl)

    @staticmethod
    def _trim_after(layout: RunLayout, step: int, attempt: int | None = None) -> set[int]:
        """Move the records after ``step`` aside (a resume trains those batches again; the record of
        what the interrupted attempt saw is kept, never deleted) and return the lines up to ``step``."""
        aside = layout.dropped_tracking_jsonl(attempt) if attempt else layout.dropped_tracking_jsonl_after(step)
        kept, _ = keep_jsonl_before(layout.batch_tracking_jsonl, step + 1, moved_to=aside)
        return {int(x) for record in kept for x in record.get("line_indices") or []}

    # -- per batch -------------------------------------------------------------------------------
    def _extract(self, batch: Any) -> list[int]:
        if self._strip and not isinstance(batch, Mapping):
            if isinstance(batch, MutableSequence) and batch:
                return _to_ids(batch.pop(), "the last element of the batch (TrackedDataset id)")
            raise ValueError(f"BatchTracker: expected a list batch from TrackedDataset, got {type(batch).__name__}")
        if isinstance(batch, Mapping):
            if self.id_key not in batch:
                raise ValueError(
                    f"BatchTracker: the batch has no {self.id_key!r} key (keys: {sorted(map(str, batch))[:10]});"
                    " add the line ids to each sample or wrap the dataset in TrackedDataset"
                )
            if self._strip and isinstance(batch, MutableMapping):
                return _to_ids(batch.pop(self.id_key), f"batch[{self.id_key!r}]")
            return _to_ids(batch[self.id_key], f"batch[{self.id_key!r}]")
        raise ValueError(
            f"BatchTracker: cannot find line ids in a {type(batch).__name__} batch; use dict samples with"
            f" {self.id_key!r} or wrap the dataset in TrackedDataset"
        )

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._pending.append((batch_idx, self._extract(batch)))

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        self._inflight_loss = loss.detach()  # a reference, no sync: only read if the batch never ends

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if self._lr is None and optimizer.param_groups:
            self._lr = float(optimizer.param_groups[0]["lr"])

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._inflight_loss = None
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            # Lightning hands hooks the loss divided by accumulate_grad_batches (what backward saw).
            self._losses.append(loss.detach().float().reshape(-1)[0] * self._loss_scale(trainer, pl_module))
        if trainer.global_step == self._last_step:
            return  # accumulating: the optimizer has not stepped yet
        self._last_step = trainer.global_step
        self._record(trainer, pl_module)

    @staticmethod
    def _loss_scale(trainer: Trainer, pl_module: LightningModule) -> int:
        return trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1

    def _record(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pending, self._pending = self._pending, []
        losses, self._losses = self._losses, []
        lr, self._lr = self._lr, None
        ids = [i for _, batch_ids in pending for i in batch_ids]
        if len(losses) == 1:
            loss_sum = float(losses[0])  # one device sync per step
        else:
            loss_sum = float(torch.stack(losses).sum()) if losses else float("nan")
        count = len(losses)
        world = trainer.world_size
        if world > 1:
            ids, loss_sum, count = self._gather(pl_module.device, ids, loss_sum, count)
        if not trainer.is_global_zero or self._appender is None:
            return
        record: dict[str, Any] = {
            "step": record_step(global_step=trainer.global_step),
            "epoch": trainer.current_epoch,
            "batch_idx": pending[-1][0] if pending else None,
            "line_indices": ids,
            "loss": loss_sum / count if count else None,
            "learning_rate": lr,
            "timestamp": iso_time(),
        }
        if len(pending) > 1:
            record["micro_batches"] = [{"batch_idx": b, "line_indices": i} for b, i in pending]
        if world > 1:
            record["world_size"] = world
        self._appender.append(record)
        self.records_written += 1
        if self._mappings is not None:
            self._mappings.add_lines(ids)

    @staticmethod
    def _gather(device: torch.device, ids: list[int], loss_sum: float, count: int) -> tuple[list[int], float, int]:
        """All ranks' ids (rank order) and loss totals, with two small tensor all-gathers."""
        import torch.distributed as dist

        world = dist.get_world_size()
        head = torch.tensor([float(len(ids)), loss_sum, float(count)], dtype=torch.float64, device=device)
        heads = [torch.empty_like(head) for _ in range(world)]
        dist.all_gather(heads, head)
        sizes = [int(h[0]) for h in heads]
        width = max(sizes) if sizes else 0
        mine = torch.full((max(width, 1),), -1, dtype=torch.int64, device=device)
        if ids:
            mine[: len(ids)] = torch.tensor(ids, dtype=torch.int64, device=device)
        every = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
        gathered = [int(v) for rank, t in enumerate(every) for v in t[: sizes[rank]].tolist()]
        total_loss = sum(float(h[1]) for h in heads)
        total_count = sum(int(h[2]) for h in heads)
        return gathered, total_loss, total_count

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Record the batch in flight when the fit ends on an exception (see the class docstring)."""
        pending, self._pending = self._pending, []
        losses, self._losses = self._losses, []
        inflight, self._inflight_loss = self._inflight_loss, None
        lr, self._lr = self._lr, None
        if not pending or not trainer.is_global_zero or self._appender is None:
            return
        stepped = trainer.global_step != self._last_step  # the optimizer applied it (a check after the step)
        if inflight is not None:
            losses.append(inflight.float().reshape(-1)[0] * self._loss_scale(trainer, pl_module))
        # The loss of a batch whose last micro-batch never reached backward is unknown, not a partial mean.
        loss = float(torch.stack(losses).mean()) if losses and (inflight is not None or stepped) else None
        if lr is None and trainer.optimizers and trainer.optimizers[0].param_groups:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        ids = [i for _, batch_ids in pending for i in batch_ids]
        record: dict[str, Any] = {
            "step": record_step(global_step=trainer.global_step, stepped=stepped),
            "epoch": trainer.current_epoch,
            "batch_idx": pending[-1][0],
            "line_indices": ids,
            "loss": loss,
            "learning_rate": lr,
            "timestamp": iso_time(),
        }
        if len(pending) > 1:
            record["micro_batches"] = [{"batch_idx": b, "line_indices": i} for b, i in pending]
        if trainer.world_size > 1:
            record["world_size"] = trainer.world_size
            record["ranks"] = [trainer.global_rank]
        if not stepped:
            record["failed"] = True
        record["reason"] = _reason(exception)
        self._appender.append(record)
        self.records_written += 1
        self._last_step = trainer.global_step
        if stepped and self._mappings is not None:
            self._mappings.add_lines(ids)

    # -- checkpoints (told by StepCheckpoint) ------------------------------------------------------
    def on_step_checkpoint_saved(self, trainer: Trainer, step: int, path: str) -> None:
        if self._mappings is None or not trainer.is_global_zero:
            return
        # A path outside the run folder (custom dirpath) cannot be stored relative: use the standard name.
        self._mappings.add_checkpoint(step, path if self._under_run(path) else None)
        self._mappings.write()

    def on_step_checkpoint_removed(self, trainer: Trainer, step: int, path: str) -> None:
        if self._mappings is None or not trainer.is_global_zero:
            return
        self._mappings.remove_checkpoint(checkpoint_name(step))
        self._mappings.write()

    def _under_run(self, path: str) -> bool:
        assert self._layout is not None
        candidate = Path(path)
        if not candidate.is_absolute():
            return False
        try:
            candidate.relative_to(self._layout.run_dir)
        except ValueError:
            return False
        return True

    # -- teardown --------------------------------------------------------------------------------
    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None


def _reason(exc: BaseException) -> str:
    """One line on why the fit ended: a health check's own message, else ``Type: message``."""
    if isinstance(exc, HealthCheckFailed):
        return one_line(exc)
    text = one_line(exc)
    return type(exc).__name__ if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"
