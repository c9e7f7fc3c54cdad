"""Small file primitives every writer shares: atomic replace, strict JSON, whole-line JSONL.

Why: a reader (a viewer, ``lt-sync``, a driver script) must never see a torn JSON file or half a
JSONL line, and a crash must never leave a file that looks complete but is not.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import ConfigError, JsonlProblem, LightningTrackError, RunFolderError

# Whole-line appends have their own standard-library-only module (the console relay starts with ``-S``).
from .appender import JsonlAppender as JsonlAppender
from .appender import _FdOwner

# The encoding has its own module; these names stay importable from here, where every caller finds them.
from .jsonenc import compact_dumps, dumps
from .jsonenc import json_line as json_line
from .jsonenc import restore_nonfinite as restore_nonfinite
from .jsonenc import to_jsonable as to_jsonable

__all__ = [
    "file_sha256",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_open",
    "read_umask",
    "read_json",
    "update_json",
    "exclusive_lock",
    "HeldLock",
    "iter_jsonl",
    "TEMP_SUFFIX",
    "temp_path",
    "is_temp_name",
    "replace_dir",
    "link_or_copy",
    "keep_jsonl_before",
]

# The temp-file rule: every file or folder a writer builds before renaming it into place is hidden
# (leading dot), names its target and ends in TEMP_SUFFIX: ``.metrics.csv.k2j3.tmp``,
# ``.final_model.4711.tmp``. Readers (run listings, lt-sync, checkpoint scans) skip such names.
TEMP_SUFFIX = ".tmp"


def temp_path(target: str | Path, tag: str | int | None = None) -> Path:
    """``<dir>/.<name>.<tag>.tmp`` beside ``target`` (``tag`` defaults to this process's pid)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid() if tag is None else tag}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` follows the temp-file rule (a half-written file nobody should read or copy)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def read_umask() -> int:
    """The process's umask, read without changing it: ``Umask:`` in ``/proc/self/status`` (Linux 4.7+).

    Where there is no such line, ``os.umask`` is set and restored once, here, while the package is
    first imported (before any thread of ours starts); never later, when another thread creating a
    file in that moment would get mode 0666."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _default_file_mode() -> int:
    return 0o666 & ~read_umask()


_FILE_MODE = _default_file_mode()


_DURABLE: ContextVar[bool] = ContextVar("lightning_track_durable_writes", default=True)


@contextmanager
def staged_writes() -> Iterator[None]:
    """Writes in this block (this thread) skip fsync: for files built in a staging folder that is
    renamed into place whole (lt-migrate), where a reader never sees a half file anyway and a per-file
    fsync only makes the build wait for the disk (~1 s per three issue-scale runs). Surviving a power
    loss right after is then the OS's writeback, as for ``cp -r``; ``sync`` makes it certain."""
    token = _DURABLE.set(False)
    try:
        yield
    finally:
        _DURABLE.reset(token)


def durable_writes() -> bool:
    """False inside :func:`staged_writes`."""
    return _DURABLE.get()


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on success flush, fsync and ``os.replace`` it into place.

    On any error the temp file is removed and ``path`` keeps its old content. No fsync inside
    :func:`staged_writes`.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except FileNotFoundError:  # name the file asked for, not the temp name beside it
        raise FileNotFoundError(errno.ENOENT, f"not written: no folder {path.parent}", str(path)) from None
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; a replaced file should look like any other
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            if _DURABLE.get():
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, compact: bool = False) -> None:
    """Write ``obj`` as JSON atomically: indented (readable) by default, one line with ``compact``.

    Why ``compact``: files of millions of numbers (the checkpoint mappings) are 2-3x larger and
    slower to write and read with one number per indented line.
    """
    text = compact_dumps(obj) if compact else dumps(obj, indent=2)
    atomic_write_text(path, text + "\n")


def replace_dir(built: str | Path, target: str | Path) -> None:
    """Put the finished folder ``built`` at ``target`` by renames (same filesystem).

    A reader sees the old folder or the new one, never a mix. An existing ``target`` is renamed aside
    (by the temp-file rule) before the swap and removed after it.
    """
    built, target = Path(built), Path(target)
    old = None
    if target.exists():
        old = temp_path(target, f"old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(built, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# Hard links are impossible across filesystems (EXDEV), on some (EPERM, ENOTSUP/EOPNOTSUPP) and past
# a file's link limit (EMLINK): then the bytes are copied.
_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


def inside(target: str, root: str) -> bool:
    """Whether the resolved path ``target`` is ``root`` or below it (both absolute, resolved).

    The one rule for links (lt-sync, lt-migrate): what resolves outside the tree being read is never
    copied or linked, so a symlink cannot carry an outside file (a secret) into a run or a mirror."""
    return target == root or target.startswith(root.rstrip("/") + "/")


def link_or_copy(src: str | Path, dst: str | Path) -> bool:
    """Hard-link ``src`` at ``dst`` (no bytes copied, the source untouched), or copy it where a link is
    impossible. True when linked."""
    try:
        os.link(src, dst)
        return True
    except OSError as exc:
        if exc.errno not in _LINK_FALLBACK:
            raise
    shutil.copy2(src, dst)
    return False


def keep_jsonl_before(path: str | Path, first_step: int, *, moved_to: str | Path | None = None
                      ) -> tuple[list[dict[str, Any]], int]:
    """Rewrite a JSONL file keeping the records whose ``"step"`` is below ``first_step``.

    Why: a resume trains the steps from its checkpoint again, so records the interrupted attempt
    logged at or after that step would be duplicates. They, and lines that are not a whole JSON
    object (a torn last line), leave the file: appended to ``moved_to`` when given (durably, before the
    file is rewritten, so nothing is ever lost), else dropped. The kept lines keep their bytes; the
    file is replaced atomically. Returns the kept records and how many lines left.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    kept_objs: list[dict[str, Any]] = []
    kept: list[bytes] = []
    taken: list[bytes] = []
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw) if raw.endswith(b"\n") else None
            except orjson.JSONDecodeError:
                obj = None
            step = obj.get("step") if type(obj) is dict else None
            if type(obj) is dict and not (isinstance(step, int) and step >= first_step):
                kept.append(raw)
                kept_objs.append(obj)
            else:
                taken.append(raw if raw.endswith(b"\n") else raw + b"\n")
    if not taken:
        return kept_objs, 0
    if moved_to is not None:
        with open(moved_to, "ab") as aside:
            aside.write(b"".join(taken))
            aside.flush()
            os.fsync(aside.fileno())
    atomic_write_bytes(path, b"".join(kept))
    return kept_objs, len(taken)


def read_json(path: str | Path) -> Any:
    """Read a JSON file; errors name the file and what is wrong."""
    with open(path, "rb") as file:  # no Path made: a first look reads 20,000 of these
        data = file.read()
    try:  # orjson: ~2x the stdlib on the large mapping files; what it refuses, the stdlib decides and explains
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise RunFolderError(f"{path}: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def update_json(path: str | Path, change: Callable[[Any], Any]) -> None:
    """Read-modify-write a JSON file (``{}`` when missing) under an exclusive lock on its folder.

    Why the folder: the file is replaced atomically (a new inode each time), so only the folder is a
    stable thing to lock; writers in other processes (the sink host) and threads that all go through
    here never lose each other's fields. ``change`` gets the data and returns the new data.
    """
    path = Path(path)
    fd = _locked_fd(path.parent, wait=True)
    try:
        data = read_json(path) if path.exists() else {}
        atomic_write_json(path, change(data))
    finally:
        os.close(fd)  # closing releases the lock


def _locked_fd(path: Path, *, wait: bool) -> int:
    """An fd on ``path`` (a folder, or a file created if missing) holding ``flock(LOCK_EX)``; with
    ``wait=False``, BlockingIOError at once when another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


class HeldLock(_FdOwner):
    """An exclusive ``flock`` held until :meth:`close`, the ``with`` block's end, or the process's end
    (also when it is killed: the kernel drops it with the fd)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd >= 0


def exclusive_lock(path: str | Path, *, what: str, fix: str, name: str | Path | None = None,
                   error: type[LightningTrackError] = ConfigError) -> HeldLock:
    """Take the one-holder lock on ``path`` (a folder: no file left behind; else a lock file), or refuse
    at once with ``error("<name>: <what>; <fix>")``: a second process doing the same work never waits
    behind the first or interleaves with it; it is told who holds it and what to do.

    ``name`` (default ``path``) is what the message starts with; ``what`` says who holds it ("another lt
    board is feeding this store"), ``fix`` what to do ("stop it, or give --dir another folder").
    """
    try:
        return HeldLock(_locked_fd(Path(path), wait=False))
    except BlockingIOError:
        raise error(f"{path if name is None else name}: {what}; {fix}") from None


def iter_jsonl(path: str | Path, problems: list[JsonlProblem] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each JSON-object line.

    Bad lines (corrupt JSON, non-UTF-8 bytes, non-objects, a partial last line) are skipped and
    appended to ``problems`` when given; without it they raise. Streams: memory is one line.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                obj = orjson.loads(raw)  # strict JSON and UTF-8; else the stdlib decides (and explains)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is dict:  # the usual line (not blank: it holds an object)
                yield lineno, obj
                continue
            if not raw.strip():
                continue
            partial = not raw.endswith(b"\n")
            reason = None
            try:  # a line orjson refused (e.g. a legacy NaN): the stdlib decides, and says what is wrong
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                reason = f"not UTF-8 ({exc.reason} at byte {exc.start})"
            except json.JSONDecodeError as exc:
                reason = ("partial last line (run killed while writing?)" if partial
                          else f"invalid JSON at column {exc.colno}: {exc.msg}")
            else:
                if not isinstance(obj, dict):
                    reason = f"expected a JSON object, got {type(obj).__name__}"
            if reason is not None:
                problem = JsonlProblem(path, lineno, reason)
                if problems is None:
                    raise problem
                problems.append(problem)
                continue
            yield lineno, obj


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex as ``sha256sum`` prints it (hashlib releases the GIL while it
    hashes): the one hash of checkpoints, final models and inputs."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
