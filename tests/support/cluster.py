"""Helpers for the cluster tests: run the real training script as plain python or under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from .processes import REPO, TESTS, script_env

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")

FIT_SCRIPT = TESTS / "cluster" / "fit_script.py"
CONFIGS = REPO / "configs"


def start(*args: str, torchrun: int = 0) -> subprocess.Popen:
    """Start fit_script.py (under ``torchrun --standalone --nproc_per_node=N`` when ``torchrun=N``)."""
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    return subprocess.Popen([*launcher, str(FIT_SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=script_env(), text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank it started
        out, _ = proc.communicate()
        raise AssertionError(f"training did not finish in {timeout} s:\n{out[-4000:]}") from None
    return proc.returncode, out


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.stdout.read()[-4000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.1)
