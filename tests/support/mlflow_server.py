"""A real MLflow tracking server on 127.0.0.1 for the export tests (one per session), and readers.

Started as a team would: ``mlflow server`` on a SQLite database with its own artifact store; the tests
read back with MLflow's own ``MlflowClient``. The server is the full ``mlflow`` that ``scripts/setup.sh``
installs into ``.mlflow-server/`` (its scientific stack kept out of the test environment, where the client,
``mlflow-skinny``, is all an export needs); without that folder, an ``mlflow`` on PATH.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_track.folder.records import read_metrics

from .processes import REPO
from .sync import free_port

SERVER_PACKAGES = REPO / ".mlflow-server"


@dataclass
class MlflowServer:
    folder: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (it answers only after :meth:`wait`: its first start creates the database)."""
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if (SERVER_PACKAGES / "mlflow").is_dir():
            command = [sys.executable, "-m", "mlflow"]
            env["PYTHONPATH"] = str(SERVER_PACKAGES)
        else:
            mlflow = shutil.which("mlflow")
            command = [mlflow] if mlflow else [sys.executable, "-m", "mlflow"]
        self.proc = subprocess.Popen(
            [*command, "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "server.log", "ab"), cwd=self.folder,
            # no job runner: MLflow 3 starts four huey consumers (each a full mlflow import) for jobs
            # (GenAI evaluation, trace rollups) that a tracking server for exports never runs
            env=env)

    def wait(self, timeout: float = 180.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # tens of seconds on a busy machine (database migrations)
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: "
                                   f"{(self.folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"mlflow server not answering on {self.uri} after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def make_mlflow_server(folder: Path) -> MlflowServer:
    folder.mkdir(parents=True, exist_ok=True)
    return MlflowServer(folder, free_port())


def metric_history(client: Any, run_id: str, key: str) -> list[tuple[int, int, float]]:
    """``(step, timestamp ms, value)`` of every value MLflow holds for ``key``, in step order."""
    return sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))


def artifact_paths(client: Any, run_id: str, path: str | None = None) -> set[str]:
    """Every file under the run's artifacts, as paths relative to its root."""
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def assert_metrics_equal(client, run_id: str, run: Path) -> int:
    """MLflow holds exactly metrics.jsonl and system.jsonl: every key, step, time and value, each once.
    Returns how many values of metrics.jsonl. MLflow's SQL store holds an infinity as the largest float."""
    expected: dict[str, list[tuple[int, int, float]]] = {}
    counts = {}
    for name in ("metrics.jsonl", "system.jsonl"):
        before = sum(map(len, expected.values()))
        for record in read_metrics(run / name) if (run / name).exists() else []:
            for key, value in record.metrics.items():
                expected.setdefault(key, []).append((record.step, int(record.time * 1000), value))
        counts[name] = sum(map(len, expected.values())) - before
    assert set(client.get_run(run_id).data.metrics) == set(expected)
    for key, values in expected.items():
        got = metric_history(client, run_id, key)
        assert [(s, t) for s, t, _ in got] == sorted((s, t) for s, t, _ in values), key
        for (_, _, want), (_, _, have) in zip(sorted(values, key=lambda v: (v[0], v[1])), got, strict=True):
            if math.isinf(want):
                want = math.copysign(sys.float_info.max, want)
            assert (math.isnan(want) and math.isnan(have)) or want == have, key
    return counts["metrics.jsonl"]
