"""lt export's pure rules and file primitives: targets, MLflow's key and value limits, reading whole lines
from an offset, the sent-file digest that notices a rewrite, and the per-run lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_track.errors import ConfigError, ExportError
from lightning_track.export.content import param_value
from lightning_track.export.mlflow import MAX_KEY, fit_value, mlflow_key
from lightning_track.export.record import SentFile, export_lock
from lightning_track.export.target import parse_target
from lightning_track.folder.fileio import keep_jsonl_before
from lightning_track.folder.records import read_metrics_since


@pytest.mark.parametrize(("text", "uri", "user", "password"), [
    ("mlflow://127.0.0.1:5000", "http://127.0.0.1:5000", None, None),
    ("http://tracker.lan:5000/", "http://tracker.lan:5000", None, None),
    ("https://bob:s3cr%21t@tracker.example.com/mlflow", "https://tracker.example.com/mlflow", "bob", "s3cr%21t"),
    ("mlflow://alice:pw@10.0.0.5:5000", "http://10.0.0.5:5000", "alice", "pw"),
    ("sqlite:////tmp/team/mlflow.db", "sqlite:////tmp/team/mlflow.db", None, None),
])
def test_targets_parse_and_never_keep_credentials_in_the_uri(text, uri, user, password) -> None:
    target = parse_target(text, environ={})
    assert (target.tracker, target.uri, target.username, target.password) == ("mlflow", uri, user, password)
    assert "pw" not in repr(target) and "s3cr" not in repr(target)
    if password:
        assert target.scrub(f"failed at {text}") == f"failed at {text.replace(password, '***').replace(user, '***')}"


def test_the_environment_variable_is_the_default_target() -> None:
    assert parse_target(None, environ={"MLFLOW_TRACKING_URI": "mlflow://h:1"}).uri == "http://h:1"
    with pytest.raises(ConfigError, match=r"no tracker given: pass --to URI or set \$MLFLOW_TRACKING_URI"):
        parse_target(None, environ={})


@pytest.mark.parametrize("text", ["wandbx", "s3://bucket/x", "ftp://u:hidden@h/x", "databricks"])
def test_an_unknown_target_is_one_line_listing_what_is_supported(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_target(text, environ={})
    message = str(refused.value)
    assert "\n" not in message and "hidden" not in message
    assert message.endswith("use one of: mlflow://HOST:PORT, http(s)://HOST[:PORT][/PATH], sqlite:///PATH.db, "
                            "$MLFLOW_TRACKING_URI, wandb[:DIR]")


@pytest.mark.parametrize(("name", "key", "changed"), [
    ("train/loss", "train/loss", False),
    ("val acc:top-1", "val acc:top-1", False),
    ("loss@5", "loss_5", True),
    ("grad_norm[layer.0]", "grad_norm_layer.0_", True),
    ("a//b/", "a/b", True),
    ("../x", "__/x", True),
    ("système/ünïcode", "système/ünïcode", False),  # MLflow's \w is Unicode-aware
])
def test_mlflow_keys(name: str, key: str, changed: bool) -> None:
    got, why = mlflow_key(name)
    assert got == key and (why is not None) == changed


def test_a_long_key_is_cut_with_a_hash_so_two_long_keys_stay_apart() -> None:
    a, why = mlflow_key("k" * 300 + "a")
    b, _ = mlflow_key("k" * 300 + "b")
    assert len(a) == MAX_KEY and a != b and "250" in why


def test_values_over_the_limit_are_cut_and_say_so() -> None:
    assert fit_value("x" * 10, 10) == ("x" * 10, None)
    cut, why = fit_value("x" * 7000, 6000)
    assert len(cut) == 6000 and cut.endswith("…[cut]")
    assert why == "value of 7000 characters cut to MLflow's limit of 6000"
    assert param_value([1, "a"]) == '[1, "a"]' and param_value(0.001) == "0.001" and param_value(None) == "None"


def _lines(path: Path, records: list[dict]) -> None:
    with open(path, "a") as out:
        out.writelines(json.dumps(r) + "\n" for r in records)


def test_reading_from_an_offset_gives_whole_lines_only_and_where_each_ends(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _lines(path, [{"step": s, "time": 100.0 + s, "metrics": {"loss": 1.0 / s}} for s in (1, 2, 3)])
    with open(path, "a") as out:
        out.write('{"step": 4, "time": 104.0, "metrics": {"loss": "NaN"}}\nnot json\n{"step": 5, "ti')  # torn tail
    problems: list = []
    ends: list[int] = []
    records, end = read_metrics_since(path, 0, problems, ends=ends)
    assert [r.step for r in records] == [1, 2, 3, 4] and str(records[3].metrics["loss"]) == "nan"
    assert end == path.read_bytes().rfind(b"\n") + 1 and ends[-1] == end - len(b"not json\n")
    assert [str(p) for p in problems] == [f"{path}:5: invalid JSON; skipped"]
    again, end2 = read_metrics_since(path, ends[1], [], ends=[])
    assert [r.step for r in again] == [3, 4] and end2 == end
    with open(path, "a") as out:
        out.write('me": 105.0, "metrics": {"loss": 0.2}}\n')  # the writer finishes the line
    last, _ = read_metrics_since(path, end, [])
    assert [(r.step, r.time, r.metrics) for r in last] == [(5, 105.0, {"loss": 0.2})]


def test_a_sent_file_notices_a_resume_that_moved_sent_records_aside(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _lines(path, [{"step": s, "time": float(s), "metrics": {"loss": 1.0}} for s in range(1, 11)])
    sent = SentFile(path, None)
    ends: list[int] = []
    read_metrics_since(path, 0, [], ends=ends)
    sent.advance(ends[5], 6)  # steps 1-6 went
    entry = sent.entry()
    assert not SentFile(path, entry).rewritten and SentFile(path, entry).bytes == ends[5]
    keep_jsonl_before(path, 8, moved_to=tmp_path / "aside.jsonl")  # 8-10 aside: nothing sent was moved
    assert not SentFile(path, entry).rewritten
    keep_jsonl_before(path, 5, moved_to=tmp_path / "aside.jsonl")  # 5 and 6 were sent, and are gone
    assert SentFile(path, entry).rewritten
    _lines(path, [{"step": s, "time": 99.0, "metrics": {"loss": 2.0}} for s in range(5, 8)])  # same size, other bytes
    assert SentFile(path, entry).rewritten


def test_a_second_export_of_the_same_run_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    run = tmp_path / "d_m_20250101_000000"
    run.mkdir()
    with export_lock(run):
        with pytest.raises(ExportError, match=r"d_m_20250101_000000: another lt export of this run is in progress"):
            with export_lock(run):
                pass
    with export_lock(run):  # released
        pass
    assert list(run.iterdir()) == []  # the lock leaves no file


def test_run_tags_say_status_attempts_git_notes_and_config_changes(tmp_path: Path) -> None:
    from lightning_track.export.mlflow import STATUS, run_tags
    from lightning_track.query.runs import RunInfo

    summary = {"status": "interrupted", "dataset": "arc", "method": "lora", "reason": "SIGTERM (preempted)",
               "notes": "see https://bob:hunter2@wiki.lan/page", "tags": ["a", "b"],
               "attempts": [{"attempt": 1, "host": "gpu1"},
                            {"attempt": 2, "host": "gpu2", "config_changes": {"model.lr": {"before": 0.1,
                                                                                           "after": 0.05}}}]}
    run = RunInfo(tmp_path / "arc_lora_20250101_000000", summary=summary, status="interrupted",
                  why="SIGTERM (preempted)", meta={"host": "gpu2", "user": "ana", "argv": ["train.py", "--x"],
                                                   "git": {"commit": "abc123", "branch": "main", "dirty": False}})
    tags = run_tags(run)
    assert STATUS[run.status] == "KILLED"
    assert tags == {
        "status": "interrupted", "dataset": "arc", "method": "lora", "folder": "arc_lora_20250101_000000",
        "attempts": "2", "reason": "SIGTERM (preempted)", "host": "gpu2", "mlflow.user": "ana",
        "mlflow.note.content": "see https://***@wiki.lan/page", "mlflow.source.git.commit": "abc123",
        "mlflow.source.git.branch": "main", "mlflow.source.name": "train.py",
        "config_changes": '{"2": {"model.lr": {"before": 0.1, "after": 0.05}}}', "tag.a": "true", "tag.b": "true"}


def test_where_a_run_was_exported_is_read_from_both_records_without_credentials_and_a_torn_one_is_a_problem(
        tmp_path: Path) -> None:
    from lightning_track.export.record import write_record
    from lightning_track.folder.exports import read_exports, short_target
    from lightning_track.folder.layout import RunLayout

    run = tmp_path / "arc_lora_20250101_120000"
    run.mkdir()
    write_record(run, {"version": 1, "targets": {
        "http://bob:pw@tracker:5000": {"tracker": "mlflow", "run_id": "abc", "link": "http://tracker:5000/#/r",
                                       "sent": {"metrics.jsonl": {"bytes": 10}}},
        "sqlite:////tmp/team/mlflow.db": {"tracker": "mlflow"}}})  # never got as far as a run: not listed
    write_record(run, {"version": 1, "targets": {"sqlite:////tmp/team/mlflow.db": {"tracker": "mlflow",
                                                                                    "run_id": "def"}}},
                 RunLayout.MIRROR_EXPORT)
    problems: list[str] = []
    entries = read_exports(run, problems=problems)
    assert problems == [] and entries == [
        {"target": "http://tracker:5000", "record": "export.json", "tracker": "mlflow", "run_id": "abc",
         "link": "http://tracker:5000/#/r"},
        {"target": "sqlite:////tmp/team/mlflow.db", "record": "export.mirror.json", "tracker": "mlflow",
         "run_id": "def"}]
    assert [short_target(e["target"]) for e in entries] == ["tracker:5000", "sqlite:mlflow.db"]
    (run / "export.json").write_text('{"targets": {"http://x": ')
    entries = read_exports(run, problems=problems)
    assert [e["run_id"] for e in entries] == ["def"]
    assert len(problems) == 1 and problems[0].startswith(f"{run / 'export.json'}: ")
