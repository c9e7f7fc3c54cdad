"""MetricsDigest (what post_process derives from metrics.jsonl, kept while it is written) gives the
same summary, metrics.csv bytes and last step as reading the file back, or knows it cannot."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from lightning_track.derived.digest import MetricsDigest, summarize_metrics, write_metrics_csv
from lightning_track.derived.summary import post_process
from lightning_track.folder.layout import RunLayout
from lightning_track.folder.records import MetricRecord, read_metrics
from lightning_track.sinks.base import SinkContext
from lightning_track.sinks.jsonl import MetricsJsonlSink

KEYS = ["train/loss", "train/learning_rate", "epoch", "val/loss", "val/acc", "test/score", "grad_norm", "a,b\"c"]
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-05, 1e16, 123456789012345680.0, 5e-324]


def _records(seed: int, n: int = 400) -> list[MetricRecord]:
    rng = random.Random(seed)
    records, step = [], rng.randint(0, 3)
    for i in range(n):
        step += rng.choice([0, 1, 1, 1, 2, 17])  # 0: a second record of the same step
        late = KEYS if i > n // 2 else KEYS[:5]  # columns that appear late
        keys = rng.sample(late, rng.randint(0, 4))
        values = {k: rng.choice(SPECIAL) if rng.random() < 0.1 else round(rng.uniform(-3, 3), rng.randint(0, 9))
                  for k in keys}
        records.append(MetricRecord(step, 1.7e9 + i / 3, values))
    return records


def _digest(records: list[MetricRecord], batch: int = 37) -> MetricsDigest:
    digest = MetricsDigest()
    for i in range(0, len(records), batch):
        digest.add(records[i:i + batch])
    return digest


def _json(obj: object) -> str:
    return json.dumps(obj, default=str, allow_nan=True)  # NaN == NaN as text


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("small", [False, True])  # True: a temp file from the first rows, key sets folded often
def test_digest_matches_reading_back(tmp_path: Path, seed: int, small: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if small:
        monkeypatch.setattr(MetricsDigest, "SPOOL_IN_MEMORY", 64)
        monkeypatch.setattr(MetricsDigest, "KEY_SETS", 2)
    records = _records(seed)
    digest = _digest(records, batch=1 + seed * 7)
    assert digest.complete
    assert digest.write_csv(tmp_path / "d.csv") == write_metrics_csv(records, tmp_path / "r.csv")
    assert (tmp_path / "d.csv").read_bytes() == (tmp_path / "r.csv").read_bytes()
    assert digest.last_step == records[-1].step
    for modes in (None, {"train/loss": "max", "epoch": "min", "val/acc": None, "grad_norm": "MAX"}):
        assert _json(digest.summary(modes)) == _json(summarize_metrics(records, modes))


def test_digest_of_nothing(tmp_path: Path) -> None:
    digest = MetricsDigest()
    digest.add([])
    assert digest.write_csv(tmp_path / "m.csv") == 0
    assert (tmp_path / "m.csv").read_text() == "step\n"
    assert digest.summary() == {"final": {}, "best": {}}
    assert digest.last_step is None


def test_digest_of_empty_records(tmp_path: Path) -> None:
    records = [MetricRecord(1, 0.0, {}), MetricRecord(2, 0.0, {}), MetricRecord(4, 0.0, {"x": 1.0})]
    digest = _digest(records)
    digest.write_csv(tmp_path / "d.csv")
    write_metrics_csv(records, tmp_path / "r.csv")
    assert (tmp_path / "d.csv").read_text() == (tmp_path / "r.csv").read_text() == "step,x\n1,\n2,\n4,1.0\n"


@pytest.mark.parametrize("bad", [
    MetricRecord(3, 0.0, {"x": 1.0}),  # a step below the one before
    MetricRecord(9, 0.0, {"x": 1}),  # an int value (read back as a float)
    MetricRecord(9, 0.0, {7: 1.0}),  # a key that is not a str
    MetricRecord(9.0, 0.0, {"x": 1.0}),  # type: ignore[arg-type]
    MetricRecord(9, 0.0, {"x": True}),
])
def test_digest_gives_up_where_it_could_differ(bad: MetricRecord) -> None:
    digest = _digest([MetricRecord(4, 0.0, {"x": 2.0}), MetricRecord(5, 0.0, {"y": 2.0}), bad])
    assert not digest.complete
    with pytest.raises(ValueError):
        digest.summary()


def _run(tmp_path: Path, name: str, records: list[MetricRecord]) -> tuple[RunLayout, MetricsDigest]:
    layout = RunLayout(tmp_path / name)
    layout.run_dir.mkdir(parents=True)
    sink = MetricsJsonlSink()
    sink.open(SinkContext(layout=layout, dataset="d", method="m"))
    digest = sink.keep_digest()
    for i in range(0, len(records), 50):
        sink.write(records[i:i + 50])
    sink.close("success")
    return layout, digest


@pytest.mark.parametrize("seed", range(4))
def test_post_process_with_digest_writes_the_same_files(tmp_path: Path, seed: int) -> None:
    records = _records(seed, 300)
    with_digest, digest = _run(tmp_path, "a", records)
    reread, _ = _run(tmp_path, "b", records)
    assert digest.complete
    a = post_process(with_digest.run_dir, status="completed", metrics=digest, extra={"end_time": "x"})
    b = post_process(reread.run_dir, status="completed", extra={"end_time": "x"})
    a.pop("run_name")
    b.pop("run_name")
    assert _json(a) == _json(b)
    assert with_digest.metrics_csv.read_bytes() == reread.metrics_csv.read_bytes()
    assert len(read_metrics(with_digest.metrics_jsonl)) == len(records)


def test_post_process_reads_the_file_when_the_digest_is_incomplete(tmp_path: Path) -> None:
    records = [MetricRecord(5, 0.0, {"x": 2.0}), MetricRecord(3, 0.0, {"x": 1.0})]
    layout, digest = _run(tmp_path, "a", records)
    assert not digest.complete
    summary = post_process(layout.run_dir, metrics=digest)
    assert summary["steps_logged"] == 2 and summary["last_step"] == 3
    assert layout.metrics_csv.read_text() == "step,x\n3,1.0\n5,2.0\n"


def test_keep_digest_on_a_file_with_records_is_incomplete(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "r")
    layout.run_dir.mkdir()
    layout.metrics_jsonl.write_text('{"step":1,"time":0.0,"metrics":{"x":1.0}}\n')
    sink = MetricsJsonlSink()
    sink.open(SinkContext(layout=layout, dataset="d", method="m"))
    assert not sink.keep_digest().complete
    sink.close("success")


def test_round6_is_round() -> None:
    import struct

    from lightning_track.sinks.jsonl import _round6

    rng = random.Random(0)
    values = [rng.randint(-10**12, 10**12) / 64 for _ in range(20000)]
    values += [rng.random() * 10 ** rng.randint(-30, 300) for _ in range(20000)]
    values += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20000)]
    values += [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308, 1753022877.5, 17, True]
    for value in values:
        assert repr(_round6(value)) == repr(round(value, 6)), value
        assert type(_round6(value)) is type(round(value, 6))
