"""MLflow's ``search_runs`` over the same runs as ``bench_scale.py``: the anchor the issue names for 100,000 runs.

The runs go into an MLflow SQLite store (``sqlite:///``, the local store MLflow recommends) through
``mlflow_anchor.py`` (MLflow's own store API), once: the store is kept in the user's cache folder under a key
of the runs' generator, their number and MLflow's version, so a second benchmark reuses it (100,000 runs take
tens of minutes to import). Each query is a fresh process, as a user runs it, timed from outside (wall and
CPU, imports counted) and inside (the query alone, after its imports), ours and MLflow's alternated.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
# python -c TIMER IMPORTS OPEN QUERY OUT [ARG ...]: the imports, opening the store and the query (it sets
# ``rows``) timed apart
TIMER = """import json, sys, time
argv, t = sys.argv[5:], [(time.perf_counter(), time.process_time())]
for code in sys.argv[1:4]:
    exec(code)
    t.append((time.perf_counter(), time.process_time()))
open(sys.argv[4], "w").write(json.dumps({"phases": [[b[0] - a[0], b[1] - a[1]] for a, b in zip(t, t[1:])],
                                         "rows": int(rows)}))
"""
LT = "from lightning_track.cli.lt import main"
CLIENT = "import mlflow"
PANDAS = "import mlflow, pandas"
# MLflow's store made (SQLAlchemy engine, schema check) and kept for the URI, as a first call does
OPEN = "mlflow.set_tracking_uri(argv[0]); client = mlflow.MlflowClient(); client.get_experiment(argv[1])"
ALL_PAGES = """token, rows = None, 0
while True:
    page = client.search_runs([argv[1]], max_results=50000, page_token=token)
    rows, token = rows + len(page), page.token
    if not token:
        break
"""
FRAME = "frame = mlflow.search_runs([argv[1]], max_results=int(argv[2]))\n"
FILTERED = FRAME + ("hit = frame[frame['params.model.lr'].astype(float) < 1e-3].sort_values('start_time', "
                    "ascending=False); shown = hit.head(50); rows = len(hit)")
NEWEST = "order_by=['attributes.start_time DESC'], max_results=50"
# (what, ours: imports, query; MLflow: imports, query): ours opens its catalog in the query, MLflow in OPEN
QUERIES = [
    ("newest 50 runs: `lt ls` (its table) / `MlflowClient.search_runs(order_by start_time DESC, max_results=50)`",
     LT, "rows = 0; main(['ls', argv[0]])", CLIENT,
     f"rows = len(client.search_runs([argv[1]], {NEWEST}))"),
    ("every run as records: `lt ls --json` / `MlflowClient.search_runs`, every page (50,000 a page, its maximum)",
     LT, "rows = 0; main(['ls', argv[0], '--json'])", CLIENT, ALL_PAGES),
    ("every run as a frame: `load_runs` / `mlflow.search_runs` (pandas)",
     "import pandas; from lightning_track import load_runs", "rows = len(load_runs(argv[0]))", PANDAS,
     FRAME + "rows = len(frame)"),
    ("`lt ls -f 'model.lr<1e-3'` / `mlflow.search_runs` (pandas), then `params.model.lr` as float < 1e-3, newest 50",
     LT, "rows = 0; main(['ls', argv[0], '-f', 'model.lr<1e-3'])", PANDAS, FILTERED),
    ("`lt ls -f 'model.lr<1e-3'` / `MlflowClient.search_runs(filter_string=\"params.`model.lr` = '0.0001'\", "
     "newest 50)`: MLflow's own filter, equality only",
     LT, "rows = 0; main(['ls', argv[0], '-f', 'model.lr<1e-3'])", CLIENT,
     "rows = len(client.search_runs([argv[1]], filter_string=\"params.`model.lr` = '0.0001'\", "
     f"{NEWEST}))"),
]


def mlflow_version() -> str:
    """MLflow's version without importing it (~1 s): the full package, or the skinny one installed here."""
    for name in ("mlflow", "mlflow-skinny"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightning_track-bench"


def store_path(count: int, generator: list[str]) -> Path:
    """Where the store of these runs is kept: keyed by their generator's code, their number, MLflow's version
    and the code that makes a run's MLflow entities (any of them changed: a new store)."""
    import inspect

    import mlflow_anchor

    making = [inspect.getsource(f) for f in (mlflow_anchor.run_entities, mlflow_anchor.flatten, mlflow_anchor.ms)]
    key = hashlib.sha256("\0".join([str(count), mlflow_version(), *generator, *making, repr(mlflow_anchor.STATUS)])
                         .encode()).hexdigest()[:12]
    return cache_folder() / f"mlflow-{count}runs-{key}.db"


def cached_store(root: Path, count: int, generator: list[str]) -> tuple[str, float | None]:
    """The store of ``root``'s runs (built, or resumed, if not cached) as a URI; the build's seconds or None."""
    db = store_path(count, generator)
    if db.exists():
        return f"sqlite:///{db}", None
    partial = db.with_suffix(".partial.db")
    print(f"MLflow store: building {db} (resumes if stopped; progress below)", file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("".join(f"{run}\n" for run in sorted(root.iterdir())))
        listing.flush()
        done = subprocess.run([sys.executable, str(HERE / "mlflow_anchor.py"), "build", f"sqlite:///{partial}",
                               listing.name], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise SystemExit(f"the MLflow store was not built (exit {done.returncode})")
    with sqlite3.connect(partial) as con:
        (runs,) = con.execute("SELECT count(*) FROM runs").fetchone()
    if runs != count:
        raise SystemExit(f"the MLflow store holds {runs} runs, not {count}: {partial}")
    os.replace(partial, db)
    return f"sqlite:///{db}", json.loads(done.stdout.splitlines()[-1])["build_s"]


def experiment(uri: str) -> str:
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as con:
        return str(con.execute("SELECT experiment_id FROM experiments WHERE name = 'bench'").fetchone()[0])


def measure(root: Path, count: int, uri: str, env: dict[str, str], repeats: int, fresh, last_cpu) -> list[tuple]:
    """Each query's best (of ``repeats``, ours and MLflow's alternated): (what, ours, MLflow), each
    (wall, CPU, wall after the imports, CPU after the imports, CPU opening the store, rows) of a fresh process."""
    exp = experiment(uri)
    out = Path(tempfile.mkdtemp(prefix="bench-mlflow-")) / "t.json"

    def once(imports: str, opening: str, query: str, *argv: str) -> tuple[float, ...]:
        wall = fresh([sys.executable, "-c", TIMER, imports, opening, query, str(out), *argv], env)
        inside = json.loads(out.read_text())
        (_, _), (open_wall, open_cpu), (query_wall, query_cpu) = inside["phases"]
        return wall, last_cpu[0], open_wall + query_wall, open_cpu + query_cpu, open_cpu, inside["rows"]

    rows = []
    for what, our_imports, our_query, their_imports, their_query in QUERIES:
        ours = (our_imports, "pass", our_query, str(root))
        theirs = (their_imports, OPEN, their_query, uri, exp, str(count))
        once(*ours)  # the page cache warm for both
        once(*theirs)
        pairs = [(once(*ours), once(*theirs)) for _ in range(repeats)]
        rows.append((what, *(tuple(min(p[side][i] for p in pairs) for i in range(6)) for side in (0, 1))))
        print(f"{what}: ours {rows[-1][1]}, MLflow {rows[-1][2]}", file=sys.stderr, flush=True)
    out.unlink(missing_ok=True)
    out.parent.rmdir()
    return rows


def table(rows: list[tuple], count: int, uri: str, built_s: float | None, lr_small: int) -> list[str]:
    lines = ["", f"MLflow {mlflow_version()} beside, the same {count:,} runs in its SQLite store "
             "(fresh processes alternated, best of each; CPU = user + system of the process):", "",
             "| query | ours: wall / CPU, fresh process (imports counted) | ours: wall / CPU after the imports "
             "| MLflow: wall / CPU, fresh process (imports counted) | MLflow: wall / CPU after the imports (CPU "
             "opening the store) | MLflow rows | MLflow / ours, CPU: whole process; after the imports |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for what, ours, theirs in rows:
        lines.append(f"| {what} | {ours[0]:.2f} s / {ours[1]:.2f} s | {ours[2]:.2f} s / {ours[3]:.2f} s | "
                     f"{theirs[0]:.2f} s / {theirs[1]:.2f} s | {theirs[2]:.2f} s / {theirs[3]:.2f} s "
                     f"({theirs[4]:.2f} s) | {theirs[5]:,} | {theirs[1] / ours[1]:.1f}x; {theirs[3] / ours[3]:.1f}x |")
    size = Path(uri.removeprefix("sqlite:///")).stat().st_size / 1e6
    built = (f"built in this run in {built_s / 60:.1f} min" if built_s is not None
             else "reused from the cache (built by an earlier run)")
    lines += ["", f"- the MLflow store: {size:.0f} MB, {built}: `{uri}`; one MLflow run per run folder through "
              "MLflow's store API (`create_run`, one `log_batch`, `update_run_info`): params = the flattened "
              "config.yaml + dataset, method (36); metrics = metrics.jsonl's history (10 steps of train/loss), "
              "the summary's final values (the latest metrics) and `best/<key>`; tags; start, end, status, name",
              "- after the imports = the seconds inside the process once its imports are done (the imports: "
              "`lightning_track.cli.lt` or pandas + `load_runs`; `mlflow`, pandas for its frame); MLflow's is "
              "split into opening its store (`MlflowClient().get_experiment`: SQLAlchemy engine, schema check) "
              "and the search; ours opens its catalog inside the query",
              f"- the filter: MLflow params are strings and its search refuses `<` on them (params allow `=`, "
              "`!=`, `LIKE`, `ILIKE`, `IS [NOT] NULL`); `params.\"model.lr\" < '0.001'` is not accepted, and a "
              "string order would be wrong anyway ('1e-05' > '0.001'). So the numeric filter is "
              f"`mlflow.search_runs` into pandas, then `astype(float) < 1e-3` ({lr_small:,} runs match, as "
              "`lt ls -f` finds); the equality row is MLflow's own server-side filter on one value, for scale"]
    return lines
