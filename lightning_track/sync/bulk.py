"""Whole new runs in one go: the first copy of run folders the destination lacks entirely.

Why: a first copy of many small runs is bound by per-file work (over SSH six SFTP requests per file; locally
a handful of system calls, a read-back and two journal lines each), where rsync streams. A run folder the
destination does not have at all, whose files and folders have all been quiet for RECENT_S (so no line can
be mid-write: the per-file path copies such files as they are too), is copied with its neighbours as one
group: over SSH a ``tar`` stream through an exec channel (push: a group's archive built here, the remote's
``tar -x``; pull: one remote ``tar -c`` for every new run of the pass, pullstream.py), locally plain copies
in a worker thread. Every file is checked against the listing (size and mtime of the version read) and
each run is built under ``STAGE/<run>`` on the destination, then renamed into place whole: a pass stopped
at any point leaves no half run visible, and the next pass, finding the run still missing, builds it again.
A run that fails a check, a group whose tar failed, and every run when the remote has no ``tar`` (said
once) go the per-file way in the same pass.
"""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import shutil
import tarfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .manifest import RECENT_S, STAGE, TAIL_BYTES, Manifest, tail_hash, top_name
from .plan import COPY, Plan
from .pullstream import PullStream, local_tar
from .state import SyncState
from .transport import Entry, LocalTransport, Transport

__all__ = ["WholeRun", "WholeRunCopier", "whole_runs"]

GROUP_BYTES = 16 << 20  # one tar stream's payload at most (held in memory once): a bigger run goes file by file
GROUP_RUNS = 200  # runs in one tar stream (their names are on one remote command line)
GROUPS_AT_ONCE = 4


@dataclass
class WholeRun:
    """A top-level folder to copy whole: its files (as listed on the source) and folders."""

    top: str
    files: list[Entry] = field(default_factory=list)
    dirs: dict[str, int] = field(default_factory=dict)  # folder -> its mtime on the source
    size: int = 0


def whole_runs(plan: Plan, src_m: Manifest, dst_m: Manifest, now: float) -> list[WholeRun]:
    """The runs of ``plan`` that are new on the destination as a whole, quiet on the source, and small enough."""
    runs: dict[str, WholeRun] = {}
    out: set[str] = {top_name(r) for r in (*dst_m.files, *dst_m.dirs, *dst_m.links, *dst_m.parts)}
    for action in plan.actions:
        top = top_name(action.rel)
        if action.kind != COPY or action.src is None or action.dst is not None or top == action.rel:
            out.add(top)
        elif top not in out:
            run = runs.setdefault(top, WholeRun(top))
            run.files.append(action.src)
            run.size += action.src.size
    quiet = int(now - RECENT_S)
    for rel, mtime in src_m.dir_mtimes.items():
        run = runs.get(top_name(rel))
        if run is not None:
            run.dirs[rel] = mtime
            if mtime > quiet:
                out.add(run.top)
    return [run for top, run in sorted(runs.items()) if top not in out and top in src_m.dirs
            and run.size <= GROUP_BYTES and all(e.mtime <= quiet for e in run.files)]


def _groups(runs: list[WholeRun]) -> Iterable[list[WholeRun]]:
    group: list[WholeRun] = []
    size = 0
    for run in runs:
        if group and (len(group) >= GROUP_RUNS or size + run.size > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(run)
        size += run.size
    if group:
        yield group


Tails = dict[str, tuple[int, int, str]]  # file -> (size, mtime, tail hash): the journal's done records


def _read_checked(path: str, entry: Entry) -> bytes | None:
    """The file's bytes when they are the listed version (same size and mtime before and after the read)."""
    try:
        with open(path, "rb") as handle:
            before = os.fstat(handle.fileno())
            data = handle.read()
            after = os.fstat(handle.fileno())
    except OSError:
        return None
    same = len(data) == before.st_size == after.st_size == entry.size
    return data if same and int(before.st_mtime) == int(after.st_mtime) == entry.mtime else None


def _clear(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _local_copy(src_root: str, stage: str, group: list[WholeRun]) -> tuple[list[str], Tails]:
    """Local to local: each run's files into ``stage/<run>`` (the listed versions only); the runs built whole."""
    built, tails = [], {}
    for run in group:
        where = os.path.join(stage, run.top)
        _clear(where)
        os.makedirs(where)
        mine: Tails = {}
        for rel in sorted(run.dirs):
            os.makedirs(os.path.join(stage, rel), exist_ok=True)
        for entry in run.files:
            data = _read_checked(os.path.join(src_root, entry.rel), entry)
            if data is None:
                break
            path = os.path.join(stage, entry.rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.utime(fd, (entry.mtime, entry.mtime))
            finally:
                os.close(fd)
            mine[entry.rel] = (entry.size, entry.mtime, tail_hash(data[-TAIL_BYTES:]))
        else:
            for rel in sorted(run.dirs, reverse=True):  # deepest first: a folder's own mtime as on the source
                os.utime(os.path.join(stage, rel), (run.dirs[rel], run.dirs[rel]))
            built.append(run.top)
            tails.update(mine)
            continue
        _clear(where)
    return built, tails


def _archive(src_root: str, group: list[WholeRun]) -> tuple[bytes, list[str], Tails]:
    """Push: the group's runs as one tar archive, each run only when every file read is the listed version."""
    buffer, built, tails = io.BytesIO(), [], {}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for run in group:
            members: list[tuple[tarfile.TarInfo, bytes | None]] = []
            mine: Tails = {}
            for rel in sorted(run.dirs):
                info = tarfile.TarInfo(rel)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, run.dirs[rel]
                members.append((info, None))
            for entry in run.files:
                data = _read_checked(os.path.join(src_root, entry.rel), entry)
                if data is None:
                    break
                info = tarfile.TarInfo(entry.rel)
                info.size, info.mode, info.mtime = len(data), 0o644, entry.mtime
                members.append((info, data))
                mine[entry.rel] = (entry.size, entry.mtime, tail_hash(data[-TAIL_BYTES:]))
            else:
                for info, data in members:
                    tar.addfile(info, None if data is None else io.BytesIO(data))
                built.append(run.top)
                tails.update(mine)
    return buffer.getvalue(), built, tails


_NO_TAR = (126, 127)  # the shell's "not executable" / "not found"


class WholeRunCopier:
    """Copies groups of :class:`WholeRun` between a local folder and a local or SSH one (see the module doc)."""

    def __init__(self, src: Transport, dst: Transport, state: SyncState, notes: list[str],
                 on_file: Callable[[Entry], None]) -> None:
        self.src, self.dst, self.state, self.notes, self.on_file = src, dst, state, notes, on_file
        self.failed: list[str] = []  # runs left in STAGE by a failed check: removed by ``finish``
        self.staged = False  # whether this pass built anything in STAGE (else ``finish`` has nothing to do)
        self._gate = asyncio.Semaphore(GROUPS_AT_ONCE)  # over every ``copy`` of the pass
        self._stream: PullStream | None = None  # pull: one tar stream for the pass
        self._feeder: asyncio.Future[None] | None = None  # pull: the task that starts, feeds and ends the stream
        self._queue: list[list[WholeRun]] = []
        self._wake, self._no_more = asyncio.Event(), False
        self._fed: dict[str, tuple[list[Entry], tuple[set[str], set[str], asyncio.Future[set[str]]]]] = {}
        local_src, local_dst = isinstance(src, LocalTransport), isinstance(dst, LocalTransport)
        self.mode = ("local" if local_src and local_dst else "pull" if local_dst and hasattr(src, "run")
                     else "push" if local_src and hasattr(dst, "run") else "")

    def usable(self) -> bool:
        remote = self.src if self.mode == "pull" else self.dst
        return bool(self.mode) and getattr(remote, "tar_ok", None) is not False and \
            (self.mode != "pull" or local_tar() is not None)  # pull: this machine's tar writes the stream

    def _no_tar(self, remote: Any, done: tuple[int, bytes, bytes] | None) -> None:
        if getattr(remote, "tar_ok", None) is not False:
            said = (done[2].decode(errors="replace").strip().splitlines() or [f"exit {done[0]}"])[-1] if done else ""
            why = f"no usable `tar` on the remote side ({said})" if done else "no shell access"
            remote.tar_ok = False  # remembered for the session's later passes
            self.notes.append(f"{remote.describe()}: {why}; new runs are copied file by file over SFTP")

    async def group(self, group: list[WholeRun]) -> tuple[list[str], Tails]:
        """Local and push: build the group's runs under STAGE; the runs built whole (the rest go file by file)."""
        stage = os.path.join(self.dst.root, STAGE)
        if self.mode == "local":
            os.makedirs(stage, exist_ok=True)
            return await asyncio.to_thread(_local_copy, self.src.root, stage, group)
        remote: Any = self.dst  # push: an SSHTransport, its ``run`` and ``TAR``
        tar = shlex.quote(remote.TAR)
        data, built, tails = await asyncio.to_thread(_archive, self.src.root, group)
        if not built:
            return [], {}
        tops = " ".join(shlex.quote(t) for t in built)
        done = await remote.run(f"mkdir -p {STAGE} && cd {STAGE} && rm -rf -- {tops} && {tar} -xf - --no-same-owner",
                                data)
        if done is None or done[0] in _NO_TAR:
            self._no_tar(self.dst, done)
            return [], {}
        return (built, tails) if done[0] == 0 else ([], {})

    def copy(self, runs: list[WholeRun]) -> Awaitable[set[str]]:
        """Copy ``runs`` (``on_file`` for each file copied); the runs now in place on the destination. Pull: they
        join the pass's one stream in the order given, and resolve once :meth:`no_more` lets it end."""
        return self._pull(runs) if self.mode == "pull" else self._copy_groups(runs)

    async def _copy_groups(self, runs: list[WholeRun]) -> set[str]:
        placed: set[str] = set()
        files = {run.top: run.files for run in runs}

        async def one(group: list[WholeRun]) -> None:
            async with self._gate:
                if not self.usable():
                    return
                self.staged = True
                built, tails = await self.group(group)
                self.failed.extend(run.top for run in group if run.top not in built)
                moved = await asyncio.gather(*(self.dst.rename(f"{STAGE}/{top}", top) for top in built),
                                             return_exceptions=True)
                for top, outcome in zip(built, moved, strict=True):
                    if isinstance(outcome, BaseException):
                        if not isinstance(outcome, OSError):
                            raise outcome
                        self.failed.append(top)  # the destination made the run meanwhile: file by file
                        continue
                    placed.add(top)
                    self._placed(files[top], tails)

        if runs and self.usable():
            await asyncio.gather(*(one(group) for group in _groups(runs)))
        return placed

    def _placed(self, files: list[Entry], tails: Tails) -> None:
        """A run now in place: its files journaled, counted and reported."""
        self.state.done_many((e.rel, *tails[e.rel]) for e in files)
        for entry in files:
            self.src.bytes_read += entry.size
            self.dst.bytes_written += entry.size
            self.on_file(entry)

    def _pull(self, runs: list[WholeRun]) -> asyncio.Future[set[str]]:
        done: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        if not runs:
            done.set_result(set())
            return done
        waiter = ({run.top for run in runs}, set[str](), done)
        for run in runs:
            self._fed[run.top] = (run.files, waiter)
        self._queue.append(runs)
        self._wake.set()
        if self._feeder is None:
            self._feeder = asyncio.ensure_future(self._feed())
        return done

    async def _feed(self) -> None:
        """Start the stream, send it each list of runs as it comes, end it after :meth:`no_more`."""
        try:
            stream = PullStream(self.src, self.dst.root, os.path.join(self.dst.root, STAGE), self._pulled)
            if not self.usable():
                return
            if not await stream.start():
                self._no_tar(self.src, None)
                return
            self._stream, self.staged = stream, True
            while self._queue or not self._no_more:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await stream.feed(self._queue.pop(0))
            stream.close_input()
            await self._end_stream(abort=False)
        except Exception:  # a lost connection: the runs go file by file, where it is reported
            if self._stream is not None:
                await self._end_stream(abort=True)
        finally:
            self._pulled([(top, None) for top in self._fed])

    def expect(self) -> None:
        """Pull, where the pass's look found the mirror lacking one of its runs: start the stream now, so that the
        remote tar's start (the account's shell: ~0.25 s) overlaps with the listing instead of following it."""
        if self.mode == "pull" and self._feeder is None and self.usable():
            self._feeder = asyncio.ensure_future(self._feed())

    async def ended(self) -> None:
        """Pull, after :meth:`no_more`: the stream over (also one started by :meth:`expect` that got no run)."""
        if self._feeder is not None:
            await asyncio.shield(self._feeder)

    def _pulled(self, verdicts: list[tuple[str, Tails | None]]) -> None:
        """Runs of the stream placed (``tails``: their files' records) or given up; journaled in one write."""
        files: list[Entry] = []
        records: Tails = {}
        waiters = []
        for top, tails in verdicts:
            fed = self._fed.pop(top, None)
            if fed is None:
                continue
            run_files, (pending, placed, done) = fed
            if tails is not None:
                placed.add(top)
                files += run_files
                records.update(tails)
            pending.discard(top)
            waiters.append((pending, placed, done))
        if files:
            self._placed(files, records)
        for pending, placed, done in waiters:
            if not pending and not done.done():
                done.set_result(placed)

    def no_more(self) -> None:
        """The pass has listed everything: the pull stream may end (its last runs resolve then)."""
        self._no_more = True
        self._wake.set()

    async def _end_stream(self, abort: bool) -> None:
        assert self._stream is not None
        status, err, changed = await self._stream.end(abort)
        if status in _NO_TAR and not self._stream.read_any:
            self._no_tar(self.src, (status, b"", err))
        for rel in changed:  # placed as read: the next pass compares them with the source again
            self.state.forget(rel)
        if changed:
            self.notes.append(f"{self.src.describe()}: {len(changed)} files changed while tar read them; "
                              "checked again next pass")

    async def finish(self) -> None:
        """Drop what failed from STAGE, and STAGE itself when empty (best effort: the next pass clears it)."""
        failed = self.failed
        if not self.staged:
            return
        if self._feeder is not None and not self._feeder.done():  # the pass failed: the stream is cut
            self._feeder.cancel()
            if self._stream is not None:
                await self._end_stream(abort=True)
        if self.mode == "push":
            gone = " ".join(shlex.quote(f"{STAGE}/{t}") for t in failed)
            remote: Any = self.dst
            try:
                await remote.run(f"{'rm -rf -- ' + gone + '; ' if gone else ''}rmdir {STAGE} 2>/dev/null; true")
            except OSError:  # a lost connection: the pass's own error says so
                pass
            return
        stage = os.path.join(self.dst.root, STAGE)
        for top in failed:
            _clear(os.path.join(stage, top))
        try:
            os.rmdir(stage)
        except OSError:
            pass
