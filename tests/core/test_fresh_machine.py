"""A fresh machine: one list of system parts read by scripts/setup.sh (so .ci/run) and by the tests, the
README's test command being what CI runs, and a missing part skipped by name and counted at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import system
from support.processes import REPO, script_env


def test_readme_test_command_is_what_ci_runs() -> None:
    command = "bash scripts/setup.sh && python -m pytest -q"
    assert command in (REPO / "README.md").read_text()
    assert command in (REPO / ".ci" / "run").read_text().splitlines()
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "scripts/system-packages.txt" in setup and 'pip install -q -e ".[test,hf]"' in setup


def test_the_one_list_names_each_part_its_commands_and_packages() -> None:
    parts = system.parts()
    assert set(parts) == {"sshd", "slurm", "chromium", "rsync", "netns"}
    assert parts["sshd"].commands == ("sshd", "ssh-keygen") and "openssh-server" in parts["sshd"].packages
    assert {"slurmctld", "slurmd", "slurm-client", "munge"} <= set(parts["slurm"].packages)


def test_a_missing_part_is_named_with_its_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    monkeypatch.setattr(system, "SBIN", str(tmp_path))
    why = system.missing("sshd")
    assert why == ("needs sshd (sshd, ssh-keygen not found): sudo apt-get install openssh-server openssh-client "
                   "(or bash scripts/setup.sh)")
    assert system.skipped_part(f"Skipped: {why}") == "sshd" and system.skipped_part("Skipped: no GPU") is None
    (tmp_path / "chromium-browser").write_text("#!/bin/sh\n")
    (tmp_path / "chromium-browser").chmod(0o755)
    assert system.missing("chromium") is None  # either name will do


@pytest.mark.slow  # a pytest process
def test_without_sshd_the_sync_tests_are_skipped_and_counted(tmp_path: Path) -> None:
    """The README's run on a machine without OpenSSH: skips that name sshd, never errors, and a count."""
    (tmp_path / "hide_sbin.py").write_text("import support.system\nsupport.system.SBIN = ''\n")
    env = script_env(PATH=str(tmp_path), CI="")
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hide_sbin", "-rs",
                           "tests/sync/test_sync_ssh.py::test_push_then_pull_incremental",
                           "tests/sync/test_sync_ssh.py::test_unknown_and_changed_host_key_refused"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0 and "2 skipped" in out and "error" not in out.lower(), out
    assert "needs sshd (sshd, ssh-keygen not found): sudo apt-get install openssh-server openssh-client" in out
    assert "skipped for missing system parts: 2 for sshd (bash scripts/setup.sh installs them" in out
