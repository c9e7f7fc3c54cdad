"""A real single-node Slurm on 127.0.0.1 for the tests: munged, slurmctld and slurmd (Debian's packages:
``apt-get install slurmctld slurmd slurm-client munge``) with a generated ``slurm.conf`` in a temporary
folder, started for a test session and stopped after it, as the sshd fixture does for lt-sync."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support import system
from support.sync import free_port, wait_port


def missing() -> str | None:
    """Why a real Slurm cannot be started here, or None."""
    why = system.missing("slurm")
    if why is not None:
        return why
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    return None


@dataclass
class Slurm:
    folder: Path
    conf: Path
    procs: list[subprocess.Popen]

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str) -> str:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=30,
                             env={**os.environ, **self.env}, check=True)
        return out.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (kept for MinJobAge s after the job ended)."""
        fields = {}
        for word in self.run("scontrol", "show", "job", "-o", job_id).split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_ended(self, job_ids: list[str], timeout: float = 300) -> dict[str, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = {j: self.job(j) for j in job_ids}
            if all(j["JobState"] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED")
                   for j in jobs.values()):
                return jobs
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still running after {timeout} s: {jobs}")
            time.sleep(0.5)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start(folder: Path) -> Slurm:
    host = socket.gethostname().split(".")[0]
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    ctld_port, slurmd_port = free_port(), free_port()
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=lt", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
        # cred_expire: a requeued job is held for the job credential's lifetime (default 120 s) before it starts
        # again; sched_interval/bf_interval: the scheduler looks at the queue every second (default 60/30 s).
        "AuthType=auth/munge", f"AuthInfo=socket={folder}/munge.sock,cred_expire=5", "CredType=cred/munge",
        "SchedulerParameters=sched_interval=1,bf_interval=1",
        f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
        "MinJobAge=600", "KillWait=10",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    cluster = Slurm(folder, conf, procs)
    try:
        procs.append(subprocess.Popen(
            ["munged", "-F", "--force", f"--key-file={key}", f"--socket={folder}/munge.sock",
             f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log", f"--seed-file={folder}/munge.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        while not (folder / "munge.sock").exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, "munged did not start"
            time.sleep(0.05)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(ctld_port, procs[-1], timeout=30)
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while cluster.run("sinfo", "-h", "-o", "%t").strip() != "idle":
            assert time.monotonic() < deadline, f"the node is not idle: {cluster.run('sinfo')}"
            time.sleep(0.25)
    except BaseException:
        cluster.stop()
        raise
    return cluster
