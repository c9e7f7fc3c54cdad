"""``fit()`` returns without waiting for the sink host: it finishes the viewers' files (TensorBoard, SwanLab)
on its own, and ``RunLogger.wait()``, the process's exit and a later host on the same folder wait for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import psutil
import pytest
from support.readers import swanlab_finish_state, swanlab_runs, swanlab_scalars, tensorboard_scalars

from lightning_track import RunLayout, RunLogger, read_metrics
from lightning_track.run.sinkhost import wait_for_hosts
from lightning_track.training.demo import DemoDataModule, DemoModule

HERE = Path(__file__).parent
STEPS = 20

FIT = textwrap.dedent("""
    import json, sys, time

    from test_fast_close import fit

    from lightning_track.run.sinkhost import wait_for_hosts

    logger = fit({"root": sys.argv[1]})
    done = wait_for_hosts(logger.run_dir, 0)
    status = json.loads(logger.layout.summary_json.read_text())["status"]
    print(f"RETURNED host_done={done} status={status}", flush=True)
    if sys.argv[2] == "linger":
        time.sleep(120)  # killed meanwhile
""")


# Logged at the end of training: work for the sink host after Close (new TensorBoard tags and SwanLab
# columns), so that "fit returned before the host was done" holds on a fast machine as on a loaded one.
# A new SwanLab column costs the host ~45 ms on a loaded 2-core machine: 200 keep it busy for seconds
# after Close, where the parent checks within milliseconds; 2,000 made each host take ~90 s under load.
END_VALUES = 200
LAST_VALUES = {f"end/value{i}": float(i) for i in range(END_VALUES)}


class LogAtTheEnd(L.Callback):
    def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
        trainer.logger.log_metrics(LAST_VALUES, step=trainer.global_step)


def fit(kwargs: dict, steps: int = STEPS, ckpt_path: str | None = None, **logger_kwargs: object) -> RunLogger:
    """A short fit with TensorBoard and SwanLab in the sink host (SwanLab's close is the slow one), a checkpoint
    every 10 steps, and :data:`LAST_VALUES` logged as training ends."""
    logger = RunLogger("fast", "close", **kwargs, **{"sinks": ("tensorboard", "swanlab"), **logger_kwargs})
    trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=kwargs["root"],
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(every_n_train_steps=10, save_last=True),
                                   LogAtTheEnd()])
    trainer.fit(DemoModule(max_steps=steps), datamodule=DemoDataModule(n_train=512, n_val=16), ckpt_path=ckpt_path)
    return logger


def start(root: Path, after: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", FIT, str(root), after], stdout=subprocess.PIPE, text=True, env=env)


def assert_viewer_files_complete(run: RunLayout, steps: list[int], state: str = "RUN_STATE_FINISHED") -> None:
    """Every logged step in TensorBoard (tensorboard's reader) and in one finished SwanLab run (SwanLab's)."""
    tensorboard = tensorboard_scalars(run.tensorboard_dir)
    assert [s for s, _, _ in tensorboard["train/loss"]] == steps
    last = END_VALUES - 1
    assert tensorboard[f"end/value{last}"][-1][:2] == (steps[-1], float(last))  # the last values, after Close
    (swanlab_file,) = swanlab_runs(run.swanlab_dir)
    assert swanlab_finish_state(swanlab_file) == state
    assert [s for s, _ in swanlab_scalars(swanlab_file)["train/loss"]] == steps


def sink_hosts(pid: int | None = None) -> list[psutil.Process]:
    """The sink host processes of ``pid`` (this process) still running (not yet reaped)."""
    return [p for p in psutil.Process(pid).children() if "lightning_track.run.hostprocess" in " ".join(p.cmdline())
            and p.status() != psutil.STATUS_ZOMBIE]


def loss_steps(run: RunLayout) -> list[int]:
    return [r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics]


@pytest.mark.slow
def test_fit_returns_before_the_host_is_done_and_the_exit_waits_for_every_viewer_file(tmp_path: Path) -> None:
    proc = start(tmp_path, "exit")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    # At fit's return summary.json is final; the host was still finishing TensorBoard's and SwanLab's files ...
    assert "RETURNED host_done=False status=completed" in out, out
    # ... and once the process has exited, it is: the interpreter's exit waited for the host.
    (run,) = RunLayout.list_runs(tmp_path)
    assert loss_steps(run) == list(range(1, STEPS + 1))
    assert_viewer_files_complete(run, list(range(1, STEPS + 1)))
    summary = json.loads(run.summary_json.read_text())
    # the host's last system sample came before finalize counted them
    assert summary["system"]["samples"] == len(run.system_jsonl.read_text().splitlines()) >= 2


@pytest.mark.slow
def test_a_parent_killed_right_after_fit_returns_leaves_the_host_to_finish_the_files(tmp_path: Path) -> None:
    proc = start(tmp_path, "linger")
    assert proc.stdout is not None
    line = ""
    while not line.startswith("RETURNED") and proc.poll() is None:
        line = proc.stdout.readline()  # SwanLab's messages come first
    hosts = sink_hosts(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert line.startswith("RETURNED host_done=False"), line  # killed while the host was still finishing
    gone, alive = psutil.wait_procs(hosts, timeout=120)
    assert not alive
    (run,) = RunLayout.list_runs(tmp_path)
    # finished as the run ended (Close said completed before the kill), not as crashed
    assert_viewer_files_complete(run, list(range(1, STEPS + 1)))
    assert json.loads(run.summary_json.read_text())["status"] == "completed"


def test_wait_returns_once_the_host_has_finished_the_viewers_files(tmp_path: Path) -> None:
    logger = fit({"root": tmp_path}, system_interval=0, console=False)
    assert wait_for_hosts(logger.run_dir, 0) is False  # just returned: the host is still finishing SwanLab's run
    assert logger.wait(0) is False
    assert logger.wait(120) is True
    assert_viewer_files_complete(logger.layout, list(range(1, STEPS + 1)))
    assert logger.wait(0) is True


def test_two_fits_in_a_row_into_the_same_resumed_folder(tmp_path: Path) -> None:
    """The resumed attempt's host opens the folder only once the first attempt's host is done with it."""
    first = fit({"root": tmp_path}, steps=10, system_interval=0, console=False)
    assert first.wait(0) is False  # still finishing its files as the resumed attempt starts
    second = fit({"root": tmp_path}, steps=STEPS, resume=True, ckpt_path="last", system_interval=0, console=False)
    assert second.run_dir == first.run_dir
    assert second.wait(120)
    run = second.layout
    assert loss_steps(run) == list(range(1, STEPS + 1))
    assert [s for s, _, _ in tensorboard_scalars(run.tensorboard_dir)["train/loss"]] == list(range(1, STEPS + 1))
    runs = swanlab_runs(run.swanlab_dir)
    assert len(runs) == 2  # one SwanLab run per attempt, both finished
    assert [swanlab_finish_state(f) for f in runs] == ["RUN_STATE_FINISHED"] * 2
    steps = sorted(s for f in runs for s, _ in swanlab_scalars(f)["train/loss"])
    assert steps == list(range(1, STEPS + 1))
    summary = json.loads(run.summary_json.read_text())
    assert [(a["attempt"], a["status"]) for a in summary["attempts"]] == [(1, "completed"), (2, "completed")]


@pytest.mark.slow
def test_short_trials_in_one_process_leave_a_bounded_number_of_hosts(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep of short trials: each finalize returns at once, but a trial's host starts only once fewer
    than ``MAX_FINISHING`` earlier hosts are still finishing their files. Three trials with a bound of 2
    show it: unbounded, the third would start beside both earlier hosts."""
    from lightning_track.run import sinkhost

    monkeypatch.setattr(sinkhost, "MAX_FINISHING", 2)
    trials, most = [], 0
    for trial in range(3):
        logger = RunLogger("sweep", f"t{trial}", root=tmp_path, sinks=("tensorboard", "swanlab"), system_interval=0,
                           console=False)
        for step in range(1, 4):
            logger.log_metrics({"train/loss": 1.0 / step}, step=step)
        logger.log_metrics(LAST_VALUES, step=3)
        logger.finalize("success")
        most = max(most, len(sink_hosts()))
        trials.append(logger)
    assert most == 2  # without the bound, 3: the first two hosts are still importing SwanLab or writing
    for logger in trials:
        assert logger.wait(120)
        assert_viewer_files_complete(logger.layout, [1, 2, 3])
    assert not sink_hosts()
