"""TensorBoard summaries for images, text and histograms: what ``SummaryWriter.add_image``, ``add_text``
and ``add_histogram`` write, built from tensorboard's own protobufs (no torch), read back by
``EventAccumulator`` in the tests.

* image: ``Summary.Image`` (the PNG made on the writer thread), tag = the key; several images logged in one
  call get ``<key>/<index>``.
* text: the text plugin's string tensor, tag ``<key>/text_summary`` (as ``add_text``); a table is its
  markdown, which TensorBoard renders as a table.
* histogram: ``HistogramProto`` with TensorFlow's default buckets (``add_histogram(bins="tensorflow")``).
"""

from __future__ import annotations

from typing import Any

from ..folder.media import HISTOGRAM, IMAGE, TEXT, MediaRecord

__all__ = ["media_events", "text_value"]


def text_value(tag: str, text: str) -> Any:
    """The ``Summary.Value`` of ``SummaryWriter.add_text``'s text plugin."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
    tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf_8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


def media_events(records: list[MediaRecord]) -> list[Any]:
    """One ``Event`` per record."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

    events = []
    for record in records:
        if record.kind == IMAGE:
            info = record.info
            tag = record.key if not info.get("many") else f"{record.key}/{info.get('index', 0)}"
            value = Summary.Value(tag=tag, image=Summary.Image(
                height=info["height"], width=info["width"], colorspace=info["channels"],
                encoded_image_string=record.data))
        elif record.kind == TEXT:
            value = text_value(f"{record.key}/text_summary", record.info.get("text", ""))
        elif record.kind == HISTOGRAM:
            numbers = record.info
            value = Summary.Value(tag=record.key, histo=HistogramProto(
                min=numbers["min"], max=numbers["max"], num=numbers["num"], sum=numbers["sum"],
                sum_squares=numbers["sum_squares"], bucket_limit=numbers["bucket_limit"], bucket=numbers["bucket"]))
        else:
            continue
        events.append(Event(wall_time=record.time, step=int(record.step), summary=Summary(value=[value])))
    return events
