"""Tags and notes: RunLogger's in summary.json, lt tag / lt note afterwards in annotations.json (atomic, never
racing the heartbeat's rewrites of summary.json), filtered by lt ls, mirrored by lt sync."""

from __future__ import annotations

import json
import threading

from lightning_track.cli.lt import main
from lightning_track.derived.summary import SummaryFile
from lightning_track.folder.layout import RunLayout
from lightning_track.query import find_runs
from lightning_track.vocabulary import iso_time


def run_lt(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_runlogger_tags_and_notes_are_in_the_summary(made_runs) -> None:
    summary = json.loads((made_runs["lora"] / "summary.json").read_text())
    assert summary["tags"] == ["baseline"] and summary["notes"] == "first"
    assert "tags" not in json.loads((made_runs["full"] / "summary.json").read_text())


def test_lt_tag_and_note_change_the_annotations_only(runs_copy, capsys, tmp_path) -> None:
    lora, full = runs_copy["lora"], runs_copy["full"]
    root = str(lora.parent)
    summary_before = (lora / "summary.json").read_bytes()
    code, out, err = run_lt(capsys, "tag", lora.name, full.name, "+best", "-baseline", "old", "--root", root)
    assert code == 0 and err == [] and out == [f"{lora.name}: best, old", f"{full.name}: best, old"]
    code, out, _ = run_lt(capsys, "tag", str(lora), "-old")
    assert out == [f"{lora.name}: best"]
    code, out, _ = run_lt(capsys, "tag", str(lora))  # no change: prints them
    assert out == [f"{lora.name}: best"]
    assert (lora / "summary.json").read_bytes() == summary_before
    assert json.loads((lora / RunLayout.ANNOTATIONS).read_text())["tags"] == ["best"]
    assert not [p for p in lora.iterdir() if p.name.endswith(".tmp")]
    code, out, _ = run_lt(capsys, "ls", root, "-f", "tag=best", "-c", "name,tag")
    assert [line.split()[0] for line in out[1:]] == sorted([lora.name, full.name], key=lambda n: n != lora.name)
    code, out, _ = run_lt(capsys, "ls", root, "-f", "tag=baseline")
    assert code == 1
    assert run_lt(capsys, "note", str(lora), "lr too high?")[0] == 0
    assert run_lt(capsys, "note", str(lora), "try 3e-4", "--append")[0] == 0
    assert run_lt(capsys, "note", str(lora))[1] == ["lr too high?", "try 3e-4"]
    (info,) = [r for r in find_runs(root) if r.path == lora]
    assert info.notes == "lr too high?\ntry 3e-4" and info.tags == ["best"]
    assert run_lt(capsys, "note", str(lora), "")[1] == [f"{lora.name}: notes cleared"]
    # mirrored by lt sync like any file of the run
    mirror = tmp_path / "mirror"
    assert main(["sync", root, str(mirror), "-q", "--state", str(tmp_path / "state")]) == 0
    (mirrored,) = [r for r in find_runs(mirror) if r.name == lora.name]
    assert mirrored.tags == ["best"]


def test_bad_tags_and_runs(runs_copy, capsys) -> None:
    lora = runs_copy["lora"]
    code, out, err = run_lt(capsys, "tag", str(lora), "+two words")
    assert code == 2 and err == ["lt tag: tag 'two words': one word of at most 64 characters, no spaces, commas or "
                                 "control characters, not starting with + or -"]
    code, out, err = run_lt(capsys, "tag", "nope", str(lora), "+x", "--root", str(lora.parent))
    assert code == 0 and out == [f"{lora.name}: baseline, x"] and "nope: no such run folder" in err[0]
    code, out, err = run_lt(capsys, "tag")
    assert code == 2 and err[0].startswith("usage: lt tag")
    (lora / RunLayout.ANNOTATIONS).write_text("{")
    code, out, err = run_lt(capsys, "tag", str(lora), "+y")
    assert code == 1 and f"{lora / RunLayout.ANNOTATIONS}: invalid JSON" in err[0]
    code, out, err = run_lt(capsys, "ls", str(lora.parent))
    assert code == 0 and any(f"{lora / RunLayout.ANNOTATIONS}: invalid JSON" in line for line in err)


def test_tags_written_while_the_heartbeat_rewrites_the_summary_are_kept(runs_copy, capsys) -> None:
    run = runs_copy["full"]
    summary = SummaryFile(run / "summary.json")
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.is_set():
            summary.update(heartbeat=iso_time())

    beat = threading.Thread(target=heartbeat)
    beat.start()
    try:
        for i in range(30):
            assert main(["tag", str(run), f"+t{i}"]) == 0
    finally:
        stop.set()
        beat.join()
    capsys.readouterr()
    (info,) = [r for r in find_runs(run.parent) if r.path == run]
    assert info.tags == [f"t{i}" for i in range(30)]
