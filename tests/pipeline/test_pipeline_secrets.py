"""A secret in a pipeline step's command (``--api-key=...``) never reaches what lives under the runs root (the
state file, sbatch scripts, signals/*.logs.txt) or the printed ``start:`` line; the real command still runs."""

from __future__ import annotations

import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pipeline_support import lt_pipeline, state, write_pipeline

from lightning_track.launch import slurm
from lightning_track.launch.pipeline import parse_pipeline
from lightning_track.launch.slurm import SlurmOptions, sbatch_scripts, script_path, submit
from lightning_track.redaction import REDACTED

SECRET = "sk-live-0123456789abcdef"
# prints its argv (as argparse does on a bad argument) and checks it got the real key
SHOW_ARGV = (f"{sys.executable} -c \"import sys; print('argv', sys.argv); "
             f"sys.exit(0 if sys.argv[-1] == '--api-key={SECRET}' else 3)\" --api-key={SECRET}")


def leaks(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_pipeline_runs_the_real_command_and_stores_none_of_its_secret(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {"a": {"cmd": SHOW_ARGV}})
    result = lt_pipeline(path)
    assert result.returncode == 0, result.stderr  # the command got the real key
    said = [ln for ln in (result.stdout + result.stderr).splitlines() if not ln.startswith("argv ")]
    assert [ln for ln in said if SECRET in ln] == []  # the terminal gets the command's own output unchanged
    assert any(ln.startswith(f"lt run: a: start: {sys.executable} -c") for ln in said)
    entry = state(path)["a"]
    assert entry["state"] == "done" and entry["cmd"].endswith(f"--api-key={REDACTED}")
    logs = (tmp_path / "runs" / "signals" / "exp_a.logs.txt").read_text()
    assert f"'--api-key={REDACTED}'" in logs  # what the command printed, masked in the file
    assert leaks(tmp_path / "runs") == []
    again = lt_pipeline(path)  # the stored (redacted) command still reads as the same command: done, skipped
    assert again.returncode == 0 and "already done, skipped: a" in again.stdout + again.stderr


class RecordingSbatch:
    """Stands in for sbatch: keeps each submitted script's text and mode as sbatch would read them."""

    def __init__(self) -> None:
        self.seen: list[tuple[Path, str, int]] = []

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        script = Path(args[-1])
        self.seen.append((script, script.read_text(), stat.S_IMODE(script.stat().st_mode)))
        return subprocess.CompletedProcess(args, 0, f"{100 + len(self.seen)}\n", "")


def test_sbatch_scripts_under_the_root_hide_the_secret_and_slurm_gets_it_privately(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    root = tmp_path / "runs"
    pipeline = parse_pipeline({"name": "exp", "root": str(root), "steps": {
        "train": {"cmd": f"python train.py --api-key={SECRET} --max_new_tokens 64"},
        "eval": {"cmd": "python eval.py {train.run_dir}", "after": ["train"]}}})
    sbatch = RecordingSbatch()
    assert submit(pipeline, sbatch_scripts(pipeline, SlurmOptions()), run=sbatch) == {"train": "103", "eval": "104"}
    shown = script_path(pipeline, "train").read_text()
    assert f"--api-key={REDACTED} --max_new_tokens 64" in shown and leaks(root) == []
    submitted = {text.count(SECRET): (path, mode) for path, text, mode in sbatch.seen if "train.py" in text}
    path, mode = submitted[1]  # the real command went to sbatch ...
    assert mode == 0o600 and root not in path.parents and path.parent == Path(tempfile.gettempdir())
    assert not path.exists()  # ... from a private file, gone once sbatch has its copy
    # a step without a secret is submitted from its readable script (--test-only, then the submission)
    assert [p for p, text, _ in sbatch.seen if "eval.py" in text] == [script_path(pipeline, "eval")] * 2
