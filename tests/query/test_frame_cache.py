"""load_runs' kept frame (query/frame_cache.py, frame_merge.py): equal to a plain read after every change."""

from __future__ import annotations

import itertools
import math
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.query import own_catalog

from lightning_track.folder.fileio import atomic_write_json, read_json
from lightning_track.query import catalog, frame_cache, frames
from lightning_track.query.annotations import change_tags, set_notes
from lightning_track.query.frame_merge import column_order, keeps_dtypes, merged_frame, stand_ins, whole_floats
from lightning_track.query.frames import load_runs
from lightning_track.vocabulary import iso_time


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    yield from own_catalog(monkeypatch, tmp_path)


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times load_runs looked at the runs through the catalog (a kept frame used: no look)."""
    seen: list[int] = []
    real = frames.find_runs
    monkeypatch.setattr(frames, "find_runs", lambda *a, **k: (k.get("catalog") and seen.append(1), real(*a, **k))[1])
    return seen


def equal_to_plain(root: Path, *, live: bool = False, **kw) -> pd.DataFrame:
    """load_runs and a plain read of every run's files: equal value by value (a live run's span moves with
    the clock between the two calls: compared apart)."""
    kept = load_runs(root, **kw)
    plain = load_runs(root, catalog=False, **kw)
    if live:
        assert (kept["wall_span_s"] - plain["wall_span_s"]).abs().max() < 5
        kept, plain = kept.drop(columns="wall_span_s"), plain.drop(columns="wall_span_s")
    pd.testing.assert_frame_equal(kept, plain)
    return kept


def resume(run: Path, beat: str) -> None:
    summary = read_json(run / "summary.json")
    summary.update(status="running", heartbeat=beat, last_step=20,
                   attempts=[*summary["attempts"], {"attempt": 2, "host": "elsewhere", "pid": 1}])
    atomic_write_json(run / "summary.json", summary)


def edit_config(path: Path) -> None:
    """``model.lr`` set to 0.5 in place (the folder untouched), every other key as it was."""
    config = yaml.safe_load(path.read_text())
    config["model"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(config))


CHANGES = {
    "appended": lambda runs: shutil.copytree(runs["full"], runs["full"].parent / "arc_full_20990101_000000"),
    "resumed": lambda runs: resume(runs["lora"], iso_time(time.time() - 3600)),  # and went silent: crashed
    "tagged": lambda runs: change_tags(runs["full"], ["keep", "lr-sweep"]),
    "noted": lambda runs: set_notes(runs["nan"], "diverged at 15"),
    "deleted": lambda runs: shutil.rmtree(runs["nan"]),
    "renamed": lambda runs: runs["full"].rename(runs["full"].parent / "arc_full_20990101_000000"),
    "config edited": lambda runs: edit_config(runs["full"] / "config.yaml"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_between_two_calls_gives_a_plain_reads_frame(runs_copy, looks, change) -> None:
    root = runs_copy["lora"].parent
    first = equal_to_plain(root)
    assert len(first) == 3 and len(looks) == 1
    pd.testing.assert_frame_equal(equal_to_plain(root), first)
    assert len(looks) == 1 and catalog.last_look == {"runs": 3, "read": 0}  # kept: no look, no file read
    CHANGES[change](runs_copy)
    if change == "config edited":  # written in place (the folder untouched): the run says so by its folder
        os.utime(runs_copy["full"])
    changed = equal_to_plain(root)
    in_place = change in ("resumed", "tagged", "noted", "config edited")
    assert len(looks) == (1 if in_place else 2)  # a changed run read again in its place; else looked again
    if in_place:
        assert catalog.last_look == {"runs": 3, "read": 1}
    equal_to_plain(root)
    assert len(looks) == (1 if in_place else 2)
    if change == "config edited":
        assert changed["config.model.lr"].tolist().count(0.5) == 1
    equal_to_plain(root, config=False)  # a frame of its own
    assert len(looks) == (2 if in_place else 3)


def test_running_runs_are_judged_again_each_call_and_read_again_when_written(runs_copy, looks) -> None:
    root = runs_copy["lora"].parent
    resume(runs_copy["lora"], iso_time())  # live: a fresh heartbeat
    resume(runs_copy["full"], iso_time(time.time() - 3600))  # silent for an hour: crashed
    first = equal_to_plain(root, live=True)
    assert sorted(first["status"]) == ["crashed", "failed", "running"]
    equal_to_plain(root, live=True)
    assert len(looks) == 1 and catalog.last_look == {"runs": 3, "read": 0}  # judged from the kept summaries

    summary = read_json(runs_copy["lora"] / "summary.json")  # a new heartbeat, a new metric
    summary.update(heartbeat=iso_time(), last_step=25)
    summary.setdefault("final", {})["extra/metric"] = {"value": 0.5}
    atomic_write_json(runs_copy["lora"] / "summary.json", summary)
    frame = equal_to_plain(root, live=True)
    assert len(looks) == 1 and catalog.last_look["read"] == 1  # only the live run read again
    assert frame.set_index("name").loc[runs_copy["lora"].name, "last_step"] == 25

    summary.update(status="completed", end_time=iso_time())  # it ends: a settled run, kept from now on
    atomic_write_json(runs_copy["lora"] / "summary.json", summary)
    assert sorted(equal_to_plain(root)["status"]) == ["completed", "crashed", "failed"]
    assert len(looks) == 1 and catalog.last_look["read"] == 1  # read again (at most a few: then kept again)


@pytest.mark.parametrize("damage", ["torn", "foreign", "other key", "writable by others"])
def test_a_torn_or_foreign_frame_file_is_built_again_never_trusted(runs_copy, looks, tmp_path, damage) -> None:
    root = runs_copy["lora"].parent
    good = equal_to_plain(root)
    [kept] = frame_cache.frames_folder().glob("*.pickle")
    marker = tmp_path / "unpickled"
    planted = pickle.dumps(_Plant(str(marker)))
    if damage == "torn":
        kept.write_bytes(kept.read_bytes()[: kept.stat().st_size // 2])
    elif damage == "foreign":
        kept.write_bytes(b"some other program's cache\n" + planted)
    elif damage == "other key":
        record = pickle.loads(kept.read_bytes()[len(frame_cache._MAGIC):])
        record["key"] = ("another", "key")
        kept.write_bytes(frame_cache._MAGIC + pickle.dumps(record))
    else:
        kept.write_bytes(frame_cache._MAGIC + planted)
        kept.chmod(0o666)
    pd.testing.assert_frame_equal(equal_to_plain(root), good)
    assert len(looks) == 2 and not marker.exists()  # built again; the planted pickle never loaded
    assert kept.read_bytes().startswith(frame_cache._MAGIC) and not kept.stat().st_mode & 0o022
    equal_to_plain(root)
    assert len(looks) == 2  # kept again


class _Plant:
    """A pickle that leaves a file behind when it is loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("where", ["cache", "frames"])
def test_an_unwritable_cache_gives_a_plain_read_and_one_warning(runs_copy, own_cache, looks, where) -> None:
    root = runs_copy["lora"].parent
    if where == "cache":
        own_cache.write_text("a file: no cache here")
    else:
        own_cache.mkdir()
        frame_cache.frames_folder().write_text("a file: no frames here")
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = load_runs(root)
        assert len(caught) == 1, [str(w.message) for w in caught]
        assert str(own_cache if where == "cache" else frame_cache.frames_folder()) in str(caught[0].message)
        pd.testing.assert_frame_equal(frame, load_runs(root, catalog=False))
    assert len(looks) == 2


def test_a_filter_is_never_answered_from_the_kept_frame(runs_copy, looks) -> None:
    root = runs_copy["lora"].parent
    load_runs(root)
    assert load_runs(root, filter="model.lr<0.005")["method"].tolist() == ["full"]
    assert len(looks) == 2


# -- the merge on its own: pandas' own inference of all the rows at once is the reference ------------------
VALUES = [1, 2.5, None, "a", True, ["x"], {"k": 1}, math.nan, 7]


@pytest.mark.parametrize("kept_values,new_values", [
    *itertools.product([(1, 2), (1.5, None), ("a", None), (None, None), (True, False), (["x"], None), (1, "a")],
                       [(3,), (None,), (2.5,), ("b",), (False,), ("missing",)]),
])
def test_a_merge_is_pandas_frame_of_all_rows_or_refused(kept_values, new_values) -> None:
    kept_rows = [{"id": i, "c": v} for i, v in enumerate(kept_values)]
    new_rows = [{"id": 10 + i} if v == "missing" else {"id": 10 + i, "c": v} for i, v in enumerate(new_values)]
    every = [kept_rows[0], *new_rows, *kept_rows[1:]]  # a new row between the kept ones
    want = pd.DataFrame(every)
    kept = pd.DataFrame(kept_rows)
    at = [0, *range(1 + len(new_rows), len(every))]
    order = column_order([(i, tuple(row), ()) for i, row in enumerate(every)])
    got = merged_frame(kept, at, stand_ins(kept), [(1 + i, row) for i, row in enumerate(new_rows)], order)
    if got is not None:
        pd.testing.assert_frame_equal(got, want)
    else:  # refused only where pandas would give the kept column another dtype
        assert want["c"].dtype != kept["c"].dtype


def test_a_column_only_the_new_rows_have_comes_in_pandas_order_and_dtype() -> None:
    kept_rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    new_rows = [{"a": 3, "z": 0.5, "b": "w"}]
    every = [kept_rows[0], new_rows[0], kept_rows[1]]
    kept = pd.DataFrame(kept_rows)
    order = column_order([(i, tuple(row), ()) for i, row in enumerate(every)])
    got = merged_frame(kept, [0, 2], stand_ins(kept), [(1, new_rows[0])], order)
    pd.testing.assert_frame_equal(got, pd.DataFrame(every))


def test_a_mirror_of_servers_and_a_single_run_are_kept_and_checked(made_runs, tmp_path, looks) -> None:
    """Runs below per-server folders: a run added inside a server's folder changes that folder, not the root."""
    mirror = tmp_path / "mirror"
    shutil.copytree(made_runs["lora"], mirror / "gpu1" / made_runs["lora"].name)
    shutil.copytree(made_runs["full"], mirror / "gpu2" / made_runs["full"].name)
    (mirror / "notes").mkdir()  # a folder with no runs (yet)
    assert sorted(equal_to_plain(mirror)["source"]) == ["gpu1", "gpu2"]
    equal_to_plain(mirror)
    assert len(looks) == 1
    shutil.copytree(made_runs["nan"], mirror / "gpu2" / made_runs["nan"].name)
    assert len(equal_to_plain(mirror)) == 3 and len(looks) == 2
    shutil.copytree(made_runs["nan"], mirror / "notes" / made_runs["nan"].name)
    assert sorted(equal_to_plain(mirror)["source"]) == ["gpu1", "gpu2", "gpu2", "notes"] and len(looks) == 3
    single = mirror / "gpu1" / made_runs["lora"].name
    equal_to_plain(single)
    equal_to_plain(single)
    assert len(looks) == 4


def test_a_frame_kept_by_other_code_is_built_again(runs_copy, looks, monkeypatch) -> None:
    root = runs_copy["lora"].parent
    equal_to_plain(root)
    monkeypatch.setattr(frame_cache, "_code", lambda: ("another", "version"))
    equal_to_plain(root)
    assert len(looks) == 2


@pytest.mark.parametrize("values", [
    (1, 2, 3), (1.5, 2, 3), (1, None, 3), (None, 1, 2), (None, 2.5, None), (2.0, 3, None), (1.0, 2.0, 3.0),
    ("a", None, "b"), (None, "a", None), (["x"], None, None), (None, {"k": 1}, ["y"]), (None, None, None),
    (True, None, False), (1, "a", 2), (math.inf, 1, 2), (math.nan, 1, None), (1.0, 2, 3), (1, 2.0, None),
])
def test_a_kept_frame_without_some_rows_is_used_only_when_pandas_infers_it_alike(values) -> None:
    rows = [{"c": v} for v in values]
    frame = pd.DataFrame(rows)
    float_rows = {name: np.array([type(row.get(name)) is float for row in rows]) for name in whole_floats(frame)}
    for drop in range(len(rows)):
        keep = np.ones(len(rows), dtype=bool)
        keep[drop] = False
        if keeps_dtypes(frame, keep, float_rows=float_rows):  # then the kept rows are what pandas makes of them
            pd.testing.assert_frame_equal(frame[keep].reset_index(drop=True),
                                          pd.DataFrame([r for i, r in enumerate(rows) if keep[i]]))
