"""lt export of a ROOT of many runs: a progress bar on a terminal, stopped by Ctrl+C and by SIGTERM, and run
again until done: every run in MLflow once, value for value (a real server, a real ``lt`` process)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.mlflow_server import assert_metrics_equal
from support.processes import script_env
from support.sync import make_run

pytestmark = pytest.mark.slow

RUNS = 30


def done_runs(root: Path, uri: str) -> int:
    """Runs whose export finished (the record's last write of an export stamps exported_at)."""
    count = 0
    for record in root.glob("*/export.json"):
        try:
            entry = json.loads(record.read_text())["targets"].get(uri, {})
        except ValueError:
            continue
        count += "exported_at" in entry
    return count


def start(root: Path, uri: str, stderr: int = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lightning_track.cli.lt", "export", str(root), "--to", uri,
                             "--experiment", "root-of-30"], stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env=script_env(TERM="xterm", COLUMNS="120"))


def stop_after(proc: subprocess.Popen, root: Path, uri: str, runs: int, signum: int) -> None:
    deadline = time.monotonic() + 120
    while done_runs(root, uri) < runs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the export ended before it could be interrupted"
    proc.send_signal(signum)


def test_a_root_of_many_runs_shows_progress_stops_on_sigint_and_sigterm_and_a_rerun_doubles_nothing(
        bare_mlflow_server, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = bare_mlflow_server.uri
    root = tmp_path / "runs"
    runs = [make_run(root, f"toy_r{i:02d}_20250101_1200{i:02d}", steps=40, status="completed") for i in range(RUNS)]

    master, slave = pty.openpty()  # stderr a terminal: the progress bar is drawn there
    proc = start(root, uri, stderr=slave)
    os.close(slave)
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the process ended
                return
            if not data:
                return
            screen.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stop_after(proc, root, uri, 4, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    reader.join(10)
    os.close(master)
    shown = screen.decode(errors="replace")
    assert proc.returncode == 130, shown
    assert re.search(rf"exporting .* \d+/{RUNS}", shown), shown  # rich's bar: runs done of all
    assert "lt export: interrupted; what the tracker confirmed is recorded: run lt export again to continue" in shown
    first = out.splitlines()
    assert len(first) >= 4 and all(re.match(rf"\[\d+/{RUNS}\] ", line) for line in first)

    proc = start(root, uri)
    stop_after(proc, root, uri, len(first) + 4, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.splitlines()[-1] == ("lt export: interrupted; what the tracker confirmed is recorded: run lt export "
                                    "again to continue")

    proc = start(root, uri)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and err == "", err
    lines = out.splitlines()
    assert len(lines) == RUNS and sum("up to date" in line for line in lines) >= len(first)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("root-of-30")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(r.info.run_name for r in found) == sorted(run.name for run in runs)  # each once
    by_name = {r.info.run_name: r.info.run_id for r in found}
    for run in runs:
        assert assert_metrics_equal(client, by_name[run.name], run) == 40 * 2  # no value twice, none missing
