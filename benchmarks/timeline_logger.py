"""Whole-process timeline of a fresh 2,000-step fit, ``none`` beside the default RunLogger: where the wall goes.

    python benchmarks/timeline_logger.py [--rounds 3] [--steps 2000] [--kinds none,RunLogger] [--tree NAME=PATH]

Each fit runs as ``bench_logger.py --fit-one`` does (a 20-step warm-up fit, then the timed one), in a fresh process
with the stamps below, under ``strace -f -e trace=execve,exit_group`` for the helper processes' lives (filtered
with seccomp, so only those two calls stop). Printed per fit, in seconds from the parent's spawn: the phases
(imports, warm-up, logger construction, fit start, first step, fit end, ``logger.wait()``, main's end, the
threads' joins at exit, the last atexit hook, the process's exit as its parent sees it), every full (generation
2) garbage collection with its thread and duration, each helper process's start and exit, and the CPU of the
training process (its own) and of everything (its children too).

``TIMELINE_OBJECTS=1``: each stamp also says how many objects the oldest generation holds and CPython's
``long_lived_pending`` against its threshold (a full collection runs at the next young one once it is reached);
``TIMELINE_YOUNG=1``: every collection after the warm-up, with the frames that triggered it. Both slow the process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from installed import installed_env

HERE = Path(__file__).resolve().parent


def collector_state() -> tuple[int, int] | None:
    """CPython's ``(long_lived_total, long_lived_pending)``: a full collection runs at the next young one once
    pending reaches total / 4. Read from the interpreter's GC state, which holds them right after ``callbacks``."""
    import ctypes
    import gc

    get = ctypes.pythonapi.PyInterpreterState_Get
    get.restype = ctypes.c_void_p
    words = (ctypes.c_ssize_t * 20000).from_address(get())
    for i in range(20000):
        if words[i] == id(gc.callbacks):
            pair = (ctypes.c_ssize_t * 2).from_address(get() + (i + 1) * ctypes.sizeof(ctypes.c_ssize_t))
            return pair[0], pair[1]
    return None


def child(kind: str, steps: int, out: str, t0: float) -> None:
    """The fresh process: bench_logger's fit, stamped."""
    import atexit
    import gc
    import threading

    stamps: list[tuple[str, float]] = [("interpreter up", time.time() - t0)]
    census = os.environ.get("TIMELINE_OBJECTS") == "1"  # gen-2 sizes beside the stamps (slows every stamp)
    collections: list[dict] = []
    started: dict[int, float] = {}

    promotions: list[tuple[float, str, int]] = []
    pending = [0, 0]  # objects promoted into gen 2 since the last full collection (CPython's long_lived_pending)

    young: list[str] = []  # with TIMELINE_YOUNG=1: every collection after the warm-up, where it was triggered
    watch_young = os.environ.get("TIMELINE_YOUNG") == "1"

    def on_gc(phase: str, info: dict) -> None:
        if watch_young and phase == "start" and stamps[-1][0].startswith(("warm-up", "logger", "fit", "on_", "first",
                                                                          "step", "threads", "main")):
            frame, where = sys._getframe(1), []
            while frame is not None and len(where) < 4:
                where.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}:{frame.f_code.co_name}")
                frame = frame.f_back
            young.append(f"gen {info['generation']} at {time.time() - t0:.3f} on {threading.current_thread().name}"
                         f" <- {' <- '.join(where)}")
        if census and info["generation"] == 1:
            if phase == "start":
                pending[1] = len(gc.get_objects(0)) + len(gc.get_objects(1))
            else:
                pending[0] += pending[1] - info["collected"]
                promotions.append((round(time.time() - t0, 3), threading.current_thread().name,
                                   pending[1] - info["collected"]))
            return
        if info["generation"] != 2:
            return
        pending[0] = 0
        ident = threading.get_ident()
        if phase == "start":
            started[ident] = time.perf_counter()
            return
        took = time.perf_counter() - started.pop(ident, time.perf_counter())
        collections.append({"at": round(time.time() - t0, 3), "took": round(took, 3),
                            "thread": threading.current_thread().name, "collected": info["collected"],
                            "objects": len(gc.get_objects(2)) if took > 0 else 0})

    gc.callbacks.append(on_gc)

    def last() -> None:  # registered first: runs last of the atexit hooks
        stamp("last atexit hook")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        Path(out).write_text(json.dumps({"stamps": stamps, "gc": collections, "promotions": promotions, "young": young,
                                         "cpu_self": usage.ru_utime + usage.ru_stime}))

    def census_text() -> str:
        if not census:
            return ""
        total, pending = collector_state() or (0, 0)
        return f" [gen 2: {len(gc.get_objects(2))}; pending {pending} of {total // 4} ({total // 4 - pending:+d} left)]"

    def stamp(label: str) -> None:
        stamps.append((f"{label}{f' {census_text()}' if census else ''}", time.time() - t0))

    atexit.register(last)
    original_shutdown = threading._shutdown  # type: ignore[attr-defined]

    def shutdown() -> None:
        stamp("threads joined: start")
        original_shutdown()
        stamp("threads joined")

    threading._shutdown = shutdown  # type: ignore[attr-defined]
    sys.path.insert(0, str(HERE))
    import bench_logger

    stamp("bench_logger imported")
    import lightning as L
    import torch

    stamp("torch + lightning imported")
    bench_logger.fit_once("none", 20)
    stamp("warm-up fit done")
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_track.training.toy import tiny_mlp

    class Stamps(L.Callback):
        def on_train_start(self, trainer, module) -> None:  # noqa: ANN001
            stamp("on_train_start")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if batch_idx == 0:
                stamp("first step done")
            elif census and batch_idx % 250 == 0:
                stamp(f"step {batch_idx}")

        def on_train_end(self, trainer, module) -> None:  # noqa: ANN001
            stamp("on_train_end")

    torch.manual_seed(0)
    x = torch.randn(steps * 8, 32)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        stamp("logger: construct")
        logger = bench_logger.make_loggers(kind, Path(tmp))
        stamp("logger constructed")
        trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                            default_root_dir=tmp, callbacks=[Stamps()])
        stamp("fit called")
        trainer.fit(tiny_mlp(), data)
        stamp("fit returned")
        if hasattr(logger, "wait"):
            logger.wait()
            stamp("logger.wait() returned")
    stamp("main's end")



def helpers(trace: str, root_pid: int, t0: float) -> list[str]:
    """The processes' lives from strace's lines: (pid, what it ran, start, exit)."""
    lives: dict[int, dict] = {}
    for line in trace.splitlines():
        match = re.match(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?(\d+\.\d+) (.*)$", line)
        if not match:
            continue
        pid = int(match.group(1) or match.group(2) or root_pid)
        at, rest = float(match.group(3)) - t0, match.group(4)
        life = lives.setdefault(pid, {})
        if rest.startswith("execve(") and "= 0" in rest:
            args = re.findall(r'"([^"]*)"', rest)
            what = " ".join(a for a in args[1:4])
            life.setdefault("start", at)
            life["what"] = what[:70]
        elif rest.startswith("exit_group("):
            life["exit"] = at
    out = []
    for pid, life in lives.items():
        if "start" in life:
            out.append(f"    pid {pid}: {life.get('what', '?'):70s} start {life['start']:6.3f}  exit "
                       f"{life.get('exit', float('nan')):6.3f}")
    return out


def parent(args: argparse.Namespace) -> None:
    trees = {"this": HERE.parent}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        trees[name] = Path(path).resolve()
    envs = {name: installed_env(None, path, path / "benchmarks" / "bench_logger.py") for name, path in trees.items()}
    print(f"load average before: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for round_ in range(args.rounds):
        for kind in args.kinds.split(","):
            for name, tree in trees.items():
                if kind == "none" and name != "this":
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    out, trace = Path(tmp) / "stamps.json", Path(tmp) / "trace"
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t0 = time.time()
                    command = [sys.executable, __file__, "--child", kind, "--steps", str(args.steps),
                               "--out", str(out), "--t0", repr(t0)]
                    if not args.no_strace:
                        command = ["strace", "-f", "-qq", "--seccomp-bpf", "-ttt", "-e", "trace=execve,exit_group",
                                   "-o", str(trace), *command]
                    env = dict(envs[name])
                    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(HERE), env.get("PYTHONPATH", "")])
                    subprocess.run(command, check=True, env=env, capture_output=True)  # as ab_logger: to EOF
                    wall = time.time() - t0
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    got = json.loads(out.read_text())
                    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    print(f"round {round_ + 1}: {kind} @ {name}: process wall {wall:.3f} s, CPU all {cpu:.3f} s, "
                          f"training process {got['cpu_self']:.3f} s, load {os.getloadavg()[0]:.2f}")
                    for label, at in got["stamps"]:
                        print(f"    {at:7.3f}  {label}")
                    print(f"    {wall:7.3f}  process exit (seen by the parent)")
                    for c in got["gc"]:
                        print(f"    gen-2 collection at {c['at']:.3f} on {c['thread']}: {c['took'] * 1000:.0f} ms, "
                              f"{c['collected']} collected, {c['objects']} objects in gen 2 after")
                    for line in got["young"]:
                        print(f"    {line}")
                    for at, thread, count in got["promotions"]:
                        if count >= args.promotions:
                            print(f"    gen-1 collection at {at:.3f} on {thread}: ~{count} promoted to gen 2")
                    if not args.no_strace:
                        lines = helpers(trace.read_text(), 0, t0)
                        print("\n".join(lines))
                    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--kinds", default="none,RunLogger")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--promotions", type=int, default=200, help="with TIMELINE_OBJECTS=1: print gen-1 "
                        "collections that promoted at least this many objects")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.out, args.t0)
    else:
        parent(args)


if __name__ == "__main__":
    main()
