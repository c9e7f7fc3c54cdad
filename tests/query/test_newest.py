"""`lt ls` through the lean look (only the printed rows built, SQLite ordering the rest; --json streamed from
its cursor) prints what the whole look prints, character for character: first look, nothing changed, after
tags, deletes, renames, with --last, --all, --reverse, --metric, --json, runs tied on start and name in
several sources, a run with problems, a running run, and a link to a run folder (the lean look steps aside)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.query import edit_summary, lean_and_whole, lean_catalog

from lightning_track.cli.lt import main
from lightning_track.query import catalog, newest
from lightning_track.query.annotations import change_tags
from lightning_track.query.runs import find_runs

ARGS = ([], ["--last", "2"], ["--all"], ["--reverse"], ["--reverse", "--last", "4"], ["--metric", "val/loss"],
        ["--metric", "nope"], ["--last", "0"], ["-n", "100"], ["--json"], ["--json", "--reverse"],
        ["--json", "--last", "2"])
LEAN = newest.newest_runs


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    yield from lean_catalog(monkeypatch, tmp_path)


@pytest.fixture
def mirror(made_runs: dict[str, Path], tmp_path: Path) -> Path:
    """Two sources of copies of the made runs: copies share a start (ties broken by name, then by source);
    one run torn (a problem line), one running."""
    root = tmp_path / "mirror"
    for source in ("gpu1", "gpu2"):
        for run in made_runs.values():
            shutil.copytree(run, root / source / run.name)
            shutil.copytree(run, root / source / f"{run.name}_copy")
    edit_summary(root / "gpu1" / made_runs["full"].name, best={"val/loss": 3})  # not {"value": ...}: a problem
    edit_summary(root / "gpu2" / made_runs["lora"].name, status="running", heartbeat="2000-01-01T00:00:00+00:00")
    return root


def test_the_lean_table_equals_the_whole_look_through_every_change(mirror, made_runs, capsys, monkeypatch) -> None:
    root = str(mirror)
    text, lean = lean_and_whole(capsys, monkeypatch, root)  # first look: every run read and kept
    assert lean and "older runs not shown" in text and "gpu1" in text
    assert "best.val/loss is 3" in text  # the torn run's line is the look's
    for argv in ARGS:
        text, lean = lean_and_whole(capsys, monkeypatch, root, *argv)  # nothing changed
        assert lean and catalog.last_look["read"] == 0
    text, _ = lean_and_whole(capsys, monkeypatch, root, "--all")
    rows = [line.split()[0] for line in text.splitlines()[1:] if not line.startswith("lt ls:")]
    assert len(rows) == 12 and rows.count(made_runs["nan"].name) == 2  # one per source, both listed

    change_tags(mirror / "gpu2" / made_runs["nan"].name, ["keep"])  # the tags column appears
    shutil.rmtree(mirror / "gpu1" / f"{made_runs['nan'].name}_copy")  # deleted: gone, no error
    (mirror / "gpu2" / made_runs["full"].name).rename(mirror / "gpu2" / "arc_full_20990101_000000")
    for argv in ARGS:
        text, lean = lean_and_whole(capsys, monkeypatch, root, *argv)
        assert lean
    text, _ = lean_and_whole(capsys, monkeypatch, root, "--all")
    assert "arc_full_20990101_000000" in text and "keep" in text and "tags" in text
    assert text.count(made_runs["nan"].name + "_copy") == 1  # the deleted one is gone


def test_a_link_to_a_run_folder_is_listed_once_as_a_plain_read_does(mirror, made_runs, capsys, monkeypatch) -> None:
    (mirror / "gpu1" / "arc_aaa_20000101_000000").symlink_to(mirror / "gpu1" / made_runs["nan"].name)
    lean_and_whole(capsys, monkeypatch, str(mirror))
    time.sleep(0.01)
    for argv in ARGS[:3]:
        text, lean = lean_and_whole(capsys, monkeypatch, str(mirror), *argv)
        assert not lean  # the same folder twice: the whole look answers


def test_a_root_that_is_a_run_and_an_empty_root(made_runs, tmp_path, capsys, monkeypatch) -> None:
    run = shutil.copytree(made_runs["lora"], tmp_path / "one" / made_runs["lora"].name)
    for _ in range(2):
        text, lean = lean_and_whole(capsys, monkeypatch, str(run))
        assert lean and made_runs["lora"].name in text
    (tmp_path / "empty").mkdir()
    for argv in ([], ["--json"]):
        text, _ = lean_and_whole(capsys, monkeypatch, str(tmp_path / "empty"), *argv)
        assert "no runs found" in text


def test_a_tables_first_look_writes_no_records_and_the_first_build_keeps_them(mirror, capsys) -> None:
    def snapshot(runs: list) -> list[dict]:
        return [{**run.record(config=True), "summary": run.summary, "meta": run.meta, "problems": run.problems}
                for run in runs]

    def count(table: str) -> int:
        with sqlite3.connect(catalog.catalog_path()) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    assert main(["ls", str(mirror)]) == 0
    capsys.readouterr()
    catalog.flush_configs()
    assert count("runs") == 12 and count("records") == 2 + 3  # the running and torn runs', the 3 printed rows'
    assert main(["ls", str(mirror), "--json"]) == 0  # streamed: each run built, from its files
    streamed = capsys.readouterr().out
    catalog.flush_configs()
    assert count("records") == 12  # built once from the files, kept since
    assert main(["ls", str(mirror), "--json"]) == 0 and capsys.readouterr().out == streamed
    assert snapshot(find_runs(mirror, now=1.9e9)) == snapshot(find_runs(mirror, now=1.9e9, catalog=False))


def test_a_source_folder_linked_back_into_the_root_lists_its_runs_as_a_plain_read(mirror, capsys, monkeypatch) -> None:
    (mirror / "gpu3").symlink_to(mirror / "gpu1")  # the same run folders again, under another source
    lean_and_whole(capsys, monkeypatch, str(mirror))
    time.sleep(0.01)
    for argv in ([], ["--all"], ["--json"]):
        text, lean = lean_and_whole(capsys, monkeypatch, str(mirror), *argv)
        assert not lean  # the whole look answers
    listed = lean_and_whole(capsys, monkeypatch, str(mirror), "--all")[0]
    assert "gpu3" not in listed  # each folder once, as found first


def test_a_link_to_a_run_outside_the_root_keeps_the_lean_look(made_runs, tmp_path, capsys, monkeypatch) -> None:
    outside = shutil.copytree(made_runs["full"], tmp_path / "elsewhere" / made_runs["full"].name)
    root = tmp_path / "linked"
    shutil.copytree(made_runs["lora"], root / made_runs["lora"].name)
    (root / "arc_far_20000101_000000").symlink_to(outside)
    lean_and_whole(capsys, monkeypatch, str(root))
    for argv in ([], ["--all"], ["--json"]):
        text, lean = lean_and_whole(capsys, monkeypatch, str(root), *argv)
        assert lean and "arc_far_20000101_000000" in text and catalog.last_look["read"] == 0


def test_a_run_folder_whose_name_is_not_utf8_is_listed_as_a_plain_read(made_runs, tmp_path) -> None:
    root = tmp_path / "bytes"
    root.mkdir()
    shutil.copytree(made_runs["lora"], root / made_runs["lora"].name)
    odd = os.fsdecode(b"arc_\xff\xfe_20000101_000000")  # a name from another system's encoding
    shutil.copytree(made_runs["full"], root / odd)
    plain = [(run.name, run.status) for run in find_runs(root, catalog=False)]
    for _ in range(2):  # first look, then nothing changed (the odd name has no entry: read each time)
        problems: list[str] = []
        found = LEAN(root, problems, window=None)
        assert found is not None and [(run.name, run.status) for run in found.rows] == plain and not problems
        assert found.total == 2 and odd in [name for name, _ in plain]


def test_a_catalog_damaged_mid_look_answers_as_a_plain_read(mirror, own_cache, capsys, monkeypatch) -> None:
    root = str(mirror)
    assert main(["ls", root, "--all"]) == 0  # the catalog written
    capsys.readouterr()
    plain = find_runs(mirror, catalog=False)
    time.sleep(0.01)
    claim = catalog.Catalog.claim

    def damaging(self, *args, **kwargs):  # the file torn while the look is under way (another program, a disk)
        catalog.catalog_path().write_bytes(b"not a database" * 512)
        monkeypatch.setattr(catalog.Catalog, "claim", claim)
        return claim(self, *args, **kwargs)

    monkeypatch.setattr(catalog.Catalog, "claim", damaging)
    assert main(["ls", root, "--all"]) == 0
    out, err = capsys.readouterr()
    assert err.count("catalog damaged") == 1
    assert [line.split()[0] for line in out.splitlines()[1:]] == [run.name for run in plain]
    text, lean = lean_and_whole(capsys, monkeypatch, root, "--all")  # built again: the lean look answers once more
    assert "catalog damaged" not in text
