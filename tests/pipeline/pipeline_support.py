"""Helpers of the pipeline tests: a webhook receiver, and ``lt run --pipeline`` as a real process."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from support.processes import script_env

HERE = Path(__file__).resolve().parent
TRAIN, EVAL, REPORT = (HERE / f"pipeline_{n}_script.py" for n in ("train", "eval", "report"))


class Webhook:
    """What the server received: one dict per POST (the JSON body), with its path."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.received: list[dict[str, Any]] = []
        self.url = f"json://127.0.0.1:{server.server_address[1]}/hook"

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in list(self.received):
                if predicate(item):
                    return item
            time.sleep(0.05)
        raise AssertionError(f"no matching notification within {timeout} s; received {self.received}")


def fields(item: dict[str, Any]) -> dict[str, str]:
    """The ``key: value`` lines of a notification's message (its first line is the readable one)."""
    out = {}
    for line in item["message"].splitlines()[1:]:
        key, _, value = line.partition(": ")
        out[key] = value
    return out


def write_pipeline(folder: Path, steps: dict[str, Any], name: str = "exp") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"root": str(folder / "runs"), "steps": steps}, sort_keys=False))
    return path


def lt_pipeline(path: Path, *args: str, timeout: float = 240, lt: bool = False, **env: str
                ) -> subprocess.CompletedProcess[str]:
    """``lt run --pipeline PATH ARGS`` (through ``lt`` itself with ``lt=True``)."""
    module = ["lightning_track.cli.lt", "run"] if lt else ["lightning_track.cli.pipeline"]
    return subprocess.run([sys.executable, "-m", *module, "--pipeline", str(path), *args],
                          capture_output=True, text=True, env=script_env(**env), cwd=path.parent, timeout=timeout)


def start_pipeline(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lightning_track.cli.pipeline", "--pipeline", str(path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
                            cwd=path.parent)


def state(path: Path, name: str = "exp") -> dict[str, Any]:
    return json.loads((path.parent / "runs" / f"{name}.pipeline.json").read_text())["steps"]


def py(script: Path, *args: str) -> str:
    """A step's command line: paths shell-quoted, ``{step.field}`` templates left for the pipeline to fill."""
    return " ".join(a if a.startswith("{") else shlex.quote(a) for a in [sys.executable, str(script), *args])
