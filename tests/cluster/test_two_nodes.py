"""Multi-node runs on a real two-node Slurm cluster (two network namespaces, two slurmd: tests/support/cluster2.py):
one run folder for every rank of every node, and ``lt show`` naming the nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cluster import FIT_SCRIPT
from support.processes import script_env

from lightning_track.folder.fileio import read_json
from lightning_track.folder.layout import RunLayout
from lightning_track.folder.records import read_metrics
from lightning_track.run.meta import expand_nodelist


def test_expand_nodelist_reads_slurms_host_lists() -> None:
    assert expand_nodelist("n[1-2]") == ["n1", "n2"]
    assert expand_nodelist("gpu[01-03,07],cpu1") == ["gpu01", "gpu02", "gpu03", "gpu07", "cpu1"]
    assert expand_nodelist("a,b[9-10]x") == ["a", "b9x", "b10x"]
    assert expand_nodelist("solo") == ["solo"]


def _sbatch_script(folder: Path, body: str) -> Path:
    script = folder / "job.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH -J fit2\n#SBATCH -o {folder}/job-%j.out\n#SBATCH --chdir={folder}\n"
                      f"{body}\n")
    return script


TORCHRUN = ("sh -c 'exec {python} -m torch.distributed.run --nnodes=2 --nproc_per_node=1 --node_rank=$SLURM_NODEID "
            "--master_addr=n1 --master_port=29511 \"$@\"' torchrun")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_two_node_ddp_fit_under_srun_and_torchrun_writes_one_run_folder(two_nodes, tmp_path: Path) -> None:
    """``srun torchrun ... train.py``: torchrun on each node, one rank each. (``srun python train.py``, each task a
    rank, is the requeue tests' script: its completed second attempt is checked the same way there.)"""
    runs = tmp_path / "runs"
    runs.mkdir()
    python = TORCHRUN.format(python=sys.executable)
    script = _sbatch_script(tmp_path, f"srun -N2 --ntasks-per-node=1 {python} {FIT_SCRIPT} {runs} 12 "
                            "--strategy ddp --nodes 2 --every 6 --system-interval 0.5 --ready-at 1 --sleep 0.25")
    env = {**script_env(OMP_NUM_THREADS="1"), **two_nodes.env}
    job_id = two_nodes.sbatch(script, "-N2", "--ntasks-per-node=1", env=env)
    job = two_nodes.wait_ended(job_id, timeout=300)
    out = next(tmp_path.glob("job-*.out")).read_text()
    assert job["JobState"] == "COMPLETED", out[-4000:] + two_nodes.logs()
    (run,) = RunLayout.list_runs(runs)  # every rank of both nodes agreed on one folder
    summary = read_json(run.summary_json)
    assert summary["status"] == "completed" and summary["last_step"] == 12
    meta = read_json(run.meta_json)
    assert meta["slurm"]["nodes"] == ["n1", "n2"] and meta["host"] == "n1"
    assert (run.run_dir / "logs.rank1.txt").stat().st_size > 0  # rank 1's console, written on n2
    node1 = [line for line in (run.run_dir / "system.node1.jsonl").read_text().splitlines() if line]
    assert node1 and all('"node":1' in line.replace(" ", "") for line in node1)
    assert (run.run_dir / "system.jsonl").exists()
    shown = _lt_show(run.run_dir)
    assert "node 0: n1  system.jsonl" in shown and "node 1: n2  system.node1.jsonl" in shown, shown
    assert "ranks' consoles: logs.txt, logs.rank1.txt" in shown


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_pipeline_step_with_two_nodes_runs_one_ddp_fit_across_them(two_nodes, tmp_path: Path) -> None:
    """``lt run --pipeline --slurm`` with ``nodes: 2``: one job on both nodes, one rank each, one run folder."""
    import yaml

    train = Path(__file__).parent.parent / "pipeline" / "pipeline_train_script.py"
    root = tmp_path / "runs"
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"root": str(root), "steps": {"train": {
        "cmd": f"{sys.executable} {train} {root} --steps 12 --step-sleep 0.2 --nodes 2", "nodes": 2}}}))
    two_nodes.run(sys.executable, "-m", "lightning_track.cli.pipeline", "--pipeline", str(path), "--slurm",
                  env=script_env(OMP_NUM_THREADS="1"), cwd=tmp_path, timeout=120)
    pipeline_state = read_json(root / "exp.pipeline.json")
    job_id = pipeline_state["steps"]["train"]["slurm_job_id"]
    job = two_nodes.wait_ended(job_id, timeout=300)
    assert job["JobState"] == "COMPLETED" and job["NodeList"] == "n[1-2]", job
    (run,) = [p for p in root.iterdir() if p.name.startswith("toy_")]
    assert read_json(run / "summary.json")["status"] == "completed"
    assert read_json(run / "meta.json")["slurm"]["nodes"] == ["n1", "n2"]
    assert (run / "logs.rank1.txt").exists()
    assert "node 1: n2" in _lt_show(run)


def _wait_training(two_nodes, job_id: str, runs: Path, timeout: float = 180) -> None:
    """Until the fit wrote ``ready.txt`` (its steps are under way), then a second more of training."""
    deadline = time.monotonic() + timeout
    while not (runs / "ready.txt").exists():
        assert time.monotonic() < deadline, f"training did not start: {two_nodes.job(job_id)}"
        time.sleep(0.2)
    time.sleep(1.0)


def _lt_show(run_dir: Path) -> str:
    return subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", "show", str(run_dir)],
                          capture_output=True, text=True, env=script_env(), timeout=60).stdout


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_node_whose_processes_die_is_named_in_the_failure(two_nodes, tmp_path: Path) -> None:
    """SIGKILL of everything in node 2's namespace mid-fit (its slurmd and rank 1): rank 0's collective fails
    at once; the run says failed, and which node and rank stopped answering."""
    runs = tmp_path / "runs"
    runs.mkdir()
    script = _sbatch_script(tmp_path, f"srun -N2 --ntasks-per-node=1 {sys.executable} {FIT_SCRIPT} {runs} 400 "
                            "--strategy ddp --nodes 2 --every 1000 --system-interval 0.5 --ready-at 3 --sleep 0.2")
    job_id = two_nodes.sbatch(script, "-N2", "--ntasks-per-node=1", env={**script_env(OMP_NUM_THREADS="1")})
    try:
        _wait_training(two_nodes, job_id, runs)
        for pid in two_nodes.pids("n2"):  # the node dies: its slurmd, slurmstepd and rank 1
            os.kill(pid, signal.SIGKILL)
        (run,) = RunLayout.list_runs(runs)
        deadline = time.monotonic() + 120
        while read_json(run.summary_json).get("status") == "running":
            assert time.monotonic() < deadline, "rank 0 did not record the failure"
            time.sleep(0.5)
    finally:
        two_nodes.run("scancel", job_id, check=False)
    summary = read_json(run.summary_json)
    failure = summary["failure"]
    assert summary["status"] == "failed" and failure["rank"] == 0, summary
    assert "stopped answering: node 1 (n2, rank 1) nothing written for " in failure["reason"], failure
    assert [(lost["node"], lost["name"], lost["ranks"]) for lost in failure["lost"]] == [(1, "n2", [1])]
    assert "lost: node 1 (n2), ranks 1: nothing written for " in _lt_show(run.run_dir)
    two_nodes.start_node("n2")  # the node comes back and rejoins
    two_nodes.wait_idle(timeout=120)


REQUEUE_SCRIPT = """#!/bin/bash
#SBATCH -J fit2
#SBATCH -o {folder}/job-%j.out
#SBATCH --open-mode=append
#SBATCH --chdir={folder}
# a requeued job continues its run (at full speed: only the first attempt is cut mid-training); a failed
# attempt requeues the job (at most twice)
attempt="--sleep 0.2"
if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ]; then attempt="--resume"; fi
srun -N2 --ntasks-per-node=1 --kill-on-bad-exit=1 {python} {fit} {runs} 40 --strategy ddp --nodes 2 --every 5 \\
    --system-interval 0.5 --ready-at 8 {extra} $attempt
rc=$?
if [ $rc -ne 0 ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt 2 ]; then scontrol requeue "$SLURM_JOB_ID"; sleep 60; fi
exit $rc
"""


def _wait_failed_attempt(run_dir: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        summary = read_json(run_dir / "summary.json")
        if summary.get("status") != "running":
            return summary
        assert time.monotonic() < deadline, "the run did not record the failure"
        time.sleep(0.5)


def _requeued_fit(two_nodes, tmp_path: Path, cut: str, extra: str = "") -> tuple[dict, dict, list, Path]:
    """Start a requeueable 2-node fit, ``cut`` node 2 at step 8 (``kill``: every process in its namespace;
    ``partition``: its link down), bring it back once rank 0 recorded the failure, and let the job finish."""
    runs = tmp_path / "runs"
    runs.mkdir()
    script = tmp_path / "job.sh"
    script.write_text(REQUEUE_SCRIPT.format(folder=tmp_path, python=sys.executable, fit=FIT_SCRIPT, runs=runs,
                                            extra=extra))
    submitted = time.monotonic()
    job_id = two_nodes.sbatch(script, "-N2", "--ntasks-per-node=1", "--requeue", env=script_env(OMP_NUM_THREADS="1"))
    try:
        _wait_training(two_nodes, job_id, runs)
        cut_at = time.monotonic()
        if cut == "kill":
            for pid in two_nodes.pids("n2"):
                os.kill(pid, signal.SIGKILL)
        else:
            two_nodes.link("n2", up=False)
        (run,) = RunLayout.list_runs(runs)
        first = _wait_failed_attempt(run.run_dir)
        first["_seconds_to_fail"] = time.monotonic() - cut_at
        # Slurm declares the node down (SlurmdTimeout) and requeues the job (--requeue: NODE_FAIL); only then
        # does the node come back, as a real one would after a reboot or a repaired link
        deadline = time.monotonic() + 120
        while not two_nodes.node_states().get("n2", "").startswith("down"):
            assert time.monotonic() < deadline, f"node 2 never went down: {two_nodes.node_states()}"
            time.sleep(0.25)
        down_at = time.monotonic()
        if cut == "kill":
            two_nodes.start_node("n2")
        else:
            two_nodes.link("n2", up=True)
        job = two_nodes.wait_ended(job_id, timeout=300)
        # where the test's time goes (shown with -s)
        print(f"{cut}: training {cut_at - submitted:.1f} s, failed {first['_seconds_to_fail']:.1f} s, node down "
              f"{down_at - cut_at:.1f} s after the cut, requeued attempt {time.monotonic() - down_at:.1f} s")
    finally:
        two_nodes.run("scancel", job_id, check=False)
    return first, job, read_metrics(run.run_dir / "metrics.jsonl"), run.run_dir


def _assert_resumed_once(first: dict, job: dict, records: list, run_dir: Path) -> None:
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", job
    (run,) = RunLayout.list_runs(run_dir.parent)  # the requeued job continued the same folder
    summary = read_json(run.summary_json)
    assert summary["status"] == "completed" and summary["last_step"] == 40
    first_attempt, second = summary["attempts"]
    assert first_attempt["status"] == "failed" and second["status"] == "completed"
    assert second["from_step"] % 5 == 0 and second["from_step"] >= 5  # from the last checkpoint
    steps = [r.step for r in records if "train/loss" in r.metrics]
    assert steps == list(range(1, 41))  # every step exactly once, across the lost attempt and its resume
    assert read_json(run.run_dir / "meta.attempt-2.json")["slurm"]["nodes"] == ["n1", "n2"]
    assert (run.run_dir / "logs.rank1.txt").stat().st_size > 0  # rank 1's console, written on n2
    assert (run.run_dir / "system.node1.jsonl").stat().st_size > 0  # node 2's machine samples
    shown = _lt_show(run.run_dir)
    assert "node 0: n1  system.jsonl" in shown and "node 1: n2  system.node1.jsonl" in shown, shown


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_a_lost_node_ends_in_a_requeued_job_that_resumes_the_run(two_nodes, tmp_path: Path) -> None:
    first, job, records, run_dir = _requeued_fit(two_nodes, tmp_path, "kill")
    print(f"lost node: failed {first['_seconds_to_fail']:.1f} s after the kill: {first['failure']['reason']}")
    assert "stopped answering: node 1 (n2, rank 1)" in first["failure"]["reason"], first["failure"]
    _assert_resumed_once(first, job, records, run_dir)
    two_nodes.wait_idle(timeout=60)  # node 2 rejoined


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_a_partitioned_node_is_judged_stalled_stopped_and_the_job_resumes(two_nodes, tmp_path: Path) -> None:
    """Node 2's link goes down mid-run: no error anywhere, rank 0 just waits in a collective. HealthGuard's
    "auto" stall rule (floor 8 s) records the stall and ends the ranks; Slurm requeues; the run resumes."""
    first, job, records, run_dir = _requeued_fit(two_nodes, tmp_path, "partition", extra="--stall-floor 8")
    failure = first["failure"]
    print(f"partition: failed {first['_seconds_to_fail']:.1f} s after the cut: {failure['reason']}")
    assert failure["check"] == "stall" and failure["reason"].startswith("stalled: no step for "), failure
    assert "(waiting in " in failure["reason"]  # the collective the training thread was stuck in
    assert first["_seconds_to_fail"] < 2 * 8 + 2  # judged within twice the limit (plus a heartbeat)
    _assert_resumed_once(first, job, records, run_dir)
    two_nodes.wait_idle(timeout=60)


@pytest.mark.slow
def test_the_cluster_is_torn_down_completely(tmp_path: Path) -> None:
    from support import cluster2

    if cluster2.missing():
        pytest.skip(cluster2.missing())
    cluster = cluster2.start(tmp_path)
    assert cluster.run("srun", "-N2", "--ntasks-per-node=1", "hostname").split() in (["n1", "n2"], ["n2", "n1"])
    daemons = [proc.pid for proc in cluster.procs.values()]
    cluster.stop()
    assert cluster2.left_over(cluster.prefix) == []  # namespaces gone, and with them the veths and the bridge
    assert all(not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
               for pid in daemons)
    assert Path("/etc/hosts").read_text().count("10.77.0.") == 0  # names lived in the nodes' own hosts file
