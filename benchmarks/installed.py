"""The environment of a benchmark's fresh processes: lightning_track with its bytecode, as an installed copy has it.

Why: this machine sets ``PYTHONDONTWRITEBYTECODE=1`` and a checkout may lack an up-to-date ``__pycache__``, so a
fresh process would compile the package's modules from source each time it starts (~0.05-0.08 s of CPU for a
RunLogger's or an ``lt ls``'s imports), which ``pip install`` (it compiles on install) never pays. Site-packages
keep their own bytecode either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_compiled: set[Path] = set()


def installed_env(base: Mapping[str, str] | None = None, tree: Path = ROOT, *also: Path) -> dict[str, str]:
    """``base`` (the current environment) without ``PYTHONDONTWRITEBYTECODE``, ``tree``'s package compiled once
    (and the files ``also`` names); a ``tree`` other than this checkout goes first on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    tree = tree.resolve()
    if tree != ROOT:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH", "")) if p)
    if tree not in _compiled:  # once per tree and benchmark, before any timing
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "lightning_track"), *map(str, also)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        _compiled.add(tree)
    return env
