"""The stats of a root's children, taken by a helper process while the look loads the catalog's rows.

Why: a look over 100,000 run folders makes one ``lstat`` a folder (the catalog's "did it change"): ~0.3 s of
one core, after the ~0.2 s the catalog's rows take on the same core. Here a helper (this file run as
``python -I -S``: the standard library only) lists the root and stats its children on another core as soon
as the look knows the root is large, and streams ``name/key`` records (the key: the catalog's folder key,
``mtime_ns:ctime_ns:ino:dev``). The look takes a key only for the very name it asks, in the listing's order;
where the helper said nothing (a link, another device, a folder changed too recently, a name not where it
listed it, a helper that died) the look stats the name itself, so an answer never depends on the helper."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys

__all__ = ["ChildStats", "FROM_ENTRIES"]

FROM_ENTRIES = 2000  # a root with fewer catalog entries is stat'ed by the look alone (a start costs ~20 ms)
_LOOK_AHEAD = 16  # records a name may be behind where the helper listed it (names the walk leaves out)
_CHUNK = 1 << 15  # bytes read at once (~400 records: the few a look holds)
_PIPE = 1 << 20  # the pipe's room: the records written while the look is busy with the catalog's rows


class ChildStats:
    """The helper for one folder: :meth:`key` of each name the look lists, in the order both list them."""

    __slots__ = ("_proc", "_names", "_keys", "_at", "_tail", "_done", "_encoding")

    def __init__(self, folder: str, limit: int, dev: int) -> None:
        """Start the helper on ``folder``: keys only for folders on ``dev``, not links, whose mtime and
        ctime are before ``limit`` (ns; the catalog's settled time). Raises OSError when it cannot start."""
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

    def key(self, name: str) -> str:
        """The folder key the helper took of ``name``, or "" (the look stats it itself)."""
        at = self._at
        if at < len(self._names) and self._names[at] == name:
            self._at = at + 1
            return self._keys[at]
        return self._ahead(name)

    def _ahead(self, name: str) -> str:
        while len(self._names) - self._at < _LOOK_AHEAD and self._more():
            pass
        names = self._names
        for i in range(self._at, min(len(names), self._at + _LOOK_AHEAD)):
            if names[i] == name:
                self._at = i + 1
                return self._keys[i]
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
    """The helper: ``name/key\\0`` for each child of ``folder`` (key empty when the look must stat it)."""
    out = sys.stdout.buffer
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    lstat, isdir, batch = os.stat, stat.S_ISDIR, []
    with os.scandir(fd) as entries:
        for entry in entries:
            name = os.fsencode(entry.name)
            try:
                st = lstat(entry.name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                batch.append(name + b"/\0")
                continue
            if isdir(st.st_mode) and st.st_dev == dev and max(st.st_mtime_ns, st.st_ctime_ns) < limit:
                batch.append(b"%s/%d:%d:%d:%d\0" % (name, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
            else:
                batch.append(name + b"/\0")
            if len(batch) >= 2048:
                out.write(b"".join(batch))
                batch = []
    out.write(b"".join(batch))
    out.flush()


if __name__ == "__main__":
    try:
        _main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    except (OSError, KeyboardInterrupt):
        sys.exit(1)
