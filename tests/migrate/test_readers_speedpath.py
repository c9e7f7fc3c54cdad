"""The fast paths of TrackingReader (key layouts worked out once per key tuple, times formatted as
``iso_time`` once a minute) and of the TensorBoard sink (one Event refilled) give exactly what the plain code
gives: the same records, times, notes and event bytes, also for bad input and in odd time zones."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

from lightning_track.errors import JsonlProblem
from lightning_track.folder.fileio import iter_jsonl
from lightning_track.folder.layout import RunLayout
from lightning_track.folder.records import MetricRecord
from lightning_track.migrate.readers import as_int, as_number, line_ids
from lightning_track.migrate.report import Notes
from lightning_track.migrate.rules import load_rules
from lightning_track.migrate.tracking_reader import CANONICAL_ORDER, TrackingReader, _FastIsoTime
from lightning_track.sinks.base import SinkContext
from lightning_track.sinks.tensorboard import TensorBoardSink
from lightning_track.vocabulary import iso_time


@contextmanager
def _local_zone(zone: str) -> Iterator[None]:
    """The process's local time zone is ``zone`` inside the block (TZ + tzset), restored after."""
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


# -- the reader without its fast paths, in the plainest code: the reference -----------------------
def _reference_time(path: Path, notes: Notes, lineno: int, obj: dict[str, Any]) -> float | None:
    value = obj.get("timestamp")
    if value is None:
        return None
    number = as_number(value)
    if number is not None:
        try:
            obj["timestamp"] = iso_time(number)
        except (OverflowError, OSError, ValueError):
            notes.warn(f"{path}:{lineno}: 'time' {value!r} is not a unix time", str(path))
            return None
        return number
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value).timestamp()
            obj["timestamp"] = iso_time(when)
            return when
        except (OverflowError, OSError, ValueError):
            pass
    notes.warn(f"{path}:{lineno}: 'timestamp' {value!r} is not an ISO time; time of the previous step used", str(path))
    return None


def _reference(path: Path, rules: Any, notes: Notes) -> tuple[list[tuple], int, int]:
    read = skipped = 0
    out: list[tuple] = []

    def note(lineno: int, reason: str) -> None:
        nonlocal skipped
        skipped += 1
        notes.warn(f"{path}:{lineno}: {reason}; line skipped", str(path))

    if path.stat().st_size == 0:
        notes.warn(f"{path}: file is empty; no batch tracking or per-step metrics", str(path))
        return out, read, skipped
    problems: list[JsonlProblem] = []
    seen_problems = 0
    last_step = None
    for lineno, obj in iter_jsonl(path, problems):
        while seen_problems < len(problems):
            note(problems[seen_problems].lineno, problems[seen_problems].reason)
            seen_problems += 1
        read += 1
        for canonical, names in rules.aliases.items():
            if canonical not in obj:
                for name in names:
                    if name in obj:
                        obj[canonical] = obj.pop(name)
                        break
        step = as_int(obj.get("step"))
        if step is None or step < 0:
            note(lineno, "no 'step' (or alias) field" if "step" not in obj
                 else f"'step' is {obj['step']!r}, not a step")
            continue
        if last_step is not None and step <= last_step:
            note(lineno, f"duplicate step {step}" if step == last_step
                 else f"step {step} goes backwards (after step {last_step})")
            continue
        last_step = step
        obj["step"] = step
        when = _reference_time(path, notes, lineno, obj)
        lines = obj.get("line_indices")
        if lines is not None:
            clean = line_ids(lines)
            if clean is None:
                notes.warn(f"{path}:{lineno}: 'line_indices' is not a list of integers; indices dropped", str(path))
                obj.pop("line_indices")
            else:
                obj["line_indices"] = clean
        ordered = {k: obj[k] for k in CANONICAL_ORDER if k in obj}
        ordered.update((k, v) for k, v in obj.items() if k not in ordered)
        out.append((lineno, step, when, ordered))
    for problem in problems[seen_problems:]:
        note(problem.lineno, problem.reason)
    return out, read, skipped


# -- fuzzed tracking files -------------------------------------------------------------------------
STEP_NAMES = ["step", "global_step"]
TIME_NAMES = ["timestamp", "time"]
LINE_NAMES = ["line_indices", "indices", "sample_ids", "line_ids"]


def _value(rng: random.Random, kind: str, step: int, t: float) -> Any:
    if kind == "time":
        return rng.choice([t, t, t, round(t, 1), int(t), t + 0.9999996, -t / 7, 1e20, 2.6e11, "x", None, [1], True,
                           datetime.fromtimestamp(t).isoformat(), datetime.fromtimestamp(t).isoformat(sep=" "),
                           "2025-07-20T14:30:57.500000+02:00", "2025-13-01T00:00:00", "2025-07-20T14:30:61.0"])
    if kind == "step":
        return rng.choice([step] * 12 + [float(step), step + 0.5, -1, True, str(step), None, step - 3])
    return rng.choice([[1, 2, 3], [5, 6, 9, 12], [], [1, True], ["7", 8], [3.0, 4], "1,2", None, [[1]]])


def _line(rng: random.Random, step: int, t: float) -> str:
    fields: dict[str, Any] = {}
    names = [rng.choice(STEP_NAMES), rng.choice(TIME_NAMES), rng.choice(LINE_NAMES), "epoch", "loss",
             rng.choice(["lr", "learning_rate"]), "batch_idx", "stage", "extra"]
    if rng.random() < 0.4:  # the current tracker: canonical names in canonical order
        names = [*CANONICAL_ORDER, *(["extra"] if rng.random() < 0.5 else [])]
    if rng.random() < 0.1:
        names.append(rng.choice(STEP_NAMES + TIME_NAMES + LINE_NAMES))  # both a name and an alias
    if rng.random() < 0.2:
        rng.shuffle(names)
    if rng.random() < 0.05:
        names.remove(names[0])
    for name in names:
        kind = "step" if name in STEP_NAMES else "time" if name in TIME_NAMES else "lines" if name in LINE_NAMES else ""
        fields[name] = _value(rng, kind, step, t) if kind else rng.choice([0, 1.5, 2.25, None, "a", True])
    return json.dumps(fields)


def _fuzzed_file(path: Path, seed: int, n: int = 600) -> None:
    rng = random.Random(seed)
    t = rng.choice([1.7e9, 1753022877.5, 1e9 + 0.25, 86400 * 365 * 3.0])
    out = []
    for i in range(n):
        t += rng.choice([0.5, 0.5, 0.25, 1.0, 59.75, 0.1234567, 3600.0])
        r = rng.random()
        if r < 0.02:
            out.append(b"{not json\n")
        elif r < 0.03:
            out.append(b"[1, 2]\n")
        elif r < 0.04:
            out.append(b"\n")
        elif r < 0.05:
            out.append(b'{"step": \xff}\n')
        elif r < 0.06:
            out.append(b'{"step": %d, "loss": NaN, "time": %r}\n' % (i, t))
        else:
            out.append((_line(rng, i, t) + "\n").encode())
    if seed % 2:
        out.append(b'{"step": 99999, "lo')  # partial last line
    path.write_bytes(b"".join(out))


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, default=repr, allow_nan=True) == json.dumps(b, default=repr, allow_nan=True)


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"])
@pytest.mark.parametrize("seed", range(6))
def test_reader_yields_what_the_plain_reader_yields(tmp_path: Path, seed: int, zone: str) -> None:
    if not Path("/usr/share/zoneinfo", zone).exists():
        pytest.skip(f"no tz data for {zone}")
    path = tmp_path / "batch_tracking_x.jsonl"
    _fuzzed_file(path, seed)
    rules = load_rules(None)
    with _local_zone(zone):
        expected_notes, notes = Notes(), Notes()
        expected, read, skipped = _reference(path, rules, expected_notes)
        reader = TrackingReader(path, rules, notes)
        got = [(t.lineno, t.step, t.time, t.record) for t in reader]
    assert len(got) == len(expected) > 100
    for g, e in zip(got, expected, strict=True):
        assert _same(g, e) and list(g[3]) == list(e[3]), (g, e)
        assert [type(v) for v in g[3].values()] == [type(v) for v in e[3].values()]
    assert notes.items == expected_notes.items
    assert (reader.read, reader.skipped) == (read, skipped)


def test_empty_tracking_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"")
    notes = Notes()
    assert list(TrackingReader(path, load_rules(None), notes)) == []
    assert notes.items == [f"{path}: file is empty; no batch tracking or per-step metrics"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Dublin", "Africa/Monrovia", "right/UTC", "Pacific/Chatham",
                                  "Australia/Lord_Howe"])
def test_fast_iso_time_is_iso_time(zone: str) -> None:
    if not Path("/usr/share/zoneinfo", zone).exists():
        pytest.skip(f"no tz data for {zone}")
    rng = random.Random(zone)
    values = [x + 0.9999995 for x in range(1000, 1100)] + [-x - 0.0000005 for x in range(300)]
    for base in (-2e9, 0.0, 63072000.0, 78796700.0, 1e9, 1483228700.0, 1753022877.5, 4e9):
        x = base
        for _ in range(1500):
            x += rng.choice([0.5, 0.25, 1.0, 0.123456789, 37.7, 3600 * 6 + 0.3, 86400 * 7.1])
            values.append(x)
    for year in [*range(1969, 1975), *range(2000, 2031, 3)]:  # around offset changes (DST, 1972 in Monrovia)
        for month in (1, 3, 4, 10, 11):
            start = datetime(year, month, 1).timestamp()
            values += [start + d + rng.random() for d in range(0, 35 * 86400, 3599)]
    values += [1e300, math.inf, math.nan, -1e20, 253402300799.9999996]
    with _local_zone(zone):
        fast = _FastIsoTime()
        for value in values:
            try:
                expected: Any = iso_time(value)
            except (OverflowError, OSError, ValueError):
                expected = "error"
            try:
                got: Any = fast(value)
            except (OverflowError, OSError, ValueError):
                got = "error"  # the reader then asks fromtimestamp itself
            assert got in (expected, "error"), (zone, value, got, expected)
            if expected == "error":
                assert got == "error", (zone, value, got)


# -- TensorBoard: the refilled Event has the bytes of a new one -----------------------------------
def test_tensorboard_events_are_those_of_new_event_messages(tmp_path: Path) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    rng = random.Random(3)
    records = []
    for step in range(500):
        keys = rng.choice([("a", "b", "c"), ("a", "b", "c"), ("b", "a"), ("a", "b", "c", "d"), ()])
        values = {k: rng.choice([0.0, -0.0, 1.5, math.nan, math.inf, rng.random(), 3]) for k in keys}
        records.append(MetricRecord(step if step % 50 else 0, rng.choice([0.0, 1.7e9 + step]), values))
    layout = RunLayout(tmp_path / "run")
    layout.run_dir.mkdir()
    sink = TensorBoardSink()
    sink.open(SinkContext(layout=layout, dataset="d", method="m"))
    for i in range(0, len(records), 64):
        sink.write(records[i:i + 64])
    sink.close("completed")
    expected = [Event(wall_time=r.time, step=int(r.step), summary=Summary(value=[
        Summary.Value(tag=k, simple_value=float(v)) for k, v in r.metrics.items()])).SerializeToString()
        for r in records if r.metrics]
    (events,) = layout.tensorboard_dir.glob("events.out.tfevents.*")
    got = list(RawEventFileLoader(str(events)).Load())
    assert Event.FromString(got[0]).file_version == "brain.Event:2"
    assert got[1:1 + len(expected)] == expected
    # after them, only the HParams plugin's session records the sink writes at close
    tail = [Event.FromString(e) for e in got[1 + len(expected):]]
    assert tail and all(v.metadata.plugin_data.plugin_name == "hparams" for e in tail for v in e.summary.value)


@pytest.mark.parametrize(("text", "names"), [
    ('{"1": ["a", "b"], "2": ["b"]}', {"a", "b"}),
    ('{\n "1" : [ "a" ] ,\n "22": []\n}\n', {"a"}),
    (' {"1":["\\u00e9"]} ', {"é"}),
    ("{}", set()),
    ('{"1": ["a]", "b"]}', None),  # a bracket inside a name: the full parse decides
    ('{"x[1]": ["a"]}', None),  # a key that is not a line number
    ('{"1": [1, "a"]}', None),  # a non-string item
    ('{"1": [["a"]]}', None),
    ('{"1": "a"}', None),
    ('{"1": ["a"]', None),  # truncated
    ('{"1": ["a"],}', None),
    ('{"1": ["a"] "2": ["b"]}', None),
    ('{"1":\f["a"]}', None),  # not JSON whitespace
])
def test_line_mapping_names_fast_path_agrees_with_the_full_parse(tmp_path: Path, text: str,
                                                                 names: set[str] | None) -> None:
    from lightning_track.migrate.readers import _line_mapping_names_fast, read_line_mapping

    path = tmp_path / "line_checkpoint_mapping_x.json"
    path.write_text(text, encoding="utf-8")
    assert _line_mapping_names_fast(path) == names
    notes = Notes()
    full = read_line_mapping(path, notes)
    if names is not None:
        assert full == names and not notes.finish()
    elif full is None:
        assert notes.finish()  # the full parse words what is wrong
