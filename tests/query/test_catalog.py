"""The catalog of runs: whatever happens to the runs between two looks (appends, a resume's rewind, tags,
notes, deletes, renames, a mirror copied over with its old mtimes kept, an edited config) or to the catalog
itself (torn, another version, an unwritable cache), a look through it equals a plain read of the files,
value by value; and a look where nothing changed reads no run's files."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import script_env
from support.query import own_catalog

from lightning_track.folder.fileio import atomic_write_json, keep_jsonl_before, read_json
from lightning_track.query import catalog
from lightning_track.query.annotations import change_tags, set_notes
from lightning_track.query.frames import load_runs
from lightning_track.query.runs import filter_runs, find_runs


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    yield from own_catalog(monkeypatch, tmp_path)


def snapshot(runs: list) -> list[dict]:
    """Everything a reader of a run can ask for, as plain values."""
    out = []
    for run in runs:
        record = run.record(config=True)
        record.update(summary=run.summary, meta=run.meta, annotations=run.annotations, problems=list(run.problems),
                      start_ts=run.start, end_ts=run.end)
        out.append(record)
    return out


def look(roots, now: float = 1.9e9) -> tuple[list[dict], list[str]]:
    """The catalog's look and a plain read at the same ``now``: equal, value by value; returns the look."""
    problems: list[str] = []
    through = snapshot(find_runs(roots, problems, now=now))
    plain_problems: list[str] = []
    plain = snapshot(find_runs(roots, plain_problems, now=now, catalog=False))
    assert through == plain
    assert [p for p in problems if "catalog" not in p] == plain_problems
    return through, problems


def settle() -> None:
    time.sleep(0.01)  # a later write gets a later ctime even on a coarse clock


def test_a_look_through_the_catalog_equals_a_plain_read_after_every_kind_of_change(runs_copy, tmp_path) -> None:
    root = runs_copy["lora"].parent
    first, problems = look(root)
    assert len(first) == 3 and problems == [] and catalog.last_look == {"runs": 3, "read": 3}
    again, _ = look(root)
    assert again == first and catalog.last_look == {"runs": 3, "read": 0}  # nothing changed: no file read

    with open(runs_copy["lora"] / "metrics.jsonl", "a") as handle:  # training goes on: metrics appended
        handle.write(json.dumps({"step": 31, "time": 1.8e9, "metrics": {"train/loss": 0.1}}) + "\n")
    look(root)
    assert catalog.last_look["read"] == 0

    settle()  # a resume: metrics after the checkpoint moved aside, the summary replaced (a new attempt)
    keep_jsonl_before(runs_copy["lora"] / "metrics.jsonl", 20, moved_to=runs_copy["lora"] / "metrics.attempt1.jsonl")
    summary = read_json(runs_copy["lora"] / "summary.json")
    summary.update(status="running", heartbeat=summary["start_time"], last_step=20,
                   attempts=[*summary["attempts"], {"attempt": 2, "host": "elsewhere", "pid": 1}])
    atomic_write_json(runs_copy["lora"] / "summary.json", summary)
    runs, _ = look(root)
    assert catalog.last_look["read"] == 1
    resumed = next(r for r in runs if r["name"] == runs_copy["lora"].name)
    assert resumed["last_step"] == 20 and resumed["status"] == "crashed" and resumed["attempts"] == 2

    settle()
    change_tags(runs_copy["full"], ["keep", "lr-sweep"])
    set_notes(runs_copy["nan"], "diverged at 15")
    runs, _ = look(root)
    assert catalog.last_look["read"] == 2
    by_name = {r["name"]: r for r in runs}
    assert by_name[runs_copy["full"].name]["tags"] == ["keep", "lr-sweep"]
    assert by_name[runs_copy["nan"].name]["notes"] == "diverged at 15"

    shutil.rmtree(runs_copy["nan"])  # deleted between two looks: gone, no error
    renamed = runs_copy["full"].rename(root / "arc_full_20990101_000000")
    runs, problems = look(root)
    assert sorted(r["name"] for r in runs) == sorted([runs_copy["lora"].name, renamed.name]) and problems == []
    assert catalog.last_look == {"runs": 2, "read": 1}  # the renamed folder is a new entry; the rest as kept
    with sqlite3.connect(catalog.catalog_path()) as conn:  # the deleted and the old name are forgotten
        kept = sorted(Path(p).name for (p,) in conn.execute("SELECT path FROM runs"))
    assert kept == sorted([runs_copy["lora"].name, renamed.name])


def test_a_mirror_copied_over_with_its_old_mtimes_kept_is_read_again(made_runs, tmp_path) -> None:
    """``cp -p``/rsync --inplace: same inode, same size, same mtime on the file and its folder; only the
    ctime (which nobody can set) says the file changed."""
    source = tmp_path / "server" / made_runs["full"].name
    shutil.copytree(made_runs["full"], source)
    mirror = tmp_path / "mirror" / "gpu1" / source.name
    shutil.copytree(source, mirror)  # copy2: mtimes kept
    before, _ = look(tmp_path / "mirror")
    assert before[0]["source"] == "gpu1" and before[0]["last_step"] == 20

    settle()
    for name, old, new in (("summary.json", '"last_step": 20', '"last_step": 19'),
                           ("config.yaml", "lr: 0.001", "lr: 0.002")):
        text = (source / name).read_text()
        assert old in text
        (source / name).write_text(text.replace(old, new))
        folder_times = os.stat(mirror)
        file_times = os.stat(mirror / name)
        shutil.copyfile(source / name, mirror / name)  # in place: same inode
        os.utime(mirror / name, ns=(file_times.st_atime_ns, file_times.st_mtime_ns))
        os.utime(mirror, ns=(folder_times.st_atime_ns, folder_times.st_mtime_ns))
        after = os.stat(mirror / name)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (file_times.st_ino, file_times.st_size,
                                                                     file_times.st_mtime_ns)
    after, _ = look(tmp_path / "mirror")
    assert after[0]["last_step"] == 19 and after[0]["config"]["model.lr"] == 0.002


def test_an_ended_run_is_checked_by_its_folder_and_a_running_run_by_its_files(runs_copy) -> None:
    """An ended run whose folder did not change is taken as kept (every writer replaces files atomically,
    which changes the folder); a running run's file rewritten in place, the folder untouched, is seen."""
    root = runs_copy["lora"].parent
    live = runs_copy["lora"] / "summary.json"
    summary = read_json(live)
    summary.update(status="running", heartbeat=summary["start_time"])
    atomic_write_json(live, summary)
    look(root)
    look(root)
    assert catalog.last_look == {"runs": 3, "read": 0}
    for expr in ("status=failed", "tag=baseline", "start>2000-01-01"):  # from the catalog's columns
        through = [r.name for r in filter_runs(find_runs(root, now=1.9e9), expr)]
        assert through == [r.name for r in filter_runs(find_runs(root, now=1.9e9, catalog=False), expr)], expr
    assert [r.name for r in filter_runs(find_runs(root, now=1.9e9), "status=failed")] == [runs_copy["nan"].name]

    settle()
    summary["last_step"] = 7
    live.write_text(json.dumps(summary))  # in place: same inode, the folder untouched
    runs, _ = look(root)
    assert catalog.last_look["read"] == 1 and {r["name"]: r for r in runs}[runs_copy["lora"].name]["last_step"] == 7

    ended = runs_copy["full"] / "summary.json"  # in place into an ended run: `touch RUN` makes a look read it
    ended.write_text(ended.read_text().replace('"last_step": 20', '"last_step": 19'))
    os.utime(runs_copy["full"])
    runs, _ = look(root)
    assert catalog.last_look["read"] == 1 and {r["name"]: r for r in runs}[runs_copy["full"].name]["last_step"] == 19


def test_config_values_come_from_the_catalog_and_a_filter_on_them_equals_a_plain_read(runs_copy) -> None:
    root = runs_copy["lora"].parent
    runs = find_runs(root)
    assert [r.config["model.lr"] for r in runs] == [0.01, 0.001, 0.01]
    catalog.flush_configs()
    with sqlite3.connect(catalog.catalog_path()) as conn:
        kept = {Path(p).name: json.loads(c) for p, c in conn.execute("SELECT path, config FROM configs")}
    assert kept[runs_copy["full"].name]["model.lr"] == 0.001
    through = [r.name for r in filter_runs(find_runs(root), "model.lr<0.005")]
    assert through == [r.name for r in filter_runs(find_runs(root, catalog=False), "model.lr<0.005")]
    assert through == [runs_copy["full"].name]


def test_a_filter_on_kept_config_values_builds_no_run_and_equals_a_plain_read(runs_copy) -> None:
    """Each kind of YAML value (a float, 1e-3 kept as a string, text, a bool, a list, null, a key one run
    lacks, a key no JSON path can name) filters the same through the catalog's kept values as from the
    files; the second look builds no run for them."""
    lora, full, nan = runs_copy["lora"], runs_copy["full"], runs_copy["nan"]
    (lora / "config.yaml").write_text('model: {lr: 0.01, name: "a\'b"}\nflag: true\nlayers: [1, 2]\nnote: null\n'
                                      '"odd\\\\key": 3\n')
    (full / "config.yaml").write_text("model: {lr: 1e-3, name: mlp}\nflag: false\nlayers: [4]\nnote: x\n")
    (nan / "config.yaml").write_text("model: {name: mlp}\n")
    for run in runs_copy.values():
        os.utime(run)
    root = lora.parent
    filters = ["model.lr<0.005", "config.model.lr>=0.01", 'model.name="a\'b"', "model.name!=mlp", "flag=true",
               "layers=4", "note", "note!=x", "odd\\key=3", "model.lr"]
    first = {f: [r.name for r in filter_runs(find_runs(root), f)] for f in filters}  # the configs parsed, kept
    catalog.flush_configs()
    for text in filters:
        runs = find_runs(root)
        through = [r.name for r in filter_runs(runs, text)]
        plain = [r.name for r in filter_runs(find_runs(root, catalog=False), text)]
        assert through == plain == first[text], text
        assert all(run._info is None for run in runs), text  # values as kept: no run built
    assert [r.name for r in filter_runs(find_runs(root), "model.lr<0.005")] == [full.name]


def test_load_runs_through_the_catalog_equals_a_plain_read(made_runs, monkeypatch) -> None:
    """The second look builds no run: each ended run's row and config as kept; paths as this look found them."""
    import pandas as pd

    root = made_runs["lora"].parent
    load_runs(root)
    load_runs(root)  # the configs parsed by the first look are kept by now
    catalog.flush_configs()
    through = load_runs(root)
    assert catalog.last_look["read"] == 0
    plain = load_runs(root, catalog=False)
    assert len(through) == 3 and "config.model.lr" in through.columns
    pd.testing.assert_frame_equal(through, plain)
    monkeypatch.chdir(root.parent)  # the same runs through a relative root: the kept rows say "runs/<name>"
    pd.testing.assert_frame_equal(load_runs("runs"), load_runs("runs", catalog=False))


def test_load_runs_mixes_kept_and_built_rows_in_a_plain_reads_column_order(made_runs) -> None:
    """Kept rows (parsed all at once) beside a changed run's built row with a metric the others lack: the
    columns come in the plain read's order (that metric after the configs, where the last run adds it)."""
    import pandas as pd

    root = made_runs["lora"].parent
    load_runs(root)
    catalog.flush_configs()
    last = root / load_runs(root)["name"].iloc[-1]
    summary = read_json(last / "summary.json")
    summary.setdefault("final", {})["extra/metric"] = {"value": 0.5}
    atomic_write_json(last / "summary.json", summary)
    through, plain = load_runs(root), load_runs(root, catalog=False)
    assert catalog.last_look["read"] == 1
    assert list(through.columns)[-1] == "final.extra/metric" and through["final.extra/metric"].iloc[-1] == 0.5
    pd.testing.assert_frame_equal(through, plain)
    pd.testing.assert_frame_equal(load_runs(root, config=False), load_runs(root, config=False, catalog=False))


def test_a_look_pauses_the_collector_and_restores_it(made_runs, monkeypatch) -> None:
    import gc

    seen = []
    monkeypatch.setattr(catalog, "open_catalog", lambda problems, real=catalog.open_catalog: (
        seen.append(gc.isenabled()), real(problems))[1])
    find_runs(made_runs["lora"].parent)
    assert seen == [False] and gc.isenabled()


@pytest.mark.parametrize("damage", ["torn", "other version", "unwritable"])
def test_a_damaged_foreign_or_unwritable_catalog_is_rebuilt_or_passed_by(runs_copy, own_cache, monkeypatch,
                                                                         damage) -> None:
    root = runs_copy["lora"].parent
    good, _ = look(root)
    path = catalog.catalog_path()
    if damage == "torn":
        data = path.read_bytes() if path.exists() else b""
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)
        path.write_bytes(b"SQLite format 3\0" + b"\xff" * 100 + data[116:4096])
    elif damage == "other version":
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE runs (path TEXT PRIMARY KEY, something_else INTEGER)")
            conn.execute("PRAGMA user_version = 99")
    else:
        shutil.rmtree(own_cache)
        own_cache.write_text("not a folder")  # the cache cannot be created
    runs, problems = look(root)
    assert runs == good
    if damage == "other version":
        assert problems == [] and catalog.last_look["read"] == 3  # emptied and filled again, quietly
    else:
        assert len(problems) == 1 and str(path if damage == "torn" else own_cache) in problems[0], problems
        assert ("damaged" if damage == "torn" else "not usable") in problems[0]
    runs, problems = look(root)
    assert runs == good
    if damage != "unwritable":  # built again: the next look reads nothing
        assert problems == [] and catalog.last_look == {"runs": 3, "read": 0}
    else:
        assert len(problems) == 1


@pytest.mark.slow
def test_two_lt_ls_at_once_are_both_right(made_runs, own_cache) -> None:
    root = made_runs["lora"].parent
    time.sleep(2.1)  # the processes keep only values settled for RACY_S (2 s), and the runs were just made
    env = {**script_env(), "LIGHTNING_TRACK_CACHE_DIR": str(own_cache)}
    no_cache = own_cache.parent / "no-cache"
    no_cache.write_text("a file: no catalog, every run's files read")
    plain = subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", "ls", str(root), "--json"],
                           capture_output=True, text=True, env={**env, "LIGHTNING_TRACK_CACHE_DIR": str(no_cache)})
    assert "catalog not usable" in plain.stderr
    want = [{k: v for k, v in r.items() if k != "wall_span_s"} for r in json.loads(plain.stdout)]
    for _ in range(2):  # an empty catalog (both write it), then a kept one (both read it)
        procs = [subprocess.Popen([sys.executable, "-m", "lightning_track.cli.lt", "ls", str(root), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0 and err == "", err
            assert [{k: v for k, v in r.items() if k != "wall_span_s"} for r in json.loads(out)] == want
    with sqlite3.connect(catalog.catalog_path()) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 3


def test_a_relative_cache_dir_is_taken_from_where_lt_starts(made_runs, tmp_path) -> None:
    """``LIGHTNING_TRACK_CACHE_DIR=cache`` is the folder ``cache`` where the command starts; the catalog and
    the config cache are written there (SQLite's URIs need absolute paths), and no line is said about it."""
    root = made_runs["lora"].parent
    env = {**script_env(), "LIGHTNING_TRACK_CACHE_DIR": "rel-cache"}
    looks = (["-m", "lightning_track.cli.lt", "ls", str(root), "--json"],  # the catalog written
             ["-c", f"from lightning_track.query.frames import load_runs; load_runs({str(root)!r}, config=True)"])
    for args in looks:  # load_runs keeps its rows and configs in the catalog at exit
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    assert len(json.loads(subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", "ls", str(root), "--json"],
                                         capture_output=True, text=True, env=env, cwd=tmp_path).stdout)) == 3
    assert (tmp_path / "rel-cache" / catalog.catalog_path().name).is_file()
