"""Console capture: everything this process (and its children) writes to fds 1 and 2 also goes to ``logs.txt``.

How: fds 1 and 2 are pointed (``dup2``) at a pipe, or at a pseudo-terminal when the original is a
terminal, whose other end a relay process reads (:mod:`.console_relay`); it copies every byte to the
original stdout/stderr at once and, cleaned, into the file. At the file-descriptor level, so C and CUDA
messages, NCCL, subprocesses (``sh -c 'echo ...'``) and the interpreter's final traceback are kept too.

The terminal looks as before:

* stdout and stderr that go to the same place (a terminal, ``2>&1``) share one pipe, so their order is
  kept byte for byte; when they go to different places each has its own and keeps its destination.
* a terminal stays a terminal: the process writes to a pseudo-terminal with the real one's settings and
  window size, so ``isatty()`` answers True and progress bars render. Output processing (``\\n`` ->
  ``\\r\\n``) is left to the real terminal, so the bytes pass unchanged.
* Python's own streams keep their buffering (decided at start-up from the original files).

It never stops training: the process keeps a read end of each pipe, so a relay that dies never makes a
write fail; a watcher thread then points fds 1 and 2 back at the originals, hands on what was left in
the pipe and says so once. At exit, fds 1 and 2 are pointed back and the relay confirms that everything
printed is on the terminal and in the file before the process ends, so a shell prompt never overtakes
the last lines. A SIGKILL loses nothing already printed: the relay reads the pipe to its end.

One capture per process at a time: capturing into another file stops the first. A process whose stdout
is already captured into the same file (a ``ddp_spawn`` worker), or by ``lt-run`` (which writes the run's
``logs.txt`` itself), does not capture again: see ``LIGHTNING_TRACK_CONSOLE``
(:data:`~lightning_track.vocabulary.ENV_CONSOLE`). Torch-free.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import select
import subprocess
import sys
import termios
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import one_line
from ..vocabulary import ENV_CONSOLE, ENV_MASK

__all__ = ["close_fds", "ConsoleCapture", "capture_console", "active_capture", "stop_capture", "captured_elsewhere",
           "stream_identity", "make_channel", "console_groups", "stream_groups", "console_env_value"]

# The relay's interpreter: ``-S`` (no site-packages, no .pth files: its imports are the standard library and this
# package, which comes first on its path, never a checkout in the working directory as ``-m`` would put it); it
# starts beside training at every run's start, so its start-up is kept to the interpreter's own.
_RELAY_COMMAND = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                  "from lightning_track.run.console_relay import main; sys.exit(main())")
_PIPE_SIZE = 1 << 20  # room for a burst while the relay starts (Linux's default limit for a user)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_ACTIVE: ConsoleCapture | None = None
_LOCK = threading.Lock()


def stream_identity(fd: int) -> tuple[int, int] | None:
    """``(device, inode)`` of what ``fd`` points at, or None when it is closed."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def captured_elsewhere(log_path: str | Path | None, environ: dict[str, str] | None = None) -> bool:
    """Whether stdout is already a capture's pipe writing into ``log_path``, or lt-run's (any file)."""
    value = (os.environ if environ is None else environ).get(ENV_CONSOLE, "")
    dev, _, rest = value.partition(":")
    ino, _, path = rest.partition(":")
    try:
        theirs = (int(dev), int(ino))
    except ValueError:
        return False
    if stream_identity(1) != theirs:
        return False  # the variable was inherited, the pipe was not (a fresh terminal, a redirect)
    return not path or log_path is None or os.path.abspath(path) == os.path.abspath(log_path)


def console_env_value(fd: int, log_path: str | Path | None) -> str:
    ident = stream_identity(fd)
    return f"{ident[0]}:{ident[1]}:{os.path.abspath(log_path) if log_path else ''}" if ident else ""


def make_channel(fd: int) -> tuple[int, int]:
    """Where output meant for ``fd`` goes instead: a pseudo-terminal shaped like ``fd``'s terminal (its
    settings and window size, output processing left to the real one), else a pipe with room for a burst.
    Returns ``(read end, write end)``, neither inherited by children."""
    if os.isatty(fd):
        master, slave = os.openpty()
        try:
            attrs = termios.tcgetattr(fd)
            attrs[1] &= ~termios.OPOST
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        except (OSError, termios.error):
            pass
        return master, slave
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass
    return read_end, write_end


def console_groups() -> list[tuple[int, ...]]:
    """fds 1 and 2, together when they point at the same file (one channel keeps their order)."""
    return stream_groups(stream_identity(1), stream_identity(2))


def stream_groups(out: tuple[int, int] | None, err: tuple[int, int] | None) -> list[tuple[int, ...]]:
    """The stream table (pure): from what fds 1 and 2 point at (None: closed), the fds each channel carries."""
    if out is not None and out == err:
        return [(1, 2)]
    return [(fd,) for fd, ident in ((1, out), (2, err)) if ident is not None]


class ConsoleCapture:
    """fds 1 and 2 of this process captured into ``log_path`` (see the module doc). Use
    :func:`capture_console`; :meth:`stop` undoes it (also run at exit)."""

    def __init__(self, log_path: str | Path, update_interval: float = 1.0, secrets: Iterable[str] = ()) -> None:
        self.log_path = Path(log_path).resolve()
        self.pid = os.getpid()
        self._saved: dict[int, int] = {}  # fd -> a copy of what it pointed at before
        self._ours: dict[int, tuple[int, int]] = {}  # fd -> identity of our pipe/pty end
        self._keep: list[int] = []  # our read ends: a dead relay never makes a write fail
        self._channels: list[tuple[tuple[int, ...], int, int]] = []  # (fds, read end, write end)
        self._stopped = False
        self._lock = threading.Lock()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        groups = console_groups()
        if not groups:
            raise OSError("neither stdout nor stderr is open")
        to_close: list[int] = []
        streams, ptys, pass_fds = [], [], []
        try:
            for fds in groups:
                original = os.dup(fds[0])
                self._saved.update({fd: (original if fd == fds[0] else os.dup(fd)) for fd in fds})
                read_end, write_end = make_channel(fds[0])
                to_close.append(write_end)
                self._keep.append(read_end)
                streams.append(f"{read_end}:{original}")
                pass_fds += [read_end, original]
                if os.isatty(fds[0]):
                    ptys.append(f"{read_end}:{original}")
                for fd in fds:
                    self._ours[fd] = stream_identity(write_end)  # type: ignore[assignment]
                self._channels.append((fds, read_end, write_end))
            control_r, self._control = os.pipe()
            self._ack, ack_w = os.pipe()
            to_close += [control_r, ack_w]
            env = dict(os.environ)
            package_parent = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
            env.pop(ENV_CONSOLE, None)
            env.pop(ENV_MASK, None)
            if secrets:  # in the relay's environment only (readable by this user alone), never on its command line
                env[ENV_MASK] = json.dumps(sorted(set(secrets)))
            command = [sys.executable, "-S", "-c", _RELAY_COMMAND, package_parent, "--log", str(self.log_path),
                       "--control", str(control_r), "--ack", str(ack_w),
                       "--update-interval", str(update_interval)]
            command += [a for s in streams for a in ("--stream", s)] + [a for p in ptys for a in ("--pty", p)]
            self._relay = subprocess.Popen(command, pass_fds=(*pass_fds, control_r, ack_w), stdin=subprocess.DEVNULL,
                                           env=env, close_fds=True)
            for fds, _, write_end in self._channels:
                for fd in fds:
                    os.dup2(write_end, fd)
        except BaseException:
            for fd in self._saved:
                os.dup2(self._saved[fd], fd)
            close_fds(list(self._saved.values()) + self._keep)
            raise
        finally:
            close_fds(to_close)
        os.environ[ENV_CONSOLE] = console_env_value(1 if 1 in self._ours else 2, self.log_path)
        self._watcher = threading.Thread(target=self._watch, name="lightning_track-console-watch", daemon=True)
        self._watcher.start()
        atexit.register(self.stop)

    # -- while it runs ---------------------------------------------------------------------------
    def _watch(self) -> None:
        code = self._relay.wait()
        with self._lock:
            if self._stopped:
                return
            if not any(stream_identity(fd) == ours for fd, ours in self._ours.items()):
                self._stopped = True  # someone else pointed fds 1 and 2 elsewhere (a test harness): not ours
                return
            self._restore()
            self._hand_on_leftovers()
            self._stopped = True
        _say(f"console capture into {self.log_path} stopped: its relay process exited (code {code}); "
             "output goes to the terminal only")

    def _restore(self) -> None:
        """Point fds 1 and 2 back at the originals, where they are still ours."""
        for fd, original in self._saved.items():
            if stream_identity(fd) == self._ours.get(fd):
                try:
                    os.dup2(original, fd)
                except OSError:
                    pass

    def _hand_on_leftovers(self) -> None:
        """Copy what is still unread in our channels to the originals (the relay died before it)."""
        for fds, read_end, _ in self._channels:
            try:
                while select.select([read_end], [], [], 0)[0]:
                    data = os.read(read_end, 1 << 16)
                    if not data:
                        break
                    os.write(self._saved[fds[0]], data)
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        """Point fds 1 and 2 back, and wait (up to ``timeout`` s) until the relay has put everything
        printed so far on the terminal and in the file. Then the relay reads on to the pipe's end (other
        processes may still hold it: the sink host, dataloader workers) and exits."""
        if os.getpid() != self.pid:
            return  # a forked child inherited this object; the capture is its parent's
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (AttributeError, OSError, ValueError):
                    pass
            self._restore()
            try:
                os.write(self._control, b"s")
                select.select([self._ack], [], [], timeout)
            except OSError:
                pass
            close_fds([self._control, self._ack, *self._keep, *self._saved.values()])
        if os.environ.get(ENV_CONSOLE, "").endswith(f":{self.log_path}"):
            os.environ.pop(ENV_CONSOLE, None)
        try:
            atexit.unregister(self.stop)
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass

    @property
    def active(self) -> bool:
        return not self._stopped

    @property
    def relay_pid(self) -> int:
        return self._relay.pid



def _say(text: str) -> None:
    try:
        os.write(2, f"lightning_track: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def active_capture() -> ConsoleCapture | None:
    capture = _ACTIVE
    return capture if capture is not None and capture.active and capture.pid == os.getpid() else None


def capture_console(log_path: str | Path, *, update_interval: float = 1.0,
                    secrets: Iterable[str] = ()) -> ConsoleCapture | None:
    """Capture this process's console into ``log_path`` from now until it exits (see the module doc).
    ``secrets``: values written to the file as ``***REDACTED***`` (the terminal gets the bytes unchanged).

    Returns the capture, the one already running for the same file, or None when the console is
    already captured elsewhere into that file or by lt-run, or cannot be captured (the reason is said
    once on stderr; training goes on).
    """
    global _ACTIVE
    with _LOCK:
        current = active_capture()
        if current is not None and current.log_path == Path(log_path).resolve():
            return current
        if captured_elsewhere(log_path):
            return None
        if current is not None:
            current.stop()
        try:
            _ACTIVE = ConsoleCapture(log_path, update_interval=update_interval, secrets=secrets)
        except (OSError, subprocess.SubprocessError) as exc:
            _ACTIVE = None
            _say(f"console output is not captured into {log_path}: {one_line(exc)}")
        return _ACTIVE


def stop_capture() -> None:
    """Stop this process's capture, if any (tests; a notebook that wants its console back)."""
    global _ACTIVE
    with _LOCK:
        if _ACTIVE is not None:
            _ACTIVE.stop()
            _ACTIVE = None


def close_fds(fds: list[int]) -> None:
    """Close each descriptor, ignoring those already closed (teardown runs on every error path)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
