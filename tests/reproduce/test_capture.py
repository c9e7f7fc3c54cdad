"""The code and environment capture (run/capture.py) on real git repositories made by the tests: what a
user would check in meta.json, code/ and environment.json, and that bad input (caps, a missing or
hanging git) is one recorded line, never an error or a wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_track.folder.layout import RunLayout
from lightning_track.query.reproduce import environment_differences
from lightning_track.redaction import REDACTED
from lightning_track.run.capture import CaptureCaps, CodeCapture, capture_code
from lightning_track.run.environment import capture_environment, training_env
from lightning_track.run.inputs import InputCaps, capture_inputs

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    (path / "train.py").write_text("LR = 0.1\n")
    (path / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (path / ".gitignore").write_text("*.log\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "init")
    return path


def test_a_dirty_repository_is_captured_as_git_apply_takes_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "remote", "add", "origin", "https://alice:s3cret@example.com/team/repo.git")
    (repo / "train.py").write_text("LR = 0.05\n")
    (repo / "weights.bin").write_bytes(bytes(reversed(range(256))) * 4)  # a binary change
    (repo / "helper.py").write_text("SCALE = 2.0\n")
    (repo / "big.dat").write_bytes(b"x" * 5000)
    (repo / "train.log").write_text("ignored\n")
    (repo / "sub").mkdir()
    code = tmp_path / "run" / "code"

    fields = capture_code(code, cwd=repo / "sub", argv=["train.py"], caps=CaptureCaps(file_bytes=4096))

    assert fields["git"] == {"commit": git(repo, "rev-parse", "HEAD").strip(), "branch": git(
        repo, "rev-parse", "--abbrev-ref", "HEAD").strip(), "remote": "https://***@example.com/team/repo.git",
        "dirty": True}
    record = fields["code"]
    assert record["repository"] == str(repo.resolve()) and record["cwd"] == "sub"
    assert sorted(record["patch"]["files"]) == ["train.py", "weights.bin"]
    assert sorted(record["untracked"]["files"]) == ["big.dat", "helper.py"]  # not the ignored train.log
    assert (code / "untracked" / "helper.py").read_text() == "SCALE = 2.0\n"
    assert not (code / "untracked" / "big.dat").exists()
    assert record["left_out"] == ["big.dat: not copied (5000 bytes, over the 4096 bytes a file)"]
    # the patch gives the same files on a clean checkout of the commit
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "apply", str(code / "diff.patch"))
    assert (clone / "train.py").read_bytes() == (repo / "train.py").read_bytes()
    assert (clone / "weights.bin").read_bytes() == (repo / "weights.bin").read_bytes()


def test_a_clean_repository_has_no_patch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    fields = capture_code(tmp_path / "code", cwd=repo, argv=["train.py"])
    assert fields["git"]["dirty"] is False and fields["git"]["remote"] is None
    assert "patch" not in fields["code"] and "untracked" not in fields["code"]
    assert not (tmp_path / "code" / "diff.patch").exists()


def test_caps_on_the_patch_and_on_all_copies_are_recorded(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "train.py").write_text("LR = 0.05\n" * 500)
    for i in range(5):
        (repo / f"u{i}.py").write_text(f"N = {i}\n")
    caps = CaptureCaps(patch_bytes=1000, copied_files=3, listed_files=4)
    fields = capture_code(tmp_path / "code", cwd=repo, argv=["train.py"], caps=caps)
    assert fields["git"]["dirty"] is True
    assert not (tmp_path / "code" / "diff.patch").exists()
    assert fields["code"]["untracked"]["count"] == 5 and fields["code"]["untracked"]["copied"] == 3
    assert fields["code"]["left_out"] == [
        "diff.patch: not kept, the uncommitted changes are over the 1000 bytes cap",
        f"2 file(s) not copied: over the caps of {caps.total_bytes} bytes and 3 files in all",
        "untracked files: 1 more not listed",
    ]


def test_outside_a_repository_the_entry_script_and_config_are_kept(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print('hi')\n")
    (work / "cfg.yaml").write_text("lr: 0.1\n")
    fields = capture_code(tmp_path / "code", cwd=work, argv=["train.py", "--config=cfg.yaml", "--epochs", "3"])
    assert fields["git"] is None
    assert fields["no_repository"] == f"no git repository at {work.resolve()}: code/source/ holds train.py, cfg.yaml"
    assert (tmp_path / "code" / "source" / "cfg.yaml").read_text() == "lr: 0.1\n"
    assert (tmp_path / "code" / "source" / "train.py").read_text() == "print('hi')\n"


def test_a_missing_git_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    fields = capture_code(tmp_path / "code", cwd=repo, argv=[str(repo / "train.py")])
    assert fields["git"] is None and fields["no_repository"].startswith(f"git unavailable at {repo.resolve()}")
    assert fields["code"]["left_out"][0].startswith("git could not be started (")
    assert (tmp_path / "code" / "source" / "train.py").exists()


@pytest.fixture
def hanging_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``git`` on PATH that never answers (a hung network mount, a stuck credential helper)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.usefixtures("hanging_git")
def test_a_hanging_git_neither_delays_the_start_nor_holds_the_end(tmp_path: Path) -> None:
    layout = RunLayout.create(tmp_path / "runs", "d", "m")
    layout.meta_json.write_text(json.dumps({"run_name": layout.name}))
    began = time.monotonic()
    capture = CodeCapture(layout, 1, argv=["train.py"], cwd=tmp_path, caps=CaptureCaps(join_s=0.5)).start()
    assert time.monotonic() - began < 5  # the training thread goes on at once (git would hang 30 s)
    assert capture.join() is False
    assert time.monotonic() - began < 15  # join gave up after 0.5 s, never the 30 s git
    meta = json.loads(layout.meta_json.read_text())
    assert meta["run_name"] == layout.name
    assert meta["code"]["left_out"] == ["code capture still running after 0.5 s at the end of the run: stopped, "
                                        "not recorded"]


@pytest.mark.usefixtures("hanging_git")
def test_a_git_past_its_timeout_is_recorded(tmp_path: Path) -> None:
    fields = capture_code(tmp_path / "code", cwd=tmp_path, argv=["x"], caps=CaptureCaps(git_timeout_s=0.5))
    assert fields["code"]["left_out"] == ["git rev-parse did not answer within 0.5 s"]


def test_training_env_keeps_the_prefixes_and_redacts_secrets() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "NCCL_DEBUG": "INFO", "HF_TOKEN": "hf_abc", "HF_HOME": "/h",
           "TORCH_HOME": "/t", "PL_GLOBAL_SEED": "7", "HOME": "/root", "WANDB_API_KEY": "k", "OMP_NUM_THREADS": "4",
           "SLURM_JOB_ID": "12"}
    assert training_env(env) == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/h", "HF_TOKEN": REDACTED,
                                 "NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "4", "PL_GLOBAL_SEED": "7",
                                 "SLURM_JOB_ID": "12", "TORCH_HOME": "/t"}


def test_environment_names_packages_torch_and_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    import torch

    env = capture_environment({"PL_GLOBAL_SEED": "1234", "HF_TOKEN": "hf_abc", "PATH": "/bin"})
    assert env["seed"] == 1234 and env["env"] == {"HF_TOKEN": REDACTED, "PL_GLOBAL_SEED": "1234"}
    assert env["torch"] == torch.__version__ and env["cuda"] == torch.version.cuda
    assert env["packages"]["lightning"] == metadata.version("lightning")
    assert env["python"]["version"] == "{}.{}.{}".format(*sys.version_info[:3])
    editable = env["editable"].get("lightning-track")
    if editable is not None:  # the test machine installs the project editable: its path and commit
        assert Path(editable["path"]).is_dir()
    assert env["gpus"] == [] or all("name" in g for g in env["gpus"])


def test_every_installed_package_is_listed_as_its_metadata_says(tmp_path: Path) -> None:
    """The header-only read of each distribution agrees with importlib.metadata's full parse, and a metadata
    file whose headers lack them falls back to that parse."""
    from importlib import metadata

    from lightning_track.run.environment import name_and_version

    expected: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in expected:
            expected[name] = dist.version
    assert capture_environment({})["packages"] == dict(sorted(expected.items(), key=lambda kv: kv[0].lower()))
    odd = tmp_path / "odd-1.0.dist-info"
    odd.mkdir()
    (odd / "METADATA").write_text("Metadata-Version: 2.1\nSummary: no name here\n\nName: body\n")
    assert name_and_version(metadata.PathDistribution(odd)) == (None, None)


def test_environment_differences_name_each_change() -> None:
    was = {"python": {"version": "3.11.7"}, "torch": "2.3.0", "cuda": "12.1", "gpus": [{"name": "A100"}],
           "packages": {"numpy": "1.26.0", "lightning": "2.4.0", "torch": "2.3.0", "gone": "1.0"}}
    now = {"python": {"version": "3.11.7"}, "torch": "2.4.0", "cuda": "12.1", "gpus": [{"name": "A100"}],
           "packages": {"numpy": "2.0.0", "lightning": "2.4.0", "torch": "2.4.0", "new": "0.1"}}
    assert environment_differences(was, now) == [
        "torch: 2.3.0 then, 2.4.0 now",
        "package gone: 1.0 then, - now",
        "package new: - then, 0.1 now",
        "package numpy: 1.26.0 then, 2.0.0 now",
    ]
    assert environment_differences(was, was) == []


def test_inputs_named_by_the_config_are_hashed_within_the_caps(tmp_path: Path) -> None:
    import hashlib

    work = tmp_path / "work"
    (work / "data" / "shards").mkdir(parents=True)
    (work / "data" / "train.txt").write_text("1 2 3\n")
    (work / "data" / "shards" / "a.bin").write_bytes(b"a" * 100)
    (work / "big.bin").write_bytes(b"b" * 5000)
    (work / "runs").mkdir()
    config = {"data": {"train": "data/train.txt", "dir": "data"}, "lr": 0.1, "name": "run", "out": ".",
              "weights": str(work / "big.bin"), "runs": "runs", "missing": "nope.txt"}

    record = capture_inputs(config, cwd=work, caps=InputCaps(max_bytes=1000), exclude=[work / "runs"])

    inputs = record["inputs"]
    assert sorted(inputs) == ["data.dir", "data.train", "weights"]  # not ".", the runs root, or what is missing
    train = inputs["data.train"]
    assert train["kind"] == "file" and train["size"] == 6
    assert train["sha256"] == hashlib.sha256(b"1 2 3\n").hexdigest()
    assert inputs["weights"] == {**inputs["weights"], "sha256": None, "size": 5000,
                                 "problem": "not hashed: 5000 bytes, over the 1000 bytes hashed in all"}
    folder = inputs["data.dir"]
    assert folder["kind"] == "folder" and folder["files"] == 2 and folder["size"] == 106
    # a folder's hash follows its files' contents, not their times
    os.utime(work / "data" / "train.txt", (1, 1))
    again = capture_inputs(config, cwd=work, exclude=[work / "runs"])["inputs"]["data.dir"]["sha256"]
    assert again == folder["sha256"]
    (work / "data" / "shards" / "a.bin").write_bytes(b"c" * 100)
    assert capture_inputs(config, cwd=work, exclude=[work / "runs"])["inputs"]["data.dir"]["sha256"] != again
