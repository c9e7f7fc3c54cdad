"""Read run outputs back with each format's own reader, as a user's tools would."""

from __future__ import annotations

from pathlib import Path


def tensorboard_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, value, wall_time), ...]}`` via tensorboard's EventAccumulator (purges honoured)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


WITH_SWANLAB = ("tensorboard", "swanlab")  # RunLogger's sinks with the opt-in live SwanLab run


def swanlab_runs(swanlab_logs: str | Path) -> list[Path]:
    return sorted(Path(swanlab_logs).glob("run-*/run-*.swanlab"))


def swanlab_records(swanlab_file: str | Path) -> list:
    """Every protobuf ``Record`` of an offline SwanLab run file, via SwanLab's own reader."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    reader = DataStoreReader()
    reader.open(str(swanlab_file))
    records = []
    try:
        while (data := reader.scan()) is not None:
            record = Record()
            record.ParseFromString(data)
            records.append(record)
    finally:
        reader.close()
    return records


def swanlab_scalars(swanlab_file: str | Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for record in swanlab_records(swanlab_file):
        if record.WhichOneof("record_type") == "scalar":
            value = record.scalar.value.number
            out.setdefault(record.scalar.key, []).append((record.scalar.step, value))
    return out


def swanlab_finish_state(swanlab_file: str | Path) -> str | None:
    from swanlab.proto.swanlab.run.v1.run_pb2 import RunState

    for record in swanlab_records(swanlab_file):
        if record.WhichOneof("record_type") == "finish":
            return RunState.Name(record.finish.state)
    return None


def board_api(port: int, path: str) -> dict:
    """The ``data`` of one answer of SwanLab's board API on 127.0.0.1, as its web page reads it (code 0)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body = json.load(response)
    assert body["code"] == 0, (path, body)
    return body["data"]
