"""The loop state of converted checkpoints: Lightning's migration, learned once per version and cached."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lightning_track.migrate import loopstate
from lightning_track.vocabulary import ENV_CACHE_DIR

STEP, EPOCH = "\x00lt-migrate:step", "\x00lt-migrate:epoch"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of this test's own, nothing remembered in memory and nothing bundled:
    a Lightning version the package has no template for."""
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setattr(loopstate, "_loaded", {})
    monkeypatch.setattr(loopstate, "bundled_path", lambda: tmp_path / "not-bundled.json")
    return tmp_path / "cache"


def _write_entry(path: Path, template: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": loopstate.TEMPLATE_FORMAT, "template": template}))


@pytest.mark.parametrize(("step", "epoch"), [(0, 0), (1, 0), (76, 3), (125, 1), (10**9, 99)])
def test_the_template_gives_what_lightnings_migration_gives(step: int, epoch: int) -> None:
    from lightning.pytorch.utilities.migration import migrate_checkpoint

    template = loopstate.learn_template()
    assert template is not None
    expected, _ = migrate_checkpoint({"state_dict": {}, "global_step": step, "epoch": epoch,
                                      "pytorch-lightning_version": loopstate.PRE_LOOPS_VERSION})
    expected.pop("state_dict")
    assert loopstate.fill_template(template, step, epoch) == expected
    optimizer = expected["loops"]["fit_loop"]["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
    assert optimizer["step"]["total"]["completed"] == step


def _fake_migration(derived: str) -> Callable[[int, int], dict]:
    def migrate(step: int, epoch: int) -> dict:
        value = step + 1 if derived == "step+1" else (step, epoch)
        return {"global_step": step, "epoch": epoch, "loops": {"x": value, "epoch": epoch}}
    return migrate


@pytest.mark.parametrize("derived", ["step+1", "tuple"])
def test_a_migration_that_is_not_a_template_is_not_learned(derived: str) -> None:
    assert loopstate.learn_template(_fake_migration(derived)) is None


@pytest.mark.slow
def test_the_first_migration_learns_in_a_child_and_later_ones_read_the_cache(cache: Path) -> None:
    path = loopstate.template_path()
    assert path is not None and path.parent == cache
    learner = loopstate.start_learning()
    assert learner is not None
    assert loopstate.loop_state(42, 1) == loopstate.migrate_with_lightning(42, 1)  # waited for the child
    assert learner.process.wait(timeout=60) == 0
    learner.stop()
    entry = json.loads(path.read_text())
    assert entry["lightning"] and entry["template"]["global_step"] == STEP
    assert loopstate.start_learning() is None  # cached: nothing to learn

    # a fresh process reads the cache and never imports Lightning
    code = ("import sys; from lightning_track.migrate import loopstate; s = loopstate.loop_state(7, 2);"
            " print(s['global_step'], s['epoch'], 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, ENV_CACHE_DIR: str(cache)})
    assert out.stdout.split() == ["7", "2", "False"]


def test_a_worker_waits_for_the_learners_lock_then_reads_what_it_wrote(cache: Path) -> None:
    path = loopstate.template_path()
    assert path is not None
    cache.mkdir()
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # this test plays the learning child

    def learn_slowly() -> None:
        time.sleep(0.3)
        _write_entry(path, {"global_step": STEP, "epoch": EPOCH, "marker": [1, None]})
        os.close(fd)  # the child ends: its lock goes

    threading.Thread(target=learn_slowly).start()
    start = time.monotonic()
    assert loopstate.loop_state(5, 2) == {"global_step": 5, "epoch": 2, "marker": [1, None]}
    assert time.monotonic() - start >= 0.25


def test_a_cached_null_means_lightning_is_called(cache: Path) -> None:
    path = loopstate.template_path()
    assert path is not None
    _write_entry(path, None)  # learned: Lightning's migration is not a template
    assert loopstate.loop_state(9, 0) == loopstate.migrate_with_lightning(9, 0)
    assert json.loads(path.read_text())["template"] is None  # not relearned


@pytest.mark.parametrize("content", ["{not json", '{"format": 999, "template": {}}', ""])
def test_a_damaged_or_foreign_cache_entry_is_relearned(cache: Path, content: str) -> None:
    path = loopstate.template_path()
    assert path is not None
    cache.mkdir()
    path.write_text(content)
    assert loopstate.loop_state(11, 3) == loopstate.migrate_with_lightning(11, 3)
    assert json.loads(path.read_text())["template"]["epoch"] == EPOCH  # rewritten whole


@pytest.mark.slow
def test_a_learner_that_dies_leaves_the_workers_to_learn_it_themselves(cache: Path) -> None:
    learner = loopstate.start_learning()
    assert learner is not None
    learner.stop()  # killed before it wrote anything (e.g. Ctrl-C at the start of the migration)
    path = loopstate.template_path()
    assert path is not None and not path.exists()
    assert loopstate.loop_state(3, 0) == loopstate.migrate_with_lightning(3, 0)
    assert path.exists()


def test_the_bundled_template_of_the_installed_lightning_is_what_lightning_gives() -> None:
    """The package ships the entries of the Lightning versions it is tested with; the one for the
    installed version must be exactly what learning from Lightning gives."""
    bundled = loopstate.bundled_path()
    assert bundled is not None
    shipped = sorted(p.name for p in bundled.parent.glob("loop_state-lightning-*.json"))
    assert shipped, "no bundled loop-state template"
    if not bundled.exists():
        pytest.skip(f"no bundled template for the installed Lightning ({bundled.name}); shipped: {shipped}")
    entry = json.loads(bundled.read_text())
    assert entry["format"] == loopstate.TEMPLATE_FORMAT
    assert entry["template"] == loopstate.learn_template()


def test_with_a_bundled_template_the_first_migration_learns_nothing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = tmp_path / "bundled.json"
    _write_entry(bundled, {"global_step": STEP, "epoch": EPOCH, "bundled": True})
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "empty-cache"))
    monkeypatch.setattr(loopstate, "_loaded", {})
    monkeypatch.setattr(loopstate, "bundled_path", lambda: bundled)
    assert loopstate.start_learning() is None
    assert loopstate.loop_state(8, 1) == {"global_step": 8, "epoch": 1, "bundled": True}
    assert not (tmp_path / "empty-cache").exists()  # nothing learned, nothing written


def test_the_cache_folder_comes_from_the_environment_and_the_older_name_still_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "old"))
    path = loopstate.template_path()
    assert path is not None and path.parent == tmp_path / "old"
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "new"))  # the current name wins
    path = loopstate.template_path()
    assert path is not None and path.parent == tmp_path / "new"
