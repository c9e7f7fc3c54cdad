"""Many sources into one mirror: ``lt sync SRC... MIRROR`` (or ``--from FILE``) in one process.

Why one process and not one ``lt sync`` per server: one event loop holds one connection per source
(kept open across ``--every`` passes), mirrors ``jobs`` sources at once, and keeps one catalog of the
mirror warm. Each source's runs go to their own folder under the mirror (:func:`source_folder`), each
source is its own ``SyncSession`` (its own journal, ``--delete`` only ever inside its folder), and a
source that fails is one line and is tried again on its next pass: it never delays or stops the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, one_line
from .endpoints import Endpoint, check_apart, parse_endpoint
from .engine import FATAL_ERRORS, RETRYABLE_ERRORS, CycleResult, SyncOptions, SyncSession, run_loop
from .plan import Plan
from .warm import CatalogWarmer, KnownRuns

__all__ = ["Source", "SourcePass", "ManySync", "source_folder", "read_sources_file", "plan_sources", "JOBS",
           "REMOTE_JOBS"]

JOBS = 8  # local sources mirrored at once: a slow or unreachable server holds one slot, never the others
# sources over SSH mirrored at once, in slots of their own: their passes mostly wait on the network (and on
# the server's shell start-up for each remote command), so holding the local sources' slots meanwhile
# would leave this process idle
REMOTE_JOBS = 32
_COMMENT = re.compile(r"(^|\s)#.*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _part(text: str, fallback: str) -> str:
    return _UNSAFE.sub("-", text).strip("-.")[:40] or fallback


def source_folder(endpoint: Endpoint) -> str:
    """The folder of a source's runs under the mirror: ``<host>[-<port>]_<last two path parts>-<hash>``.

    ``local`` stands for the host of a local source. The hash is the first 8 hex digits of SHA-1 over the
    source as parsed (user, host, port, path), so the name depends on that source alone (adding a server
    to the list renames no folder) and two different sources never share a folder, whatever their
    readable parts. ``gpu1:runs`` -> ``gpu1_runs-<hash>``; ``/mnt/gpu2/runs`` -> ``local_gpu2-runs-<hash>``.
    """
    host = endpoint.host if endpoint.is_remote else "local"
    if endpoint.port:
        host = f"{host}-{endpoint.port}"
    parts = [p for p in endpoint.path.split("/") if p not in ("", ".", "~")][-2:]
    readable = f"{_part(host, 'host')}_{_part('-'.join(parts) or 'home', 'root')}"
    return f"{readable}-{hashlib.sha1(str(endpoint).encode()).hexdigest()[:8]}"


def read_sources_file(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(source, "FILE:LINE")`` for each source in ``path``: one a line, blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--from {path}: cannot read it ({exc.strerror or one_line(exc)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--from {path}: not UTF-8 text; give one source a line") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        spec = _COMMENT.sub("", line).strip()
        if spec:
            found.append((spec, f"{path}:{number}"))
    if not found:
        raise ConfigError(f"--from {path}: no sources in it (one SRC a line; '#' starts a comment)")
    return found


@dataclass(frozen=True)
class Source:
    """One source of a mirror: where its runs come from and the folder under the mirror they go to."""

    spec: str
    endpoint: Endpoint
    folder: str  # "" for a single source: its runs directly in the mirror (the layout of `lt sync SRC DEST`)

    @property
    def name(self) -> str:
        return self.folder or str(self.endpoint)


def plan_sources(specs: Sequence[tuple[str, str]], mirror: Endpoint, *, own_folders: bool = True) -> list[Source]:
    """Parse ``(source, where it was given)`` pairs; one-line :class:`ConfigError` naming the place of a bad,
    repeated or overlapping source. ``own_folders=False`` (one source only) keeps its runs in the mirror itself."""
    if not own_folders and len(specs) != 1:
        raise ConfigError(f"{len(specs)} sources need their own folders in the mirror")
    sources: list[Source] = []
    seen: dict[str, str] = {}
    for spec, where in specs:
        try:
            endpoint = parse_endpoint(spec)
            check_apart(endpoint, mirror)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        folder = source_folder(endpoint) if own_folders else ""
        key = str(endpoint)
        if key in seen:
            raise ConfigError(f"{where}: {spec} is given twice (also at {seen[key]}); give each source once")
        if folder and folder in seen:
            raise ConfigError(f"{where}: {spec} and the source at {seen[folder]} would share the folder {folder}")
        seen[key] = seen[folder] = where
        sources.append(Source(spec, endpoint, folder))
    return sources


def _under(mirror: Endpoint, folder: str) -> Endpoint:
    if not folder:
        return mirror
    join = posixpath.join if mirror.is_remote else os.path.join
    return dataclasses.replace(mirror, path=join(mirror.path, folder))


@dataclass
class SourcePass:
    """One source's pass: its result, or the error that stopped it (one line, tried again next pass)."""

    source: Source
    result: CycleResult | None = None
    error: BaseException | None = None
    catalog_problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None or bool(self.result and self.result.errors)

    @property
    def fatal(self) -> bool:
        """Retrying cannot fix it (host key, authentication, a missing source folder)."""
        return isinstance(self.error, FATAL_ERRORS)

    @property
    def busy(self) -> bool:
        """Something to say: files moved, refused or failed."""
        r = self.result
        return self.error is not None or r is None or bool(r.files or r.refused or r.errors or r.skipped)

    def line(self) -> str:
        where = f"{self.source.name} ({self.source.spec})" if self.source.folder else self.source.spec
        if self.error is not None:
            then = "not retried (fix it and start again)" if self.fatal else "retried next pass"
            return f"{where}: {type(self.error).__name__}: {one_line(self.error)}; {then}"
        assert self.result is not None
        return f"{self.source.name}: {self.result.status_line()}"


class _Gated:
    """A session whose passes wait for a free slot, and whose mirror's catalog is kept warm after each."""

    def __init__(self, session: SyncSession, gate: asyncio.Semaphore, warmer: CatalogWarmer | None) -> None:
        self.session, self.gate, self.warmer = session, gate, warmer
        self.catalog_problems: list[str] = []

    async def cycle(self, progress: Callable[[str, int], None] | None = None,
                    on_plan: Callable[[Plan], None] | None = None) -> CycleResult:
        async with self.gate:
            result = await self.session.cycle(progress, on_plan)
        if self.warmer is not None:
            self.catalog_problems = self.warmer.after(result)
        return result

    async def close(self) -> None:
        await self.session.close()


class ManySync:
    """Every source's session into one mirror; :meth:`once` is one pass over all, :meth:`run` the ``--every`` loop."""

    def __init__(self, sources: Sequence[Source], mirror: Endpoint, options: SyncOptions | None = None, *,
                 jobs: int = JOBS, remote_jobs: int = REMOTE_JOBS, warm: bool = True) -> None:
        self.sources, self.mirror = list(sources), mirror
        self.options = options or SyncOptions()
        self.jobs, self.remote_jobs = max(1, jobs), max(1, remote_jobs)
        keep_warm = warm and not mirror.is_remote and not self.options.dry_run
        self._gates: dict[bool, asyncio.Semaphore] = {}  # made in the running loop: remote or not -> slots
        self._sessions = {s: SyncSession(s.endpoint, _under(mirror, s.folder), self.options) for s in self.sources}
        known = KnownRuns(mirror.path)  # asked once, on the first pass that ends
        self._warmers = {s: CatalogWarmer(_under(mirror, s.folder).path, known) if keep_warm else None
                         for s in self.sources}
        self._gated: dict[Source, _Gated] = {}

    def session(self, source: Source) -> SyncSession:
        return self._sessions[source]

    def _of(self, source: Source) -> _Gated:
        remote = source.endpoint.is_remote
        if remote not in self._gates:
            self._gates[remote] = asyncio.Semaphore(self.remote_jobs if remote else self.jobs)
        if source not in self._gated:
            self._gated[source] = _Gated(self._sessions[source], self._gates[remote], self._warmers[source])
        return self._gated[source]

    async def pass_one(self, source: Source, progress: Callable[[str, int], None] | None = None,
                       on_plan: Callable[[Plan], None] | None = None) -> SourcePass:
        """One pass of one source; its failure is its outcome, never an exception."""
        gated = self._of(source)
        try:
            result = await gated.cycle(progress, on_plan)
        except (*FATAL_ERRORS, *RETRYABLE_ERRORS) as exc:
            await gated.close()  # a fresh connection next pass
            return SourcePass(source, error=exc)
        return SourcePass(source, result, catalog_problems=gated.catalog_problems)

    async def once(self, progress: Callable[[Source, str, int], None] | None = None,
                   on_plan: Callable[[Source, Plan], None] | None = None,
                   on_pass: Callable[[SourcePass], None] | None = None) -> list[SourcePass]:
        """One pass over every source, ``jobs`` at once; outcomes in the sources' order."""

        async def one(source: Source) -> SourcePass:
            done = await self.pass_one(
                source,
                (lambda rel, n: progress(source, rel, n)) if progress else None,
                (lambda plan: on_plan(source, plan)) if on_plan else None,
            )
            if on_pass is not None:
                on_pass(done)
            return done

        return list(await asyncio.gather(*(one(s) for s in self.sources)))

    async def run(self, every: float, on_pass: Callable[[SourcePass], None], *,
                  stop: asyncio.Event | None = None, max_cycles: int | None = None) -> list[SourcePass]:
        """Mirror each source every ``every`` seconds, each on its own schedule, until ``stop``; a failed
        pass is tried again at the latest ``every`` seconds later. Returns the passes of the sources given
        up on (retrying cannot fix them); ends early only when every source was given up on."""
        stop = stop or asyncio.Event()
        given_up: list[SourcePass] = []

        async def loop(source: Source) -> None:
            gated = self._of(source)

            def on_cycle(result: CycleResult) -> None:
                on_pass(SourcePass(source, result, catalog_problems=gated.catalog_problems))

            def on_retry(exc: BaseException, delay: float) -> None:
                on_pass(SourcePass(source, error=exc))

            try:
                await run_loop(gated, every, on_cycle, on_retry, stop=stop, max_cycles=max_cycles,  # type: ignore[arg-type]
                               max_backoff=every)
            except FATAL_ERRORS as exc:
                await gated.close()
                done = SourcePass(source, error=exc)
                given_up.append(done)
                on_pass(done)

        await asyncio.gather(*(loop(s) for s in self.sources))
        return given_up

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
