"""lt-run's console capture: the launched command's output, from its first byte, into the run's ``logs.txt``.

Why here and not only in the RunLogger: an import error, a bad argument or anything printed before the
run folder exists happens before any RunLogger could capture it, and those are the lines a failed launch
is read for. ``lt-run`` starts the command, so it owns the command's stdout and stderr from the start:
they are a pipe (a pseudo-terminal when lt-run's own output is a terminal, so the command still sees a
terminal) that a relay thread (:class:`~lightning_track.run.console_relay.Relay`) copies to lt-run's
stdout/stderr unchanged and, cleaned and timed, into the file. Lines come before the file is known: the
relay keeps them until the command names its run folder (the run note); a command that never names one
leaves them in ``<signals_dir>/<exp_id>.logs.txt``. Secret values of the command line and the environment
are masked in both files (:mod:`lightning_track.redaction`).

The command is told (``LIGHTNING_TRACK_CONSOLE``) that its console is captured, so its RunLogger does not
capture rank 0's output a second time; other ranks still keep their own ``logs.rank<N>.txt``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..run.console import close_fds, console_env_value, console_groups, make_channel
from ..run.console_relay import Relay
from ..vocabulary import ENV_CONSOLE

__all__ = ["LaunchConsole"]


class LaunchConsole:
    """The command's stdout/stderr and the relay that reads them. Use: ``child_fds()`` for ``Popen``,
    ``env()`` for its environment, ``started()`` once it runs, ``set_log()`` when the run folder is
    known, ``finish()`` after it exited."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._to_child: dict[int, int] = {}  # our fd (1/2) -> the write end the command gets for it
        self._reads: list[int] = []
        streams, ptys = [], []
        try:
            for fds in console_groups():
                read_end, write_end = make_channel(fds[0])
                self._reads.append(read_end)
                streams.append((read_end, fds[0]))
                if os.isatty(fds[0]):
                    ptys.append((read_end, fds[0]))
                for fd in fds:
                    self._to_child[fd] = write_end
        except OSError:
            close_fds(list(self._to_child.values()) + self._reads)
            raise
        self.relay = Relay(streams, pty_sizes=ptys, secrets=secrets)
        self._thread = threading.Thread(target=self.relay.run, name="lt-run-console", daemon=True)

    def child_fds(self) -> dict[str, int | None]:
        """``stdout=``/``stderr=`` for ``subprocess.Popen`` (None: inherited, when closed here)."""
        return {"stdout": self._to_child.get(1), "stderr": self._to_child.get(2)}

    def env(self, environ: dict[str, str]) -> dict[str, str]:
        """The command's environment, saying its console is lt-run's (into whichever run it names)."""
        out = dict(environ)
        fd = self._to_child.get(1)
        if fd is not None:
            out[ENV_CONSOLE] = console_env_value(fd, None)
        return out

    def started(self) -> None:
        """The command runs (it holds the write ends now): drop ours, so its end is the pipe's end."""
        close_fds(list(set(self._to_child.values())))
        self._thread.start()

    def set_log(self, path: str | Path) -> None:
        self.relay.set_log(path)

    def finish(self, fallback: str | Path, grace: float = 2.0, timeout: float = 30.0) -> Path | None:
        """After the command exited: read what is left (or stop ``grace`` s after the last output when
        an orphan of the command still holds the pipe), write the file; lines that never found a run
        folder go to ``fallback``. Returns the file written to, if any."""
        self.relay.let_go(grace)
        self._thread.join(timeout)
        close_fds(self._reads)
        target = Path(self.relay.log_path or fallback)
        if self.relay.keep_early(target):  # lines still waiting for a file when the command ended
            return target
        return self.relay.log_path
