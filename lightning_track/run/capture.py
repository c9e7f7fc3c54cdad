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
* ``environment.json``: distributions (editable ones with path and commit), Python, platform, torch with
  CUDA/cuDNN/NCCL, GPUs and driver (NVML), the environment variables that change training (secrets
  redacted), the seed Lightning was given.
"""

from __future__ import annotations

import os
import platform
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
from ..folder.layout import RunLayout
from ..redaction import redact_argv, redact_env, strip_url_credentials

__all__ = ["CaptureCaps", "CodeCapture", "capture_code", "capture_environment", "capture_inputs",
           "training_env", "start_capture", "ENV_PREFIXES", "SEED_ENV"]

ENV_PREFIXES = ("CUDA_", "NCCL_", "OMP_", "SLURM_", "PL_", "HF_", "TORCH_")
SEED_ENV = "PL_GLOBAL_SEED"  # set by Lightning's seed_everything
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
    input_bytes: int = 2 * 1024**3  # inputs.json: bytes hashed in all (files over it: size and time only)
    input_files: int = 10_000  # files hashed in one input folder
    input_s: float = 60.0  # time spent hashing inputs in all


class CaptureProblem(Exception):
    """One line on why a piece of the capture is missing."""


def training_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables that change training (``CUDA_*``, ``NCCL_*``, ...), secrets redacted."""
    env = os.environ if environ is None else environ
    return redact_env({key: value for key, value in sorted(env.items()) if key.startswith(ENV_PREFIXES)})


class _Git:
    """The git CLI with a timeout per command; a missing or hanging git becomes a :class:`CaptureProblem`."""

    def __init__(self, cwd: Path, timeout: float, stop: threading.Event) -> None:
        self.cwd, self.timeout, self.stop = cwd, timeout, stop

    def popen(self, *args: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
        if self.stop.is_set():
            raise CaptureProblem("stopped at the end of the run")
        try:
            return subprocess.Popen(["git", *args], cwd=self.cwd, stdout=subprocess.PIPE, stderr=stderr,
                                    stdin=subprocess.DEVNULL, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0",
                                                                   "GIT_TERMINAL_PROMPT": "0"})
        except OSError as exc:
            raise CaptureProblem(f"git could not be started ({one_line(exc)})") from None

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
                    raise CaptureProblem("stopped at the end of the run" if self.stop.is_set() else
                                         f"git {args[0]} did not answer within {self.timeout:g} s") from None
        if proc.returncode != 0:
            raise CaptureProblem(f"git {' '.join(args[:2])}: {one_line(err.decode(errors='replace')) or 'failed'}")
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
            raise CaptureProblem("stopped at the end of the run")
        if proc.returncode == -signal.SIGKILL:
            raise CaptureProblem(f"git {args[0]} did not finish within {self.timeout:g} s")
        if proc.returncode != 0:
            raise CaptureProblem(f"git {args[0]} failed (exit {proc.returncode})")
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
            if path.is_symlink() or not path.is_file():
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
    except CaptureProblem as exc:
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
    except CaptureProblem as exc:
        left_out.append(f"no commit recorded: {exc}")
    try:
        remote = git("config", "--get", "remote.origin.url").strip()
    except CaptureProblem:
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
        except CaptureProblem as exc:
            left_out.append(f"{RunLayout.CODE_PATCH}: not captured ({exc})")
    try:
        names = [n for n in git("ls-files", "--others", "--exclude-standard", "-z").split("\0") if n]
    except CaptureProblem as exc:
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


def _input_paths(config: Mapping[str, Any], cwd: Path, skip: Sequence[Path]) -> dict[str, tuple[str, Path]]:
    """``{config key: (value, path)}`` for each config value naming an existing file or folder (not the
    working directory or a folder above it, not under ``skip``: the runs root)."""
    from ..folder.records import flatten

    found: dict[str, tuple[str, Path]] = {}
    for key, value in flatten(dict(config)).items():
        if not isinstance(value, str) or not value.strip() or "\n" in value or len(value) > 4096:
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else cwd / path
        try:
            if not path.exists():
                continue
            resolved = path.resolve()
        except OSError:
            continue
        if resolved == cwd or resolved in cwd.parents or any(resolved.is_relative_to(s) or s.is_relative_to(resolved)
                                                             for s in skip):
            continue
        found[key] = (value, path)
    return found


class _Budget:
    def __init__(self, caps: CaptureCaps, stop: threading.Event) -> None:
        self.bytes, self.deadline, self.stop = caps.input_bytes, time.monotonic() + caps.input_s, stop
        self.caps = caps

    def why_not(self, size: int) -> str | None:
        if self.stop.is_set():
            return "not hashed: the run ended first"
        if time.monotonic() > self.deadline:
            return f"not hashed: the {self.caps.input_s:g} s for hashing inputs were spent"
        if size > self.bytes:
            return f"not hashed: {size} bytes, over the {self.caps.input_bytes} bytes hashed in all"
        return None


def _hash_file(path: Path, budget: _Budget) -> tuple[str | None, str | None]:
    """(sha256 hex, None) or (None, why not) within the budget."""
    import hashlib

    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"not hashed: {one_line(exc)}"
    why = budget.why_not(size)
    if why:
        return None, why
    try:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return None, f"not hashed: {one_line(exc)}"
    budget.bytes -= size
    return digest, None


def _describe_input(value: str, path: Path, budget: _Budget) -> dict[str, Any]:
    import hashlib
    from datetime import datetime, timezone

    try:
        stat = path.stat()
    except OSError as exc:
        return {"path": value, "problem": f"cannot be read: {one_line(exc)}"}
    entry: dict[str, Any] = {"path": value, "kind": "folder" if path.is_dir() else "file",
                             "mtime": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()}
    if not path.is_dir():
        entry["size"] = stat.st_size
        digest, why = _hash_file(path, budget)
        entry["sha256"] = digest
        if why:
            entry["problem"] = why
        return entry
    # a folder: the hash over its files' (relative path, hash), in path order
    files: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        files += [Path(root) / n for n in sorted(names)]
        if len(files) > budget.caps.input_files:
            break
    total = hashlib.sha256()
    size = 0
    for i, file in enumerate(files):
        if i >= budget.caps.input_files:
            entry.update(sha256=None, problem=f"not hashed: over {budget.caps.input_files} files")
            return entry
        digest, why = _hash_file(file, budget)
        if why:
            entry.update(sha256=None, problem=f"{file.relative_to(path).as_posix()}: {why}")
            return entry
        size += file.stat().st_size
        total.update(f"{file.relative_to(path).as_posix()}\0{digest}\n".encode())
    entry.update(size=size, files=len(files), sha256=total.hexdigest())
    return entry


def capture_inputs(config: Mapping[str, Any], *, cwd: str | Path, caps: CaptureCaps = CaptureCaps(),
                   exclude: Sequence[Path] = (), stop: threading.Event | None = None) -> dict[str, Any]:
    """``inputs.json``: for each config value naming an existing file or folder, its size, modification
    time and SHA-256 (a folder's: over its files' paths and hashes), within the caps; what a cap left out
    says so in its entry's ``problem``."""
    budget = _Budget(caps, stop or threading.Event())
    cwd = Path(cwd).resolve()
    paths = _input_paths(config, cwd, [p.resolve() for p in exclude])
    return {"cwd": str(cwd), "inputs": {key: _describe_input(value, path, budget)
                                        for key, (value, path) in paths.items()}}


def _editable(dist: Any, git_timeout: float) -> dict[str, Any] | None:
    """Path (and commit, when it is a git checkout) of an editable install, from PEP 610's direct_url.json."""
    import json

    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        direct = json.loads(text)
    except ValueError:
        return None
    if not (direct.get("dir_info") or {}).get("editable"):
        return None
    url = str(direct.get("url", ""))
    path = url[len("file://"):] if url.startswith("file://") else url
    found: dict[str, Any] = {"path": path}
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                             timeout=git_timeout, check=False)
        if out.returncode == 0:
            found["commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def _torch_versions() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    found: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "cuda_available": bool(torch.cuda.is_available())}
    try:
        found["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install is recorded as unknown, never raised
        found["cudnn"] = None
    try:
        nccl = torch.cuda.nccl.version() if torch.cuda.is_available() else None
        found["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
    except Exception:  # noqa: BLE001
        found["nccl"] = None
    return found


def _gpus() -> dict[str, Any]:
    from .system import gpu_unavailable_reason

    nvml, why = gpu_unavailable_reason()
    if nvml is None:
        return {"gpus": [], "note": why}
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            gpus.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                         "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total)})
        return {"driver": driver.decode() if isinstance(driver, bytes) else driver, "gpus": gpus}
    except Exception as exc:  # noqa: BLE001 - NVML's own error types
        return {"gpus": [], "note": f"NVML: {one_line(exc)}"}


def capture_environment(environ: Mapping[str, str] | None = None, git_timeout: float = 5.0) -> dict[str, Any]:
    """``environment.json``: what was installed and set where the run trained."""
    from importlib import metadata

    env = os.environ if environ is None else environ
    packages: dict[str, str] = {}
    editable: dict[str, Any] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name in packages:
            continue  # the first on sys.path is the one imported
        packages[name] = dist.version
        found = _editable(dist, git_timeout)
        if found is not None:
            editable[name] = found
    seed = env.get(SEED_ENV)
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "platform": platform.platform()},
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
        "editable": editable,
        **_torch_versions(),
        **_gpus(),
        "env": training_env(env),
        "seed": int(seed) if seed and seed.lstrip("-").isdigit() else seed,
    }


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
                atomic_write_json(self.layout.inputs_json, capture_inputs(
                    config, cwd=self.cwd, caps=self.caps, exclude=[self.layout.root], stop=self._stop))
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
