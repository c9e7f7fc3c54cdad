"""TensorBoard event files through tensorboard's own writer (``EventFileWriter`` + its protobufs).

Not ``torch.utils.tensorboard``: this sink runs in the sink host process, which must start without
importing torch. What it writes is what torch's ``SummaryWriter`` writes for the same calls.
"""

from __future__ import annotations

import time
from typing import Any

from ..metrics import MetricRecord
from .base import Sink, SinkContext


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self) -> None:
        self._writer: Any = None

    @staticmethod
    def warm_up() -> None:
        """Import tensorboard's writer ahead of the first record (the sink host calls this at start)."""
        from tensorboard.compat.proto.event_pb2 import Event  # noqa: F401
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: F401

    def open(self, context: SinkContext) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        # flush_secs is large because the writer flushes on its own schedule.
        self._writer = EventFileWriter(str(context.layout.tensorboard_dir), max_queue_size=10_000, flush_secs=3600)
        if context.resume_step is not None:
            # What SummaryWriter(purge_step=...) writes: TensorBoard hides the steps at and after
            # purge_step that an interrupted attempt logged past the checkpoint we resumed from.
            step = context.resume_step
            self._writer.add_event(Event(step=step, wall_time=time.time(), file_version="brain.Event:2"))
            self._writer.add_event(Event(step=step, wall_time=time.time(),
                                         session_log=SessionLog(status=SessionLog.START)))

    def log_config(self, config: dict[str, Any]) -> None:
        # What SummaryWriter.add_text("config", ..., 0) writes (the text plugin's summary).
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

        from ..config import config_to_yaml

        text = "```yaml\n" + config_to_yaml(config) + "```"
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf_8")],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        summary = Summary(value=[Summary.Value(tag="config/text_summary", metadata=metadata, tensor=tensor)])
        self._writer.add_event(Event(wall_time=time.time(), step=0, summary=summary))

    def write(self, records: list[MetricRecord]) -> None:
        # One Event per record holding all its scalars in one Summary (what ``add_scalar`` writes,
        # one value at a time): readers see the same tags/steps/values/wall times, and the writer
        # serialises, checksums and queues a third of the events.
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        add = self._writer.add_event
        value_of = Summary.Value
        for record in records:
            if record.metrics:
                summary = Summary(value=[value_of(tag=key, simple_value=float(value))
                                         for key, value in record.metrics.items()])
                add(Event(wall_time=record.time, step=int(record.step), summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


SINK = TensorBoardSink
