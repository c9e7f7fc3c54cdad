"""How a run folder is named: ``<dataset>_<method>_<YYYYmmdd_HHMMSS>[-N]``, its parts made safe.

Why apart from :mod:`.layout` (where each file of a run lives): naming is a rule on user input (a
dataset or method name that must survive paths, shells and viewers) and on folder names read back;
:mod:`.layout` re-exports these names, where callers import them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from ..errors import ConfigError
from ..vocabulary import RUN_NAME_TIME_FORMAT

__all__ = ["MAX_NAME_PART", "RunName", "sanitize_name", "parse_run_name"]

MAX_NAME_PART = 80

# Characters that break paths, shells or viewers: a folder name pasted into a double-quoted or
# ``sh -c '...'`` command line expands nothing. Unicode letters and digits stay readable.
_UNSAFE = re.compile(r"[\\/:*?\"<>|\s\x00-\x1f\x7f$()`';&!\[\]{}~#]+")
_RUN_NAME = re.compile(r"^(?P<prefix>.+)_(?P<stamp>\d{8}_\d{6})(?:-(?P<n>\d+))?$")


def sanitize_name(value: str, *, what: str = "name") -> str:
    """Turn a dataset or method name into a safe folder-name part.

    Slashes, whitespace, control and shell-hostile characters become ``-``; unicode letters stay.
    Raises :class:`ConfigError` (a ``ValueError``) naming the value when nothing usable is left.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    text = unicodedata.normalize("NFC", value)
    text = _UNSAFE.sub("-", text)
    text = re.sub(r"-{2,}", "-", text).strip("-.")
    if not text:
        raise ConfigError(f"{what} {value!r} is empty or has no usable characters for a folder name")
    return text[:MAX_NAME_PART]


@dataclass(frozen=True)
class RunName:
    """The parts of a run folder name ``<dataset>_<method>_<YYYYmmdd_HHMMSS>[-N]``."""

    prefix: str  # "<dataset>_<method>" (sanitised); ambiguous to split when names hold "_"
    timestamp: str
    counter: int = 1

    @property
    def started(self) -> datetime:
        return datetime.strptime(self.timestamp, RUN_NAME_TIME_FORMAT)


def parse_run_name(name: str) -> RunName | None:
    """Parse a run folder name, or return None when it does not follow the contract."""
    match = _RUN_NAME.match(name)
    if not match:
        return None
    try:
        datetime.strptime(match["stamp"], RUN_NAME_TIME_FORMAT)
    except ValueError:
        return None
    return RunName(match["prefix"], match["stamp"], int(match["n"] or 1))
