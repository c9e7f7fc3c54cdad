"""``lt reproduce`` end to end: a repository the test makes (training script, data file, a commit), an
uncommitted change and an untracked helper module, a seeded CPU fit; then ``lt reproduce --run`` in a
clean worktree gives the same numbers at every step. And a run outside git, which cannot be restored
and so is not started without --anyway."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import script_env

from lightning_track.folder.fileio import iter_jsonl

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("repo_train.py")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def train(cwd: Path, runs: Path, steps: int = 12) -> Path:
    before = set(runs.iterdir()) if runs.is_dir() else set()
    proc = subprocess.run([sys.executable, "train.py", "--root", str(runs), "--steps", str(steps)], cwd=cwd,
                          env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = set(runs.iterdir()) - before
    return run


def lt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", *args], cwd=cwd, env=script_env(),
                          capture_output=True, text=True, timeout=300)


def records(run: Path) -> list[tuple[int, dict]]:
    return [(rec["step"], rec["metrics"]) for _, rec in iter_jsonl(run / "metrics.jsonl")]


def test_lt_reproduce_run_gives_the_same_numbers_at_every_step(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    shutil.copyfile(SCRIPT, repo / "train.py")
    rng = random.Random(1)
    (repo / "data.txt").write_text("".join(f"{rng.random():.4f} {rng.random():.4f} {rng.random():.4f}\n"
                                           for _ in range(40)))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "a training script and its data")
    text = (repo / "train.py").read_text()
    (repo / "train.py").write_text(text.replace("LR = 0.1 ", "LR = 0.05 "))  # uncommitted
    (repo / "helper.py").write_text("SCALE = 2.0\n")  # untracked, imported by train.py
    runs = tmp_path / "runs"

    original = train(repo, runs)

    meta = json.loads((original / "meta.json").read_text())
    assert meta["git"]["dirty"] is True and meta["code"]["patch"]["files"] == ["train.py"]
    assert meta["code"]["untracked"]["files"] == ["helper.py"] and meta["code"]["left_out"] == []
    assert json.loads((original / "environment.json").read_text())["seed"] == 7
    into = tmp_path / "again"
    proc = lt("reproduce", original.name, "--root", str(runs), "--into", str(into), "--run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"command: cd {into} && " in proc.stdout and "not restored" not in proc.stderr
    (again,) = set(runs.iterdir()) - {original, runs / "signals"}
    summary = json.loads((again / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["tags"] == [f"reproduces={original.name}"]
    assert records(again) == records(original)
    assert [step for step, _ in records(original)] == list(range(1, 13))
    # the reproduction's own capture: the same commit, the same changes, from the worktree
    meta_again = json.loads((again / "meta.json").read_text())
    assert meta_again["git"]["commit"] == meta["git"]["commit"] and meta_again["code"]["repository"] == str(into)
    assert (again / "code" / "diff.patch").read_bytes() == (original / "code" / "diff.patch").read_bytes()
    assert git(repo, "status", "--porcelain") == " M train.py\n?? helper.py\n"  # the project is untouched
    inputs = json.loads((original / "inputs.json").read_text())["inputs"]
    assert inputs["data"]["sha256"] == hashlib.sha256((repo / "data.txt").read_bytes()).hexdigest()
    same = lt("compare", str(original), str(again), cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert "config (keys that differ)\n  (identical)" in same.stdout and "what differs" not in same.stdout

    # a changed data file and a changed script: lt compare names both
    (repo / "data.txt").write_text((repo / "data.txt").read_text().replace("0.", "0.1", 1))
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# tuned\n")
    prompt = lt("show", "--prompt", str(original), cwd=tmp_path).stdout.splitlines()
    assert f"Code: commit {meta['git']['commit'][:12]} ({meta['git']['branch']}), dirty tree: uncommitted changes to " \
        "train.py (code/diff.patch), 1 untracked file(s)" in prompt
    assert "Inputs changed since the run: data (data.txt: changed since the run)" in prompt
    changed = train(repo, runs, steps=2)
    diff = lt("compare", str(original), str(changed), cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    code = diff.stdout.split("code (what differs)\n")[1].split("\n\n")[0].splitlines()
    assert len(code) == 3 and code[1].split()[0] == "patch"  # the same commit and untracked helper
    assert code[2].split() == ["files", "changed", "train.py", "data.txt,", "train.py"]  # data.txt is tracked
    data = diff.stdout.split("inputs (what differs)\n")[1].split("\n\n")[0].splitlines()
    new_hash = hashlib.sha256((repo / "data.txt").read_bytes()).hexdigest()
    assert data[1].split() == ["data", "data.txt", inputs["data"]["sha256"][:12], "data.txt", new_hash[:12]]
    assert "environment (what differs)" not in diff.stdout


def test_a_run_outside_git_is_restored_as_far_as_it_can_and_not_started_without_anyway(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(SCRIPT, work / "train.py")
    (work / "data.txt").write_text("0.1 0.2 0.3\n0.4 0.5 0.6\n0.7 0.8 0.9\n0.2 0.1 0.0\n")
    runs = tmp_path / "runs"

    run = train(work, runs, steps=2)

    meta = json.loads((run / "meta.json").read_text())
    assert meta["git"] is None
    assert meta["no_repository"] == f"no git repository at {work}: code/source/ holds train.py"
    assert (run / "code" / "source" / "train.py").read_bytes() == (work / "train.py").read_bytes()
    into = tmp_path / "again"
    refused = lt("reproduce", str(run), "--into", str(into), "--run", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"lt reproduce: not restored: the run had no git repository ({meta['no_repository']}); only 1 file(s) "
        "restored: the entry script and config files, not the modules it imported",
        f"lt reproduce: not restored: input data = data.txt: missing at {into}/data.txt",
        "lt reproduce: --run refused: 2 thing(s) could not be restored (above); --run --anyway starts it regardless",
    ]
    assert (into / "train.py").read_bytes() == (work / "train.py").read_bytes()
    assert sorted(p.name for p in runs.iterdir()) == [run.name]  # nothing started
