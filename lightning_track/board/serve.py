"""SwanLab's board started on a store, and the loop that keeps the store up to date while it runs.

The board runs in its own process (swanboard's ``SwanBoardRun.run``, what ``swanlab watch`` starts), on
``SWANLAB_LOG_DIR`` = the store; this process feeds the store every ``every`` seconds, so a live run's new
lines show on the page's next refresh.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from .store import BoardStore, PassResult

__all__ = ["start_board", "serve", "board_answers"]

_BOARD = ("import sys; from swanboard import SwanBoardRun; "
          "SwanBoardRun.run(path=sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]))")


def _check_port(host: str, port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc});"
                              " give another --port") from None


def board_answers(host: str, port: int) -> bool:
    """True when the board at ``host:port`` answers its project API (what its page loads first)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/api/v1/project", timeout=2) as response:
            return json.load(response).get("code") == 0
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_board(store: Path, host: str, port: int, log: IO[bytes] | None = None,
                timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """SwanLab's board on ``store`` at ``host:port``, once it answers; one line if it cannot start."""
    _check_port(host, port)
    env = dict(os.environ, SWANLAB_LOG_DIR=str(store))
    board = subprocess.Popen([sys.executable, "-c", _BOARD, str(store), host, str(port)], env=env,
                             stdout=log if log is not None else subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if board.poll() is not None:
            raise ConfigError(f"SwanLab's board exited with {board.returncode} before it answered on {host}:{port}")
        if board_answers(host, port):
            return board
        time.sleep(0.2)
    board.terminate()
    board.wait(10)
    raise ConfigError(f"SwanLab's board did not answer on {host}:{port} within {timeout:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(store: BoardStore, specs: Sequence[str | Path], host: str, port: int, every: float,
          report: Callable[[PassResult], None], started: Callable[[str], None]) -> int:
    """Start the board on ``store`` and feed it from ``specs`` every ``every`` seconds until the board
    exits or Ctrl+C; the board is stopped on the way out. Returns the board's exit code (0 on Ctrl+C)."""
    board = start_board(store.folder, host, port)
    started(f"http://{host}:{port}")
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops the board too, as Ctrl+C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while board.poll() is None:
            time.sleep(every)
            report(store.update(specs))
        return board.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if board.poll() is None:
            board.terminate()
            try:
                board.wait(10)
            except subprocess.TimeoutExpired:
                board.kill()
                board.wait()
