"""The system parts the tests start for real (sshd, Slurm, Chromium, rsync), read from the one list
``scripts/system-packages.txt`` that ``scripts/setup.sh`` installs. A test that needs a missing part is
skipped with a reason naming it and its install command (``needs <part>: ...``), which the session's
last lines count per part; under CI (``CI=true``) it fails instead, since CI installs every part."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import REPO

LIST = REPO / "scripts" / "system-packages.txt"
SBIN = "/usr/sbin:/sbin"  # daemons live there, off a normal user's PATH
SKIP_PREFIX = "needs "


@dataclass(frozen=True)
class Part:
    name: str
    commands: tuple[str, ...]  # each needed; "a|b": either
    packages: tuple[str, ...]


def parts(path: Path = LIST) -> dict[str, Part]:
    found: dict[str, Part] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, commands, *packages = line.split()
            found[name] = Part(name, tuple(commands.split(",")), tuple(packages))
    return found


def which(command: str) -> str | None:
    """The first of ``a|b`` found on PATH or in sbin."""
    search = os.environ.get("PATH", "") + os.pathsep + SBIN
    return next((hit for alt in command.split("|") if (hit := shutil.which(alt, path=search))), None)


def missing(name: str) -> str | None:
    """Why ``name`` cannot be used here (the reason a test is skipped with), or None."""
    part = parts()[name]
    absent = [c for c in part.commands if which(c) is None]
    if not absent:
        return None
    return (f"{SKIP_PREFIX}{name} ({', '.join(absent)} not found): sudo apt-get install {' '.join(part.packages)}"
            " (or bash scripts/setup.sh)")


def require(name: str) -> None:
    """Skip the calling test (or fixture) when ``name`` is missing; fail under CI."""
    why = missing(name)
    if why is not None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)


def skipped_part(reason: str) -> str | None:
    """The part a skip reason names (``Skipped: needs sshd (...)`` -> ``sshd``), or None."""
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(SKIP_PREFIX):
        return None
    name = reason[len(SKIP_PREFIX):].split(" ", 1)[0]
    return name if name in parts() else None
