"""Console capture beside its anchors, in the same run: a fit that prints ~10,000 lines a second for ~10 s.

    python benchmarks/bench_console.py [--steps 2000] [--lines 50] [--repeats 3] [--out benchmarks/results/console.md]

Each variant is a fresh process running the same fit (the demo MLP, ``RunLogger(sinks=())``) whose
callback prints ``--lines`` lines after every step, with stdout and stderr going to a file (the
"terminal"):

* ``no capture``: ``RunLogger(console=False)`` (the floor);
* ``RunLogger console``: ``RunLogger(console=True)`` (fd-level capture, relay process, ``logs.txt``);
* ``tee``: ``RunLogger(console=False)`` with the shell piping stdout+stderr through ``tee logs.txt``;
* ``SwanLab console proxy``: ``RunLogger(console=False)`` plus an offline ``swanlab.init`` with its
  terminal proxy on (``proxy_type="all"``), when SwanLab is installed.

Reported: the fit's wall time and the training process's CPU time (best of the repeats, interleaved: on a
shared 2-core machine other processes' load only adds) and their overhead over ``no capture``; CPU seconds
of the helper (the relay process, or tee); lines that reached the file and the terminal vs lines printed.
The fit runs one torch thread, so a helper on the second core does not make torch's threads wait.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, os, sys, time
    import lightning as L
    from lightning_track import RunLogger
    from lightning_track.training.demo import DemoDataModule, DemoModule

    mode, root, steps, per_step, result = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    pad = "x" * 60
    import torch
    torch.set_num_threads(1)

    class Printer(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            step = trainer.global_step
            for j in range(per_step):
                print(f"line {step:06d} {j:03d} {pad}")

    if mode == "swanlab":
        import swanlab
        os.environ["SWANLAB_ROOT"] = os.path.join(root, "swanlab_home")
        swanlab.init(project="bench", mode="offline", log_dir=os.path.join(root, "swanlog"),
                     settings=swanlab.Settings(terminal=swanlab.Settings.Terminal(proxy_type="all")))
    logger = RunLogger("bench", "console", root=root, sinks=(), console=(mode == "capture"))
    trainer = L.Trainer(max_steps=steps, logger=logger, callbacks=[Printer()], log_every_n_steps=50,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(DemoModule(max_steps=steps), datamodule=DemoDataModule(n_train=4096, n_val=32))
    sys.stdout.flush()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    helper_cpu = None
    if mode == "capture":
        import resource
        from lightning_track.run.console import active_capture
        capture = active_capture()
        capture.stop()
        capture._relay.wait()  # the relay is this process's only child here (no sink host: sinks=())
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        helper_cpu = usage.ru_utime + usage.ru_stime
    if mode == "swanlab":
        swanlab.finish()
    with open(result, "w") as handle:
        json.dump({"wall": wall, "cpu": cpu, "helper_cpu": helper_cpu, "run_dir": str(logger.run_dir)}, handle)
""")

VARIANTS = ["no capture", "RunLogger console", "tee", "SwanLab console proxy"]


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(b"line " in raw for raw in handle)


def swanlab_console_lines(path: Path) -> int:
    """Console lines in a SwanLab run file, read with SwanLab's own reader up to the first record it
    cannot read (a corrupt record ends the count: those lines are not recoverable)."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    reader, count = DataStoreReader(), 0
    reader.open(str(path))
    try:
        while (data := reader.scan()) is not None:
            record = Record()
            record.ParseFromString(data)
            count += record.WhichOneof("record_type") == "log" and record.log.line.startswith("line ")
    except Exception as exc:  # noqa: BLE001 - SwanLab's DataStoreError: what it wrote is unreadable from here
        print(f"SwanLab's reader stopped after {count} console lines: {exc}", flush=True)
    finally:
        reader.close()
    return count


def run_variant(name: str, work: Path, steps: int, per_step: int) -> dict:
    script = work / "child.py"
    script.write_text(CHILD)
    root = work / "runs"
    result = work / "result.json"
    terminal = work / "terminal.txt"
    mode = {"no capture": "plain", "RunLogger console": "capture", "tee": "plain",
            "SwanLab console proxy": "swanlab"}[name]
    args = [sys.executable, str(script), mode, str(root), str(steps), str(per_step), str(result)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_TRACK_")}
    env.update(SWANLAB_MODE="offline", PYTHONWARNINGS="ignore")
    helper_cpu = None
    if name == "tee":
        timing = work / "tee_cpu.txt"
        command = (" ".join(f"'{a}'" for a in args) + f" 2>&1 | /usr/bin/time -f '%U %S' -o '{timing}' "
                   f"tee '{work / 'logs.txt'}' > '{terminal}'")
        subprocess.run(["sh", "-c", command], check=True, env=env, timeout=900)
        helper_cpu = sum(float(v) for v in timing.read_text().split()[-2:])  # tee's own user + system
    else:
        with open(terminal, "wb") as out:
            subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=True, env=env, timeout=900)
    data = json.loads(result.read_text())
    printed = steps * per_step
    if name == "RunLogger console":
        arrived = count_lines(Path(data["run_dir"]) / "logs.txt")
    elif name == "tee":
        arrived = count_lines(work / "logs.txt")
    elif name == "SwanLab console proxy":  # its console lines are records in the run file
        arrived = sum(swanlab_console_lines(f) for f in (root / "swanlog").glob("run-*/run-*.swanlab"))
    else:
        arrived = None
    seen = count_lines(terminal)
    return {"wall": data["wall"], "cpu": data["cpu"], "arrived": arrived, "printed": printed, "terminal": seen,
            "helper_cpu": data["helper_cpu"] if helper_cpu is None else helper_cpu}


def sampler_cost(samples: int = 50) -> str:
    """CPU of one system-metrics sample of this process's tree and the machine (the sink host's work)."""
    import time

    from lightning_track.run.system import SystemSampler

    sampler = SystemSampler(os.getpid())
    start = time.process_time()
    for _ in range(samples):
        sampler.sample()
    per_sample = (time.process_time() - start) / samples
    return (f"System metrics sampler: {per_sample * 1e3:.1f} ms CPU per sample ({len(os.listdir('/proc'))} entries in "
            f"/proc) = {per_sample / 10 * 100:.3f} % of one core at the default 10 s interval (goal ≤ 1 %); nothing "
            "runs on the training thread.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=50, help="lines printed after each step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "console.md"))
    args = parser.parse_args()
    try:
        import swanlab  # noqa: F401
        variants = VARIANTS
    except ImportError:
        variants = VARIANTS[:-1]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for name in variants:  # interleaved: drift on a shared machine hits every variant alike
            if name == "SwanLab console proxy" and repeat:
                continue  # slow, and far from the others: once is enough
            with tempfile.TemporaryDirectory() as tmp:
                results[name].append(run_variant(name, Path(tmp), args.steps, args.lines))
            last = results[name][-1]
            print(f"[{repeat + 1}/{args.repeats}] {name}: fit {last['wall']:.2f} s, file {last['arrived']}, "
                  f"terminal {last['terminal']} of {last['printed']} lines", flush=True)
    floor = min(r["wall"] for r in results["no capture"])
    cpu_floor = min(r["cpu"] for r in results["no capture"])
    printed = args.steps * args.lines
    rows = [f"| variant | fit wall s (best of {args.repeats}) | wall vs no capture | training CPU s "
            "| CPU vs no capture | lines/s printed | helper CPU s | lines in the file / printed "
            "| lines on the terminal |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in variants:
        wall = min(r["wall"] for r in results[name])
        cpu = min(r["cpu"] for r in results[name])
        helper = [r["helper_cpu"] for r in results[name] if r["helper_cpu"] is not None]
        arrived = [r["arrived"] for r in results[name] if r["arrived"] is not None]
        rows.append(f"| {name} | {wall:.2f} | {100 * (wall / floor - 1):+.1f} % | {cpu:.2f} | "
                    f"{100 * (cpu / cpu_floor - 1):+.1f} % | {printed / wall:,.0f} | "
                    + (f"{statistics.median(helper):.2f} | " if helper else "– | ")
                    + (f"{min(arrived):,} / {printed:,} | " if arrived else "– | ")
                    + f"{min(r['terminal'] for r in results[name]):,} |")
    text = "\n".join([
        "## Console capture (issue 15: logs.txt)", "",
        f"`python benchmarks/bench_console.py --steps {args.steps} --lines {args.lines} --repeats {args.repeats}`"
        " — a fit printing after every step, stdout+stderr to a file; each variant a fresh process, interleaved.",
        "", *rows, "",
        "Goal: RunLogger console ≤ +3 % wall over no capture, lines in logs.txt = lines printed. "
        "SwanLab runs once (its proxy is slow); its lines are counted with SwanLab's own reader.",
        "", sampler_cost(),
    ])
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
