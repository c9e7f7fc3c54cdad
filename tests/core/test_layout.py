"""RunLayout: naming, sanitising, collisions, resume lookup."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from lightning_track.folder.layout import RunLayout, parse_run_name, sanitize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("arc-challenge", "arc-challenge"),
        ("org/dataset name", "org-dataset-name"),
        ("a\tb\nc\x00d", "a-b-c-d"),
        ("数据集", "数据集"),
        ("café:v2?", "café-v2"),
        ("../../etc", "etc"),
        ("  lora  ", "lora"),
    ],
)
def test_sanitize_keeps_readable_names(raw: str, expected: str) -> None:
    assert sanitize_name(raw) == expected


def test_sanitize_leaves_nothing_a_shell_would_expand(tmp_path: Path) -> None:
    hostile = "x$(touch${IFS}F)`id`'a';b&c!d\"e<f>g|h*i?j[k]l{m}n~o#p q"
    name = sanitize_name(hostile)
    assert name == "x-touch-IFS-F-id-a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q"
    assert not set(name) & set("$()`'\";&!<>|*?[]{}~# \t\n")
    layout = RunLayout.create(tmp_path, hostile, "lora", timestamp="20250720_143052")
    import subprocess

    # the folder name pasted into a double-quoted and a sh -c '...' command, as a pipeline step writes it
    for cmd in (f'ls -d "{layout.run_dir}"', f"sh -c 'ls -d {layout.run_dir}'"):
        done = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == str(layout.run_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.name]  # nothing touched, no F


@pytest.mark.parametrize("raw", ["", "   ", "///", "\x00\x01"])
def test_sanitize_rejects_names_with_nothing_usable(raw: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(raw))):
        sanitize_name(raw, what="dataset")


def test_run_name_follows_contract(tmp_path: Path) -> None:
    layout = RunLayout.create(tmp_path, "arc-challenge", "lora", timestamp="20250720_143052")
    assert layout.name == "arc-challenge_lora_20250720_143052"
    assert layout.checkpoint_path(76).name == "checkpoint-step-076.ckpt"
    assert layout.checkpoint_path(1250).name == "checkpoint-step-1250.ckpt"
    assert RunLayout.checkpoint_step("checkpoint-step-076.ckpt") == 76
    assert RunLayout.checkpoint_step("last.ckpt") is None
    assert layout.signals_dir == tmp_path / "signals"
    parsed = parse_run_name(layout.name)
    assert parsed is not None and parsed.timestamp == "20250720_143052" and parsed.prefix == "arc-challenge_lora"


def test_runs_started_in_the_same_second_never_share_a_folder(tmp_path: Path) -> None:
    made: list[RunLayout] = []
    lock = threading.Lock()

    def create() -> None:
        layout = RunLayout.create(tmp_path, "d", "m", timestamp="20250720_143052")
        with lock:
            made.append(layout)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(layout.name for layout in made)
    assert len(set(names)) == 8
    assert "d_m_20250720_143052" in names and "d_m_20250720_143052-8" in names
    # the newest of the same second is the highest counter
    assert RunLayout.find_latest(tmp_path, "d", "m").name == "d_m_20250720_143052-8"


def test_resume_lookup(tmp_path: Path) -> None:
    old = RunLayout.create(tmp_path, "ds", "m", timestamp="20250101_000000")
    new = RunLayout.create(tmp_path, "ds", "m", timestamp="20250102_000000")
    RunLayout.create(tmp_path, "ds", "other", timestamp="20250103_000000")
    assert RunLayout.resolve_resume(tmp_path, "ds", "m", True).run_dir == new.run_dir
    assert RunLayout.resolve_resume(tmp_path, "ds", "m", old.name).run_dir == old.run_dir
    assert RunLayout.resolve_resume(tmp_path, "ds", "m", str(old.run_dir)).run_dir == old.run_dir
    with pytest.raises(FileNotFoundError, match="no run of dataset 'nope'"):
        RunLayout.resolve_resume(tmp_path, "nope", "m", True)
    with pytest.raises(FileNotFoundError, match="'missing_run' is not a run folder"):
        RunLayout.resolve_resume(tmp_path, "ds", "m", "missing_run")
