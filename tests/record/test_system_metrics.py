"""system.jsonl: samples of the training process tree and the machine, off the training thread; the same
values in TensorBoard and SwanLab under system/; peaks and means in summary.json and report_draft.md;
why there is no GPU part in meta.json; every node of a multi-node run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from support.readers import WITH_SWANLAB, swanlab_runs, swanlab_scalars, tensorboard_scalars
from support.sync import free_port
from support.trainers import wait_for_run_files

from lightning_track import RunLayout, RunLogger
from lightning_track.derived.system import system_report_line, system_summary
from lightning_track.run.system import NVIDIA_DRIVER_PATHS, SystemSampler, gpu_unavailable_reason
from lightning_track.training.demo import DemoDataModule, DemoModule

NVML, NO_GPU_REASON = gpu_unavailable_reason()
SCRIPT = Path(__file__).with_name("system_script.py")


class Slow(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        time.sleep(0.05)


def fit(logger: RunLogger, steps: int = 30) -> None:
    trainer = L.Trainer(max_steps=steps, logger=logger, callbacks=[Slow()], log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        limit_val_batches=0, num_sanity_val_steps=0)
    try:
        trainer.fit(DemoModule(max_steps=steps), datamodule=DemoDataModule(n_train=512, n_val=32))
    finally:
        wait_for_run_files(trainer)  # the viewers' files and the plot are finished after fit returns


def samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sampler_measures_the_process_tree_and_the_machine() -> None:
    child = subprocess.Popen([sys.executable, "-c", "x = bytearray(200 * 2**20); import time; time.sleep(30)"])
    try:
        time.sleep(1.0)
        sampler = SystemSampler(os.getpid())
        busy = time.process_time() + 0.3
        while time.process_time() < busy:  # a third of a second of work for this process
            pass
        metrics = sampler.sample()
    finally:
        child.kill()
        child.wait()
    assert metrics["system/proc_rss_gb"] > 0.2  # the child's 200 MiB is part of the tree
    assert metrics["system/proc_cpu_percent"] > 10
    assert 0 <= metrics["system/cpu_percent"] <= 100 and 0 < metrics["system/memory_percent"] < 100
    assert metrics["system/memory_used_gb"] > 0
    assert {"system/disk_read_mb_s", "system/net_recv_mb_s"} <= set(metrics)
    if NVML is None:  # no GPU here: the GPU part is absent and the reason said once
        assert not any(key.startswith("system/gpu") for key in metrics) and sampler.gpu_note == NO_GPU_REASON
        assert "NVML" in sampler.gpu_note or "nvidia-ml-py" in sampler.gpu_note


@pytest.mark.skipif(NVML is None, reason=f"no GPU: {NO_GPU_REASON}")
def test_gpu_part_per_device_when_nvml_is_there() -> None:
    metrics = SystemSampler(os.getpid()).sample()
    count = NVML.nvmlDeviceGetCount()
    for i in range(count):
        assert 0 <= metrics[f"system/gpu{i}/utilization_percent"] <= 100
        assert 0 < metrics[f"system/gpu{i}/memory_total_gb"] and metrics[f"system/gpu{i}/memory_used_gb"] >= 0
        assert f"system/gpu{i}/proc_memory_gb" in metrics and f"system/gpu{i}/temperature_c" in metrics


def test_summary_and_report_line_from_the_samples(tmp_path: Path) -> None:
    lines = [{"time": 1.0 + i, "step": i, "node": 0, "metrics": {
        "system/proc_rss_gb": 1.0 + i, "system/proc_cpu_percent": 100.0 * i, "system/cpu_percent": 50.0,
        "system/gpu0/utilization_percent": 90.0, "system/gpu0/memory_used_gb": 10.0 + i,
        "system/gpu0/memory_total_gb": 80.0}} for i in range(3)]
    lines.append({"time": 2.0, "step": 1, "node": 1, "metrics": {"system/proc_rss_gb": 7.5}})
    (tmp_path / "system.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:3]))
    (tmp_path / "system.node1.jsonl").write_text(json.dumps(lines[3]) + "\n")
    summary = system_summary(tmp_path)
    assert summary["samples"] == 4 and summary["nodes"] == 2
    assert summary["peak"]["proc_rss_gb"] == 3.0 and summary["peak"]["node1/proc_rss_gb"] == 7.5
    assert summary["peak"]["gpu0/memory_used_gb"] == 12.0 and summary["mean"]["gpu0/utilization_percent"] == 90.0
    assert summary["mean"]["proc_cpu_percent"] == 100.0 and summary["gpu_memory_total_gb"] == {"gpu0": 80.0}
    line = system_report_line(summary)
    assert "peak RSS 3.00 GB" in line and "gpu0 mean util 90 %, peak memory 12.0/80 GB" in line
    assert "2 nodes" in line
    assert system_summary(tmp_path / "nothing") is None and system_report_line(None) is None


@pytest.mark.parametrize("sink_process", [True, False])
def test_a_fit_samples_into_system_jsonl_and_every_format(tmp_path: Path, sink_process: bool) -> None:
    logger = RunLogger("d", "m", root=tmp_path, system_interval=0.2, sink_process=sink_process, sinks=WITH_SWANLAB)
    fit(logger)
    run = RunLayout(logger.run_dir)
    lines = samples(run.system_jsonl)
    assert len(lines) >= 4, lines
    assert all(line["node"] == 0 and isinstance(line["time"], float) for line in lines)
    steps = [line["step"] for line in lines]
    assert steps == sorted(steps) and 0 <= steps[0] and steps[-1] <= 30
    assert all(line["metrics"]["system/proc_rss_gb"] > 0.05 for line in lines)  # torch is loaded: well over 50 MB
    meta = json.loads(run.meta_json.read_text())["system_metrics"]
    assert meta["interval_s"] == 0.2
    if NVML is None:
        assert meta["gpu"] == NO_GPU_REASON
    summary = json.loads(run.summary_json.read_text())["system"]
    assert summary["samples"] == len(lines) and summary["peak"]["proc_rss_gb"] == max(
        line["metrics"]["system/proc_rss_gb"] for line in lines)
    assert "System: peak RSS" in run.report_md.read_text()
    if sink_process:  # the sink host hands the samples to TensorBoard and SwanLab too
        tb = tensorboard_scalars(run.tensorboard_dir)["system/proc_rss_gb"]
        assert [(s, pytest.approx(v)) for s, v, _ in tb] == [(line["step"], line["metrics"]["system/proc_rss_gb"])
                                                             for line in lines]
        swan = swanlab_scalars(swanlab_runs(run.swanlab_dir)[0])["system/proc_cpu_percent"]
        assert swan and {s for s, _ in swan} <= set(steps)


def test_system_interval_zero_samples_nothing(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, system_interval=0, sinks=())
    fit(logger, steps=5)
    assert not RunLayout(logger.run_dir).system_jsonl.exists()
    assert "system_metrics" not in json.loads(RunLayout(logger.run_dir).meta_json.read_text())
    with pytest.raises(ValueError, match="system_interval"):
        RunLogger("d", "m", root=tmp_path, system_interval=-1)


@pytest.mark.slow
def test_two_nodes_each_sample_their_own_machine(tmp_path: Path) -> None:
    """torchrun --nnodes=2 on one machine: node 0's samples in system.jsonl (by the sink host), node 1's
    local rank 0 in system.node1.jsonl."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_TRACK_")}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                               f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
                               str(SCRIPT), str(tmp_path), "ddp-nodes"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for rank in (0, 1)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    (run,) = RunLayout.list_runs(tmp_path)
    head, other = samples(run.system_jsonl), samples(run.run_dir / "system.node1.jsonl")
    assert head and other
    assert {line["node"] for line in head} == {0} and {line["node"] for line in other} == {1}
    assert all(line["metrics"]["system/proc_rss_gb"] > 0.05 for line in head + other)
    assert max(line["step"] for line in other) > 0  # node 1 knows the training step too
    summary = json.loads(run.summary_json.read_text())["system"]
    assert summary["nodes"] == 2 and "node1/proc_rss_gb" in summary["peak"]


@pytest.mark.parametrize("sink_process", [True, False])
def test_a_run_shorter_than_the_interval_has_a_first_and_a_last_sample(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      sink_process: bool) -> None:
    from lightning_track.cli.lt import main

    logger = RunLogger("d", "m", root=tmp_path, sinks=("tensorboard",), system_interval=60, console=False,
                       sink_process=sink_process)
    fit(logger, steps=40)
    run = RunLayout(logger.run_dir)
    lines = samples(run.system_jsonl)
    assert len(lines) == 2 and lines[0]["time"] < lines[1]["time"]  # at the start and at the end
    assert lines[-1]["step"] == 40 and all(line["metrics"]["system/proc_rss_gb"] > 0.05 for line in lines)
    system = json.loads(run.summary_json.read_text())["system"]
    assert system["samples"] == 2 and system["peak"]["proc_rss_gb"] == max(
        line["metrics"]["system/proc_rss_gb"] for line in lines)
    if sink_process:  # the sink host's samples reach TensorBoard too
        assert [s for s, _, _ in tensorboard_scalars(run.tensorboard_dir)["system/proc_rss_gb"]] == [
            line["step"] for line in lines]
    capsys.readouterr()
    assert main(["show", run.name, "--root", str(tmp_path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert "system" in shown and any(line.strip().startswith("peak") and "proc_rss_gb" in line for line in shown), shown


@pytest.mark.skipif(not sys.platform.startswith("linux") or any(os.path.exists(p) for p in NVIDIA_DRIVER_PATHS),
                    reason="an NVIDIA driver is there: NVML is asked")
def test_without_an_nvidia_driver_pynvml_is_not_even_imported() -> None:
    """The sink host and the capture thread each ask; on a machine with no driver the answer costs nothing."""
    out = subprocess.run([sys.executable, "-c", "import sys; from lightning_track.run.system import "
                          "gpu_unavailable_reason as g; nvml, why = g(); print(nvml, 'pynvml' in sys.modules); "
                          "print(why)"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    first, why = out.stdout.splitlines()
    assert first == "None False"
    assert why.startswith("NVML is not available (no NVIDIA driver") and "/proc/driver/nvidia" in why
