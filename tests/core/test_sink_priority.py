"""One rule for the sinks' threads (``sinks.base.lower_priority``): the sink host's lane of format sinks runs
below training, the host's main thread (which answers ``Close``) keeps the training process's priority."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import psutil
import pytest

from lightning_track import RunLogger
from lightning_track.sinks.base import SINK_LANE_NICE, lower_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux only")


def thread_nices(pid: int) -> dict[int, int]:
    return {t.id: os.getpriority(os.PRIO_PROCESS, t.id) for t in psutil.Process(pid).threads()}


def command_of(process: psutil.Process) -> list[str]:
    """A child's command line; none for one that ended meanwhile (another test's child not yet reaped)."""
    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def test_the_host_lowers_its_sink_lane_only(tmp_path: Path) -> None:
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    logger = RunLogger("prio", "m", root=tmp_path, sinks=("tensorboard",), console=False, system_interval=0)
    try:
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.flush()  # the host's lane has opened TensorBoard and written the step: it is running, lowered
        hosts = [p for p in psutil.Process().children() if any("hostprocess" in a for a in command_of(p))]
        assert len(hosts) == 1
        nices = thread_nices(hosts[0].pid)
    finally:
        logger.finalize("success")
        logger.wait()
    assert nices.pop(hosts[0].pid) == mine  # the main thread: Close is answered at training's priority
    assert min(SINK_LANE_NICE + mine, 19) in nices.values()


def test_lower_priority_is_relative_to_what_the_thread_inherited() -> None:
    seen: list[int] = []

    def lowered_twice() -> None:
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        lower_priority(SINK_LANE_NICE)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - base)
        lower_priority(19)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=lowered_twice)
    worker.start()
    worker.join()
    assert seen == [min(SINK_LANE_NICE, 19 - mine), 19]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
