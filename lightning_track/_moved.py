"""Old import paths of modules that moved into the layer packages, kept working for one release.

Why an import hook instead of a stub file per old name: ``import lightning_track.folder.layout`` must give the
*same* module object as ``lightning_track.folder.layout`` (so ``isinstance`` checks, module globals and
test monkeypatches agree), and the top level of the package should show the layers, not a screen of
stubs. Importing an old path warns once with a ``DeprecationWarning`` naming the new one.

``python -m lightning_track.run.sinkhost`` is a documented command, so ``lightning_track/sinkhost.py``
stays a real file (``-m`` needs one); it only calls the moved module's ``main``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["MOVED", "install"]

# old dotted name under lightning_track -> where the module lives now
MOVED: dict[str, str] = {
    "layout": "folder.layout",
    "fileio": "folder.fileio",
    "tracking": "folder.tracking",
    "signals": "folder.signals",
    "metrics": "derived.digest",
    "summary": "derived.summary",
    "logger": "run.logger",
    "writer": "run.writer",
    "distributed": "run.distributed",
    "config": "run.config",
    "meta": "run.meta",
    "configure": "training.configure",
    "lightning_cli": "training.lightning_cli",
    "hardware": "run.hardware",
    "training.hardware": "run.hardware",
    "demo": "training.demo",
    "runner": "launch.runner",
}

_PACKAGE = __name__.rpartition(".")[0]


class _AliasLoader:  # the Loader protocol; importlib.abc itself costs every CLI ~10 ms to import
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__  # the import system writes the alias spec over it; put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # already executed under its new name


class _MovedFinder:  # the MetaPathFinder protocol
    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        old = fullname[len(_PACKAGE) + 1:] if fullname.startswith(_PACKAGE + ".") else ""
        if old not in MOVED:
            return None
        new = f"{_PACKAGE}.{MOVED[old]}"
        warnings.warn(f"{fullname} moved to {new}; the old name works until the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
