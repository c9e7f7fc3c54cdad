"""The loop state of a converted checkpoint, from Lightning's own checkpoint migration.

A Lightning checkpoint resumes at the right ``global_step`` only with its ``loops`` (progress
tracking). Lightning builds them from ``global_step`` and ``epoch`` when it migrates a checkpoint
older than 1.6, so a converted checkpoint is declared that old and run through
``migrate_checkpoint`` -- nothing is written by hand.

Why a template, cached on disk: importing Lightning costs ~5 s of CPU (torchmetrics,
torch._dynamo, ...), as much as converting a whole run. The migration is a plain function of step
and epoch, so it is learned once per Lightning version from two probe checkpoints (which fields
carry the step and the epoch), checked against a third, and kept in the user's cache folder
(``$LIGHTNING_TRACK_CACHE_DIR`` or the older ``$LT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lightning_track``,
else ``~/.cache/lightning_track``).
Later migrations never import Lightning. The first one learns it in a child process started
before the workers (:func:`start_learning`), which holds a lock on the cache entry while it works;
a worker that needs the template waits for that lock (the child ending, however it ends, releases
it) and falls back to calling Lightning itself if no template came of it.

The package also bundles the entries of the Lightning versions it is tested with
(``resources/loop_state-lightning-<version>-v1.json``, written by ``python -m
lightning_track.migrate.loopstate <that path>``; ``tests/migrate/test_loopstate.py`` checks the
installed version's entry against Lightning), so with those versions even the first migration on
a machine learns nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from ..vocabulary import cache_root

__all__ = ["PRE_LOOPS_VERSION", "loop_state", "learn_template", "fill_template", "migrate_with_lightning",
           "template_path", "bundled_path", "start_learning", "LearningProcess"]

# Lightning's migration builds the progress-tracking loop state from global_step and epoch for
# checkpoints older than 1.6; declaring ours that old makes it do exactly that, then stamps the
# running Lightning version on the result.
PRE_LOOPS_VERSION = "1.5.0"
TEMPLATE_FORMAT = 1  # bump when the template's meaning changes: old cache entries are then ignored
WAIT_S = 300.0  # the longest a worker waits for the learning child before calling Lightning itself
_STEP, _EPOCH = "\x00lt-migrate:step", "\x00lt-migrate:epoch"  # no value Lightning writes looks like these
_PROBE_WEIGHTS = {"model.probe": 0}  # a migration that touched the state dict would fail the check
_loaded: dict[str, dict[str, Any] | None] = {}  # template path -> template (None: use Lightning)


def _skeleton(step: int, epoch: int) -> dict[str, Any]:
    return {"state_dict": dict(_PROBE_WEIGHTS), "global_step": step, "epoch": epoch,
            "pytorch-lightning_version": PRE_LOOPS_VERSION}


def migrate_with_lightning(step: int, epoch: int) -> dict[str, Any]:
    """Lightning's migration of a pre-1.6 checkpoint at ``step``/``epoch``, without a state dict."""
    from lightning.pytorch.utilities.migration import migrate_checkpoint

    checkpoint, _ = migrate_checkpoint(_skeleton(step, epoch))
    if checkpoint.pop("state_dict", None) != _PROBE_WEIGHTS:
        raise RuntimeError("Lightning's checkpoint migration changed the state dict")
    return checkpoint


def _generalize(a: Any, b: Any, probes: tuple[tuple[int, int], tuple[int, int]]) -> Any:
    """One template from two migrations; raises ValueError where they differ other than by step/epoch."""
    if type(a) is not type(b):
        raise ValueError("different types")
    if isinstance(a, dict):
        if list(a) != list(b):
            raise ValueError("different keys")
        return {key: _generalize(a[key], b[key], probes) for key in a}
    if isinstance(a, list):
        if len(a) != len(b):
            raise ValueError("different lengths")
        return [_generalize(x, y, probes) for x, y in zip(a, b, strict=True)]
    if a == b and type(a) in (int, float, str, bool, type(None)):
        return a
    if type(a) is int and (a, b) == (probes[0][0], probes[1][0]):
        return _STEP
    if type(a) is int and (a, b) == (probes[0][1], probes[1][1]):
        return _EPOCH
    raise ValueError(f"{a!r} vs {b!r}")


def fill_template(template: dict[str, Any], step: int, epoch: int) -> dict[str, Any]:
    """The template with the step and epoch in their places (a new dict each call)."""

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        return step if node == _STEP else epoch if node == _EPOCH else node

    return fill(template)


def learn_template(
    migrate: Callable[[int, int], dict[str, Any]] = migrate_with_lightning,
) -> dict[str, Any] | None:
    """The template of ``migrate`` (Lightning's), or None when it is not a plain function of step and epoch."""
    probes = ((1_000_003, 17), (2_000_029, 31))
    try:
        template = _generalize(*(migrate(s, e) for s, e in probes), probes)
        if json.loads(json.dumps(template)) != template:  # plain JSON data only: it is kept in a file
            return None
    except (ValueError, TypeError):
        return None
    check = (7, 2)
    if fill_template(template, *check) != migrate(*check):
        return None
    return template


# -- the cache ---------------------------------------------------------------------------------------------
def _lightning_version() -> str | None:
    try:
        return metadata.version("lightning")
    except metadata.PackageNotFoundError:
        return None


def template_path() -> Path | None:
    """Where the template for the installed Lightning is kept (None: Lightning is not installed)."""
    version = _lightning_version()
    if version is None:
        return None
    root = cache_root()
    safe = "".join(c if c.isalnum() or c in ".-_+" else "_" for c in version)
    return Path(root) / f"loop_state-lightning-{safe}-v{TEMPLATE_FORMAT}.json"


def bundled_path() -> Path | None:
    """The template entry shipped with the package for the installed Lightning (it may not exist)."""
    path = template_path()
    return Path(__file__).resolve().parent.parent / "resources" / path.name if path is not None else None


def _known_template() -> tuple[bool, dict[str, Any] | None]:
    """(found, template) from the user's cache, else from the package's bundled entries."""
    path, bundled = template_path(), bundled_path()
    if path is None or bundled is None:
        return False, None
    found = _read_template(path)
    return found if found[0] else _read_template(bundled)


def _read_template(path: Path) -> tuple[bool, dict[str, Any] | None]:
    """(found, template): a cache entry holds a template or null (Lightning's migration is not a template)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, None
    if not isinstance(data, dict) or data.get("format") != TEMPLATE_FORMAT:
        return False, None
    template = data.get("template")
    return True, template if isinstance(template, dict) else None


def _write_template(path: Path, template: dict[str, Any] | None) -> None:
    from ..folder.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"format": TEMPLATE_FORMAT, "lightning": _lightning_version(),
                                        "template": template}, indent=1) + "\n")


def _wait_for_learner(path: Path, wait_s: float) -> None:
    """Block while a learning child holds the lock of ``path`` (returns at once when none does)."""
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.05)
    finally:
        os.close(fd)


def _template(wait_s: float) -> dict[str, Any] | None:
    path = template_path()
    if path is None:
        return None
    key = str(path)
    if key not in _loaded:
        found, template = _known_template()
        if not found:
            _wait_for_learner(path, wait_s)
            found, template = _read_template(path)
        if not found:  # nobody learned it (no child, or it failed): learn it here, once
            template = learn_template()
            try:
                _write_template(path, template)
            except OSError:
                pass  # a read-only cache: this process keeps it in memory
        _loaded[key] = template
    return _loaded[key]


def loop_state(step: int, epoch: int, *, wait_s: float = WAIT_S) -> dict[str, Any]:
    """What Lightning's migration gives a pre-1.6 checkpoint at ``step``/``epoch`` (no state dict)."""
    template = _template(wait_s)
    if template is not None:
        return fill_template(template, step, epoch)
    return migrate_with_lightning(step, epoch)


# -- learning in a child process ---------------------------------------------------------------------------
class LearningProcess:
    """The child learning the template; :meth:`stop` ends it (its lock goes with it)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_learning() -> LearningProcess | None:
    """Start learning the template in a child process unless it is cached; the child holds the cache
    entry's lock from before this returns, so a worker started afterwards waits for its result."""
    path = template_path()
    if path is None or _known_template()[0]:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None  # no cache folder: each worker learns it itself
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # shared with the child through the inherited fd
    except BlockingIOError:
        os.close(fd)
        return None  # another migration is learning it: the workers wait for that one
    try:
        process = subprocess.Popen([sys.executable, "-m", "lightning_track.migrate.loopstate", str(path)],
                                   pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    except OSError:
        return None
    finally:
        os.close(fd)  # the lock now lives as long as the child
    return LearningProcess(process)


def main() -> None:
    path = Path(sys.argv[1])
    try:
        template = learn_template()
    except Exception:  # noqa: BLE001 - Lightning missing or broken: the workers call it and report
        return
    _write_template(path, template)


if __name__ == "__main__":
    main()
