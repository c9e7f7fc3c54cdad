"""Fixtures for the lt-sync tests: a real OpenSSH server on 127.0.0.1 (helpers in tests/support/sync.py)."""

from __future__ import annotations

import pytest
from support.sync import SSHServer, make_sshd, write_ssh_home


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    server = make_sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ssh_home(sshd: SSHServer, monkeypatch: pytest.MonkeyPatch) -> SSHServer:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    write_ssh_home(sshd)
    return sshd
