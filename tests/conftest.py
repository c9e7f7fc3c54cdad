"""Shared test setup: keep every tool's home-directory state inside the test's temp folders."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import sigint_as_in_a_terminal
from support.system import skipped_part

os.environ.setdefault("SWANLAB_MODE", "offline")
os.environ.setdefault("PYTHONHASHSEED", "0")
sigint_as_in_a_terminal()  # the tests that press Ctrl+C mean the same when the suite runs as `pytest &`


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """lightning_track's cache (lt-migrate's loop-state template), shared by the session's tests:
    learned once per session, as once per machine for a user."""
    return str(tmp_path_factory.mktemp("lt-cache"))


@pytest.fixture(autouse=True)
def _plots_drawn() -> Iterator[None]:
    """A run's plot is drawn on a thread, and its sink host finishes the viewers' files, after fit returns: no
    test ends (and has its folders removed) while one is still at it."""
    yield
    from lightning_track.derived.plots import wait_for_plots
    from lightning_track.run.sinkhost import wait_for_hosts

    wait_for_hosts()
    wait_for_plots()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                   session_cache_dir: str) -> None:
    """Tests must never read or write the real home directory (SwanLab, ssh, caches)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", session_cache_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for key in list(os.environ):
        if key.startswith("LIGHTNING_TRACK_RUN_DIR"):
            monkeypatch.delenv(key)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A real 600 KiB tmpfs, for full-disk tests: ``(mount point, command prefix)``. As root it is
    mounted here (prefix ``[]``); otherwise the prefix runs the command in a user+mount namespace that
    mounts it first. Skipped only where neither can mount."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
        if done.returncode == 0:
            yield mount, []
            subprocess.run(["umount", "-l", str(mount)], check=False)
            return
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
        yield mount, ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=600k tmpfs "{mount}" && exec "$@"', "sh"]
        return
    pytest.skip("cannot mount a small tmpfs here (not root, no user namespaces)")


@pytest.fixture(scope="session")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real two-node Slurm cluster on this machine (tests/support/cluster2.py), for the session: skipped by
    name where it cannot be built (no Slurm, not root, no network namespaces); under CI that fails instead."""
    from support import cluster2
    from support.system import require

    require("slurm")
    why = cluster2.missing()
    if why:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)
    cluster = cluster2.start(tmp_path_factory.mktemp("two_nodes"))
    try:
        yield cluster
    finally:
        cluster.stop()


# The session-wide servers and fixtures that are costly to start twice: under pytest-xdist (the README's
# command runs two workers) every test using one runs on the same worker, so each is started once.
# Cheap ones (sshd, the cache folder) are started by each worker that needs them.
SHARED_ON_ONE_WORKER = ("slurm", "two_nodes", "_mlflow_process", "made_runs", "migrated")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defined = info.name2fixturedefs if info is not None else {}
        # a fixture is known by where it is defined (tests/query's made_runs is not tests/export's)
        shared = [f"{defined[name][-1].baseid}::{name}" for name in SHARED_ON_ONE_WORKER if name in defined]
        if item.path.name == "test_two_nodes.py":  # also the test that builds and tears down its own cluster
            shared.append("tests::two_nodes")  # the key the root conftest's fixture gets
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line counting the tests skipped for each missing system part, so a partial run is never read
    as a full one."""
    counts: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple) and (part := skipped_part(str(report.longrepr[2]))):
            counts[part] += 1
    if counts:
        said = ", ".join(f"{n} for {part}" for part, n in sorted(counts.items()))
        terminalreporter.write_line(f"skipped for missing system parts: {said} "
                                    "(bash scripts/setup.sh installs them on Debian/Ubuntu)", yellow=True, bold=True)
