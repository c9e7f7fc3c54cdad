"""TensorBoard event files through tensorboard's own writer (``torch.utils.tensorboard``)."""

from __future__ import annotations

from typing import Any

from ..metrics import MetricRecord
from .base import Sink, SinkContext


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self) -> None:
        self._writer: Any = None

    def open(self, context: SinkContext) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step makes TensorBoard hide the steps an interrupted attempt logged past the
        # checkpoint we resumed from; flush_secs is large because the writer thread flushes.
        self._writer = SummaryWriter(
            log_dir=str(context.layout.tensorboard_dir),
            purge_step=context.resume_step,
            max_queue=10_000,
            flush_secs=3600,
        )

    def log_config(self, config: dict[str, Any]) -> None:
        from ..config import config_to_yaml

        self._writer.add_text("config", "```yaml\n" + config_to_yaml(config) + "```", 0)

    def write(self, records: list[MetricRecord]) -> None:
        add = self._writer.add_scalar
        for record in records:
            for key, value in record.metrics.items():
                add(key, value, record.step, walltime=record.time)

    def flush(self) -> None:
        self._writer.flush()

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


SINK = TensorBoardSink
