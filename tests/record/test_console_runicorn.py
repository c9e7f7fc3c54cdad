"""lt-sync --runicorn feeds logs.txt to the real Runicorn viewer's log tab; lines a later sync appends
appear on the open tab without restarting the viewer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from support.sync import free_port, make_run, wait_port

from lightning_track.folder.consolelog import ConsoleLog
from lightning_track.sync import SyncOptions, sync_once

pytestmark = pytest.mark.slow  # the viewer is a process
RUN = "arc_lora_20250101_120000"


def say(run: Path, *lines: str) -> None:
    log = ConsoleLog(run / "logs.txt")
    log.write([(time.time(), line) for line in lines])
    log.close()


async def read_until(ws: aiohttp.ClientWebSocketResponse, wanted: str, seen: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(wanted in line for line in seen):
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"log tab closed before {wanted!r}: {message!r}; seen {seen}")
        seen.append(message.data)


def test_runicorn_log_tab_tails_synced_console_lines(tmp_path: Path) -> None:
    src, dest, view = tmp_path / "src", tmp_path / "dest", tmp_path / "runicorn"
    run = make_run(src, RUN, steps=3)
    say(run, "epoch 0: loading data", "epoch 0: loss 0.5")
    options = SyncOptions(runicorn_root=str(view))
    sync_once(str(src), dest, options)
    assert (dest / RUN / "logs.txt").read_bytes() == (run / "logs.txt").read_bytes()  # mirrored as is

    port = free_port()
    viewer = subprocess.Popen([sys.executable, "-m", "runicorn", "viewer", "--storage", str(view), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        wait_port(port, viewer, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=10) as resp:
            (listed,) = json.loads(resp.read())

        async def tab() -> list[str]:
            seen: list[str] = []
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    f"ws://127.0.0.1:{port}/api/runs/{listed['id']}/logs/ws") as ws:
                await read_until(ws, "epoch 0: loss 0.5", seen, 30)
                say(run, "epoch 1: loss 0.25", "half a line")
                await asyncio.to_thread(sync_once, str(src), dest, options)  # a later sync, the viewer still running
                await read_until(ws, "half a line", seen, 30)
            return seen

        seen = asyncio.run(tab())
    finally:
        viewer.terminate()
        try:
            viewer.wait(20)
        except subprocess.TimeoutExpired:
            viewer.kill()
            viewer.wait()
    lines = [line.split(" ", 1)[1] for line in seen if not line.startswith("[")]  # "[info] ..." are the viewer's
    assert lines == ["epoch 0: loading data", "epoch 0: loss 0.5", "epoch 1: loss 0.25", "half a line"]
