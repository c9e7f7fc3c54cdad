"""The helper that stats a large root's children beside the look (query/folder_stats.py): its keys are the
catalog's folder keys, it says nothing of what the look must stat itself (a link, a file, a folder changed
too recently), names that are not UTF-8 come back as they are, names asked out of its order are found or
left to the look; and a lean look that takes its stats prints what the whole look prints through changes,
with problems, links, new and deleted runs, and a helper that died."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.query import edit_summary, lean_and_whole, lean_catalog

from lightning_track.query import catalog, folder_stats
from lightning_track.query.discover import skipped_name
from lightning_track.query.folder_stats import ChildStats


def key_of(path: Path) -> str:
    st = os.lstat(path)
    return f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"  # the catalog's folder key


def test_the_helpers_keys_are_the_catalogs_folder_keys(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for i in range(300):  # more than one chunk of records
        (root / f"run_{i:03d}").mkdir(parents=True)
    (root / "a_file").write_text("x")
    (root / "a_link").symlink_to(root / "run_000")
    odd = os.fsdecode(b"run_\xff\xfe")  # a name from another system's encoding
    (root / odd).mkdir()
    dev = os.stat(root).st_dev
    names = os.listdir(root)  # the look's own order: the directory's
    stats = ChildStats(str(root), time.time_ns() + 10**9, dev, skipped_name)
    assert stats.root() == f"{os.stat(root).st_dev}:{os.stat(root).st_ino}"  # the folder it listed
    got = {name: stats.key(name) for name in names}
    stats.close()
    assert got[odd] == key_of(root / odd)
    assert got["a_file"] == got["a_link"] == ""  # a file, a link: the look stats them itself
    assert all(got[f"run_{i:03d}"] == key_of(root / f"run_{i:03d}") for i in range(300))

    settled = min(max(os.lstat(root / name).st_mtime_ns, os.lstat(root / name).st_ctime_ns) for name in names)
    stats = ChildStats(str(root), settled, dev, skipped_name)  # every folder changed at or after the limit: too recent
    assert [stats.key(name) for name in names] == [""] * len(names)
    stats.close()
    stats = ChildStats(str(root), time.time_ns() + 10**9, dev + 1, skipped_name)  # another device than the root's
    assert [stats.key(name) for name in names] == [""] * len(names)
    stats.close()


def folders(root: Path, *names: str) -> ChildStats:
    """``names`` made below ``root``, and a helper started on it (every folder settled, on its device)."""
    for name in names:
        (root / name).mkdir(parents=True)
    return ChildStats(str(root), time.time_ns() + 10**9, os.stat(root).st_dev, skipped_name)


def test_names_asked_out_of_the_helpers_order_are_found_near_it_or_left_to_the_look(tmp_path: Path) -> None:
    root = tmp_path / "root"
    stats = folders(root, *(f"run_{i:03d}" for i in range(100)))
    names = os.listdir(root)
    assert stats.key("not_there") == ""  # a name made since its listing
    asked = names[:5] + names[10:]  # five names not asked (gone since, say): the helper looks past them
    assert [stats.key(name) for name in asked] == [key_of(root / name) for name in asked]
    assert stats.key(names[7]) == ""  # behind: the look stats it
    stats.close()
    stats.close()  # (twice: no error)


def test_hidden_names_the_walk_leaves_out_never_put_the_helper_out_of_step(tmp_path: Path) -> None:
    root = tmp_path / "root"  # in the directory's order, long runs of names the walk never asks
    stats = folders(root, *(f".hidden_{i:03d}" for i in range(300)), *(f"run_{i:03d}" for i in range(30)))
    asked = [name for name in os.listdir(root) if not skipped_name(name)]
    assert [stats.key(name) for name in asked] == [key_of(root / name) for name in asked]
    stats.close()


def test_a_helper_whose_listing_is_in_another_order_is_stopped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    stats = folders(root, *(f"run_{i:03d}" for i in range(200)))
    names = os.listdir(root)
    assert [stats.key(name) for name in reversed(names[-100:])][-64:] == [""] * 64  # not where it listed them
    assert stats._proc.returncode is not None and stats.key(names[0]) == ""  # stopped: the look's own stats


def test_names_the_helper_never_listed_between_ones_it_did_are_not_misses_in_a_row(tmp_path: Path) -> None:
    root = tmp_path / "root"
    stats = folders(root, *(f"run_{i:03d}" for i in range(200)))
    names = os.listdir(root)
    for i, name in enumerate(names):  # a name made since its listing before each it listed: 200 misses, none in a row
        assert stats.key(f"new_{i:03d}") == ""
        assert stats.key(name) == key_of(root / name), i
    stats.close()


@pytest.fixture
def flat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Runs right under the root (the helper's folder), a helper for any root, and its keys counted."""
    monkeypatch.setattr(folder_stats, "FROM_ENTRIES", 0)
    yield from lean_catalog(monkeypatch, tmp_path)


def copies(made_runs: dict[str, Path], root: Path) -> Path:
    for run in made_runs.values():
        for i in range(3):
            shutil.copytree(run, root / f"{run.name}_{i}")
    return root


def test_a_lean_look_on_the_helpers_stats_equals_the_whole_look_through_changes(flat, made_runs, tmp_path, capsys,
                                                                             monkeypatch) -> None:
    root = copies(made_runs, tmp_path / "runs")
    given: list[str] = []
    asked = ChildStats.key

    def counted(self, name):
        key = asked(self, name)
        given.append(key)
        return key

    monkeypatch.setattr(ChildStats, "key", counted)
    lean_and_whole(capsys, monkeypatch, str(root))  # first look: no entries yet, no helper
    for argv in ([], ["--all"], ["--json"], ["-f", "model.lr<1e-2"]):
        given.clear()
        text, lean = lean_and_whole(capsys, monkeypatch, str(root), *argv)
        assert lean and catalog.last_look["read"] == 0, argv
        assert len([key for key in given if key]) == 3 * len(made_runs), argv  # every run: the helper's stat

    nan = made_runs["nan"].name
    edit_summary(root / f"{made_runs['full'].name}_0", best={"val/loss": 3})  # a problem: its lines, its own stat
    shutil.rmtree(root / f"{nan}_1")
    shutil.copytree(made_runs["full"], root / "arc_new_20000101_000000")
    (root / "arc_link_20000101_000000").symlink_to(root / f"{nan}_2")
    os.utime(root / f"{made_runs['lora'].name}_0")  # touched: read again
    for argv in ([], ["--all"], ["--json"], ["-f", "model.lr<1e-2"]):
        text, _ = lean_and_whole(capsys, monkeypatch, str(root), *argv)
    text, _ = lean_and_whole(capsys, monkeypatch, str(root), "--all")
    assert "arc_new_20000101_000000" in text and "arc_link_20000101_000000" in text and f"{nan}_1" not in text


def test_a_helper_that_died_leaves_the_look_its_own_stats(flat, made_runs, tmp_path, capsys, monkeypatch) -> None:
    root = copies(made_runs, tmp_path / "runs")
    lean_and_whole(capsys, monkeypatch, str(root))
    started = ChildStats.__init__

    def killed(self, *args):
        started(self, *args)
        self._proc.kill()  # (as the OOM killer would, before it wrote anything)
        self._proc.wait()

    monkeypatch.setattr(ChildStats, "__init__", killed)
    shutil.rmtree(root / f"{made_runs['nan'].name}_1")
    for argv in ([], ["--all"], ["-f", "model.lr<1e-2"]):
        text, lean = lean_and_whole(capsys, monkeypatch, str(root), *argv)
        assert lean and catalog.last_look["read"] == 0 and f"{made_runs['nan'].name}_1" not in text


def test_the_helper_is_stopped_when_a_look_ends_before_it_claims_the_root(flat, made_runs, tmp_path,
                                                                       monkeypatch) -> None:
    root = copies(made_runs, tmp_path / "runs")
    from lightning_track.query.newest import newest_runs

    assert newest_runs(root, [], window=3) is not None
    started: list[ChildStats] = []
    init = ChildStats.__init__

    def spy(self, *args):
        init(self, *args)
        started.append(self)

    monkeypatch.setattr(ChildStats, "__init__", spy)
    monkeypatch.setattr(catalog.Catalog, "claim", lambda self, *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # (Ctrl-C as the look loads the catalog's rows)
        newest_runs(root, [], window=3)
    assert len(started) == 1 and started[0]._proc.returncode is not None  # stopped and waited for


def test_a_root_link_turned_to_another_folder_after_the_helper_listed_it(flat, made_runs, tmp_path,
                                                                        monkeypatch) -> None:
    from lightning_track.query.newest import newest_runs

    first, second = copies(made_runs, tmp_path / "runs.v1"), tmp_path / "runs.v2"
    shutil.copytree(first, second)
    for run in second.iterdir():  # the next version's runs say another best
        edit_summary(run, best={"val/loss": {"value": 0.125, "step": 1}})
    root = tmp_path / "runs"
    root.symlink_to(first)
    for _ in range(2):  # first look, then nothing changed: every run kept
        assert newest_runs(root, [], window=None) is not None
    assert catalog.last_look["read"] == 0
    started = ChildStats.__init__

    def turned(self, *args):
        started(self, *args)
        assert self.root()  # (the helper listed runs.v1)
        root.unlink()
        root.symlink_to(second)  # a deploy turns the link: the look lists runs.v2

    monkeypatch.setattr(ChildStats, "__init__", turned)
    found = newest_runs(root, [], window=None)
    assert found is not None and catalog.last_look["read"] == 3 * len(made_runs)  # runs.v2's, each read
    assert [run.summary["best"]["val/loss"]["value"] for run in found.rows] == [0.125] * 3 * len(made_runs)
