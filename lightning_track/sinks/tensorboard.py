"""TensorBoard event files: tensorboard's own ``Event`` protobufs in TFRecord framing.

Not ``torch.utils.tensorboard``: this sink runs in the sink host process, which must start without
importing torch. What it writes is what torch's ``SummaryWriter`` writes for the same calls; the
files are read back with tensorboard's ``EventAccumulator`` in the tests.

Besides the scalars and the config as text, each run gets what the HParams plugin reads to compare
runs by config (see :meth:`TensorBoardSink.close`).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c

from ..folder.media import MediaRecord
from ..folder.records import MetricRecord, flatten
from ..vocabulary import COMPLETED
from .base import Sink, SinkContext

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C, rotated and offset ("masked") as TensorFlow does."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class EventFileWriter:
    """Appends serialized ``Event`` records to one ``events.out.tfevents.*`` file.

    Why not tensorboard's ``EventFileWriter``: it checksums every record in pure Python (~20 us a
    CRC, two per record) and hands each one to a thread through a queue; the sink already runs off
    the training thread, so this writes in place with google-crc32c's C code (lt-migrate writes
    100k-step runs through it). The framing is TFRecord's: length, masked CRC of the length, data,
    masked CRC of the data. The first record is the ``file_version`` event, as TensorFlow writes.
    """

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        folder = Path(logdir)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        for n in range(1000):  # unique in the folder even for two writers of one process in one second
            try:
                self._file: BinaryIO = open(folder / f"{stem}.{n}", "xb", buffering=1 << 16)  # noqa: SIM115
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"{folder}: no free event file name for {stem}")
        self.path = Path(self._file.name)
        self._heads: dict[int, bytes] = {}
        self.add_event(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event: Any) -> None:
        self.write_record(event.SerializeToString())

    def write_record(self, data: bytes) -> None:
        self.write_records([data])

    def write_records(self, records: list[bytes]) -> None:
        """Each record framed (length, masked CRC of the length, data, masked CRC of the data) into one
        buffer, written at once."""
        heads = self._heads
        parts = []
        append = parts.append
        crc32c, pack_crc = google_crc32c.value, _CRC.pack
        for data in records:
            size = len(data)
            head = heads.get(size)
            if head is None:  # length + its masked CRC: the same for every record of this size
                if len(heads) >= 4096:
                    heads.clear()
                header = _LENGTH.pack(size)
                head = heads[size] = header + _CRC.pack(masked_crc32c(header))
            crc = crc32c(data)
            append(head)
            append(data)
            append(pack_crc((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF))  # masked_crc32c
        self._file.write(b"".join(parts))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | float | int | str]:
    """A nested config as HParams values: keys joined with ``/``, values the plugin can hold.

    bool, int, float and str stay as they are; None is ``"null"`` (what ``config.yaml`` says) and any
    other value (a list, a set, an empty mapping) its ``str``, as TensorBoard's own helpers do for lists.
    """
    flat: dict[str, bool | float | int | str] = {}
    for name, value in flatten(config, prefix, sep="/").items():
        if isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self) -> None:
        self._writer: Any = None
        self._config: dict[str, Any] = {}
        self._first_time: float | None = None
        self._last_time: float | None = None

    @staticmethod
    def warm_up() -> None:
        """Import tensorboard's writer ahead of the first record (the sink host calls this at start)."""
        from tensorboard.compat.proto.event_pb2 import Event  # noqa: F401
        from tensorboard.compat.proto.summary_pb2 import Summary  # noqa: F401

    def open(self, context: SinkContext) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self._writer = EventFileWriter(context.layout.tensorboard_dir)
        self._config = dict(context.config)
        if context.resume_step is not None:
            # What SummaryWriter(purge_step=...) writes: TensorBoard hides the steps at and after
            # purge_step that an interrupted attempt logged past the checkpoint we resumed from.
            step = context.resume_step
            self._writer.add_event(Event(step=step, wall_time=time.time(), file_version="brain.Event:2"))
            self._writer.add_event(Event(step=step, wall_time=time.time(),
                                         session_log=SessionLog(status=SessionLog.START)))

    def log_config(self, config: dict[str, Any]) -> None:
        # What SummaryWriter.add_text("config", ..., 0) writes (the text plugin's summary).
        from omegaconf import OmegaConf
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

        self._config = dict(config)
        text = "```yaml\n" + OmegaConf.to_yaml(OmegaConf.create(self._config)) + "```"  # redacted by the caller
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf_8")],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        summary = Summary(value=[Summary.Value(tag="config/text_summary", metadata=metadata, tensor=tensor)])
        self._writer.add_event(Event(wall_time=time.time(), step=0, summary=summary))

    def write(self, records: list[MetricRecord]) -> None:
        # One Event per record holding all its scalars in one Summary (what ``add_scalar`` writes,
        # one value at a time): readers see the same tags/steps/values/wall times, and the writer
        # serialises and checksums a third of the events.
        # One Event message is refilled for every record, the same bytes as a new Event(...) each
        # (every field it holds is set again) in half the time: while the tags stay those of the
        # record before (the usual case), only the values change. Written once per batch, also
        # when a record fails.
        from tensorboard.compat.proto.event_pb2 import Event

        if records:
            if self._first_time is None:
                self._first_time = records[0].time
            self._last_time = records[-1].time
        event = Event()
        values = event.summary.value
        add_value = values.add
        serialize = event.SerializeToString
        tags: tuple[str, ...] | None = None
        slots: list[Any] = []
        out: list[bytes] = []
        append = out.append
        try:
            for record in records:
                metrics = record.metrics
                if metrics:
                    event.wall_time = record.time
                    event.step = int(record.step)
                    keys = tuple(metrics)
                    if keys != tags:
                        del values[:]
                        slots = [add_value(tag=key) for key in keys]
                        tags = keys
                    for slot, value in zip(slots, metrics.values(), strict=True):
                        slot.simple_value = float(value)
                    append(serialize())
        finally:
            self._writer.write_records(out)

    def write_media(self, records: list[MediaRecord]) -> None:
        from .tbmedia import media_events

        self._writer.write_records([event.SerializeToString() for event in media_events(records)])

    def flush(self) -> None:
        self._writer.flush()

    def close(self, status: str, reason: str | None = None) -> None:
        """Write the run's HParams session, then close the file.

        What ``SummaryWriter.add_hparams`` and Lightning's ``TensorBoardLogger`` write, less the
        ``experiment`` summary: TensorBoard takes one run's experiment for the whole ``--logdir`` and
        would hide every config key and metric the other runs do not share. Without it, the plugin
        builds the HPARAMS columns from every run's session start (the flattened config) and its
        metrics from the runs' scalar tags, whose last values it reads from the scalars themselves.

        Written once, here: TensorBoard keeps the *first* metadata of a tag in a run folder (the
        HParams data is metadata) and ignores later ones, so a session start written when the run
        opened would keep a config that ``log_config`` later completed. For the same reason the end
        (status success) is written only by the attempt that completes the run: a failed or
        interrupted attempt may be resumed (a killed one closes as failed), and its end would outlive
        the resumed run's. A resumed run shows the config of its first attempt that closed.
        """
        if self._writer is not None:
            try:
                self._write_hparams(status)
            finally:
                self._writer.close()
                self._writer = None

    def _write_hparams(self, status: str) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.compat.proto.types_pb2 import DT_FLOAT
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        now = time.time()
        start = plugin_data_pb2.SessionStartInfo(start_time_secs=self._first_time or now)
        for name, value in flat_hparams(self._config).items():
            if isinstance(value, bool):
                start.hparams[name].bool_value = value
            elif isinstance(value, (int, float)):
                start.hparams[name].number_value = value
            else:
                start.hparams[name].string_value = value
        data = [("_hparams_/session_start_info", plugin_data_pb2.HParamsPluginData(session_start_info=start))]
        if status == COMPLETED:
            end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS,
                                                 end_time_secs=max(self._last_time or now, start.start_time_secs))
            data.append(("_hparams_/session_end_info", plugin_data_pb2.HParamsPluginData(session_end_info=end)))
        # The plugin reads only the metadata; the value is the empty float tensor TensorBoard writes.
        empty = TensorProto(dtype=DT_FLOAT, tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=0)]))
        summary = Summary(value=[
            Summary.Value(tag=tag, tensor=empty, metadata=SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
                plugin_name="hparams", content=content.SerializeToString())))
            for tag, content in data])
        self._writer.add_event(Event(wall_time=now, step=0, summary=summary))


SINK = TensorBoardSink
