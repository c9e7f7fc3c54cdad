"""The code and environment a run trained with, captured at the start of training beside it.

Why a thread: git on a large repository, copying files and reading every installed distribution take
from milliseconds to seconds, and the first training step must not wait for any of it. Rank 0's
:class:`~lightning_track.run.lifecycle.RunLifecycle` starts one :class:`CodeCapture` per attempt and
joins it, with a cap, at finalize. Every piece has a cap (time, bytes, files); what a cap or a failure
left out is one line in ``left_out``, never an error that stops training.

What it writes (names from :class:`~lightning_track.folder.layout.RunLayout`):

* ``meta.json``: ``git`` (commit, branch, remote with its credentials taken out, dirty) and ``code`` (the
  repository, the working directory inside it, the patch and untracked files, what was left out); outside
  a repository ``git`` is null and ``no_repository`` says so in one line;
* ``code/diff.patch`` (``git diff --binary HEAD``: ``git apply`` takes it), ``code/untracked/`` (copies of
  the small untracked files git does not ignore), outside a repository ``code/source/`` (the entry
  script and config files named on the command line);
* ``environment.json`` (:mod:`.environment`) and, on the first attempt, ``inputs.json`` (:mod:`.inputs`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..folder.fileio import atomic_write_json, temp_path, update_json
from ..folder.gcpause import collector_paused
from ..folder.layout import RunLayout
from ..redaction import redact_argv, strip_url_credentials
from .environment import capture_environment
from .inputs import InputCaps, capture_inputs

__all__ = ["CaptureCaps", "CodeCapture", "capture_code", "start_capture"]

_CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".ini", ".cfg")


@dataclass(frozen=True)
class CaptureCaps:
    """Limits of one capture; what goes past one is recorded, never waited for."""

    git_timeout_s: float = 20.0  # each git command
    patch_bytes: int = 20 * 1024 * 1024  # code/diff.patch
    file_bytes: int = 1024 * 1024  # one copied file (untracked, entry script, config)
    total_bytes: int = 10 * 1024 * 1024  # all copied files together
    copied_files: int = 500
    listed_files: int = 1000  # names kept in meta.json (untracked, changed, left out)
    join_s: float = 10.0  # how long finalize waits for a capture still running
    wait_s: float = 10.0  # at most this long for the first training step before the capture begins
    inputs: InputCaps = InputCaps()  # inputs.json


class _CaptureProblem(Exception):
    """One line on why a piece of the capture is missing (caught inside this module, recorded in ``left_out``)."""


class _Git:
    """The git CLI with a timeout per command; a missing or hanging git becomes a :class:`_CaptureProblem`."""

    def __init__(self, cwd: Path, timeout: float, stop: threading.Event) -> None:
        self.cwd, self.timeout, self.stop = cwd, timeout, stop

    def popen(self, *args: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
        if self.stop.is_set():
            raise _CaptureProblem("stopped at the end of the run")
        try:
            return subprocess.Popen(["git", *args], cwd=self.cwd, stdout=subprocess.PIPE, stderr=stderr,
                                    stdin=subprocess.DEVNULL, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0",
                                                                   "GIT_TERMINAL_PROMPT": "0"})
        except OSError as exc:
            raise _CaptureProblem(f"git could not be started ({one_line(exc)})") from None

    def __call__(self, *args: str) -> str:
        proc = self.popen(*args)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                out, err = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if self.stop.is_set() or time.monotonic() > deadline:
                    proc.kill()
                    proc.communicate()
                    raise _CaptureProblem("stopped at the end of the run" if self.stop.is_set() else
                                         f"git {args[0]} did not answer within {self.timeout:g} s") from None
        if proc.returncode != 0:
            raise _CaptureProblem(f"git {' '.join(args[:2])}: {one_line(err.decode(errors='replace')) or 'failed'}")
        return out.decode(errors="surrogateescape")

    def to_file(self, target: Path, cap: int, *args: str) -> int | None:
        """Stream ``git args`` into ``target`` (atomically, nothing when empty); None past ``cap`` bytes."""
        tmp = temp_path(target)
        proc = self.popen(*args, stderr=subprocess.DEVNULL)
        timer = threading.Timer(self.timeout, proc.kill)
        timer.start()
        size, over = 0, False
        try:
            assert proc.stdout is not None
            with open(tmp, "wb") as handle:
                while chunk := proc.stdout.read(1 << 16):
                    size += len(chunk)
                    if size > cap or self.stop.is_set():
                        over = size > cap
                        proc.kill()
                        break
                    handle.write(chunk)
            proc.stdout.close()
            proc.wait()
        finally:
            timer.cancel()
        if over or self.stop.is_set() or proc.returncode != 0 or size == 0:
            tmp.unlink(missing_ok=True)
        if over:
            return None
        if self.stop.is_set():
            raise _CaptureProblem("stopped at the end of the run")
        if proc.returncode == -signal.SIGKILL:
            raise _CaptureProblem(f"git {args[0]} did not finish within {self.timeout:g} s")
        if proc.returncode != 0:
            raise _CaptureProblem(f"git {args[0]} failed (exit {proc.returncode})")
        if size:
            os.replace(tmp, target)
        return size


def _copy_capped(sources: Sequence[tuple[str, Path]], into: Path, caps: CaptureCaps, left_out: list[str],
                 stop: threading.Event) -> list[str]:
    """Copy each ``(name, path)`` to ``into/name`` within the caps; what is not copied gets a line."""
    copied: list[str] = []
    total = 0
    skipped_total = 0
    for name, path in sources:
        if stop.is_set():
            left_out.append(f"{len(sources) - len(copied)} file(s) not copied: the run ended first")
            break
        try:
            if path.is_symlink():
                left_out.append(f"{name}: a symbolic link, not copied")
                continue
            if not path.is_file():
                continue
            size = path.stat().st_size
        except OSError as exc:
            left_out.append(f"{name}: not copied ({one_line(exc)})")
            continue
        if size > caps.file_bytes:
            left_out.append(f"{name}: not copied ({size} bytes, over the {caps.file_bytes} bytes a file)")
            continue
        if total + size > caps.total_bytes or len(copied) >= caps.copied_files:
            skipped_total += 1
            continue
        target = into / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        except OSError as exc:
            left_out.append(f"{name}: not copied ({one_line(exc)})")
            continue
        total += size
        copied.append(name)
    if skipped_total:
        left_out.append(f"{skipped_total} file(s) not copied: over the caps of {caps.total_bytes} bytes and "
                        f"{caps.copied_files} files in all")
    return copied


def _script_and_configs(argv: Sequence[str], cwd: Path) -> list[tuple[str, Path]]:
    """The entry script (``argv[0]``) and the config files named on the command line."""
    found: list[tuple[str, Path]] = []
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("-") and "=" in arg else arg
        if not value or (i > 0 and not value.endswith(_CONFIG_SUFFIXES)):
            continue
        path = Path(value) if Path(value).is_absolute() else cwd / value
        if path.is_file() and all(path != p for _, p in found):
            found.append((path.name, path))
    return found


def capture_code(code_dir: Path, *, cwd: str | Path, argv: Sequence[str], caps: CaptureCaps = CaptureCaps(),
                 exclude: Sequence[Path] = (), stop: threading.Event | None = None) -> dict[str, Any]:
    """Capture the code around ``cwd`` into ``code_dir``; returns the ``meta.json`` fields
    (``git``, ``code``, and ``no_repository`` outside a repository). ``exclude``: folders never copied
    (the runs root)."""
    stop = stop or threading.Event()
    cwd = Path(cwd).resolve()
    git = _Git(cwd, caps.git_timeout_s, stop)
    left_out: list[str] = []
    record: dict[str, Any] = {"left_out": left_out}
    try:
        top = Path(git("rev-parse", "--show-toplevel").strip())
    except _CaptureProblem as exc:
        text = str(exc)
        record["repository"] = None
        if "not a git repository" not in text:
            left_out.append(text)
        sources = _script_and_configs(argv, cwd)
        copied = _copy_capped(sources, code_dir / RunLayout.CODE_SOURCE, caps, left_out, stop)
        record["source"] = {name: f"{RunLayout.CODE}/{RunLayout.CODE_SOURCE}/{name}" for name in copied}
        why = "no git repository" if "not a git repository" in text else "git unavailable"
        files = ", ".join(copied) or "nothing"
        return {"git": None, "code": record,
                "no_repository": f"{why} at {cwd}: {RunLayout.CODE}/{RunLayout.CODE_SOURCE}/ holds {files}"}
    git = _Git(top, caps.git_timeout_s, stop)
    record["repository"] = str(top)
    record["cwd"] = cwd.relative_to(top).as_posix() if cwd.is_relative_to(top) else str(cwd)
    info: dict[str, Any] = {}
    try:
        info["commit"] = git("rev-parse", "HEAD").strip()
        info["branch"] = git("rev-parse", "--abbrev-ref", "HEAD").strip()
    except _CaptureProblem as exc:
        left_out.append(f"no commit recorded: {exc}")
    try:
        remote = git("config", "--get", "remote.origin.url").strip()
    except _CaptureProblem:
        remote = ""
    info["remote"] = strip_url_credentials(remote) if remote else None
    if "commit" in info:
        code_dir.mkdir(parents=True, exist_ok=True)
        patch = code_dir / RunLayout.CODE_PATCH
        try:
            size = git.to_file(patch, caps.patch_bytes, "diff", "--binary", "HEAD")
            if size is None:
                left_out.append(f"{RunLayout.CODE_PATCH}: not kept, the uncommitted changes are over the "
                                f"{caps.patch_bytes} bytes cap")
                info["dirty"] = True
            else:
                info["dirty"] = size > 0
            if size:
                changed = [n for n in git("diff", "--name-only", "HEAD").splitlines() if n]
                record["patch"] = {"file": f"{RunLayout.CODE}/{RunLayout.CODE_PATCH}", "bytes": size,
                                   "files": changed[: caps.listed_files], "files_changed": len(changed)}
        except _CaptureProblem as exc:
            left_out.append(f"{RunLayout.CODE_PATCH}: not captured ({exc})")
    try:
        names = [n for n in git("ls-files", "--others", "--exclude-standard", "-z").split("\0") if n]
    except _CaptureProblem as exc:
        left_out.append(f"untracked files: not listed ({exc})")
        names = []
    skip = [p.resolve() for p in exclude]
    names = [n for n in names if not n.startswith(f"{RunLayout.REPRODUCE}/")  # lt reproduce's, not the project's
             and not any((top / n).resolve().is_relative_to(s) for s in skip)]
    if names:
        copied = _copy_capped([(n, top / n) for n in names], code_dir / RunLayout.CODE_UNTRACKED, caps, left_out,
                              stop)
        record["untracked"] = {"count": len(names), "files": names[: caps.listed_files], "copied": len(copied),
                               "dir": f"{RunLayout.CODE}/{RunLayout.CODE_UNTRACKED}"}
        if len(names) > caps.listed_files:
            left_out.append(f"untracked files: {len(names) - caps.listed_files} more not listed")
    del left_out[caps.listed_files:]
    return {"git": info, "code": record}


class CodeCapture:
    """One attempt's capture on a daemon thread; :meth:`join` at finalize waits at most ``caps.join_s``."""

    def __init__(self, layout: RunLayout, attempt: int, *, argv: Sequence[str] | None = None,
                 cwd: str | Path | None = None, caps: CaptureCaps = CaptureCaps(),
                 training: Callable[[], bool] | None = None,
                 config: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.layout, self.attempt, self.caps = layout, attempt, caps
        self._config = config  # or how to get it when the capture begins (hyperparameters merged by then)
        self._training = training  # whether the first step has been made: the capture begins after it
        self.argv = list(sys.argv if argv is None else argv)
        # the command as typed, interpreter options (``-m module``) included: what reproduces the run
        self.command = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
        self.cwd = Path(os.getcwd() if cwd is None else cwd)
        self._stop = threading.Event()
        self._go = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lightning_track-capture", daemon=True)

    def start(self) -> CodeCapture:
        self._thread.start()
        return self

    @property
    def meta_path(self) -> Path:
        path = self.layout.attempt_meta_json(self.attempt)
        return path if path.exists() else self.layout.meta_json

    def _wait_for_training(self) -> None:
        """Until the first step is made (or ``caps.wait_s``, or the end of the run): on a machine with few
        cores the capture's Python would take the GIL from the first step's, which it must not delay."""
        if self._training is None:
            return
        deadline = time.monotonic() + self.caps.wait_s
        while not self._go.wait(0.05) and time.monotonic() < deadline:
            try:
                if self._training():
                    return
            except Exception:  # noqa: BLE001 - a question about the run never stops the capture
                return

    def _run(self) -> None:
        self._wait_for_training()
        with collector_paused():  # ~0.1 s of short-lived objects (231 distributions' headers, git's output)
            self._capture()

    def _capture(self) -> None:
        began, cpu = time.monotonic(), time.thread_time()
        try:
            fields = capture_code(self.layout.code_dir(self.attempt), cwd=self.cwd, argv=self.argv, caps=self.caps,
                                  exclude=[self.layout.root], stop=self._stop)
        except Exception as exc:  # noqa: BLE001 - a capture never stops training: recorded instead
            fields = {"code": {"left_out": [f"code not captured: {one_line(exc)}"]}}
        try:
            atomic_write_json(self.layout.environment_json(self.attempt), capture_environment())
            fields["environment"] = self.layout.relative(self.layout.environment_json(self.attempt))
        except Exception as exc:  # noqa: BLE001
            fields.setdefault("code", {}).setdefault("left_out", []).append(
                f"{self.layout.ENVIRONMENT}: not captured ({one_line(exc)})")
        config = self._config() if callable(self._config) else self._config
        if self.attempt <= 1 and config:
            try:
                atomic_write_json(self.layout.run_dir / RunLayout.INPUTS, capture_inputs(
                    config, cwd=self.cwd, caps=self.caps.inputs, exclude=[self.layout.root], stop=self._stop))
                fields["inputs"] = self.layout.INPUTS
            except Exception as exc:  # noqa: BLE001
                fields.setdefault("code", {}).setdefault("left_out", []).append(
                    f"{self.layout.INPUTS}: not captured ({one_line(exc)})")
        fields.setdefault("code", {})["capture_s"] = {"wall": round(time.monotonic() - began, 3),
                                                      "cpu": round(time.thread_time() - cpu, 3)}
        fields["command"] = redact_argv(self.command)
        if not self._stop.is_set():  # else join recorded why it is missing
            self._record(fields)
        self._done.set()

    def _record(self, fields: Mapping[str, Any]) -> None:
        try:
            update_json(self.meta_path, lambda meta: {**meta, **fields} if isinstance(meta, dict) else meta)
        except (OSError, ValueError):
            pass  # meta.json is a description; training goes on

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the capture (at most ``timeout``, default the cap); one that is still running is
        stopped and recorded as such. True when it finished."""
        limit = self.caps.join_s if timeout is None else timeout
        self._go.set()
        self._thread.join(limit)
        if self._done.is_set():
            return True
        self._stop.set()
        self._record({"code": {"left_out": [f"code capture still running after {limit:g} s at the end of the "
                                            "run: stopped, not recorded"]}})
        return False


def start_capture(layout: RunLayout, attempt: int, training: Callable[[], bool] | None = None,
                  config: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None) -> CodeCapture:
    """Start capturing this process's code, environment and (first attempt) the inputs ``config`` names for
    ``attempt`` of the run (rank 0); with ``training`` (whether the first step is made), the work begins
    after the first step."""
    return CodeCapture(layout, attempt, training=training, config=config).start()
