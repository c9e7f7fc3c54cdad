"""The run record across process boundaries: kills at random points, a full disk, torchrun launched by a
process that had a RunLogger, a logger that is never used."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.processes import script_env

from lightning_track import RunLayout
from lightning_track.folder.fileio import iter_jsonl

pytestmark = pytest.mark.slow  # every test here starts processes

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("train_script.py")


clean_env = script_env  # a child process with none of the test run's lightning_track variables


def records(path: Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)] if path.exists() else []


# -- item 5 ------------------------------------------------------------------------------------------
def test_a_logger_built_and_never_used_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    code = textwrap.dedent(f"""
        from lightning_track import RunLogger, from_config
        RunLogger(dataset="a", method="b", root={str(root)!r})
        from_config({{"logger": {{"dataset": "a", "method": "c", "root": {str(root)!r}}}}})
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=clean_env(),
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not root.exists()  # no run folder, no SwanLab workspace, no signals
    assert "Crashed" not in out.stdout + out.stderr  # no SwanLab run was ever started to be marked crashed


# -- item 3 and the property: kills at random points, resumes with and without ckpt_path -------------
@pytest.mark.timeout(600)
def test_random_kills_and_resumes_keep_every_record_exactly_once(tmp_path: Path) -> None:
    """Each round: train (ModelCheckpoint every 5 steps, last.ckpt) with a slow loop, SIGKILL at a random
    moment, then resume (with ckpt_path="last", or without when no checkpoint exists yet). Every record a
    killed attempt left on disk survives, in metrics.jsonl or the file its resume moved it to, and
    metrics.jsonl holds each step exactly once."""
    rng = random.Random(1234)
    root = tmp_path / "runs"
    max_steps = 200
    seen: dict[tuple[int, float], dict] = {}  # (step, time) -> record, for every record ever on disk
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(root), str(max_steps), "--sleep", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    for _ in range(3):
        time.sleep(rng.uniform(3.0, 7.0))  # from before the first step to well into training
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        runs = RunLayout.list_runs(root)
        assert len(runs) <= 1
        if not runs:  # killed during start-up, before the run folder existed: start it again
            resume: list[str] = []
        else:
            (run,) = runs
            for rec in records(run.metrics_jsonl):
                seen[(rec["step"], rec["time"])] = rec
            # the newest checkpoint: a kill between a checkpoint and last.ckpt leaves last.ckpt one behind
            # (resuming from it would rewind the run and is refused, saying to use the newest)
            found = run.checkpoint_steps()
            resume = ["--ckpt", str(found[-1][1])] if found else ["--resume-no-ckpt"]
        proc = subprocess.Popen([sys.executable, str(SCRIPT), str(root), str(max_steps), "--sleep", "0.05", *resume],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    (run,) = RunLayout.list_runs(root)
    final = records(run.metrics_jsonl)
    data = json.loads(run.summary_json.read_text())
    # Lightning logs a batch's values just after the checkpoint that batch's end saved: a kill in that
    # window (milliseconds) loses that one record for good, and the resume says so in its attempt.
    lost = sorted(s for a in data["attempts"] for s in a.get("lost_steps", []))
    assert all(step % 5 == 0 for step in lost)  # only ever a checkpoint's own step
    assert [r["step"] for r in final] == [s for s in range(1, max_steps + 1) if s not in lost]  # each once
    dropped = [r for path in sorted(run.run_dir.glob("metrics.dropped-at-attempt-*.jsonl")) for r in records(path)]
    kept_or_moved = {(r["step"], r["time"]) for r in final + dropped}
    assert set(seen) <= kept_or_moved  # nothing a killed attempt wrote was lost
    assert len(final) + len(dropped) == len({(r["step"], r["time"]) for r in final + dropped})  # never twice
    # a kill during start-up (before training began) leaves no attempt: 1 to 4 attempts
    assert data["status"] == "completed" and 1 <= len(data["attempts"]) <= 4
    assert [a["status"] for a in data["attempts"]] == ["crashed"] * (len(data["attempts"]) - 1) + ["completed"]
    files = {a["dropped_file"] for a in data["attempts"] if a.get("dropped_file")}
    assert files == {p.name for p in run.run_dir.glob("metrics.dropped-at-attempt-*.jsonl")}


# -- item 2: a full disk -----------------------------------------------------------------------------
FULL_DISK_SCRIPT = textwrap.dedent("""
    import json, sys
    import lightning as L, torch
    from lightning_track import RunLogger
    from lightning_track.training.demo import DemoDataModule, DemoModule

    class Many(DemoModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log_dict({f"extra/metric_with_a_long_name_{i:02d}": float(i) + loss.item() for i in range(20)})
            return loss

    root = sys.argv[1]
    logger = RunLogger("d", "m", root=root, sinks=(), flush_interval=0.05)
    trainer = L.Trainer(max_steps=5000, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", enable_checkpointing=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    try:
        trainer.fit(Many(max_steps=5000), datamodule=DemoDataModule(n_train=512, n_val=64))
    except Exception as exc:
        print("RAISED", type(exc).__name__, exc, flush=True)
        print("RUN_DIR=" + str(logger.run_dir), flush=True)
        sys.exit(3)
""")


@pytest.mark.timeout(300)
def test_full_disk_leaves_whole_lines_names_the_file_and_records_the_failure(small_disk, tmp_path: Path) -> None:
    mount, prefix = small_disk
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT)
    # A ballast file makes the disk fill sooner; the copy out of the tmpfs is made inside the same namespace.
    ballast = mount / "ballast"
    check = textwrap.dedent(f"""
        import subprocess, sys, os
        open({str(ballast)!r}, "wb").write(b"x" * 64 * 1024)
        done = subprocess.run([sys.executable, {str(script)!r}, {str(mount / "runs")!r}], capture_output=True,
                              text=True)
        print(done.stdout); print(done.stderr, file=sys.stderr)
        import glob, shutil
        run = glob.glob({str(mount / "runs")!r} + "/d_m_*")[0]
        shutil.copytree(run, {str(tmp_path / "copy")!r})
        sys.exit(done.returncode)
    """)
    out = subprocess.run([*prefix, sys.executable, "-c", check], capture_output=True, text=True, timeout=280,
                         env=clean_env())
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]
    raised = next(line for line in out.stdout.splitlines() if line.startswith("RAISED"))
    assert "No space left on device" in raised and "metrics.jsonl" in raised  # the error names the file
    copy = tmp_path / "copy"
    data = (copy / "metrics.jsonl").read_bytes()
    assert data and data.endswith(b"\n")  # cut back to its last whole line
    lines = data.splitlines()
    assert all(json.loads(line)["metrics"] for line in lines)
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["reason"]


# -- item 17: torchrun launched by a process that had a RunLogger -------------------------------------
TORCHRUN_PARENT = textwrap.dedent("""
    import subprocess, sys
    from lightning_track import RunLogger
    parent = RunLogger(dataset="parent", method="driver", root=sys.argv[1] + "/parent_runs", sinks=())
    parent.save()  # the parent's run is in use (a driver or sweep script logging its own progress)
    parent.log_metrics({"driver/launched": 1.0}, step=0)
    parent.flush()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", sys.argv[2],
           sys.argv[1] + "/runs", "6", "--strategy", "ddp", "--devices", "2", "--every", "3"]
    sys.exit(subprocess.run(cmd, timeout=240).returncode)
""")


@pytest.mark.timeout(300)
def test_torchrun_started_by_a_process_with_a_run_logger_does_not_hang(tmp_path: Path) -> None:
    parent = tmp_path / "parent.py"
    parent.write_text(TORCHRUN_PARENT)
    fit_script = REPO / "tests" / "cluster" / "fit_script.py"
    env = {**clean_env(), "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "cluster"), str(REPO / "tests")])}
    out = subprocess.run([sys.executable, str(parent), str(tmp_path), str(fit_script)], capture_output=True, text=True,
                         timeout=280, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run,) = RunLayout.list_runs(tmp_path / "runs")  # both ranks agreed on one folder of their own
    assert [r["step"] for r in records(run.metrics_jsonl)] == list(range(1, 7))
    (parent_run,) = RunLayout.list_runs(tmp_path / "parent_runs")
    assert records(parent_run.metrics_jsonl) == [  # nobody else wrote into the parent's folder
        {"step": 0, "time": records(parent_run.metrics_jsonl)[0]["time"], "metrics": {"driver/launched": 1.0}}]
