"""The readers' caches. History: a second read parses nothing, an appended tail is all that is parsed, and whatever
happens to the file or the cache (a rewind's rewrite, an edit in place, a torn or unwritable cache) the
columns equal a plain parse of the file as it is now. Configs: a filter on config values reads the cache,
and a changed config.yaml is read again."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np
import orjson
import pytest

from lightning_track import read_metrics
from lightning_track.folder.fileio import json_line, keep_jsonl_before
from lightning_track.query import history
from lightning_track.query.history import read_history


@pytest.fixture(autouse=True)
def cache_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Cache files of any size, in this test's own cache folder."""
    from lightning_track.query import config_cache

    monkeypatch.setattr(history, "MIN_BYTES", 0)
    # what earlier tests of this process left in memory (unflushed) is theirs, not this cache folder's
    monkeypatch.setattr(config_cache, "_entries", None)
    monkeypatch.setattr(config_cache, "_dirty", False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(cache))
    return cache


def write(path: Path, steps: range, metrics: dict[str, float] | None = None, mode: str = "ab") -> None:
    with open(path, mode) as handle:
        for step in steps:
            values = metrics or {"train/loss": 1.0 / step, "train/acc": step / 1000}
            handle.write(json_line({"step": step, "time": 1.8e9 + step, "metrics": values}).encode())


def run_with(tmp_path: Path, steps: range) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    write(run / "metrics.jsonl", steps)
    return run


def truth(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Each metric's (steps, values) as the plain record reader sees them."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for record in read_metrics(run / "metrics.jsonl"):
        for key, value in record.metrics.items():
            out.setdefault(key, ([], []))
            out[key][0].append(record.step)
            out[key][1].append(float(value))
    return out


def assert_matches(run: Path) -> None:
    got = read_history(run)
    expected = truth(run)
    assert sorted(got.keys) == sorted(expected)
    for key, (steps, values) in expected.items():
        s, v = got.series(key)
        assert s.tolist() == steps, key
        assert np.allclose(v, values, equal_nan=True), key


def cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "history").glob("*.npz"))


def test_a_second_read_comes_from_the_cache_and_equals_the_first(tmp_path: Path, cache_everything: Path) -> None:
    run = run_with(tmp_path, range(1, 301))
    first = read_history(run)
    assert len(cache_files(cache_everything)) == 1
    second = read_history(run)
    assert second.steps.tolist() == first.steps.tolist() == list(range(1, 301))
    assert np.array_equal(second.columns["train/loss"], first.columns["train/loss"])
    assert second.times[0] == 1.8e9 + 1
    assert_matches(run)


def test_lines_appended_later_are_added_with_new_keys_and_a_torn_tail_left_out(tmp_path: Path) -> None:
    run = run_with(tmp_path, range(1, 101))
    read_history(run)
    write(run / "metrics.jsonl", range(101, 103), {"val/loss": math.nan})
    write(run / "metrics.jsonl", range(103, 106))
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"step": 106, "time": 1.8e9, "metr')  # a line still being written
    got = read_history(run)
    assert got.partial_tail and got.steps.tolist() == list(range(1, 106))
    steps, values = got.series("val/loss")
    assert steps.tolist() == [101, 102] and np.isnan(values).all()
    steps, values = got.series("train/loss")
    assert steps.tolist() == [*range(1, 101), *range(103, 106)] and values[-1] == pytest.approx(1 / 105)
    with open(run / "metrics.jsonl", "ab") as handle:  # the line completed
        handle.write(b'ics": {"train/loss": 0.5}}\n')
    got = read_history(run)
    assert not got.partial_tail and got.series("train/loss")[1][-1] == 0.5
    assert_matches(run)


def test_a_rewind_rewrite_and_an_edit_in_place_are_parsed_again(tmp_path: Path) -> None:
    run = run_with(tmp_path, range(1, 201))
    read_history(run)
    keep_jsonl_before(run / "metrics.jsonl", 51)  # a resume from step 50's checkpoint
    write(run / "metrics.jsonl", range(51, 61), {"train/loss": 7.0})
    got = read_history(run)
    assert got.steps.tolist() == list(range(1, 61)) and got.series("train/loss")[1][-1] == 7.0
    assert_matches(run)
    data = (run / "metrics.jsonl").read_bytes()
    with open(run / "metrics.jsonl", "r+b") as handle:  # same inode, same size, first record changed
        handle.write(data.replace(b'"step":1,', b'"step":9,', 1))
    assert read_history(run).steps[:2].tolist() == [9, 2]


def test_bad_lines_in_an_appended_tail_are_named_by_their_line_in_the_file(tmp_path: Path) -> None:
    run = run_with(tmp_path, range(1, 11))
    read_history(run)
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(b"not json\n")
    write(run / "metrics.jsonl", range(11, 13))
    got = read_history(run)
    (problem,) = got.problems
    assert problem.startswith(f"{run / 'metrics.jsonl'}:11: invalid JSON (") and problem.endswith("; line skipped")
    assert got.steps.tolist() == list(range(1, 13))
    assert read_history(run).problems == got.problems  # kept with the cached columns


def test_a_torn_or_unwritable_cache_never_changes_what_is_read(tmp_path: Path, cache_everything: Path) -> None:
    run = run_with(tmp_path, range(1, 51))
    read_history(run)
    (entry,) = cache_files(cache_everything)
    entry.write_bytes(entry.read_bytes()[:100])
    assert_matches(run)
    folder = cache_everything / "history"
    for path in cache_files(cache_everything):
        path.unlink()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        write(run / "metrics.jsonl", range(51, 53))
        assert_matches(run)
        if os.geteuid() != 0:  # root writes anyway
            assert cache_files(cache_everything) == []
    finally:
        folder.chmod(stat.S_IRWXU)


def test_the_cache_keeps_within_its_budget_dropping_the_least_recently_used(
        tmp_path: Path, cache_everything: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_track.query import history_cache

    runs = []
    for name in "abc":
        run = tmp_path / name
        run.mkdir()
        write(run / "metrics.jsonl", range(1, 201))
        runs.append(run)
    read_history(runs[0])
    size = cache_files(cache_everything)[0].stat().st_size
    monkeypatch.setattr(history_cache, "BUDGET_BYTES", int(size * 2.5))
    read_history(runs[1])
    os.utime(cache_files(cache_everything)[0], (1, 1))  # make both look old ...
    os.utime(cache_files(cache_everything)[1], (1, 1))
    read_history(runs[0])  # ... then use a's: b's entry is the least recently used
    read_history(runs[2])
    assert len(cache_files(cache_everything)) == 2
    kept = {history_cache._cache_file(run / "metrics.jsonl") for run in runs}
    assert history_cache._cache_file(runs[1] / "metrics.jsonl") not in cache_files(cache_everything)
    assert kept - {history_cache._cache_file(runs[1] / "metrics.jsonl")} == set(cache_files(cache_everything))


def test_several_cold_runs_are_read_in_parallel_each_equal_to_its_file_and_a_missing_one_named(
        tmp_path: Path, cache_everything: Path) -> None:
    from lightning_track.errors import RunFolderError
    from lightning_track.query.history import read_histories

    runs = []
    for i, name in enumerate(["a", "b", "c"]):
        run = tmp_path / name
        run.mkdir()
        write(run / "metrics.jsonl", range(1, 50 + 10 * i))
        runs.append(run)
    (tmp_path / "empty").mkdir()
    got = read_histories([*runs, tmp_path / "empty"])
    assert [len(h) for h in got[:3]] == [49, 59, 69]
    assert isinstance(got[3], RunFolderError) and "metrics.jsonl: missing" in str(got[3])
    assert len(cache_files(cache_everything)) == 3  # the workers kept what they parsed
    for run, got_one in zip(runs, got[:3], strict=True):
        assert got_one.series("train/loss")[1].tolist() == truth(run)["train/loss"][1]


def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new ``lt`` process sees: the cache file, nothing in memory."""
    from lightning_track.query import config_cache

    config_cache.flush()
    monkeypatch.setattr(config_cache, "_entries", None)


def test_config_values_come_from_the_cache_until_the_file_changes(
        tmp_path: Path, cache_everything: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the catalog (it keeps configs itself, :mod:`.catalog`), configs go through the config cache."""
    from lightning_track.query import find_runs

    root = tmp_path / "runs"
    for i, lr in enumerate([1e-4, 1e-2]):
        run = root / f"ds_m_2026010{i + 1}_000000"
        run.mkdir(parents=True)
        (run / "summary.json").write_text('{"status": "completed"}')
        (run / "config.yaml").write_text(f"model:\n  lr: {lr}\n  name: mlp\nwhen: 2026-01-01\n")
    fresh_process(monkeypatch)
    first = {r.name: r.config for r in find_runs(root, catalog=False)}
    assert first["ds_m_20260101_000000"]["model.lr"] == 1e-4
    fresh_process(monkeypatch)
    # a YAML date does not come back from JSON unchanged: nothing kept, parsed each time
    assert not (cache_everything / "configs-v2.json").exists()
    for run in root.iterdir():
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("when: 2026-01-01\n", ""))
    fresh_process(monkeypatch)
    assert {r.name: r.config["model.lr"] for r in find_runs(root, catalog=False)} == {
        "ds_m_20260101_000000": 1e-4, "ds_m_20260102_000000": 1e-2}
    fresh_process(monkeypatch)
    stored = orjson.loads((cache_everything / "configs-v2.json").read_bytes())["entries"]
    assert sorted(v[4]["model.lr"] for v in stored.values()) == [1e-4, 1e-2]
    assert {r.name: r.config["model.lr"] for r in find_runs(root, catalog=False)} == {  # from the cache
        "ds_m_20260101_000000": 1e-4, "ds_m_20260102_000000": 1e-2}
    changed = root / "ds_m_20260101_000000" / "config.yaml"
    changed.write_text("model:\n  lr: 0.5\n  name: mlp\n")
    os.utime(changed, ns=(1, 1))  # even with an old mtime, the size differs
    fresh_process(monkeypatch)
    assert {r.name: r.config["model.lr"] for r in find_runs(root, catalog=False)}["ds_m_20260101_000000"] == 0.5
