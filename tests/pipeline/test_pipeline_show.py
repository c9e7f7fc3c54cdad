"""``lt show`` of a run a pipeline step made names the pipeline, the step and the step's state (real pipeline)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import TRAIN, lt_pipeline, py, state, write_pipeline
from support.processes import script_env

pytestmark = pytest.mark.slow


def lt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", *args], capture_output=True, text=True,
                          env=script_env(), timeout=60)


def test_lt_show_names_the_pipeline_step_and_its_state(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    path = write_pipeline(tmp_path, {"good": {"cmd": py(TRAIN, str(root), "--steps", "8")},
                                     "bad": {"cmd": py(TRAIN, str(root), "--nan-at", "3")},
                                     "after_bad": {"cmd": "true", "after": ["bad"]}})
    assert lt_pipeline(path, "--jobs", "2").returncode == 1
    steps = state(path)
    good, bad = Path(steps["good"]["run_dir"]), Path(steps["bad"]["run_dir"])
    shown = lt("show", str(good)).stdout.splitlines()
    assert f"pipeline exp, step good: done  [{root / 'exp.pipeline.json'}]" in shown
    shown = lt("show", str(bad)).stdout
    assert "pipeline exp, step bad: failed (" in shown and "nonfinite_loss" in shown.split("pipeline exp")[1]
    record = json.loads(lt("show", str(good), "--json").stdout)
    assert record["pipeline"] == {"pipeline": "exp", "step": "good", "state": "done",
                                  "file": str(root / "exp.pipeline.json")}
    listed = json.loads(lt("ls", str(root), "--columns", "name,status,pipeline", "--json").stdout)
    assert sorted(r["columns"]["pipeline"] for r in listed) == ["exp/bad: failed", "exp/good: done"]
    table = lt("ls", str(root), "--columns", "name,pipeline", "-f", "status=failed").stdout
    assert "exp/bad: failed" in table and "exp/good" not in table
    status = lt_pipeline(path, "--status").stdout.splitlines()
    assert status[0] == f"pipeline exp ({root / 'exp.pipeline.json'})"
    assert [line.split()[:2] for line in status[1:]] == [["good", "done"], ["bad", "failed"], ["after_bad", "blocked"]]
