"""The stats of a root's children, taken by a helper process while the look loads the catalog's rows.

Why: a look over 100,000 run folders makes one ``lstat`` a folder (the catalog's "did it change"): ~0.3 s of
one core, after the ~0.2 s the catalog's rows take on the same core. Here a helper (this file run as
``python -I -S``: the standard library only) lists the root and stats its children on another core as soon
as the look knows the root is large, and streams ``name/key`` records (the key: the catalog's folder key,
``mtime_ns:ctime_ns:ino:dev``), after the root's own identity. The look takes a key only for the very name it
asks, in the listing's order, and only when the helper listed the folder the look lists; where the helper
said nothing (a link, another device, a folder changed too recently, a name not where it listed it, a helper
that died or whose listing is in another order) the look stats the name itself. A key is a stat taken while
the look loads the catalog's rows instead of a moment later: the folder as it was during the command, as a
look's own stat is."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from collections.abc import Callable

__all__ = ["ChildStats", "FROM_ENTRIES"]

FROM_ENTRIES = 2000  # a root with fewer catalog entries is stat'ed by the look alone (a start costs ~20 ms)
_LOOK_AHEAD = 16  # records the helper's listing may be ahead of the name asked (new names; skipped ones aside)
_MISSES = 64  # names in a row the helper did not have where the look asked: its listing is in another order
_CHUNK = 1 << 15  # bytes read at once (~400 records: the few a look holds)
_PIPE = 1 << 20  # the pipe's room: the records written while the look is busy with the catalog's rows


class ChildStats:
    """The helper for one folder: :meth:`key` of each name the look lists, in the order both list them."""

    __slots__ = ("_proc", "_names", "_keys", "_at", "_tail", "_done", "_encoding", "_skipped", "_misses", "_missed_at",
                 "_root")

    def __init__(self, folder: str, limit: int, dev: int, skipped: Callable[[str], bool]) -> None:
        """Start the helper on ``folder``: keys only for folders on ``dev``, not links, whose mtime and
        ctime are before ``limit`` (ns; the catalog's settled time); ``skipped(name)``: a name the look never
        asks. Raises OSError (or ValueError, TypeError) when it cannot start."""
        if not sys.executable or getattr(sys, "frozen", False):
            raise OSError("no Python interpreter to start")  # (embedded, or a frozen application)
        self._proc = subprocess.Popen([sys.executable, "-I", "-S", __file__, folder, str(limit), str(dev)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:  # (Linux; an unprivileged process may ask up to 1 MiB)
            fcntl.fcntl(self._proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE)  # type: ignore[union-attr]
        except (OSError, AttributeError):
            pass
        self._names: list[str] = []
        self._keys: list[str] = []
        self._at = 0
        self._tail = b""
        self._done = False
        self._encoding = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
        self._skipped, self._misses, self._missed_at, self._root = skipped, 0, -1, ""

    def root(self) -> str:
        """The identity (``dev:ino``) of the folder the helper listed, "" when it said none."""
        while not self._names and self._more():
            pass
        if self._at == 0 and self._names and self._names[0] == "":  # (its first record: no name)
            self._at, self._root = 1, self._keys[0]
        return self._root

    def key(self, name: str) -> str:
        """The folder key the helper took of ``name``, or "" (the look stats it itself)."""
        at = self._at
        if at < len(self._names) and self._names[at] == name:
            self._at = at + 1
            return self._keys[at]
        return self._ahead(name)

    def _ahead(self, name: str) -> str:
        if self._done and not self._names:
            return ""
        while True:  # the names the look never asks (hidden ones may come in runs) are passed over first
            while len(self._names) - self._at < _LOOK_AHEAD and self._more():
                pass
            if self._at < len(self._names) and (not self._names[self._at] or self._skipped(self._names[self._at])):
                self._at += 1
                continue
            break
        names = self._names
        for i in range(self._at, min(len(names), self._at + _LOOK_AHEAD)):
            if names[i] == name:
                self._at, self._misses = i + 1, 0
                return self._keys[i]
        if self._at != self._missed_at:  # a name found since the last miss: the misses start again
            self._misses, self._missed_at = 0, self._at
        self._misses += 1
        if self._misses >= _MISSES:
            self.close()  # (the rest: the look's own stats)
        return ""

    def _more(self) -> bool:
        """Read the helper's next records (False at its end)."""
        if self._done or self._proc.stdout is None:
            return False
        data = os.read(self._proc.stdout.fileno(), _CHUNK)
        if not data:
            self._stop()  # (the records in hand are still asked)
            return False
        data = self._tail + data
        end = data.rfind(b"\0") + 1  # the records whole (a name's bytes may be cut at the chunk's end)
        self._tail = data[end:]
        # "name/key\0name/key\0...": no name holds "/" or "\0", no key "/": names and keys alternate
        parts = data[:end].decode(*self._encoding).replace("\0", "/").split("/")[:-1]
        self._missed_at -= self._at  # (positions from the records kept)
        self._names, self._keys, self._at = self._names[self._at:] + parts[0::2], self._keys[self._at:] + parts[1::2], 0
        return True

    def close(self) -> None:
        """Stop the helper and forget its records (at the end of the look's listing, or of the look)."""
        self._names, self._keys, self._at = [], [], 0
        self._stop()

    def _stop(self) -> None:
        if self._done:
            return
        self._done = True
        if self._proc.poll() is None:
            self._proc.kill()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc.wait()


def _main(folder: str, limit: int, dev: int) -> None:
    """The helper: ``/dev:ino\\0`` (the folder it lists), then ``name/key\\0`` for each child of ``folder`` (key
    empty when the look must stat it); the first records soon (the look may be waiting), then in batches."""
    out = sys.stdout.buffer
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    root = os.fstat(fd)
    batch, size = [b"/%d:%d\0" % (root.st_dev, root.st_ino)], 256
    isdir = stat.S_ISDIR
    with os.scandir(fd) as entries:
        for entry in entries:
            name = os.fsencode(entry.name)
            try:
                st = os.lstat(entry.name, dir_fd=fd)
            except OSError:
                batch.append(name + b"/\0")
                continue
            if isdir(st.st_mode) and st.st_dev == dev and max(st.st_mtime_ns, st.st_ctime_ns) < limit:
                batch.append(b"%s/%d:%d:%d:%d\0" % (name, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
            else:
                batch.append(name + b"/\0")
            if len(batch) >= size:
                out.write(b"".join(batch))
                out.flush()
                batch, size = [], 2048
    out.write(b"".join(batch))
    out.flush()


if __name__ == "__main__":
    try:
        _main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    except (OSError, KeyboardInterrupt):
        sys.exit(1)
