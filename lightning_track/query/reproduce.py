"""``lt reproduce RUN``: the code, config and command of a run, restored from its folder.

The run folder holds what :mod:`lightning_track.run.capture` recorded at the start of training: the
commit, ``code/diff.patch``, copies of untracked files (outside a repository: the entry script and
config files), ``environment.json`` and the command. :func:`reproduce` makes a git worktree of the
commit, applies the patch, restores the untracked files and writes the resolved config, then says what
it could not restore, one line each; :func:`start_reproduction` runs the command through ``lt-run`` as a
new run tagged ``reproduces=<run>``. Git is used through its CLI with timeouts; nothing of the recorded
repository but its worktree list changes (``git worktree add``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunFolderError, one_line
from ..folder.fileio import file_sha256, read_json
from ..folder.layout import RunLayout
from ..vocabulary import ENV_TAGS

__all__ = ["Reproduction", "reproduce", "environment_differences", "reproduce_command", "start_reproduction",
           "REPRODUCES_TAG", "CONFIG_NAME"]

REPRODUCES_TAG = "reproduces={run}"  # the tag of a run started by ``lt reproduce --run``
CONFIG_NAME = f"{RunLayout.REPRODUCE}/{RunLayout.CONFIG}"  # in DIR: the run's resolved config
_GIT_TIMEOUT = 120.0


@dataclass
class Reproduction:
    """What :func:`reproduce` made: where, the command, and what it could not restore."""

    run: Path
    into: Path
    cwd: Path  # where the command runs (the run's working directory inside the repository)
    command: list[str]
    config: Path | None = None
    problems: list[str] = field(default_factory=list)  # what could not be restored: --run refuses
    differences: list[str] = field(default_factory=list)  # recorded vs current environment: only said
    notes: list[str] = field(default_factory=list)


def _git(cwd: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT,
                             stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise RunFolderError(f"git {args[0]} did not finish within {_GIT_TIMEOUT:g} s in {cwd}") from None
    except OSError as exc:
        raise RunFolderError(f"git could not be started ({one_line(exc)}); install git") from None
    if out.returncode != 0:
        raise RunFolderError(f"git {' '.join(args[:2])} in {cwd}: {one_line(out.stderr) or 'failed'}")
    return out.stdout


def _mapped(arg: str, repository: str | None, into: Path) -> str:
    """An absolute path inside the recorded repository -> the same path in the reproduction."""
    if not repository:
        return arg
    key, sep, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
    if value == repository or value.startswith(repository.rstrip("/") + "/"):
        value = str(into / Path(value).relative_to(repository))
    return f"{key}{sep}{value}"


def reproduce_command(meta: Mapping[str, Any], into: Path) -> list[str]:
    """The recorded command, with paths inside the recorded repository moved into ``into`` and the
    interpreter replaced by this one when the recorded one is gone."""
    command = [str(a) for a in (meta.get("command") or [])]
    if not command:
        argv = [str(a) for a in (meta.get("argv") or [])]
        command = [sys.executable, *argv] if argv else []
    if not command:
        return []
    if not Path(command[0]).exists() and Path(command[0]).name.startswith("python"):
        command[0] = sys.executable
    code = meta.get("code") if isinstance(meta.get("code"), dict) else {}
    repository = code.get("repository") if isinstance(code.get("repository"), str) else None
    return [command[0], *(_mapped(a, repository, into) for a in command[1:])]


def environment_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per difference between two ``environment.json`` records: Python, torch and its CUDA,
    cuDNN and NCCL, the GPUs and driver, and every package whose version differs (or is missing)."""
    lines: list[str] = []

    def differ(label: str, was: Any, now: Any) -> None:
        if was != now:
            lines.append(f"{label}: {was if was is not None else '-'} then, {now if now is not None else '-'} now")

    differ("python", (recorded.get("python") or {}).get("version"), (current.get("python") or {}).get("version"))
    for key in ("torch", "cuda", "cudnn", "nccl", "driver"):
        differ(key, recorded.get(key), current.get(key))
    differ("GPUs", [g.get("name") for g in recorded.get("gpus") or []],
           [g.get("name") for g in current.get("gpus") or []])
    was, now = recorded.get("packages") or {}, current.get("packages") or {}
    for name in sorted(set(was) | set(now), key=str.lower):
        if name != "torch" and was.get(name) != now.get(name):
            differ(f"package {name}", was.get(name), now.get(name))
    return lines


def _restore_files(source: Path, into: Path) -> int:
    count = 0
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.is_symlink():
            target = into / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            count += 1
    return count


def reproduce(run_dir: str | Path, into: str | Path | None = None,
              current_environment: Mapping[str, Any] | None = None) -> Reproduction:
    """Restore run ``run_dir``'s code into ``into`` (default ``./reproduce-<run name>``).

    Raises :class:`RunFolderError` when nothing can be made (no record, ``into`` not empty); anything
    else missing is a line in ``problems``."""
    layout = RunLayout(Path(run_dir).resolve())
    if not layout.meta_json.is_file():
        raise RunFolderError(f"{layout.meta_json}: no such file; {layout.name} is not a run folder of lightning_track")
    meta = read_json(layout.meta_json)
    if not isinstance(meta, dict):
        raise RunFolderError(f"{layout.meta_json}: not a JSON object")
    target = Path(into) if into is not None else Path(f"reproduce-{layout.name}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RunFolderError(f"{target}: exists and is not empty; name a new folder with --into DIR")
    target = target.resolve()
    code = meta.get("code") if isinstance(meta.get("code"), dict) else None
    git = meta.get("git") if isinstance(meta.get("git"), dict) else None
    if code is None:
        raise RunFolderError(f"{layout.meta_json}: no code was captured for this run (it was written before "
                             "lightning_track captured code, or the capture did not finish): nothing to reproduce")
    problems: list[str] = [f"{layout.relative(layout.meta_json)}: {line}" for line in code.get("left_out") or []]
    result = Reproduction(run=layout.run_dir, into=target, cwd=target, command=[], problems=problems)
    commit = git.get("commit") if git else None
    if commit:
        _worktree(code, git, commit, target, result)
        patch = (layout.code_dir() / RunLayout.CODE_PATCH)
        if code.get("patch") and result.into.is_dir() and (target / ".git").exists():
            if not patch.is_file():
                problems.append(f"{layout.relative(patch)}: missing; the uncommitted changes cannot be restored")
            else:
                try:
                    _git(target, "apply", "--binary", "--whitespace=nowarn", str(patch.resolve()))
                except RunFolderError as exc:
                    problems.append(f"{layout.relative(patch)}: does not apply: {exc}")
        untracked = code.get("untracked") or {}
        if untracked and target.is_dir():
            _restore_files((layout.code_dir() / RunLayout.CODE_UNTRACKED), target)
            missing = int(untracked.get("count", 0)) - int(untracked.get("copied", 0))
            if missing > 0:
                problems.append(f"{missing} untracked file(s) were not captured (over the caps): see "
                                f"{layout.META} code.left_out")
        cwd = code.get("cwd") or "."
        result.cwd = target / cwd if not Path(cwd).is_absolute() else target
    else:
        target.mkdir(parents=True, exist_ok=True)
        copied = _restore_files((layout.code_dir() / RunLayout.CODE_SOURCE), target)
        line = meta.get("no_repository") or "no commit was recorded"
        problems.append(f"the run had no git repository ({line}); only {copied} file(s) restored: the entry "
                        "script and config files, not the modules it imported")
    if layout.config_yaml.is_file() and target.is_dir():
        result.config = target / CONFIG_NAME
        result.config.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layout.config_yaml, result.config)
    problems += _input_problems(layout, result.cwd, code.get("repository"), target)
    result.command = reproduce_command(meta, target)
    if not result.command:
        problems.append(f"{layout.relative(layout.meta_json)}: no command recorded")
    environment = layout.environment_json()
    if current_environment is not None:
        if environment.is_file():
            result.differences = environment_differences(read_json(environment), current_environment)
        else:
            result.notes.append(f"{layout.relative(environment)}: missing; the environment cannot be compared")
    launcher = meta.get("launcher") or {}
    if isinstance(launcher, dict) and int(str(launcher.get("WORLD_SIZE", "1") or "1")) > 1:
        result.notes.append(f"the run had {launcher['WORLD_SIZE']} processes: the command is rank 0's; start it "
                            "with the launcher it had")
    return result


def _input_problems(layout: RunLayout, cwd: Path, repository: Any, into: Path) -> list[str]:
    """One line per recorded input (``inputs.json``) that is missing where the command will look, or whose
    content differs from what the run read."""
    try:
        record = read_json(layout.run_dir / RunLayout.INPUTS)
    except (OSError, ValueError):
        return []
    inputs = record.get("inputs") if isinstance(record, dict) else None
    lines: list[str] = []
    for key, entry in (inputs or {}).items():
        if not isinstance(entry, dict) or not entry.get("sha256") or entry.get("kind") != "file":
            continue
        value = str(entry.get("path"))
        path = Path(_mapped(value, repository if isinstance(repository, str) else None, into))
        path = path if path.is_absolute() else cwd / path
        if not path.is_file():
            lines.append(f"input {key} = {value}: missing at {path}")
            continue
        if file_sha256(path) != entry["sha256"]:
            lines.append(f"input {key} = {value}: its content differs from what the run read (sha256 "
                         f"{entry['sha256'][:12]})")
    return lines


def _worktree(code: Mapping[str, Any], git: Mapping[str, Any], commit: str, target: Path,
              result: Reproduction) -> None:
    """A detached worktree of ``commit`` at ``target``: from the recorded repository when it is here and has
    the commit, else a clone of the recorded remote."""
    repository = code.get("repository")
    if isinstance(repository, str) and Path(repository).is_dir():
        try:
            _git(Path(repository), "cat-file", "-e", f"{commit}^{{commit}}")
            target.parent.mkdir(parents=True, exist_ok=True)
            _git(Path(repository), "worktree", "add", "--detach", str(target), commit)
            return
        except RunFolderError as exc:
            why = f"commit {commit[:12]} is not in {repository} ({exc})"
    else:
        why = f"the repository {repository} is not on this machine"
    remote = git.get("remote")
    if remote:
        try:
            # the recorded URL has its credentials taken out ("https://***@host/..."): git asks its helpers
            _git(target.parent, "clone", "--quiet", "--no-checkout", str(remote).replace("://***@", "://"),
                 str(target))
            _git(target, "checkout", "--quiet", "--detach", commit)
            result.notes.append(f"{why}: cloned from {remote}")
            return
        except RunFolderError as exc:
            why += f"; cloning {remote} failed: {exc}"
    result.problems.append(f"the code cannot be restored: {why}")


def start_reproduction(result: Reproduction, *, signals_dir: str | Path | None = None,
                       environ: Mapping[str, str] | None = None) -> int:
    """Run ``result.command`` in ``result.cwd`` through ``lt-run``, tagged ``reproduces=<run>``; its exit code."""
    env = dict(os.environ if environ is None else environ)
    tags = [t for t in (env.get(ENV_TAGS) or "").split(",") if t.strip()]
    env[ENV_TAGS] = ",".join([*tags, REPRODUCES_TAG.format(run=result.run.name)])
    signals = Path(signals_dir) if signals_dir is not None else result.run.parent / RunLayout.SIGNALS
    command: Sequence[str] = [sys.executable, "-m", "lightning_track.cli.run", "--signals-dir", str(signals),
                              "--", *result.command]
    return subprocess.run(command, cwd=result.cwd, env=env, check=False).returncode
