"""How SSH failures reach the engine and lt-sync: the SSH library's exceptions mapped inside the SSH
transport (against a stand-in SFTP client, no sshd), and which errors stop the ``--every`` loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from lightning_track.cli.sync import main as lt_sync
from lightning_track.errors import (
    HostKeyError,
    SourceChanged,
    SSHSetupError,
    SyncError,
    TransferError,
    TransportError,
    UnsafePathError,
    VerifyError,
)
from lightning_track.sync import run_loop
from lightning_track.sync.endpoints import parse_endpoint
from lightning_track.sync.engine import FATAL_ERRORS, RETRYABLE_ERRORS
from lightning_track.sync.transport import SSHTransport


class FakeSFTP:
    """Answers the SFTP calls the transport makes; ``fail[name]`` is raised by that call."""

    def __init__(self, **fail: BaseException) -> None:
        self.fail = fail
        self.dirs: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if name in self.fail:
                raise self.fail[name]
            if name == "isdir":
                return args[0] in self.dirs
            return None

        if name == "open" and "open" in self.fail:
            def raising(*args: Any, **kwargs: Any) -> Any:
                raise self.fail["open"]
            return raising
        return call


def transport(sftp: FakeSFTP) -> SSHTransport:
    ssh = SSHTransport(parse_endpoint("me@gpu1:/runs"))
    ssh._sftp = sftp
    return ssh


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_no_such_file_is_an_answer_not_a_failure() -> None:
    gone = asyncssh.SFTPNoSuchFile("No such file")
    assert run(transport(FakeSFTP(lstat=gone)).stat("run/a")) is None
    with pytest.raises(FileNotFoundError, match="run/a: vanished"):
        run(transport(FakeSFTP(open=gone)).read("run/a", 0, 10))
    sftp = FakeSFTP(mkdir=asyncssh.SFTPFailure("exists"))
    sftp.dirs.add("/runs/run")
    run(transport(sftp).mkdir("run"))  # an existing folder is fine
    with pytest.raises(TransportError, match="SFTP request failed"):
        run(transport(FakeSFTP(mkdir=asyncssh.SFTPFailure("exists"))).mkdir("run"))  # a file there is not


@pytest.mark.parametrize(("exc", "what"), [
    (asyncssh.ConnectionLost("Connection lost"), "connection lost (ConnectionLost: Connection lost)"),
    (EOFError(), "connection lost (EOFError)"),
    (asyncssh.ChannelOpenError(2, "no more sessions"), "the server refused an SFTP channel"),
    (asyncssh.SFTPPermissionDenied("Permission denied"), "SFTP request failed (SFTPPermissionDenied: Permission"),
    (asyncssh.SFTPNoSuchFile("No such file"), "SFTP request failed (SFTPNoSuchFile: No such file)"),
])
def test_failures_become_one_line_transport_errors(exc: BaseException, what: str) -> None:
    with pytest.raises(TransportError) as info:
        run(transport(FakeSFTP(remove=exc)).remove("run/a"))
    message = str(info.value)
    assert message.startswith("me@gpu1:/runs/run/a: ") and what in message and "\n" not in message
    assert isinstance(info.value, OSError) and isinstance(info.value, TransferError)
    assert info.value.__cause__ is exc  # kept for a traceback, never shown by lt-sync


def test_every_operation_is_mapped() -> None:
    lost = asyncssh.ConnectionLost("Connection lost")
    calls = {
        "walk": lambda t: t.walk(), "stat": lambda t: t.stat("a"), "read": lambda t: t.read("a", 0, 1),
        "write_at": lambda t: t.write_at("a", 0, b"x"), "rename": lambda t: t.rename("a", "b"),
        "remove": lambda t: t.remove("a"), "makedirs": lambda t: t.makedirs("a"), "mkdir": lambda t: t.mkdir("a"),
        "set_mtime": lambda t: t.set_mtime("a", 1), "truncate": lambda t: t.truncate("a", 0),
        "write_final": lambda t: t.write_final("a", 0, b"x", truncate=True, mtime=1, verify=1),
    }
    sftp_name = {"walk": "readdir", "stat": "lstat", "read": "open", "write_at": "open", "rename": "posix_rename",
                 "set_mtime": "utime", "write_final": "open"}
    for method, call in calls.items():
        with pytest.raises(TransportError, match="connection lost"):
            run(call(transport(FakeSFTP(**{sftp_name.get(method, method): lost}))))


def test_connect_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_key(*args: Any, **kwargs: Any) -> None:
        raise OSError("unreachable")

    monkeypatch.setattr(asyncssh, "get_server_host_key", no_key)
    cases = [
        (asyncssh.HostKeyNotVerifiable("Host key is not trusted"), HostKeyError, "is unknown"),
        (asyncssh.PermissionDenied("Permission denied"), SSHSetupError, "authentication failed"),
        (asyncssh.KeyImportError("Invalid private key"), SSHSetupError, "cannot load the SSH key"),
        (ConnectionRefusedError(111, "Connect call failed"), TransportError, "cannot connect (ConnectionRefusedError"),
        (asyncio.TimeoutError(), TransportError, "cannot connect within 20s (TimeoutError)"),
        (asyncssh.ConnectionLost("Connection lost"), TransportError, "cannot connect (ConnectionLost"),
    ]
    for exc, kind, text in cases:
        async def connect(*args: Any, exc: BaseException = exc, **kwargs: Any) -> None:
            raise exc

        monkeypatch.setattr(asyncssh, "connect", connect)
        with pytest.raises(kind) as info:
            run(SSHTransport(parse_endpoint("me@gpu1:runs")).open())
        assert text in str(info.value) and "\n" not in str(info.value)


def test_lt_sync_exit_codes_for_ssh_failures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    (tmp_path / "src").mkdir()
    for exc, code in [(asyncssh.ConnectionLost("Connection lost"), 1), (asyncssh.PermissionDenied("denied"), 2)]:
        async def connect(*args: Any, exc: BaseException = exc, **kwargs: Any) -> None:
            raise exc

        monkeypatch.setattr(asyncssh, "connect", connect)
        assert lt_sync([str(tmp_path / "src"), "me@gpu1:runs", "--state", str(tmp_path / "s.jsonl")]) == code
        err = capsys.readouterr().err
        assert err.startswith("lt-sync: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_which_errors_stop_the_loop_and_which_are_retried() -> None:
    for fatal in (SyncError("x"), HostKeyError("x"), SSHSetupError("x"), UnsafePathError("x")):
        assert isinstance(fatal, FATAL_ERRORS) and not isinstance(fatal, RETRYABLE_ERRORS)
    for retried in (TransportError("x"), OSError("disk full"), FileNotFoundError("x"), VerifyError("x"),
                    SourceChanged("x")):
        assert isinstance(retried, RETRYABLE_ERRORS) and not isinstance(retried, FATAL_ERRORS)

    class Session:
        def __init__(self, *outcomes: Any) -> None:
            self.outcomes, self.closed = list(outcomes), 0

        async def cycle(self) -> Any:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        async def close(self) -> None:
            self.closed += 1

    cycles: list[Any] = []
    retries: list[tuple[BaseException, float]] = []
    lost, disk = TransportError("gpu1: connection lost"), OSError("No space left on device")
    session = Session(lost, disk, "done")
    done = run(run_loop(session, 0, cycles.append, lambda e, d: retries.append((e, d)), max_cycles=1,
                        max_backoff=0.01))
    assert done == 1 and cycles == ["done"] and [e for e, _ in retries] == [lost, disk] and session.closed == 2
    assert all(d <= 0.01 * 1.2 for _, d in retries)

    for fatal in (HostKeyError("changed"), SyncError("source missing")):
        with pytest.raises(type(fatal)):
            run(run_loop(Session(fatal), 0, cycles.append, lambda e, d: retries.append((e, d)), max_cycles=1))
    assert len(retries) == 2
    with pytest.raises(ValueError):  # a bug is not retried
        run(run_loop(Session(ValueError("bug")), 0, cycles.append, lambda e, d: None, max_cycles=1))
