"""Pull's first copy as one tar stream: the remote's ``tar -c`` of every new run of a pass, over one exec channel,
written here by a local ``tar -x``.

Why one stream: each remote command starts the account's shell and its start-up files (about 0.1-0.2 s of
the server's CPU each, ~0.3 s wall on the test sshd), so a command per group of runs cost a first copy of
10,000 runs more than its bytes did; rsync pays that once. The names of the runs' files go to tar's stdin
batch by batch as the engine lists them (GNU tar reads them as it goes). Why a local ``tar -x`` fed straight
from the channel: reading the stream with Python's tarfile and writing each file from Python cost about
three times rsync's client CPU at 10,000 runs; tar parses and writes in C, in a process of its own.

Safety comes from the listing, not from tar: tar extracts into ``STAGE/EXTRACT`` (GNU tar itself refuses
``..`` and absolute names, and never writes through a link it made); the run's folders are made there before
its names are sent, so tar makes none. A run is taken over once tar has moved past it (its ``-v`` line for a
later run, or its end): moved out of tar's reach to ``STAGE/<run>``, then every entry there must be a listed
folder or a plain file with the listed size and mtime and one link, and every listed file must be there; then
its folders get their listed mtimes and it is renamed into place, so a pass stopped at any point leaves whole
runs or none. A run that fails the check (a vanished file, a changed one, anything unlisted) is removed and
left to the per-file path of the same pass; so is every run when the remote has no ``tar``. A file changed
while tar read it (tar warns, it had been quiet for RECENT_S) is forgotten by the journal, so the next pass
compares it with the source again.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .manifest import PART_SUFFIX, TAIL_BYTES, tail_hash

__all__ = ["PullStream", "local_tar"]

Tails = dict[str, tuple[int, int, str]]  # file -> (size, mtime, tail hash): the journal's done records
EXTRACT = f".extract{PART_SUFFIX}"  # tar's folder inside STAGE (an internal name: never a listed run)
# Both tars use 10 KiB records (-b 20, GNU tar's default, said on both sides): the remote one writes whole records
# only, each one the local one reads whole, so a stalled stream holds back no run that came whole. (With 2 KiB
# records here, as before, the local tar made 60,000 more reads and 57,000 more writes for 10,000 runs.)
_RECORD = ["-b", "20"]
_LOCAL_TAR = ["-x", *_RECORD, "-f", "-", "--no-same-owner", "--no-same-permissions"]
_GNU_VERBOSE = ["-v", "--quoting-style=literal"]  # one line per member as tar starts it, the name as sent
_CHANGED = (": file changed as we read it", ": File shrank by ")  # GNU tar's warnings naming a file
_gnu: list[bool] = []


def local_tar() -> list[str] | None:
    """The local tar's command (GNU tar: with its ``-v`` lines); None where there is none."""
    tar = shutil.which("tar")
    if tar is None:
        return None
    if not _gnu:
        try:
            out = subprocess.run([tar, "--version"], capture_output=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = b""
        _gnu.append(b"GNU tar" in out)
    return [tar, *_LOCAL_TAR, *(_GNU_VERBOSE if _gnu[0] else [])]


@dataclass
class _Run:
    """One run fed to the stream: what it must hold."""

    files: dict[str, tuple[int, int]]  # file -> listed (size, mtime)
    dirs: dict[str, int]  # folder -> listed mtime
    over: bool = False  # placed or given up


class PullStream:
    """One remote ``tar -c`` for a pass: :meth:`feed` runs as they are listed, :meth:`close_input`, :meth:`end`."""

    def __init__(self, remote: Any, root: str, stage: str,
                 on_done: Callable[[list[tuple[str, Tails | None]]], None]) -> None:
        self.remote, self.root, self.stage, self.on_done = remote, root, stage, on_done
        # the thread's verdicts, handed to the loop a bunch at a time: one wake-up of the loop (and one journal
        # write) per bunch, not per run (each wake-up is a write to the loop's socket and a turn of the loop)
        self._verdicts: list[tuple[str, Tails | None]] = []
        self._verdicts_lock = threading.Lock()
        self.extract = os.path.join(stage, EXTRACT)
        self._runs: dict[str, _Run] = {}  # written by the loop before the names are sent, read by the thread
        self._order: list[str] = []  # the runs in the order fed (tar's order)
        self._index: dict[str, int] = {}
        self._next = 0  # the first run of _order the thread has not taken over yet
        self._proc: Any = None
        self._tar: subprocess.Popen[bytes] | None = None
        self._thread: asyncio.Future[None] | None = None
        self._stderr: asyncio.Future[bytes] | None = None
        self.read_any = False  # whether any member came (none and exit 126/127: no tar there)
        self._loop = asyncio.get_running_loop()

    async def start(self) -> bool:
        """Start the remote tar and the local one; False where the remote has no exec channel (or here no tar)."""
        local = local_tar()
        if local is None:
            return False
        shutil.rmtree(self.extract, ignore_errors=True)  # what a stopped pass left
        os.makedirs(self.extract)
        read_fd, write_fd = os.pipe()
        try:
            self._tar = subprocess.Popen([*local, "-C", self.extract], stdin=read_fd, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL)
        finally:
            os.close(read_fd)
        tar = shlex.quote(self.remote.TAR)
        try:
            self._proc = await self.remote.start(
                f"{tar} -cf - {' '.join(_RECORD)} --no-recursion --dereference --null --verbatim-files-from -T -",
                write_fd)
        except BaseException:
            os.close(write_fd)
            self._stop_tar()
            raise
        if self._proc is None:
            os.close(write_fd)
            self._stop_tar()
            return False
        self._thread = asyncio.ensure_future(asyncio.to_thread(self._follow))
        self._stderr = asyncio.ensure_future(self._proc.stderr.read())
        return True

    def _stop_tar(self) -> None:
        assert self._tar is not None
        self._tar.kill()
        self._tar.wait()
        self._tar.stdout.close()  # type: ignore[union-attr]

    async def feed(self, runs: list[Any]) -> None:
        """Send the names of ``runs``' files (each a bulk.WholeRun), once their folders are made for tar."""
        await asyncio.to_thread(self._make_dirs, runs)  # the kernel's work: the loop keeps receiving meanwhile
        names = []
        for run in runs:
            files = {e.rel: (e.size, e.mtime) for e in run.files}
            self._runs[run.top] = _Run(files, dict(run.dirs))
            self._index[run.top] = len(self._order)
            self._order.append(run.top)
            names += files
        self._proc.stdin.write(b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names))
        await self._proc.stdin.drain()

    def _make_dirs(self, runs: list[Any]) -> None:
        for run in runs:
            for rel in sorted({run.top, *run.dirs}):  # parents first
                try:
                    os.mkdir(os.path.join(self.extract, rel))
                except FileExistsError:
                    pass

    def close_input(self) -> None:
        """No more names: tar ends once it has sent the last ones."""
        if self._proc is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write_eof()

    async def end(self, abort: bool = False) -> tuple[int | None, bytes, list[str]]:
        """Wait for the stream to end (``abort``: close it now); (exit status, stderr, files tar saw change).
        Every run not placed by then is given up (``on_done`` with None)."""
        if self._proc is None:
            return None, b"", []
        if abort:
            self._proc.close()
        assert self._thread is not None and self._stderr is not None
        try:
            await asyncio.shield(self._thread)
        finally:
            self._proc.close()  # the local tar stopped (an error): the remote tar must not wait on us
            await self._proc.wait_closed()
        try:
            err = await self._stderr
        except (OSError, EOFError):
            err = b""
        shutil.rmtree(self.extract, ignore_errors=True)
        self._hand_over()  # the thread's last verdicts, if their turn of the loop has not come yet
        given_up = [top for top, run in self._runs.items() if not run.over]
        for top in given_up:
            self._runs[top].over = True
        if given_up:
            self.on_done([(top, None) for top in given_up])
        changed = [line.split(": ", 1)[1].rsplit(": ", 1)[0] for line in err.decode(errors="replace").splitlines()
                   if line.startswith("tar: ") and any(c in line for c in _CHANGED)]
        return self._proc.exit_status, err, changed

    # -- the worker thread ----------------------------------------------------------------------
    def _follow(self) -> None:
        """Tar's ``-v`` lines: once a member of a later run starts, the runs before it are whole; at the end, all."""
        assert self._tar is not None and self._tar.stdout is not None
        with self._tar.stdout as lines:
            for line in lines:
                self.read_any = True
                at = self._index.get(line.split(b"/", 1)[0].decode("utf-8", "surrogateescape"), -1)
                while self._next < at:
                    self._take(self._order[self._next])
                    self._next += 1
        self._tar.wait()
        while self._next < len(self._order):
            self._take(self._order[self._next])
            self._next += 1

    def _take(self, top: str) -> None:
        """Move the run out of tar's reach, check it against the listing, place it (or remove it: file by file)."""
        run = self._runs[top]
        where = os.path.join(self.stage, top)
        tails = None
        try:
            shutil.rmtree(where, ignore_errors=True)  # what an earlier, stopped pass left
            os.rename(os.path.join(self.extract, top), where)
            tails = self._check(top, run)
            if tails is not None:
                for rel in sorted(run.dirs, reverse=True):  # deepest first: a folder's own mtime as on the source
                    os.utime(os.path.join(self.stage, rel), (run.dirs[rel], run.dirs[rel]))
                os.rename(where, os.path.join(self.root, top))
        except OSError:  # nothing came, a full disk, or the mirror made the run meanwhile: file by file
            tails = None
        if tails is None:
            shutil.rmtree(where, ignore_errors=True)
        run.over = True
        with self._verdicts_lock:
            self._verdicts.append((top, tails))
            first = len(self._verdicts) == 1  # else a hand-over is already on its way
        if first:
            self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        """In the loop: the verdicts the thread has reached since the last hand-over."""
        with self._verdicts_lock:
            verdicts, self._verdicts = self._verdicts, []
        if verdicts:
            self.on_done(verdicts)

    def _check(self, top: str, run: _Run) -> Tails | None:
        """The run under STAGE holds exactly its listed folders and files (plain, one link, listed size and mtime):
        their journal records (with the tail hash of the bytes written); None otherwise."""
        tails: Tails = {}
        folders = [top]
        for rel in folders:
            with os.scandir(os.path.join(self.stage, rel)) as items:
                for item in items:
                    name = f"{rel}/{item.name}"
                    if item.is_dir(follow_symlinks=False):
                        if name not in run.dirs:
                            return None
                        folders.append(name)
                        continue
                    st = item.stat(follow_symlinks=False)
                    listed = run.files.get(name)
                    if listed is None or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or \
                            (st.st_size, int(st.st_mtime)) != listed:
                        return None
                    fd = os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW)
                    try:
                        tail = os.pread(fd, TAIL_BYTES, max(0, st.st_size - TAIL_BYTES))
                    finally:
                        os.close(fd)
                    tails[name] = (*listed, tail_hash(tail))
        return tails if len(tails) == len(run.files) and len(folders) == len({top, *run.dirs}) else None
