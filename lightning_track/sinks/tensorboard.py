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
        # One Event per record holding all its scalars in one Summary (what ``add_scalar`` writes,
        # one value at a time): readers see the same tags/steps/values/wall times, and the writer
        # serialises, checksums and queues a third of the events.
        from tensorboard.compat.proto.summary_pb2 import Summary

        add = (self._writer.file_writer or self._writer._get_file_writer()).add_summary
        value_of = Summary.Value
        for record in records:
            if record.metrics:
                summary = Summary(value=[value_of(tag=key, simple_value=float(value))
                                         for key, value in record.metrics.items()])
                add(summary, record.step, record.time)

    def flush(self) -> None:
        self._writer.flush()

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


SINK = TensorBoardSink
