"""The typed messages between the writer and the sink host: through a real pipe, and every kind handled."""

from __future__ import annotations

import os
import typing
from pathlib import Path

import pytest

from lightning_track.errors import SinkHostError
from lightning_track.folder.records import MetricRecord
from lightning_track.run.hostprocess import _Host
from lightning_track.run.messages import (
    Close,
    Closed,
    Closing,
    Failed,
    Flush,
    Flushed,
    MessageReader,
    Open,
    Opened,
    SetConfig,
    ToHost,
    Write,
    WriteMedia,
    send_message,
)


def _examples(run_dir: Path) -> list[ToHost]:
    return [Open(str(run_dir), "d", "m", {"lr": 0.1}, None, 0, sinks=[]), SetConfig({"lr": 0.2}),
            Write.of([MetricRecord(3, 1.5, {"loss": 0.25})]), WriteMedia([]), Flush(7), Close("completed", None)]


def test_every_kind_crosses_a_pipe_unchanged(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    sent = [*_examples(tmp_path), Failed.of("sink 'x' write", ValueError("bad value")), Flushed(7), Opened(),
            Closing(), Closed()]
    for message in sent:
        send_message(write_fd, message)
    os.close(write_fd)
    reader = MessageReader(read_fd)
    got = [reader.read() for _ in sent]
    assert got == sent and reader.read() is None
    assert got[2].records() == [MetricRecord(3, 1.5, {"loss": 0.25})]
    os.close(read_fd)


def test_the_host_handles_every_kind_it_can_be_sent_and_answers_as_the_parent_waits(tmp_path: Path) -> None:
    examples = _examples(tmp_path)
    assert {type(m) for m in examples} == set(typing.get_args(ToHost))  # a new kind needs an example here
    read_fd, write_fd = os.pipe()
    host = _Host(write_fd, "")
    assert [host.handle(m) for m in examples] == [True] * 5 + [False]
    assert host.last_step == 3
    host.finish()  # the worker closes the sinks after the main thread answered Closing
    os.close(write_fd)
    reader = MessageReader(read_fd)
    got = [reader.read() for _ in range(5)]
    assert got[-1] is None and got.index(Closing()) < got.index(Closed())
    assert [m for m in got[:-1] if m != Closing()] == [Opened(), Flushed(7), Closed()]  # the sinks' lane, in order
    os.close(read_fd)
    with pytest.raises(SinkHostError, match=r"no known kind: \(.close.,"):
        host.handle(("close", "completed", None))  # type: ignore[arg-type]  # the old untyped shape: refused
