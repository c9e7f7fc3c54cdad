"""Whole-line appends to a JSONL (or any line) file: :class:`JsonlAppender`, re-exported by :mod:`.fileio`.

Its own module, standard library only, because the console relay (:mod:`lightning_track.run.console_relay`)
imports it and starts with ``python -S`` (no site-packages: one interpreter start a run pays beside training,
kept cheap); :meth:`JsonlAppender.append` imports the JSON encoder (orjson) on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["JsonlAppender"]

_Owner = TypeVar("_Owner", bound="_FdOwner")


class _FdOwner:
    """An open fd closed once, by :meth:`close` or at the ``with`` block's end."""

    _fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlAppender(_FdOwner):
    """Append whole lines to a JSONL file, each batch in a single ``write`` on an O_APPEND fd.

    A concurrent reader therefore sees only whole lines, and a SIGKILL can at worst lose the
    lines not yet written, never leave half of one. A write that fails part-way (a full disk, a
    quota) is cut back to the file's last whole line before the error is raised, naming the file.
    """

    _write = staticmethod(os.write)  # one write of the batch (a test's failing disk replaces it)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        view = memoryview(data)
        start = os.fstat(self._fd).st_size
        try:
            while view:
                written = self._write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self._cut_back(start)
            raise OSError(exc.errno, f"cannot append to {self.path}: {exc.strerror or exc} "
                          "(the file ends at its last whole line)") from None

    def _cut_back(self, size: int) -> None:
        """Drop a partly written batch: the file ends at the last line written whole before it."""
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            pass  # nothing more can be done; a reader skips a torn last line

    def append(self, obj: Any) -> None:
        from .jsonenc import json_line  # orjson: only for callers that append objects

        self.write_lines([json_line(obj)])

    def fsync(self) -> None:
        os.fsync(self._fd)
