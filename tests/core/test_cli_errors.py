"""Known failures reach a user as one line and an exit code, from one table (cli/_errors.py), in every
command; the project's own failures raise the error tree's classes (built-in bases kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_track.cli import demo, lt, migrate, run, sync
from lightning_track.errors import ConfigError, RunFolderError, SyncError
from lightning_track.folder.fileio import read_json
from lightning_track.folder.layout import RunLayout
from lightning_track.sinks import load_sink
from lightning_track.sync import parse_endpoint


def test_the_table_maps_errors_to_codes_and_files_to_lines() -> None:
    from lightning_track.cli._errors import exit_code, message

    assert exit_code(ConfigError("x")) == 2 and exit_code(SyncError("x")) == 2
    assert exit_code(RunFolderError("x")) == 1 and exit_code(PermissionError(13, "Permission denied")) == 1
    assert exit_code(KeyboardInterrupt()) == 130 and exit_code(KeyError("x")) is None  # a bug keeps its traceback
    assert message(FileNotFoundError(2, "No such file or directory", "/a/b.json")) == \
        "/a/b.json: No such file or directory"
    assert message(RunFolderError("run/summary.json: file\nis empty")) == "run/summary.json: file is empty"


def test_a_commands_own_rules_come_after_ctrl_c_and_a_closed_pipe(tmp_path: Path, capsys) -> None:
    """lt-run's own rule (a command that cannot start is usage, 2) goes through the same one line; a
    closed pipe stays a quiet 0 under it and an unknown error stays a bug."""
    from lightning_track.cli._errors import exit_code

    lt_run = ((OSError, 2), (ValueError, 2))
    assert exit_code(FileNotFoundError(2, "x"), lt_run) == 2 and exit_code(FileNotFoundError(2, "x")) == 1
    assert exit_code(BrokenPipeError(), lt_run) == 0 and exit_code(KeyboardInterrupt(), lt_run) == 130
    assert exit_code(KeyError("x"), lt_run) is None
    assert run.main(["--signals-dir", str(tmp_path), "--", str(tmp_path / "nosuch")]) == 2
    assert _one_line(capsys) == f"lt-run: error: cannot start {tmp_path / 'nosuch'}: No such file or directory"


def test_project_failures_raise_the_tree_with_builtin_bases(tmp_path: Path) -> None:
    for spec in ("base", "nosuch", "not a name"):
        with pytest.raises(ConfigError, match=f"unknown sink {spec!r}"):
            load_sink(spec)
    from lightning_track.errors import RunNotFound

    with pytest.raises(RunNotFound) as info:
        RunLayout.resolve_resume(tmp_path, "d", "m", "nope")
    assert isinstance(info.value, FileNotFoundError)
    (tmp_path / "summary.json").write_text("{")
    with pytest.raises(RunFolderError, match="summary.json: invalid JSON at line 1") as broken:
        read_json(tmp_path / "summary.json")
    assert isinstance(broken.value, ValueError)
    with pytest.raises(ConfigError, match="empty path"):
        parse_endpoint("")


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_each_command_answers_bad_input_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lt.main(["show", str(tmp_path / "nope")]) == 1
    assert _one_line(capsys).startswith(f"lt show: {tmp_path / 'nope'}: no such run folder")

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"steps:\n  a: {cmd: echo \xff\xfe}\n")
    assert lt.main(["run", "--pipeline", str(bad)]) == 2
    assert _one_line(capsys) == f"lt run: error: {bad}: not UTF-8 text (invalid start byte at byte 23); save it as " \
        "UTF-8"

    assert demo.main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert str(tmp_path / "none.yaml") in _one_line(capsys)

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    assert sync.main([str(src), str(src / "sub")]) == 2
    assert _one_line(capsys) == f"lt-sync: error: DEST {src / 'sub'} is inside SRC {src}; choose a mirror folder " \
        "outside the source"
    assert sync.main([str(src / "sub"), str(src)]) == 2
    assert "SRC" in _one_line(capsys) and not (src / "sub" / "sub").exists()

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert migrate.main(["--make-example", str(afile)]) == 2
    assert str(afile) in _one_line(capsys)


def test_sync_refuses_a_state_file_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "src" / "r").mkdir(parents=True)
    (tmp_path / "src" / "r" / "a.txt").write_text("a")
    for name, text in (("train.py", "print('hello')\n"), ("metrics.jsonl", '{"step": 1, "metrics": {}}\n')):
        (tmp_path / name).write_text(text)
        assert sync.main([str(tmp_path / "src"), str(tmp_path / "dest"), "--state", str(tmp_path / name)]) == 2
        assert _one_line(capsys).startswith(f"lt-sync: error: --state {tmp_path / name}: not an lt-sync state file")
        assert (tmp_path / name).read_text() == text and not (tmp_path / "dest").exists()
    state = tmp_path / "state.jsonl"  # a real state file, twice: the second pass resumes from it
    for _ in range(2):
        assert sync.main([str(tmp_path / "src"), str(tmp_path / "dest"), "--state", str(state), "-q"]) == 0
    assert (tmp_path / "dest" / "r" / "a.txt").read_text() == "a"
    assert all(json.loads(line)["op"] in ("done", "partial", "forget") for line in state.read_text().splitlines())


def test_post_process_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_logger = tmp_path / "lightning_logs" / "version_0"  # what Lightning's CSVLogger leaves
    csv_logger.mkdir(parents=True)
    (csv_logger / "metrics.csv").write_text("epoch,step,train_loss\n0,0,0.9\n0,1,0.8\n0,2,0.7\n")
    (csv_logger / "hparams.yaml").write_text("lr: 0.01\n")
    before = {p.name: p.read_bytes() for p in csv_logger.iterdir()}
    assert run.main(["--post-process", str(csv_logger)]) == 2
    assert _one_line(capsys) == f"lt-run: error: {csv_logger}: not a run folder (no summary.json, meta.json or " \
        "metrics.jsonl)"
    assert {p.name: p.read_bytes() for p in csv_logger.iterdir()} == before
    assert run.main(["--post-process", str(tmp_path / "gone")]) == 2
    assert _one_line(capsys) == f"lt-run: error: {tmp_path / 'gone'}: not a run folder (no such folder)"

