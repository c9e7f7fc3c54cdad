"""torchrun on CPU (gloo): one run folder and one set of outputs; preemption and resume under DDP."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from fit_script import build, fit
from support.cluster import finish, start, wait_for
from support.readers import tensorboard_scalars

from lightning_track import RunLayout, read_metrics
from lightning_track.folder.signals import read_signal

pytestmark = pytest.mark.slow  # every test here starts processes


@pytest.mark.timeout(300)
def test_torchrun_two_ranks_share_one_run_folder_and_survive_sigterm(runs: Path) -> None:
    # torchrun starts both ranks independently: rank 1 learns rank 0's folder through the process group.
    proc = start(str(runs), "40", "--strategy", "ddp", "--devices", "2", "--ready-at", "4", "--sleep", "0.3",
                 "--every", "2", torchrun=2)
    wait_for(runs / "ready.txt", proc)
    proc.send_signal(signal.SIGTERM)  # to the torchrun agent, which forwards it to every rank
    code, out = finish(proc)
    assert code != 0, out[-3000:]

    runs_found = RunLayout.list_runs(runs)
    assert len(runs_found) == 1, [r.name for r in runs_found]
    (run,) = runs_found
    assert sorted(p.name for p in runs.iterdir()) == sorted([run.name, "ready.txt", "signals"])
    assert len(list(run.tensorboard_dir.glob("events.out.tfevents.*"))) == 1
    meta = json.loads(run.meta_json.read_text())
    assert meta["launcher"]["WORLD_SIZE"] == "2" and meta["launcher"]["RANK"] == "0"
    assert "TORCHELASTIC_RUN_ID" in meta["launcher"]

    data = json.loads(run.summary_json.read_text())
    assert data["status"] == "interrupted", out[-3000:]
    step = data["interrupted"]["step"]
    assert step >= 4
    assert torch.load(run.checkpoint_path(step), weights_only=False)["global_step"] == step
    assert [s for s, _ in run.step_checkpoints()] == sorted({*range(2, step + 1, 2), step})
    assert [r.step for r in read_metrics(run.metrics_jsonl)] == list(range(1, step + 1))
    assert read_signal(run.signals_dir, run.name, "failed")["check"] == "interrupted"

    # Continue it (single process here; the DDP checkpoint is a plain one).
    L.seed_everything(0, verbose=False)
    trainer, logger = build(runs, step + 4, resume=True, every=2)
    fit(trainer, step + 4, resume=True)
    assert logger.run_dir == run.run_dir and len(RunLayout.list_runs(runs)) == 1
    assert json.loads(run.summary_json.read_text())["status"] == "completed"
    assert [r.step for r in read_metrics(run.metrics_jsonl)] == list(range(1, step + 5))
    assert [s for s, _, _ in tensorboard_scalars(run.tensorboard_dir)["train/loss"]] == list(range(1, step + 5))


@pytest.mark.timeout(300)
def test_ddp_spawn_workers_write_the_run_the_parent_created(runs: Path) -> None:
    # The parent builds the logger (and the folder); the Trainer is pickled into 2 spawned workers.
    proc = start(str(runs), "12", "--strategy", "ddp_spawn", "--devices", "2", "--every", "5")
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    (run,) = RunLayout.list_runs(runs)
    assert sorted(p.name for p in runs.iterdir()) == sorted([run.name, "signals"])
    assert f"RUN_DIR={run.run_dir}" in out
    assert len(list(run.tensorboard_dir.glob("events.out.tfevents.*"))) == 1
    assert [s for s, _ in run.step_checkpoints()] == [5, 10]
    assert torch.load(run.checkpoint_path(10), weights_only=False)["global_step"] == 10
    assert [r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics] == list(range(1, 13))
    summary = json.loads(run.summary_json.read_text())
    done = read_signal(run.signals_dir, run.name, "done")
    assert summary["status"] == "completed" and summary["last_step"] == 12 == done["step"]
    assert read_signal(run.signals_dir, run.name, "done")["status"] == "done"


def test_process_group_is_destroyed_at_exit_before_finalization(tmp_path: Path) -> None:
    """What HealthGuard/PreemptionHandler register on a failing rank: the gloo group goes at exit, in Python."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = f"""
import atexit, torch.distributed as dist
from lightning_track.run.distributed import destroy_process_group_at_exit
atexit.register(lambda: print("initialized at the end:", dist.is_initialized()))  # runs after the hook
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
destroy_process_group_at_exit()
destroy_process_group_at_exit()  # registered once
raise SystemExit(86)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 86, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "initialized at the end: False"
