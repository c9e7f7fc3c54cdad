"""The MLflow UI, opened in headless Chromium (the React app runs: ``--virtual-time-budget`` lets its
requests finish before the DOM is dumped), lists the runs lt export sent, and the link lt show prints
opens the run's page with its metrics and params."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from support.sync import make_run
from support.system import require, which

from lightning_track.cli.lt import main as lt_main

pytestmark = pytest.mark.slow

NAMES = ("uiarc_lora_20250101_120000", "uiarc_full_20250101_120001")


def rendered_text(url: str, profile: Path) -> str:
    """The text of the page as the browser rendered it (scripts and styles left out)."""
    require("chromium")  # skipped by name where it is missing (a failure under CI, which installs it)
    done = subprocess.run([which("chromium|chromium-browser"), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                           "--dump-dom", url],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", done.stdout, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_the_mlflow_ui_lists_the_exported_runs_and_the_link_opens_the_run(bare_mlflow_server, tmp_path,
                                                                          capsys) -> None:
    root = tmp_path / "runs"
    for name in NAMES:
        make_run(root, name, steps=5, status="completed")
    assert lt_main(["export", str(root), "--to", bare_mlflow_server.uri, "--experiment", "ui-check"]) == 0
    capsys.readouterr()
    entry = json.loads((root / NAMES[0] / "export.json").read_text())["targets"][bare_mlflow_server.uri]

    listing = rendered_text(f"{bare_mlflow_server.uri}/#/experiments/{entry['experiment_id']}/runs",
                            tmp_path / "profile")
    assert all(name in listing for name in NAMES), listing[:2000]
    assert "2 matching runs" in listing, listing[:2000]

    page = rendered_text(entry["link"], tmp_path / "profile")
    assert NAMES[0] in page and entry["run_id"] in page, page[:2000]
    assert "train/loss" in page and "Finished" in page, page[:2000]
