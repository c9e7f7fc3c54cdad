"""A real OpenSSH server on 127.0.0.1 for the sync tests, plus helpers that build run folders.

The server (one per session) has a temporary host key and authorises a temporary client key; each
test gets ``~/.ssh/{config,known_hosts,id_ed25519}`` in its own temp HOME with a ``lt-test`` alias,
so the client side goes through the same ``~/.ssh`` files a user has.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lightning_track.folder.fileio import JsonlAppender, atomic_write_json

from .system import require, which

SSHD = which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class SSHServer:
    port: int
    user: str
    folder: Path
    host_key: Path
    client_key: Path
    proc: subprocess.Popen | None = None

    @property
    def host_pub(self) -> list[str]:
        return Path(f"{self.host_key}.pub").read_text().split()[:2]

    def known_hosts_line(self) -> str:
        kind, blob = self.host_pub
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", f"{self.host_key}.pub"], capture_output=True, text=True,
                             check=True).stdout
        return out.split()[1]

    def start(self) -> None:
        cfg = self.folder / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {self.folder / 'sshd.pid'}\nAuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\n"
            "MaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n"
            # commands run as the real user, through a shell that reads its start-up files: pyenv's there
            # takes a lock (rehash) that a test killing this sshd mid-command can leave behind, and every
            # later command would wait 60 s for it
            "SetEnv PYENV_REHASH_TIMEOUT=1\n"
        )
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.folder / "sshd.log", "ab"))
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def make_sshd(folder: Path) -> SSHServer:
    """Keys and config for a private sshd; works as root (PermitRootLogin) and as a normal user."""
    folder.mkdir(parents=True, exist_ok=True)
    require("sshd")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir when root
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{client_key}.pub", folder / "authorized_keys")
    return SSHServer(free_port(), getpass.getuser(), folder, host_key, client_key)


def write_ssh_home(server: SSHServer, *, trust: bool = True) -> Path:
    """``~/.ssh`` in the test's HOME: key, a ``lt-test`` alias, and (when ``trust``) the host key."""
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    key = ssh_dir / "id_ed25519"
    shutil.copy(server.client_key, key)
    key.chmod(0o600)
    (ssh_dir / "config").write_text(
        f"Host lt-test\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
    )
    (ssh_dir / "known_hosts").write_text(server.known_hosts_line() if trust else "")
    return ssh_dir


def make_run(root: Path, name: str, steps: int = 10, *, events_bytes: int = 0, status: str = "running") -> Path:
    """A run folder as RunLogger lays it out (metrics.jsonl, summary/meta, optional events and checkpoint)."""
    run = root / name
    (run / "tensorboard_logs").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints").mkdir(exist_ok=True)
    append_steps(run, 0, steps)
    dataset, method = name.split("_")[:2]
    atomic_write_json(run / "meta.json", {"dataset": dataset, "method": method, "run_name": name, "host": "gpu1",
                                          "created": "2025-01-01T12:00:00+00:00", "pid": 999999})
    atomic_write_json(run / "summary.json", {"dataset": dataset, "method": method, "status": status,
                                             "start_time": "2025-01-01T12:00:00+00:00"})
    (run / "config.yaml").write_text("lr: 0.1\n")
    (run / "checkpoints" / "checkpoint-step-005.ckpt").write_bytes(os.urandom(2048))
    if events_bytes:
        (run / "tensorboard_logs" / "events.out.tfevents.1.gpu1").write_bytes(os.urandom(events_bytes))
    return run


def backdate(root: Path, seconds: float, *, files: bool = True) -> None:
    """Every folder (and file) under ``root`` last changed ``seconds`` ago (runs that ended a while back)."""
    when = time.time() - seconds
    for folder, _, names in os.walk(root, topdown=False):
        for name in names if files else ():
            os.utime(os.path.join(folder, name), (when, when))
        os.utime(folder, (when, when))


def append_steps(run: Path, start: int, count: int) -> bytes:
    lines = [json.dumps({"step": s, "time": 1735732800.0 + s, "metrics": {"train/loss": 1.0 / (s + 1), "epoch": 0}})
             + "\n" for s in range(start, start + count)]
    with JsonlAppender(run / "metrics.jsonl") as out:
        out.write_lines(lines)
    return "".join(lines).encode()


def tree(root: Path, *, skip_checkpoints: bool = True) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative path -> bytes)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if skip_checkpoints and ("checkpoints/" in rel or rel.endswith(".ckpt")):
            continue
        if path.is_file() and not path.is_symlink():
            found[rel] = path.read_bytes()
    return found


def another_sshd(first: SSHServer, folder: Path) -> SSHServer:
    """A second server on its own port with ``first``'s host and client keys (so the same ``~/.ssh`` works):
    a second machine to stop and start while the first keeps serving. Not started."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(first.folder / "authorized_keys", folder / "authorized_keys")
    return SSHServer(free_port(), first.user, folder, first.host_key, first.client_key)


def trust(server: SSHServer) -> None:
    """Add ``server``'s host key line for its port to the test's ``~/.ssh/known_hosts``."""
    with open(Path.home() / ".ssh" / "known_hosts", "a") as out:
        out.write(server.known_hosts_line())


def kill_server(server: SSHServer) -> None:
    """SIGKILL the server and every session process it forked (an sshd's children outlive its listener)."""
    assert server.proc is not None
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {server.proc.pid}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    for pid in sorted(family, reverse=True):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    server.proc.wait()
    server.proc = None
