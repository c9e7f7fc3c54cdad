"""``logs.txt``: a run's console output as the terminal finally showed it, one timed line at a time.

Format: every line is ``<time> <text>``: the time the line was printed (:func:`~lightning_track.vocabulary.iso_time`,
the one timestamp format of a run's files), one space, the text. A prefix rather than a sidecar index:
each line stays self-contained, so ``tail -f``, ``grep``, ``lt-sync``'s append-only mirror and the
Runicorn log tab need nothing else, and a SIGKILL cannot leave two files that disagree. A reader
aligns a line with ``metrics.jsonl`` by its time (:func:`read_console_log`).

The text is cleaned for a file, not for a terminal:

* ANSI escape sequences (colours, cursor moves) and other control characters are removed.
* Carriage-return updates (progress bars) are collapsed: a line rewritten in place is written once with
  its last state, plus at most one intermediate state a second while it keeps changing, so a bar
  updated a thousand times a second for an hour adds about 3,600 lines, not millions.
* A line the output ended in the middle of (the process was killed while printing, or its last print had
  no newline) ends with :data:`CUT_MARK`, so it is never taken for a whole line.

Standard library only, with :mod:`.appender` for whole-line appends (the console relay starts with ``python -S``).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

from ..vocabulary import iso_time, parse_iso_time
from .appender import JsonlAppender

__all__ = ["CUT_MARK", "LineCleaner", "ConsoleLog", "read_console_log", "render_line"]

CUT_MARK = " [no newline: the output ended here]"
MAX_LINE = 1 << 16  # characters kept of a line that never ends (binary junk, a runaway print)

# A complete escape sequence: CSI (colours, cursor moves), OSC (titles, links; BEL or ST ends it),
# DCS/SOS/PM/APC strings, and the two-character ones (ESC 7, ESC M, ...).
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[ -/]*[0-~])")
# The start of a sequence the chunk boundary cut off: kept for the next chunk.
_PARTIAL_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # all but \t \n \r (ESC included: a stray one)


def render_line(line: str) -> str:
    """What a terminal shows for ``line`` after its carriage returns: each part overwrites the start of
    the one before (``"50%\\r100%"`` shows ``100%``; ``"abc\\r\\n"`` shows ``abc``)."""
    if "\r" not in line:
        return line
    shown = ""
    for part in line.split("\r"):
        shown = part + shown[len(part):]
    return shown.rstrip()


class LineCleaner:
    """Turns one stream's raw bytes into finished lines for the file (see the module doc).

    ``feed`` returns the lines a chunk finished; ``finish`` the line the stream ended in (cut).
    One cleaner per stream: stdout and stderr on different pipes each keep their own partial line.
    """

    def __init__(self, update_interval: float = 1.0) -> None:
        self.update_interval = update_interval
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._held = ""  # an escape sequence cut by the chunk boundary
        self._line = ""  # the current line so far; may hold carriage returns
        self._shown: str | None = None  # its state last written as an update
        self._since = 0.0  # when the current line began, or its last update was written

    def feed(self, data: bytes, now: float) -> list[str]:
        text = self._held + self._decoder.decode(data)
        self._held = ""
        if "\x1b" in text:
            partial = _PARTIAL_ESCAPE.search(text, max(0, text.rfind("\x1b")))
            if partial is not None:
                self._held, text = text[partial.start():], text[:partial.start()]
            text = _ESCAPE.sub("", text)
        text = _CONTROL.sub("", text)
        if not self._line:
            self._since = now
        out: list[str] = []
        if "\n" in text:
            parts = (self._line + text).split("\n")
            for line in parts[:-1]:
                shown = render_line(line)
                if not (shown == self._shown and "\r" in line):  # its last update already said it
                    out.append(shown)
                self._shown = None
            self._line, self._since = parts[-1], now
        else:
            self._line += text
        if "\r" in self._line:
            cut = self._line.rfind("\r")
            before = render_line(self._line[:cut])
            self._line = before + self._line[cut:]  # the same picture, without a thousand old states
            if now - self._since >= self.update_interval and before and before != self._shown:
                out.append(before)
                self._shown, self._since = before, now
        if len(self._line) > MAX_LINE:
            out.append(render_line(self._line[:MAX_LINE]))
            self._line, self._shown = self._line[MAX_LINE:], None
        return out

    def finish(self) -> list[str]:
        """The line the stream ended in, marked as cut (none if it ended with a newline)."""
        rest = self._line + self._decoder.decode(b"", final=True)
        self._line, self._held, self._shown = "", "", None
        shown = render_line(_CONTROL.sub("", _ESCAPE.sub("", rest)))
        return [shown + CUT_MARK] if shown.strip() else []


class ConsoleLog:
    """Appends timed lines to ``logs.txt``: one write per batch of lines, whole lines only (a write that
    fails part-way, on a full disk, is cut back to the last whole line; see :class:`JsonlAppender`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._appender = JsonlAppender(self.path)

    def write(self, lines: list[tuple[float, str]]) -> None:
        if not lines:
            return
        stamps: dict[float, str] = {}
        out = []
        for when, text in lines:
            stamp = stamps.get(when)
            if stamp is None:
                stamp = stamps[when] = iso_time(when)
            out.append(f"{stamp} {text}\n")
        self._appender.write_lines(out)

    def close(self) -> None:
        self._appender.close()


def read_console_log(path: str | Path) -> Iterator[tuple[float, str]]:
    """``(epoch seconds, text)`` for each line of a ``logs.txt`` (a torn last line is skipped)."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as handle:
        for raw in handle:
            if not raw.endswith("\n"):
                return  # being written right now: not a line yet
            stamp, _, text = raw[:-1].partition(" ")
            try:
                when = parse_iso_time(stamp)
            except ValueError:
                continue
            yield when, text
