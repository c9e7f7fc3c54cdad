"""Bad legacy input: each case gives a clear one-line message naming the file and line/field, the
rest of the run (and every other run) still converts, and the source is never written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.migrate import run_dir, tree_hashes

from lightning_track.cli.migrate import main
from lightning_track.folder.fileio import iter_jsonl
from lightning_track.folder.layout import RunLayout
from lightning_track.migrate import MigrateOptions, migrate
from lightning_track.migrate.report import RunReport

HF_NAME = "arc-challenge_lora_20250720_143052"


@pytest.fixture
def one_run(example_tree: Path, tmp_path: Path) -> Path:
    """A private copy of the HF-flavour run: experiments/icoding/arc-challenge/icoding_..._lora."""
    dest = tmp_path / "experiments" / "icoding" / "arc-challenge" / run_dir(example_tree, 0).name
    shutil.copytree(run_dir(example_tree, 0), dest)
    return dest


def _migrate(source: Path, tmp_path: Path) -> RunReport:
    before = tree_hashes(source)
    report = migrate(source, tmp_path / "runs", options=MigrateOptions(tensorboard=False))
    assert tree_hashes(source) == before
    assert len(report.runs) == 1
    return report.runs[0]


def _tracking(run: Path) -> Path:
    return run / "logs" / "batch_tracking_arc-challenge.jsonl"


def _rewrite_lines(path: Path, change: dict[int, bytes]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    for index, data in change.items():
        lines[index] = data
    path.write_bytes(b"".join(lines))


def _warned(report: RunReport, *parts: str) -> str:
    hits = [w for w in report.warnings if all(p in w for p in parts)]
    assert hits, f"no warning with {parts} in {report.warnings}"
    assert "\n" not in hits[0]
    return hits[0]


def _new_tracking_steps(tmp_path: Path) -> list[int]:
    return [obj["step"] for _, obj in iter_jsonl(RunLayout(tmp_path / "runs" / HF_NAME).batch_tracking_jsonl)]


def test_corrupt_lines_in_the_middle_and_non_utf8(one_run: Path, tmp_path: Path) -> None:
    _rewrite_lines(_tracking(one_run), {9: b'{"step": 10, "loss": 0.5, oops\n', 19: b'{"step": 20, "x": "\xff\xfe"}\n'})
    report = _migrate(one_run, tmp_path)
    assert report.status == "converted"
    _warned(report, "batch_tracking_arc-challenge.jsonl:10:", "invalid JSON")
    _warned(report, "batch_tracking_arc-challenge.jsonl:20:", "not UTF-8")
    steps = _new_tracking_steps(tmp_path)
    assert 10 not in steps and 20 not in steps and len(steps) == 118 and steps[-1] == 120


def test_null_or_wrong_line_indices(one_run: Path, tmp_path: Path) -> None:
    """``null`` means no lines (kept as written); a non-list is dropped with a note naming the line."""
    lines = _tracking(one_run).read_bytes().splitlines(keepends=True)
    five, six = json.loads(lines[4]), json.loads(lines[5])
    five["line_indices"], six["line_indices"] = None, "7, 8"
    _rewrite_lines(_tracking(one_run), {4: json.dumps(five).encode() + b"\n", 5: json.dumps(six).encode() + b"\n"})
    report = _migrate(one_run, tmp_path)
    assert report.status == "converted", report.reason
    _warned(report, "batch_tracking_arc-challenge.jsonl:6:", "'line_indices' is not a list of integers")
    records = {obj["step"]: obj for _, obj in iter_jsonl(RunLayout(tmp_path / "runs" / HF_NAME).batch_tracking_jsonl)}
    assert records[five["step"]]["line_indices"] is None and "line_indices" not in records[six["step"]]
    assert len(records) == 120


def test_duplicate_steps_and_steps_going_backwards(one_run: Path, tmp_path: Path) -> None:
    lines = _tracking(one_run).read_bytes().splitlines(keepends=True)
    _rewrite_lines(_tracking(one_run), {30: lines[29], 60: lines[10]})  # line 31 repeats step 30, 61 is step 11
    report = _migrate(one_run, tmp_path)
    _warned(report, "batch_tracking_arc-challenge.jsonl:31:", "duplicate step 30")
    _warned(report, "batch_tracking_arc-challenge.jsonl:61:", "step 11 goes backwards (after step 60)")
    steps = _new_tracking_steps(tmp_path)
    assert steps == sorted(set(steps)) and len(steps) == 118


def test_empty_files(one_run: Path, tmp_path: Path) -> None:
    for path in (_tracking(one_run), one_run / "logs" / "checkpoint_mapping_arc-challenge.json",
                 one_run / "training_config.yaml"):
        path.write_bytes(b"")
    report = _migrate(one_run, tmp_path)
    assert report.status == "converted" and report.tracked_lines == 0
    _warned(report, "batch_tracking_arc-challenge.jsonl: file is empty")
    _warned(report, "checkpoint_mapping_arc-challenge.json: file is empty")
    _warned(report, "training_config.yaml: file is empty")
    # metrics still come from trainer_state.json log history; mapping has the checkpoints (no lines known)
    layout = RunLayout(tmp_path / "runs" / HF_NAME)
    assert report.steps == 12 and report.last_step == 120
    assert sorted(json.loads(layout.checkpoint_mapping_json.read_text())) == [
        "checkpoint-step-030", "checkpoint-step-060", "checkpoint-step-090", "checkpoint-step-120"]


def test_missing_files_still_convert(one_run: Path, tmp_path: Path) -> None:
    shutil.rmtree(one_run / "logs")
    shutil.rmtree(one_run / "models")
    (one_run / "training_config.yaml").unlink()
    report = _migrate(one_run, tmp_path)
    assert report.status == "converted" and report.checkpoints == 4
    _warned(report, "training_config.yaml: missing")
    _warned(report, "batch_tracking_arc-challenge.jsonl: missing")
    _warned(report, "models: missing; no final_model/")
    summary = json.loads((tmp_path / "runs" / HF_NAME / "summary.json").read_text())
    assert summary["status"] == "interrupted"


def test_mapping_names_a_checkpoint_that_does_not_exist(one_run: Path, tmp_path: Path) -> None:
    path = one_run / "logs" / "checkpoint_mapping_arc-challenge.json"
    data = json.loads(path.read_text())
    data["checkpoint-100"] = {"step": 100, "path": "checkpoints/checkpoint-100", "lines": [1, 2]}
    path.write_text(json.dumps(data))
    report = _migrate(one_run, tmp_path)
    _warned(report, "checkpoint_mapping_arc-challenge.json: entry 'checkpoint-100'",
            "checkpoints/checkpoint-100, which does not exist; dropped")
    mapping = json.loads((tmp_path / "runs" / HF_NAME / "checkpoint_mapping.json").read_text())
    assert "checkpoint-step-100" not in mapping and len(mapping) == 4


def test_truncated_and_unreadable_checkpoints_are_skipped(one_run: Path, tmp_path: Path) -> None:
    weights = one_run / "checkpoints" / "checkpoint-60" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (one_run / "checkpoints" / "step_200.pt").write_bytes(b"PK\x03\x04 this is not a torch file")
    report = _migrate(one_run, tmp_path)
    assert report.status == "converted" and report.checkpoints == 3 and report.checkpoints_found == 5
    _warned(report, "checkpoint-60/model.safetensors: unreadable or truncated safetensors", "checkpoint skipped")
    _warned(report, "step_200.pt: unreadable or truncated torch file", "checkpoint skipped")
    steps = [s for s, _ in RunLayout(tmp_path / "runs" / HF_NAME).step_checkpoints()]
    assert steps == [30, 90, 120]


def test_bad_run_name_fails_that_run_only(legacy_copy: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = legacy_copy / "icoding" / "arc-challenge" / "icoding_2025-07-20_lora"
    shutil.copytree(run_dir(legacy_copy, 0), bad)
    out = tmp_path / "runs"
    code = main([str(legacy_copy), "--out", str(out), "--no-tensorboard"])
    assert code == 1
    text = capsys.readouterr().out
    assert "'icoding_2025-07-20_lora' does not parse as <project>_<YYYYmmdd>_<HHMMSS>_<method>" in text
    assert len([p for p in out.iterdir() if not p.name.startswith(".")]) == 3  # the good runs converted


@pytest.mark.parametrize("case", ["missing", "file", "out-inside"])
def test_unusable_source_or_out(tmp_path: Path, example_tree: Path, case: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    if case == "missing":
        args, expected = [str(tmp_path / "nope")], "does not exist"
    elif case == "file":
        (tmp_path / "f.txt").write_text("x")
        args, expected = [str(tmp_path / "f.txt")], "is a file, not a folder"
    else:
        args, expected = [str(example_tree), "--out", str(example_tree / "icoding" / "runs")], "is inside SOURCE"
    before = tree_hashes(example_tree)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert tree_hashes(example_tree) == before


@pytest.mark.slow
def test_no_permission_to_read_a_file(one_run: Path, tmp_path: Path) -> None:
    """A file the user cannot read fails its run with the file named (fixable: re-run after chmod)."""
    tracking = _tracking(one_run)
    tracking.chmod(0)
    out = tmp_path / "runs"
    out.mkdir()
    cmd = [sys.executable, "-m", "lightning_track.cli.migrate", str(one_run.parents[2]), "--out", str(out),
           "--no-tensorboard"]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that bypass file permissions
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        caps = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{tracking}: Permission denied" in result.stdout
    assert not (out / HF_NAME).exists()
    assert not list(out.glob(".lt-migrate-staging/*"))


def test_links_out_of_the_legacy_run_are_skipped_with_one_line(one_run: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secrets.txt"
    secret.write_text("hf_token: hf_abc123\n")
    (one_run / "logs" / "train.log").unlink()
    (one_run / "logs" / "train.log").symlink_to(secret)  # the legacy log links to a file outside the tree
    weights = next(p for p in (one_run / "models").rglob("*") if p.is_file())
    os.replace(weights, tmp_path / "outside.bin")
    weights.symlink_to(tmp_path / "outside.bin")
    report = _migrate(one_run, tmp_path)
    run = Path(report.target)
    carried = [p for p in run.rglob("*") if p.is_file()]
    assert not any(p.read_bytes() == secret.read_bytes() for p in carried)
    assert not (run / "legacy" / "train.log").exists() and not (run / "final_model" / weights.name).exists()
    assert sum("outside the legacy run" in w and "train.log" in w for w in report.warnings) == 1
    assert sum("outside the legacy run" in w and weights.name in w for w in report.warnings) == 1


def test_report_path_and_example_folder_checked_before_any_work(example_tree: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    code = main([str(example_tree), "--out", str(out), "--report", str(tmp_path / "nowhere" / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.strip().splitlines() == [f"lt-migrate: error: --report {tmp_path / 'nowhere' / 'r.json'}: no folder "
                                        f"{tmp_path / 'nowhere'} to write it in"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["--make-example", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"lt-migrate: error: {afile}: not a folder; give a new or existing folder for "
                                        "the example tree"] and afile.read_text() == "x"
