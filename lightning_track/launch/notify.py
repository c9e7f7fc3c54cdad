"""Notifications at the moments of a run that matter, through `apprise <https://github.com/caronc/apprise>`_.

Why apprise: one URL per destination (``json://host:port/path`` for a generic JSON webhook, ``slack://``,
``discord://``, ``tgram://``, ``mailto://``, ``feishu://``, ``dingtalk://`` ...) and no client of our
own for each service. Why from the driver: a training process killed by the kernel's OOM killer or a
lost node says nothing more; the driver, which watches its signals and heartbeat, still can.

Delivery happens on one background thread, in order, so a slow or dead endpoint never holds up a
step. A notification that cannot be delivered is one line on the log, never an error of the
pipeline. A URL apprise does not understand, or apprise not installed (``pip install
'lightning_track[notify]'``), is refused when the notifier is built, before anything starts.

A message is a title (``<pipeline> <step>: <event>``) and a body: one readable line, then the fields
as ``key: value`` lines (the signal files' format), so a person on Slack and a script behind a webhook
read the same text.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, one_line
from ..redaction import redact_url
from ..vocabulary import RETRYING, STALE, STALLED

__all__ = ["Notifier", "EVENTS", "message_body"]

# event -> apprise's notify type
EVENTS = {"healthy": "info", "done": "success", "completed": "success", "failed": "failure",
          "interrupted": "warning", STALE: "failure", STALLED: "failure", RETRYING: "warning"}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")) if not math.isfinite(value) \
            else f"{value:.6g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return " ".join(str(value).split())


def message_body(line: str, fields: Mapping[str, Any]) -> str:
    """The readable line, then one ``key: value`` line per field that has a value."""
    rows = [f"{key}: {_text(value)}" for key, value in fields.items() if value not in (None, "", {}, [])]
    return "\n".join([" ".join(line.split()), *rows])


class Notifier:
    """Sends to every URL given; ``log`` receives the one line for each notification not delivered."""

    def __init__(self, urls: Sequence[str], *, log: Callable[[str], None] | None = None) -> None:
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._targets: list[tuple[str, Any]] = []
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if not urls:
            return
        try:
            import apprise
        except ImportError:
            raise ConfigError("--notify needs apprise, which is not installed; "
                              "pip install 'lightning_track[notify]'") from None
        logging.getLogger("apprise").addHandler(logging.NullHandler())  # our one line instead of its warnings
        self._apprise = apprise
        for url in urls:
            target = apprise.Apprise()
            if not target.add(url):
                raise ConfigError(f"--notify {redact_url(url)}: not a URL apprise understands; see "
                                  "https://github.com/caronc/apprise/wiki (json://host:port/path for a webhook)")
            self._targets.append((url, target))
        self._thread = threading.Thread(target=self._deliver, name="lightning_track-notify", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        return bool(self._targets)

    def send(self, event: str, title: str, line: str, fields: Mapping[str, Any] | None = None) -> None:
        """Queue one notification (returns at once)."""
        if self._targets:
            body = message_body(line, {"event": event, **(fields or {})})
            self._queue.put((event, title, body))

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, title, body = item
            for url, target in self._targets:
                try:
                    with self._apprise.LogCapture(level=logging.WARNING) as captured:
                        ok = target.notify(title=title, body=body, notify_type=EVENTS.get(event, "info"))
                    why = next((ln.strip() for ln in captured.getvalue().splitlines() if ln.strip()), "")
                except Exception as exc:  # noqa: BLE001 - a notification must never fail the pipeline
                    ok, why = False, one_line(exc)
                if not ok:
                    self.log(f"notification {event!r} to {redact_url(url)} not delivered"
                             + (f": {one_line(Exception(why), 200)}" if why else ""))

    def close(self, timeout: float = 15.0) -> None:
        """Deliver what is queued (waiting up to ``timeout`` s), then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
