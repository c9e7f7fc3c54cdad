"""Helpers of the run-query tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def edit_summary(run: Path, **fields) -> None:
    """Change a made run's ``summary.json`` the way a crash, an older version or a hand edit would."""
    path = run / "summary.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def lean_catalog(monkeypatch: Any, tmp_path: Path) -> Iterator[Path]:
    """:func:`own_catalog` with `lt ls`'s table cut at 3 rows (50 by default): a dozen runs stand for 100,000
    (a fixture's body)."""
    from lightning_track.query import listing

    monkeypatch.setattr(listing, "TABLE_ROWS", 3)
    yield from own_catalog(monkeypatch, tmp_path)


def own_catalog(monkeypatch: Any, tmp_path: Path) -> Iterator[Path]:
    """A test's own catalog and config cache (a fixture's body); values written just now count as settled (ext4
    times are to the ns). What the test's looks left to write goes to this test's cache, not the next one's."""
    from lightning_track.query import catalog, config_cache

    monkeypatch.setattr(catalog, "RACY_S", 0.0)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(cache))
    yield cache
    catalog.flush_configs()
    config_cache.flush()
    monkeypatch.setattr(config_cache, "_entries", None)


def lean_and_whole(capsys: Any, monkeypatch: Any, *argv: str) -> tuple[str, bool]:
    """``lt ls ARGV`` through the lean look (query/newest.py), then with it off (the whole look): equal stdout,
    stderr and exit code; the lean output, and whether the lean look answered."""
    from lightning_track.cli.lt import main
    from lightning_track.query import newest

    lean, answered = newest.newest_runs, []

    def spy(*args, **kwargs):
        found = lean(*args, **kwargs)
        answered.append(found is not None)
        return found

    monkeypatch.setattr(newest, "newest_runs", spy)
    code = main(["ls", *argv])
    out, err = capsys.readouterr()
    monkeypatch.setattr(newest, "newest_runs", lambda *a, **k: None)
    whole_code = main(["ls", *argv])
    whole_out, whole_err = capsys.readouterr()
    monkeypatch.setattr(newest, "newest_runs", lean)
    assert (code, out, err) == (whole_code, whole_out, whole_err), argv
    assert answered, "the lean look was not asked"
    return out + err, answered[0]
