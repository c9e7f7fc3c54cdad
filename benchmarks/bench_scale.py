"""Many runs: ``lt ls`` and ``load_runs`` through the catalog beside a plain read of every run's files.

    python benchmarks/bench_scale.py [--runs 10000] [--changed 0.01] [--repeats 1]
        [--mlflow measure|skip|build|only] [--out benchmarks/results/scale.md]

Synthetic runs of real sizes, made here (summary ~1.5 KiB, meta, a 25-key config.yaml, a short
metrics.jsonl): the files a listing reads. Measured, each ``lt ls`` a fresh process as a person types it:

1. ``lt ls`` first look (empty cache: every run read, the catalog written), again (nothing changed),
   after ``--changed`` of the runs got a new ``summary.json`` (a heartbeat), and ``lt ls -f`` on a config
   value (first look at the configs, again, after ``--changed`` of the runs changed);
2. the anchor in the same run, alternated with each measurement: the same ``lt ls`` with the catalog off
   (the code path before it: every folder listed, every summary/meta read, configs through the config cache);
3. ``load_runs`` in one process: its kept frame used (nothing changed), through the catalog alone (the kept
   frame off: the code before it), after ``--changed`` of the runs changed (the frame built and kept again),
   each beside ``catalog=False``;
4. memory (``--memory``): the tracemalloc peak of ``lt ls --json`` and of an ``lt-sync`` pass (local to local:
   nothing changed; ``full``, every file listed; 1% of the runs changed; with ``--memory-ssh`` also pulled from
   the tests' private sshd, nothing changed) in fresh processes, at a tenth of ``--runs`` and at ``--runs``.
5. MLflow's ``search_runs`` over the same runs in its SQLite store (the anchor the issue names; where MLflow is
   installed, ``--mlflow skip`` to leave it out): the newest 50, every run (records, and pandas), the
   config filter, each a fresh process beside ``lt ls`` / ``lt ls --json`` / ``load_runs`` / ``lt ls -f``
   (``scale_mlflow.py``), written as a section of its own. The store is built once and kept in the user's
   cache folder (``--mlflow build``: only that, e.g. in the background before a measurement; ``--mlflow
   only``: only this section, the catalog made warm first).

    python benchmarks/bench_scale.py --report [--runs 10000] [--repeats 1] [--before TREE]

``lt report`` of ``--runs`` such runs instead (each with 200 steps of ``val/loss``, the main metric: the
report's curves), a fresh process: with an empty cache (the catalog and the curves' histories written) and
again; beside ``lt ls`` of the same runs (the listing every report starts with) in the same run. Goal:
<= 5 s and <= 5 MB for 10,000 runs. Then the page opened in headless Chromium: every view must draw
(rows, the best view, one view per config key, the ticked runs' curves) with no error.

    python benchmarks/bench_scale.py --sources 100 [--runs 100] [--ssh 10] [--repeats 3]

Many sources into one mirror instead: ``--sources`` folders of ``--runs`` runs each (the same synthetic
runs), ``--ssh`` of them reached through a private sshd on 127.0.0.1 (the tests' one), all in one
``lt sync --from FILE MIRROR`` process: the first copy, then a pass where nothing changed (the goal:
<= 3 s for 100 x 100), beside one ``rsync -a`` of the same folders (local, the anchor), and ``lt ls
MIRROR`` right after the sync (its catalog kept warm by the sync) beside a first look with an empty cache.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from bench_runs import STATUSES, synthetic_summary  # the same synthetic runs as bench_runs.py (run as a script)
from installed import installed_env
from scale_mlflow import cached_store, measure, table

from lightning_track.folder.fileio import atomic_write_json, read_json
from lightning_track.query import catalog as catalog_module
from lightning_track.vocabulary import ENV_CACHE_DIR, iso_time

HERE = Path(__file__).resolve().parent
# lt with find_runs reading every run's files (the code path before the catalog; the config cache still on)
PLAIN_LT = ("import sys; from lightning_track.query import runs; f = runs.find_runs; "
            "runs.find_runs = lambda *a, **k: f(*a, **{**k, 'catalog': False}); "
            "from lightning_track.cli.lt import main; sys.exit(main(sys.argv[1:]))")
CONFIG = """data:
  batch_size: 32
  n_train: 4096
  path: /data/x.jsonl
  workers: 4
model:
  dropout: 0.1
  hidden: {hidden}
  layers: {layers}
  lr: {lr}
  name: mlp
optimizer:
  betas:
  - 0.9
  - 0.999
  name: adamw
  weight_decay: 0.01
seed: {seed}
trainer:
  accumulate: 1
  clip: 1.0
  max_steps: 300
  precision: bf16-mixed
"""


def make_runs(root: Path, count: int, val_steps: int = 0) -> None:
    """``count`` runs with the files a listing reads, of real sizes (written fast: templates, no YAML);
    ``val_steps``: that many steps of ``train/loss`` and ``val/loss`` in metrics.jsonl (a report's curves)."""
    rng = np.random.default_rng(0)
    start = 1.79e9
    lrs = 10.0 ** -rng.integers(2, 6, count)
    for i in range(count):
        t0 = start + i * 60
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(t0))
        dataset, method = f"ds{i % 5}", f"m{i % 7}"
        run = root / f"{dataset}_{method}_{stamp}"
        run.mkdir(parents=True)
        status = STATUSES[i % len(STATUSES)]
        metrics = {k: float(v) for k, v in zip(("train/loss", "val/loss", "val/acc", "train/acc", "lr"),
                                               rng.random(5), strict=True)}
        summary = synthetic_summary(run.name, dataset, method, status, t0, 1000 + i, metrics, i % 10 == 0)
        (run / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        (run / "meta.json").write_bytes(orjson.dumps(
            {"dataset": dataset, "method": method, "run_name": run.name, "created": iso_time(t0), "host": "gpu1",
             "pid": 1000 + i, "argv": ["train.py", f"model.lr={lrs[i]}"],
             "versions": {"python": "3.11", "torch": "2.13.0"}}, option=orjson.OPT_INDENT_2))
        (run / "config.yaml").write_text(CONFIG.format(hidden=32 + i % 480, layers=1 + i % 7, lr=float(lrs[i]),
                                                       seed=i))
        if val_steps:
            floor = metrics["val/loss"]
            curve = floor + np.exp(-np.arange(val_steps) / (val_steps / 4)) * (1 + lrs[i] * 1e3)
            (run / "metrics.jsonl").write_bytes(b"".join(orjson.dumps({"step": s * 10, "time": t0 + s, "metrics": {
                "train/loss": float(v * 1.1), "val/loss": float(v)}}) + b"\n" for s, v in enumerate(curve, 1)))
            continue
        (run / "metrics.jsonl").write_bytes(b"".join(orjson.dumps({"step": s, "time": t0 + s, "metrics": {
            "train/loss": 1.0 / s}}) + b"\n" for s in range(1, 11)))


def change(root: Path, fraction: float) -> int:
    """A new heartbeat in ``fraction`` of the runs' ``summary.json`` (replaced atomically, as a live run does)."""
    runs = sorted(root.iterdir())
    step = max(1, round(1 / fraction)) if fraction else 0
    picked = runs[::step] if step else []
    for run in picked:
        summary = read_json(run / "summary.json")
        summary["heartbeat"] = iso_time()
        atomic_write_json(run / "summary.json", summary)
    return len(picked)


LAST_CPU = [0.0]  # user + system CPU of the last fresh() process or _timed() call
LAST_RSS = [0.0]  # the peak resident memory (MiB) of the last fresh() process


def fresh(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh process (its CPU seconds in LAST_CPU: steadier on a shared machine; its
    peak RSS in LAST_RSS, from the kernel's own accounting of that one process: os.wait4)."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        LAST_CPU[0] = usage.ru_utime + usage.ru_stime
        LAST_RSS[0] = usage.ru_maxrss / 1024
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}: {err.read().decode()[-500:]}")
    return elapsed


def best(repeats: int, fn) -> float:
    return min(fn() for _ in range(repeats))


def publish(out: Path, title: str, lines: list[str]) -> None:
    """A section's lines printed and written into ``out`` (:func:`write_first`)."""
    text = "\n".join(lines)
    print(text)
    write_first(out, title, text)


def write_first(out: Path, title: str, text: str) -> None:
    """``text`` as the first section of ``out``; every section whose heading starts with ``title`` is dropped
    (this measurement's earlier runs), the others are kept in their order."""
    previous = out.read_text().split("\n## ") if out.exists() else []
    others = [part if part.startswith("## ") else "## " + part for part in previous
              if part.strip() and not ("## " + part.removeprefix("## ")).startswith(title)]
    out.write_text("\n".join([text, *others]).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01, help="the fraction of runs changed")
    parser.add_argument("--repeats", type=int, default=1, help="best of N (the machine is shared: keep it low)")
    parser.add_argument("--out", default=str(HERE / "results" / "scale.md"))
    parser.add_argument("--memory", action="store_true", help="also the memory peaks (makes a second, smaller "
                        "set of runs and mirrors both: minutes)")
    parser.add_argument("--only-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-ssh", action="store_true", help="with --memory: also lt-sync pulling the runs "
                        "from the tests' private sshd on 127.0.0.1")
    parser.add_argument("--sources", type=int, default=0,
                        help="many sources into one mirror instead: this many folders of --runs runs each")
    parser.add_argument("--ssh", type=int, default=10, help="with --sources: how many go through sshd on 127.0.0.1")
    parser.add_argument("--report", action="store_true", help="lt report of --runs runs instead")
    parser.add_argument("--before", help="with --report: also the code in this folder (an earlier commit), alternated")
    parser.add_argument("--mlflow", choices=("measure", "skip", "build", "only"),
                        default="measure" if importlib.util.find_spec("mlflow") else "skip",
                        help="MLflow's search_runs beside (default where MLflow is installed); build: only build "
                        "and cache its store of these runs; only: only the MLflow section")
    args = parser.parse_args()
    if args.sources:
        return many_sources(args)
    if args.report:
        return report(args)
    if args.only_memory:
        tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        try:
            print("\n".join(memory_lines(tmp, args.runs, ssh=args.memory_ssh)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        root = tmp / "runs"
        started = time.perf_counter()
        make_runs(root, args.runs)
        made_s = time.perf_counter() - started
        if args.mlflow != "skip":
            generator = [inspect.getsource(make_runs), CONFIG, inspect.getsource(synthetic_summary), repr(STATUSES)]
            mlflow_uri, mlflow_built_s = cached_store(root, args.runs, generator)
            if args.mlflow == "build":
                print(f"MLflow store of {args.runs:,} runs: {mlflow_uri}")
                shutil.rmtree(tmp, ignore_errors=True)
                return
        time.sleep(catalog_module.RACY_S + 0.5)  # settled: a first look keeps every run
        cache, plain_cache = tmp / "cache", tmp / "plain-cache"
        env = installed_env({**os.environ, "PYTHONWARNINGS": "ignore", ENV_CACHE_DIR: str(cache)})
        plain_env = {**env, ENV_CACHE_DIR: str(plain_cache)}
        lt = [sys.executable, "-m", "lightning_track.cli.lt", "ls", str(root)]
        before = [sys.executable, "-c", PLAIN_LT, "ls", str(root)]  # the same command, the catalog off
        bare = best(args.repeats, lambda: fresh([sys.executable, "-c", "pass"], env))
        if args.mlflow == "only":  # the catalog warm (configs kept too), as the rows beside it elsewhere
            for cmd in (lt, lt, [*lt, "-f", "model.lr<1e-3"]):
                fresh(cmd, env)
                time.sleep(catalog_module.RACY_S + 0.5)
            os.environ[ENV_CACHE_DIR] = str(cache)
            mlflow_section(args, root, env, mlflow_uri, mlflow_built_s)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        rows: list[tuple[str, float, float, float, float, float, float]] = []

        def pair(what: str, ours, anchor) -> None:  # alternated, best of each: the machine's load hits both
            times = []
            for _ in range(args.repeats):
                ours_wall = ours()
                ours_cpu, ours_rss = LAST_CPU[0], LAST_RSS[0]
                times.append((ours_wall, ours_cpu, anchor(), LAST_CPU[0], ours_rss, LAST_RSS[0]))
            rows.append((what, *(min(t[i] for t in times) for i in range(4)), *(max(t[i] for t in times)
                                                                                 for i in (4, 5))))

        def empty(path: Path) -> Path:
            shutil.rmtree(path, ignore_errors=True)
            return path

        pair("lt ls, first look (empty cache: every run read, the catalog written)",
             lambda: (empty(cache), fresh(lt, env))[1], lambda: (empty(plain_cache), fresh(before, plain_env))[1])
        time.sleep(catalog_module.RACY_S + 0.5)
        fresh(lt, env)
        pair("lt ls, again (nothing changed)", lambda: fresh(lt, env), lambda: fresh(before, plain_env))
        def after_change(command: list[str]) -> float:
            change(root, args.changed)
            return fresh(command, env)

        pair(f"lt ls, {args.changed:.0%} of the runs changed just before", lambda: after_change(lt),
             lambda: fresh(before, plain_env))
        time.sleep(catalog_module.RACY_S + 0.5)
        fresh(lt, env)  # the changed runs kept
        flt = [*lt, "-f", "model.lr<1e-3"]
        flt_before = [*before, "-f", "model.lr<1e-3"]
        pair("lt ls -f 'model.lr<1e-3', first look (empty cache: every config.yaml parsed)",
             lambda: (empty(cache), fresh(flt, env))[1], lambda: (empty(plain_cache), fresh(flt_before, plain_env))[1])
        time.sleep(catalog_module.RACY_S + 0.5)
        fresh(flt, env)
        fresh(flt_before, plain_env)
        pair("lt ls -f 'model.lr<1e-3', again (configs from the catalog / the config cache)",
             lambda: fresh(flt, env), lambda: fresh(flt_before, plain_env))

        pair(f"lt ls -f 'model.lr<1e-3', {args.changed:.0%} of the runs changed just before",
             lambda: after_change(flt), lambda: fresh(flt_before, plain_env))
        time.sleep(catalog_module.RACY_S + 0.5)
        fresh(flt, env)  # the changed runs and their configs kept
        fresh([*lt, "--json"], env)  # the records a table's look leaves out kept (a -f look no longer keeps them)
        pair("lt ls --json, again", lambda: fresh([*lt, "--json"], env), lambda: fresh([*before, "--json"], plain_env))

        os.environ[ENV_CACHE_DIR] = str(cache)
        from lightning_track.query.frames import load_runs

        load_runs(root)  # pandas imported, the catalog warm
        load_runs(root, catalog=False)
        pair("load_runs (a process that already imported pandas), nothing changed",
             lambda: _timed(lambda: load_runs(root)), lambda: _timed(lambda: load_runs(root, catalog=False)))
        pair("load_runs through the catalog alone (its kept frame off: the code before it), nothing changed",
             lambda: _timed(lambda: without_kept_frame(load_runs, root)),
             lambda: _timed(lambda: load_runs(root, catalog=False)))

        def changed_load() -> float:
            change(root, args.changed)
            return _timed(lambda: load_runs(root))

        pair(f"load_runs, {args.changed:.0%} of the runs changed just before (the frame built and kept again)",
             changed_load, lambda: _timed(lambda: load_runs(root, catalog=False)))
        catalog_mb = sum(p.stat().st_size for p in cache.glob("catalog-*")) / 1e6
        memory = memory_lines(tmp, args.runs, root, args.memory_ssh) if args.memory else []
        if args.mlflow == "measure":
            mlflow_section(args, root, env, mlflow_uri, mlflow_built_s)
        else:
            memory += ["", "- MLflow search_runs: not measured (`--mlflow skip`, or MLflow not installed)"]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_results(args, rows, bare, catalog_mb, made_s, memory)
    shutil.rmtree(tmp, ignore_errors=True)  # after the results: 100,000 folders take minutes to delete


# a fresh process with tracemalloc on from its first import; its peak (bytes) as the last line on stderr
PEAK = ("import sys, tracemalloc; tracemalloc.start(); {body}; "
        "print(tracemalloc.get_traced_memory()[1], file=sys.stderr)")
LS_BODY = "from lightning_track.cli.lt import main; main(sys.argv[1:])"
SYNC_BODY = ("from lightning_track.sync import SyncOptions, sync_once; "
             "sync_once(sys.argv[1], sys.argv[2], SyncOptions(state_path=sys.argv[3], full=sys.argv[4] == 'full'))")


def peak_mb(body: str, argv: list[str], env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", PEAK.format(body=body), *argv], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"memory run failed: {done.stderr[-500:]}")
    return int(done.stderr.strip().splitlines()[-1]) / 2**20


def memory_lines(tmp: Path, runs: int, made: Path | None = None, ssh: bool = False) -> list[str]:
    """The peaks at a tenth of ``runs`` and at ``runs``: flat in the number of runs means the two agree. With
    ``ssh``: also the same runs pulled from the tests' private sshd on 127.0.0.1 (one more set of mirrors)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", ENV_CACHE_DIR: str(tmp / "mem-cache")}
    sizes = [max(1, runs // 10), runs]
    table: dict[str, list[float]] = {}
    server = _memory_sshd(tmp, env) if ssh else None
    try:
        for count in sizes:
            root = made if made is not None and count == runs else tmp / f"mem-runs-{count}"
            if not root.exists():
                make_runs(root, count)
            for folder, _, names in os.walk(root, topdown=False):  # ended long ago: settled for lt-sync
                for name in names:
                    os.utime(os.path.join(folder, name), (time.time() - 86400,) * 2)
                os.utime(folder, (time.time() - 86400,) * 2)
            mirror, state = tmp / f"mem-mirror-{count}", str(tmp / f"mem-state-{count}.jsonl")
            ls = ["ls", str(root), "--json"]
            time.sleep(catalog_module.RACY_S + 0.5)  # utime changed the folders' ctimes: settled only now
            peak_mb(LS_BODY, ls, env)  # the catalog warm
            table.setdefault("lt ls --json (catalog warm)", []).append(peak_mb(LS_BODY, ls, env))
            sync = [str(root), str(mirror), state]
            peak_mb(SYNC_BODY, [*sync, "quick"], env)  # the first copy
            time.sleep(1.1)
            peak_mb(SYNC_BODY, [*sync, "quick"], env)  # finds the runs settled
            table.setdefault("lt-sync local, nothing changed (settled runs skipped)", []).append(
                peak_mb(SYNC_BODY, [*sync, "quick"], env))
            table.setdefault("lt-sync local, nothing changed, --full (every file listed)", []).append(
                peak_mb(SYNC_BODY, [*sync, "full"], env))
            if server is not None:
                pulled = [f"ssh://{server.user}@127.0.0.1:{server.port}{root}", str(tmp / f"mem-pulled-{count}"),
                          str(tmp / f"mem-pull-{count}.jsonl")]
                peak_mb(SYNC_BODY, [*pulled, "quick"], env)
                time.sleep(1.1)
                peak_mb(SYNC_BODY, [*pulled, "quick"], env)
                table.setdefault("lt-sync pull over SSH (sshd on 127.0.0.1), nothing changed", []).append(
                    peak_mb(SYNC_BODY, [*pulled, "quick"], env))
            change(root, 0.01)
            table.setdefault("lt-sync local, 1% of the runs changed just before", []).append(
                peak_mb(SYNC_BODY, [*sync, "quick"], env))
    finally:
        if server is not None:
            server.stop()
    lines = [f"| memory: tracemalloc peak, fresh process | {sizes[0]:,} runs | {sizes[1]:,} runs "
             "| per 1,000 runs more |",
             "| --- | --- | --- | --- |"]
    for what, (small, big) in table.items():
        slope = (big - small) / (sizes[1] - sizes[0]) * 1000
        lines.append(f"| {what} | {small:.1f} MiB | {big:.1f} MiB | {slope:.2f} MiB |")
    return ["", *lines]


def _memory_sshd(tmp: Path, env: dict[str, str]) -> Any:
    """The tests' private sshd, its client's ``~/.ssh`` in a HOME of its own (this process's and ``env``'s)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from support.sync import make_sshd, write_ssh_home

    env["HOME"] = os.environ["HOME"] = str(tmp / "mem-home")
    (tmp / "mem-home").mkdir(exist_ok=True)
    server = make_sshd(tmp / "mem-sshd")
    server.start()
    write_ssh_home(server)
    return server


def mlflow_section(args: argparse.Namespace, root: Path, env: dict[str, str], uri: str,
                   built_s: float | None) -> None:
    """MLflow's search_runs beside lt ls / load_runs (``scale_mlflow.py``): a section of its own in ``--out``."""
    from lightning_track.query.frames import load_runs

    small = int((load_runs(root)["config.model.lr"] < 1e-3).sum())  # what the filter must find
    load_before = os.getloadavg()
    rows = measure(root, args.runs, uri, env, args.repeats, fresh, LAST_CPU)
    found = [theirs[5] for _, _, theirs in rows[1:4]]
    if found != [args.runs, args.runs, small]:
        raise SystemExit(f"MLflow's answers do not match the runs: {found} (expected {args.runs}, {args.runs}, "
                         f"{small})")
    title = f"## {args.runs:,} runs: MLflow's search_runs beside lt ls and load_runs"
    load = ", ".join(f"{x:.1f}" for x in (*load_before, *os.getloadavg()))
    lines = [f"{title} ({date.today().isoformat()})", *table(rows, args.runs, uri, built_s, small), "",
             f"- load average (1, 5, 15 min) before / after these rows: {load} on {os.cpu_count()} cores", "",
             f"Command: `python benchmarks/bench_scale.py --runs {args.runs} --repeats {args.repeats} --mlflow "
             f"{args.mlflow}`. Machine: 2 cores shared with other work (best of {args.repeats}; CPU time is the "
             f"steadier figure), Python {platform.python_version()}.", ""]
    publish(Path(args.out), title, lines)


def write_results(args: argparse.Namespace, rows: list[tuple[Any, ...]], bare: float,
                  catalog_mb: float, made_s: float, memory: list[str] = ()) -> None:
    title = f"## {args.runs:,} runs: lt ls and load_runs through the catalog"
    lines = [f"{title} ({date.today().isoformat()})", "",
             "| what | through the catalog: wall / CPU | plain read (the anchor, same run): wall / CPU "
             "| plain / catalog (CPU) | peak RSS: catalog / plain |",
             "| --- | --- | --- | --- | --- |"]
    for what, ours, ours_cpu, anchor, anchor_cpu, *rss in rows:
        ratio = f"{anchor_cpu / ours_cpu:.2f}x" if anchor_cpu and ours_cpu else "-"
        peak = f"{rss[0]:.0f} / {rss[1]:.0f} MiB" if rss and rss[0] else "-"  # load_runs: in this process
        lines.append(f"| {what}, {args.runs:,} runs | {ours:.2f} s / {ours_cpu:.2f} s | {anchor:.2f} s / "
                     f"{anchor_cpu:.2f} s | {ratio} | {peak} |")
    lines += memory
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"- a bare `python -c pass` takes {bare:.2f} s here (part of every fresh-process time); "
              f"load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} cores",
              f"- the catalog: {catalog_mb:.1f} MB for {args.runs:,} runs; making the runs took {made_s:.0f} s",
              "- plain read = the same command with the catalog off (every folder listed, every summary/meta "
              "read; config.yaml through the config cache, as before the catalog), alternated with ours", "",
              f"Command: `python benchmarks/bench_scale.py --runs {args.runs} --changed {args.changed} "
              f"--repeats {args.repeats}{' --memory' if args.memory else ''} --mlflow {args.mlflow}`. "
              f"Machine: 2 cores shared with other work (best of {args.repeats}; "
              f"absolute times are noisy, the ratios are what to compare), Python {platform.python_version()}.", ""]
    publish(Path(args.out), title, lines)  # one section per number of runs: this one replaced


def without_kept_frame(load_runs, root: Path) -> None:
    """``load_runs`` as before its kept frame (``query/frame_cache.py``): through the catalog alone."""
    from lightning_track.query import frames

    kept = frames.cached_frame, frames.keep_frame
    frames.cached_frame = frames.keep_frame = lambda *args: None
    try:
        load_runs(root)
    finally:
        frames.cached_frame, frames.keep_frame = kept


def _timed(fn) -> float:
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    LAST_CPU[0] = time.process_time() - cpu
    LAST_RSS[0] = 0.0  # in this process: not its own peak
    return time.perf_counter() - started


def report(args: argparse.Namespace) -> None:
    """``lt report`` of ``--runs`` runs: time and size, fresh process; the page drawn in headless Chromium.
    ``--before TREE``: the same commands with another checkout of the code first on the path (an earlier
    commit: ``git archive``), alternated with this one, each with its own cache."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    here = os.getcwd()
    os.chdir(tmp)  # ``python -m`` puts the working folder first on the path: PYTHONPATH must pick the tree
    try:
        root = tmp / "runs"
        make_runs(root, args.runs, val_steps=200)
        time.sleep(catalog_module.RACY_S + 0.5)
        html = tmp / "report.html"
        lt = [sys.executable, "-m", "lightning_track.cli.lt"]
        trees = {"ours": str(HERE.parent), **({"before": str(Path(args.before).resolve())} if args.before else {})}
        envs = {name: {**os.environ, "PYTHONWARNINGS": "ignore", ENV_CACHE_DIR: str(tmp / f"cache-{name}"),
                       "PYTHONPATH": tree} for name, tree in trees.items()}
        first = {name: timed_cpu([*lt, "report", str(root), "-o", str(html)], env) for name, env in envs.items()}
        time.sleep(catalog_module.RACY_S + 0.5)
        for env in envs.values():
            fresh([*lt, "ls", str(root)], env)  # every entry settled in the catalog
        anchor = timed_cpu([*lt, "ls", str(root)], {**envs["ours"], ENV_CACHE_DIR: str(tmp / "ls-cache")})
        rows = [("lt report, first look (empty cache: catalog and curves' histories written)", first, anchor)]
        again: dict[str, list[tuple[float, float]]] = {name: [] for name in envs}
        anchors = []
        for _ in range(args.repeats):
            for name, env in envs.items():
                again[name].append(timed_cpu([*lt, "report", str(root), "-o", str(html)], env))
            anchors.append(timed_cpu([*lt, "ls", str(root)], envs["ours"]))
        rows.append(("lt report, again (nothing changed)", {n: min(t, key=lambda w: w[1]) for n, t in again.items()},
                     min(anchors, key=lambda t: t[1])))
        fresh([*lt, "report", str(root), "-o", str(html)], envs["ours"])
        size = html.stat().st_size / 1e6
        drawn, chromium_s = open_in_chromium(html, tmp / "profile")
        bare = fresh([sys.executable, "-c", "pass"], envs["ours"])
    finally:
        os.chdir(here)
        shutil.rmtree(tmp, ignore_errors=True)
    title = f"## lt report of {args.runs:,} runs"
    before = " | before (--before): wall / CPU" if args.before else ""
    lines = [f"{title} ({date.today().isoformat()})", "",
             f"| what | lt report (fresh process): wall / CPU{before} | lt ls of the same runs, same cache state "
             "(anchor): wall / CPU | goal |", "| --- | --- | --- | --- |" + (" --- |" if args.before else "")]
    lines += [f"| {what} | " + " | ".join(f"{t[0]:.2f} s / {t[1]:.2f} s" for t in ours.values())
              + f" | {theirs[0]:.2f} s / {theirs[1]:.2f} s | <= 5 s |" for what, ours, theirs in rows]
    lines += ["", f"- the HTML: {size:.2f} MB (goal <= 5 MB); headless Chromium opened it in {chromium_s:.1f} s "
              f"(wall, with --virtual-time-budget) and drew: {drawn}",
              f"- a bare `python -c pass` takes {bare:.2f} s here", "",
              f"Command: `python benchmarks/bench_scale.py --report --runs {args.runs} --repeats {args.repeats}"
              + (" --before TREE" if args.before else "") + "`. "
              f"Machine: 2 cores shared with other work (load average {os.getloadavg()[0]:.0f} at the end; the CPU "
              f"time is the steadier figure), Python {platform.python_version()}.", ""]
    publish(Path(args.out), title, lines)


def open_in_chromium(html: Path, profile: Path) -> tuple[str, float]:
    """The page in headless Chromium: what its script says it drew (``data-many-*`` on <body>), and how long."""
    import re

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "not measured (no chromium)", 0.0
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--window-size=1280,2000", "--dump-dom", html.as_uri()]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    body = re.search(r"<body[^>]*>", done.stdout)
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body[0])) if body else {}
    if "error" in attrs or "many-rows" not in attrs:
        raise SystemExit(f"the report did not draw in Chromium: {attrs or done.stderr[-500:]}")
    return (f"{attrs['many-rows']} rows ({attrs['many-listed']} listed), the best view {attrs.get('many-best')} "
            f"points, {attrs.get('many-config')} config views, {attrs.get('many-curves')} curves"), seconds


def timed_cpu(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, user + system CPU) of one fresh process: on a shared machine the CPU time is the steadier one."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = fresh(cmd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def many_sources(args: argparse.Namespace) -> None:
    """``--sources`` x ``--runs`` runs from local folders and sshd endpoints into one mirror, one process."""
    sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' private sshd
    from support.sync import make_sshd, write_ssh_home

    tmp = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    server = None
    try:
        started = time.perf_counter()
        roots = [tmp / "servers" / f"gpu{i:03d}" / "runs" for i in range(args.sources)]
        for root in roots:
            make_runs(root, args.runs)
        made_s = time.perf_counter() - started
        files = sum(len(os.listdir(run)) for root in roots for run in root.iterdir())
        env = {**os.environ, "PYTHONWARNINGS": "ignore", ENV_CACHE_DIR: str(tmp / "cache"),
               "HOME": str(tmp / "home"), "XDG_STATE_HOME": str(tmp / "state")}
        specs = [str(root) for root in roots]
        if args.ssh:
            os.environ["HOME"] = env["HOME"]
            (tmp / "home").mkdir()
            server = make_sshd(tmp / "sshd")
            server.start()
            write_ssh_home(server)
            specs[: args.ssh] = [f"127.0.0.1:{server.port}:{root}" for root in roots[: args.ssh]]
        listing = tmp / "sources.txt"
        listing.write_text("".join(f"{spec}\n" for spec in specs))
        mirror, anchor = tmp / "mirror", tmp / "rsync-mirror"
        sync = [sys.executable, "-m", "lightning_track.cli.sync", "-q", "--from", str(listing), str(mirror)]
        rsync = ["rsync", "-a", f"{tmp / 'servers'}/", f"{anchor}/"]
        rows = [("first copy", timed_cpu(sync, env), timed_cpu(rsync, env))]
        again = [(timed_cpu(sync, env), timed_cpu(rsync, env)) for _ in range(args.repeats)]
        rows.append(("nothing changed", min(t for t, _ in again), min(t for _, t in again)))
        time.sleep(catalog_module.RACY_S + 0.5)  # a reader takes entries this old
        ls = [sys.executable, "-m", "lightning_track.cli.lt", "ls", str(mirror)]
        warm = min(fresh(ls, env) for _ in range(args.repeats))
        cold = fresh(ls, {**env, ENV_CACHE_DIR: str(tmp / "empty-cache")})
        bare = fresh([sys.executable, "-c", "pass"], env)
    finally:
        if server is not None:
            server.stop()
    title = f"## {args.sources} sources x {args.runs} runs into one mirror: lt sync --from FILE"
    lines = [f"{title} ({date.today().isoformat()})", "",
             f"{args.sources * args.runs:,} runs, {files:,} files; {args.ssh} of the sources through sshd on "
             "127.0.0.1 (one connection each), the others local folders; one `lt sync` process (8 sources at once).",
             "", "| what | lt sync (fresh process): wall / CPU | rsync -a of the same folders, local (anchor): "
             "wall / CPU |", "| --- | --- | --- |"]
    lines += [f"| {what} | {ours[0]:.2f} s / {ours[1]:.2f} s | {theirs[0]:.2f} s / {theirs[1]:.2f} s |"
              for what, ours, theirs in rows]
    lines += ["", f"- `lt ls MIRROR` right after the sync (its catalog kept warm by the sync): {warm:.2f} s; the same "
              f"with an empty cache (every run's files read): {cold:.2f} s",
              f"- a bare `python -c pass` takes {bare:.2f} s here; making the runs took {made_s:.0f} s", "",
              f"Command: `python benchmarks/bench_scale.py --sources {args.sources} --runs {args.runs} "
              f"--ssh {args.ssh} --repeats {args.repeats}`. Machine: 2 cores shared with other work "
              f"(best of {args.repeats}), Python {platform.python_version()}; load average "
              f"{os.getloadavg()[0]:.0f} at the end.", ""]
    publish(Path(args.out), title, lines)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
