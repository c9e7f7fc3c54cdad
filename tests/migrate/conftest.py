"""Shared, expensive fixtures: one generated legacy tree and one migration of it per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.migrate import tree_hashes

from lightning_track.migrate import make_example


@pytest.fixture(scope="session")
def example_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiments/ with the three flavours of legacy run (read-only use: copy it before damaging)."""
    root = tmp_path_factory.mktemp("legacy") / "experiments"
    make_example(root, runs=3, steps=120, checkpoints=4, ckpt_mb=0.02)
    return root


@pytest.fixture(scope="session")
def migrated(example_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The example tree migrated once through the CLI (runs in 2 worker processes), hashes taken before and after."""
    from lightning_track.cli.migrate import main

    out = tmp_path_factory.mktemp("out") / "runs"
    before = tree_hashes(example_tree)
    report = out.parent / "report.json"
    code = main([str(example_tree), "--out", str(out), "--report", str(report), "--jobs", "2"])  # worker processes
    return {"out": out, "code": code, "before": before, "after": tree_hashes(example_tree), "report": report}


@pytest.fixture
def legacy_copy(example_tree: Path, tmp_path: Path) -> Path:
    """A private copy of the example tree a test may damage."""
    dest = tmp_path / "experiments"
    shutil.copytree(example_tree, dest)
    return dest
