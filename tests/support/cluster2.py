"""A real two-node Slurm cluster on this one machine, for the multi-node tests.

Each node is its own network namespace (``ip netns``) with its own hostname (a UTS namespace) and its own
``/etc/hosts`` (a mount namespace: the file is bind-mounted there, the machine's file is never touched);
a third namespace, the hub, holds the bridge the nodes' veth pairs hang on and ``slurmctld``. Every
address (10.77.0.0/24) lives only inside these namespaces, so nothing reaches another network and a
second cluster started beside this one does not collide. The file system is shared, as NFS would be on a
real cluster. Needs root (namespaces) and Debian's Slurm 22.05 and munge; built once per test session
(``two_nodes`` in tests/conftest.py) and torn down completely: daemons, every process left in the
namespaces, the namespaces (and with them the veths and the bridge).

``SlurmdSpoolDir``, ``SlurmdPidFile`` and ``SlurmdLogFile`` carry ``%n`` (two slurmd share the folder), each
``slurmd -N <node>`` is started with ``nsenter --net=<netns> unshare --uts --mount`` (``ip netns exec`` would
remount ``/sys`` without the cgroup file system), and Slurm finds the nodes by ``NodeAddr``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import system

SUBNET = "10.77.0"
HUB_ADDR = f"{SUBNET}.1"
CONTROLLER = "ltctl"
NODES = {"n1": f"{SUBNET}.11", "n2": f"{SUBNET}.12"}
NETNS_DIR = Path("/run/netns")


def missing() -> str | None:
    """Why the two-node cluster cannot be built here (the named skip), or None."""
    why = system.missing("slurm")
    if why is not None:
        return why
    if os.geteuid() != 0:
        return "the two-node Slurm cluster needs root (network namespaces, slurmd)"
    why = system.missing("netns")  # ip, nsenter, unshare: iproute2, util-linux
    if why is not None:
        return why
    probe = f"ltprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces cannot be made here (ip netns add: {made.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class TwoNodes:
    """The running cluster: ``run`` / ``popen`` a Slurm client in the hub, ``sbatch`` a script."""

    folder: Path
    prefix: str  # of the namespaces' names, unique per session
    conf: Path = field(init=False)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # munged, slurmctld, n1, n2

    def __post_init__(self) -> None:
        self.conf = self.folder / "slurm.conf"

    def netns(self, name: str) -> str:
        """The namespace of ``hub``, ``n1`` or ``n2``."""
        return f"{self.prefix}{name}"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _in(self, name: str, argv: list[str], hostname: str | None = None) -> list[str]:
        """``argv`` in ``name``'s network namespace with its own hostname and ``/etc/hosts``."""
        inner = f"mount --bind {self.folder / 'hosts'} /etc/hosts && "
        if hostname:
            inner += f"hostname {hostname} && "
        inner += "exec \"$@\""
        return ["nsenter", f"--net={NETNS_DIR / self.netns(name)}", "unshare", "--uts", "--mount",
                "sh", "-c", inner, "sh", *argv]

    def command(self, *argv: str) -> list[str]:
        """A Slurm client command as run from the hub (the controller's network)."""
        return self._in("hub", list(argv))

    def run(self, *argv: str, timeout: float = 30, check: bool = True, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> str:
        out = subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                             env={**(os.environ if env is None else env), **self.env})
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def sbatch(self, script: Path, *options: str, env: dict[str, str] | None = None) -> str:
        """Submit ``script`` (with ``env`` exported to it); the job id."""
        return self.run("sbatch", "--parsable", "--export=ALL", *options, str(script), env=env).strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        fields = {}
        for word in self.run("scontrol", "show", "job", "-o", job_id).split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_ended(self, job_id: str, timeout: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["JobState"] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED"):
                return job
            if time.monotonic() > deadline:
                self.run("scancel", job_id, check=False)
                raise AssertionError(f"job {job_id} still {job['JobState']} after {timeout} s")
            time.sleep(0.5)

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while set(self.node_states().values()) != {"idle"} or len(self.node_states()) != len(NODES):
            if time.monotonic() > deadline:
                raise AssertionError(f"the nodes are not idle: {self.node_states()}\n{self.logs()}")
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited ({proc.returncode}):\n{self.logs()}")
            time.sleep(0.25)

    def link(self, name: str, *, up: bool) -> None:
        """Cut node ``name`` off the network (its veth on the bridge down: a silent partition), or bring it back."""
        index = list(NODES).index(name) + 1
        _ip("-n", self.netns("hub"), "link", "set", f"v{index}", "up" if up else "down")

    def pids(self, name: str) -> list[int]:
        """Every process in ``name``'s network namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.netns(name)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.folder.glob("*.log")))

    # -- start and stop ------------------------------------------------------------------------
    def start(self) -> None:
        self._network()
        (self.folder / "hosts").write_text(
            f"127.0.0.1 localhost\n{HUB_ADDR} {CONTROLLER}\n"
            + "".join(f"{addr} {name}\n" for name, addr in NODES.items()))
        self._write_conf()
        env = {**os.environ, **self.env}
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = self.folder / "munge.sock"
        self.procs["munged"] = subprocess.Popen(
            ["munged", "-F", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={self.folder}/munged.pid", f"--log-file={self.folder}/munged.log",
             f"--seed-file={self.folder}/munge.seed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not sock.exists():
            assert time.monotonic() < deadline and self.procs["munged"].poll() is None, "munged did not start"
            time.sleep(0.05)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs["slurmctld"] = subprocess.Popen(
            self._in("hub", ["slurmctld", "-D", "-f", str(self.conf)], hostname=CONTROLLER), **quiet)
        deadline = time.monotonic() + 30
        while self.run("sinfo", "-h", check=False, timeout=10) == "":
            assert time.monotonic() < deadline and self.procs["slurmctld"].poll() is None, \
                f"slurmctld did not answer:\n{self.logs()}"
            time.sleep(0.25)
        for name in NODES:
            self.start_node(name)
        self.wait_idle()

    def start_node(self, name: str) -> None:
        """slurmd of ``name`` in its namespaces (again, after a test took the node down)."""
        env = {**os.environ, **self.env}
        self.procs[name] = subprocess.Popen(
            self._in(name, ["slurmd", "-D", "-N", name, "-f", str(self.conf)], hostname=name),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def _network(self) -> None:
        hub = self.netns("hub")
        _ip("netns", "add", hub)
        _ip("-n", hub, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{HUB_ADDR}/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for index, (name, addr) in enumerate(NODES.items(), 1):
            ns = self.netns(name)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # created in the hub, its peer moved straight into the node: nothing in the machine's own namespace
            _ip("-n", hub, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", hub, "link", "set", f"v{index}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def _write_conf(self) -> None:
        folder = self.folder
        (folder / "state").mkdir(exist_ok=True)
        for name in NODES:
            (folder / f"spool-{name}").mkdir(exist_ok=True)
        cpus = os.cpu_count() or 1
        # How soon a lost node is DOWN (the lost-node tests wait for it): slurmctld pings every SlurmdTimeout/3
        # and starts no ping before the last one ended, and a ping to a dead node ends only at MessageTimeout
        # (+1 s). DOWN comes with the first ping round that ends SlurmdTimeout after the node's last answer:
        # ~27 s after a kill at the defaults (MessageTimeout=10), ~15 s here. 4 s is still ample for a round
        # trip between namespaces on one machine under load; slurm.conf sets no minimum for either.
        self.conf.write_text("\n".join([
            "ClusterName=lt2", f"SlurmctldHost={CONTROLLER}({HUB_ADDR})", "SlurmUser=root", "SlurmdUser=root",
            "SlurmctldPort=6817", "SlurmdPort=6818",
            "AuthType=auth/munge", f"AuthInfo=socket={folder}/munge.sock,cred_expire=5", "CredType=cred/munge",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool-%n",
            f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd-%n.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
            "MinJobAge=600", "KillWait=10", "SlurmdTimeout=8", "MessageTimeout=4",
            *(f"NodeName={name} NodeAddr={addr} NodeHostname={name} CPUs={cpus} State=UNKNOWN"
              for name, addr in NODES.items()),
            f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP", ""]))

    def stop(self) -> None:
        """Everything down, even after a failed start: jobs, daemons, namespaces."""
        for name in ("n1", "n2", "slurmctld"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for name, proc in self.procs.items():
            if name == "munged":
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in ("n1", "n2", "hub"):
            for pid in self.pids(name):  # job steps and their tasks the daemons left behind
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        munged = self.procs.get("munged")
        if munged is not None and munged.poll() is None:
            munged.terminate()
            munged.wait(timeout=20)
        for name in ("n1", "n2", "hub"):
            subprocess.run(["ip", "netns", "del", self.netns(name)], capture_output=True)


_started = itertools.count(1)


def start(folder: Path) -> TwoNodes:
    """Build the cluster in ``folder`` (conf, keys, logs, spools); torn down again if it does not come up."""
    cluster = TwoNodes(folder, prefix=f"lt{os.getpid()}c{next(_started)}")
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def left_over(prefix: str) -> list[str]:
    """Namespaces with ``prefix`` still present (a teardown check)."""
    return [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                       text=True).stdout.splitlines()
            if line.startswith(prefix)]


__all__ = ["TwoNodes", "start", "missing", "left_over", "NODES"]
