"""``lt-sync SRC MIRROR --export URI``: the runs a pass mirrored, exported from the mirror.

Why from the mirror: training servers often have no route to the team's tracker, the viewer's machine
does. Where the record lives: a mirror is a copy of the source, and the next pass would overwrite (or,
with ``--delete``, remove) a mirror's ``export.json`` with the source's. So the exports made from a mirror
are recorded in the mirror's own ``export.mirror.json`` (:attr:`RunLayout.MIRROR_EXPORT`), a file lt-sync
never copies or deletes on either side; the source, as always, is not touched, and its own
``export.json`` (when it exported too) still arrives in the mirror for ``lt show`` to name.

After each pass only the runs it changed are exported (the first pass: every mirrored run), plus those
an earlier pass could not export. A tracker that is down costs one line per pass; the mirror goes on.
"""

from __future__ import annotations

import fnmatch
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import ExportError, RunFolderError, one_line
from ..folder.layout import RunLayout
from ..query.discover import find_run_dirs
from . import export_run, open_exporter
from .target import Target, parse_target

__all__ = ["MirrorExport", "runs_touched"]


def runs_touched(runs: Iterable[str], changed: Iterable[str]) -> set[str]:
    """The runs (paths relative to the mirror, ``gpu1/<run>``) holding one of the ``changed`` paths. Pure."""
    wanted = set(runs)
    touched = set()
    for rel in changed:
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            head = "/".join(parts[:depth])
            if head in wanted:
                touched.add(head)
                break
    return touched


class MirrorExport:
    """Exports a local mirror's runs to one tracker after each pass; remembers what is still owed."""

    def __init__(self, root: str | Path, to: str | Target, *, experiment: str | None = None,
                 runs_glob: str | None = None, say: Callable[[str], None] = print) -> None:
        self.root = Path(root)
        self.target = to if isinstance(to, Target) else parse_target(to)
        self.experiment, self.runs_glob, self.say = experiment, runs_glob, say
        self.pending: set[str] = set()  # runs a pass could not export: tried again next pass
        self.first = True
        self.failed = 0  # runs not exported in the last pass
        self._todo: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def behind(self, changed: Iterable[str]) -> None:
        """:meth:`after_pass` on a thread of its own, so that a slow or down tracker never holds up the
        mirror; :meth:`finish` waits for it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="lt-sync-export", daemon=True)
            self._thread.start()
        self._todo.put(list(changed))

    def finish(self) -> bool:
        """Wait for the exports :meth:`behind` queued; True when every run went."""
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        return not self.failed

    def _work(self) -> None:
        while (changed := self._todo.get()) is not None:
            last = False
            while not last:  # passes that ended meanwhile (several sources) go as one: one line when down
                try:
                    more = self._todo.get_nowait()
                except queue.Empty:
                    break
                last = more is None
                changed += more or []
            try:
                self.after_pass(changed)
            except Exception as exc:  # noqa: BLE001 - the export must never stop the mirror
                self.failed += 1
                self.say(f"export: skipped this pass: {one_line(exc)}")
            if last:
                return

    def _runs(self) -> dict[str, Path]:
        problems: list[str] = []
        found = {path.relative_to(self.root).as_posix(): path for path, _, _ in find_run_dirs(self.root, problems)}
        if self.runs_glob is not None:
            found = {rel: path for rel, path in found.items()
                     if fnmatch.fnmatchcase(rel.split("/", 1)[0], self.runs_glob)}
        return found

    def after_pass(self, changed: Iterable[str]) -> int:
        """Export the runs holding a ``changed`` path (every run after the first pass) and those still
        owed; returns how many runs were exported. Never raises for the tracker or a run: one line each."""
        runs = self._runs() if self.root.is_dir() else {}
        todo = set(runs) if self.first else runs_touched(runs, changed) | (self.pending & set(runs))
        self.first = False
        self.failed = 0
        if not todo:
            return 0
        order = sorted(todo)
        try:
            with open_exporter(self.target) as exporter:
                for i, rel in enumerate(order):
                    try:
                        result = export_run(runs[rel], experiment=self.experiment, exporter=exporter,
                                            record_name=RunLayout.MIRROR_EXPORT)
                    except (ExportError, RunFolderError, OSError) as exc:
                        if isinstance(exc, ExportError) and not self._reachable():
                            raise
                        self.say(f"export: {rel}: {one_line(exc)}")
                        self.pending.add(rel)
                        self.failed += 1
                        continue
                    self.pending.discard(rel)
                    for note in result.notes:
                        self.say(f"export: {rel}: {note}")
                    if not result.nothing_new:
                        self.say(f"export: {result.line()}")
                    order[i] = ""
        except ExportError as exc:  # the tracker is down (or went down during the pass)
            left = [rel for rel in order if rel]
            self.pending |= set(left)
            self.failed = len(left)
            self.say(f"export: {one_line(exc)}; {len(left)} run{'s' if len(left) != 1 else ''} left for the "
                     "next pass")
        return len(order) - self.failed

    def _reachable(self) -> bool:
        try:
            with open_exporter(self.target):
                return True
        except ExportError:
            return False
