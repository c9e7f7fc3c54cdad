"""MLflow as the anchor of run queries: run folders imported into an MLflow store, its searches timed.

    python benchmarks/mlflow_anchor.py build STORE_URI LIST_FILE

Shared by ``bench_runs.py`` (its ``--mlflow-python``) and ``bench_scale.py`` (``scale_mlflow.py``): one
import of a run folder into MLflow, written once. Stdlib, PyYAML and MLflow only (no lightning_track): it
runs in whatever Python has MLflow, which may be MLflow's own virtual environment.

One MLflow run per run folder, through MLflow's own store API (``SqlAlchemyStore``, what ``MlflowClient``
calls for a ``sqlite:///`` URI: ``create_run``, one ``log_batch``, ``update_run_info``): params = the
flattened ``config.yaml`` plus dataset and method; metrics = ``metrics.jsonl``'s history and the summary's
final values (MLflow's latest metrics) plus ``best/<key>``; tags = the summary's tags; start, end, status
and name from ``summary.json``. A SQLite build goes on where an interrupted one stopped (runs found by name,
a half-written one completed).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "RUNNING"}
EXPERIMENT = "bench"


def ms(stamp: str | None) -> int | None:
    """An ISO time of summary.json as MLflow's milliseconds since the epoch."""
    from datetime import datetime

    return None if not stamp else int(datetime.fromisoformat(stamp).timestamp() * 1000)


def flatten(value: object, prefix: str = "") -> dict[str, str]:
    """A config as MLflow params: dotted keys, every value a string (MLflow keeps params as text)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(value)}


def run_entities(run: Path):
    """(summary, params, metrics, tags) of one run folder, as MLflow entities."""
    import yaml
    from mlflow.entities import Metric, Param, RunTag

    summary = json.loads((run / "summary.json").read_bytes())
    config = yaml.load((run / "config.yaml").read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    params = {"dataset": summary.get("dataset", ""), "method": summary.get("method", ""), **flatten(config or {})}
    end = ms(summary.get("end_time")) or ms(summary.get("heartbeat")) or 0
    metrics = []
    history = run / "metrics.jsonl"
    if history.exists():
        for line in history.read_bytes().splitlines():
            record = json.loads(line)
            metrics += [Metric(k, float(v), int(record["time"] * 1000), record["step"])
                        for k, v in record["metrics"].items()]
    metrics += [Metric(k, float(v["value"]), end, v["step"]) for k, v in summary.get("final", {}).items()]
    metrics += [Metric(f"best/{k}", float(v["value"]), end, v["step"]) for k, v in summary.get("best", {}).items()]
    tags = [RunTag(tag, "true") for tag in summary.get("tags", [])]
    return summary, [Param(k, v) for k, v in params.items()], metrics, tags


def experiment_id(store) -> str:
    found = store.get_experiment_by_name(EXPERIMENT)
    return found.experiment_id if found else store.create_experiment(EXPERIMENT)


def imported(db: Path) -> dict[str, tuple[str, bool, bool]]:
    """The runs an earlier, interrupted build wrote, by name: (run id, whole: its ``log_batch`` done, as the
    latest metrics are its last write; ended: a final status written). Read with sqlite3: no MLflow start."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        try:
            rows = con.execute("SELECT name, run_uuid, EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = "
                               "runs.run_uuid), status != 'RUNNING' FROM runs").fetchall()
        except sqlite3.OperationalError:  # the schema not made yet
            return {}
    return {name: (run_id, bool(whole), bool(ended)) for name, run_id, whole, ended in rows}


def unsynced_engine(uri: str) -> None:
    """MLflow's own engine for ``uri``, its connections with ``PRAGMA synchronous=OFF``: a commit a call is
    otherwise an fsync a call (~12 runs/s here). Per connection, not kept in the file: a search later reads
    the same file as any store; a build killed half-way goes on from the runs found by name."""
    import sqlalchemy
    from mlflow.store.db.utils import _make_parent_dirs_if_sqlite, create_sqlalchemy_engine
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    _make_parent_dirs_if_sqlite(uri)
    engine = create_sqlalchemy_engine(uri)
    sqlalchemy.event.listen(engine, "connect", lambda con, _: con.execute("PRAGMA synchronous=OFF"))
    SqlAlchemyStore._engine_map[uri] = engine


def build(uri: str, runs: list[Path], progress=print) -> float:
    """Every run of ``runs`` not yet in the store at ``uri`` imported; returns the seconds it took."""
    from mlflow.entities import RunStatus

    if uri.startswith("sqlite:///"):
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        db = Path(uri.removeprefix("sqlite:///"))
        found = imported(db)
        unsynced_engine(uri)
        store = SqlAlchemyStore(uri, (db.parent / "mlflow-artifacts").as_uri())
    else:  # MLflow's file store (a file:// URI), what bench_runs.py also measures
        from mlflow.store.tracking.file_store import FileStore

        found, store = {}, FileStore(uri)
    exp = experiment_id(store)
    # a run still RUNNING may be one whose status was not written yet, or a running run: its summary says
    todo = [run for run in runs if not all(found.get(run.name, ("", False, False))[1:])]
    started = last = time.perf_counter()
    for i, run in enumerate(todo, 1):
        summary, params, metrics, tags = run_entities(run)
        run_id, whole, ended = found.get(run.name, (None, False, False))
        if run_id is None:
            run_id = store.create_run(exp, "bench", ms(summary.get("start_time")), tags,
                                      summary.get("run_name", run.name)).info.run_id
        if not whole:  # again after an interrupted one: MLflow keeps equal params and skips equal metrics
            store.log_batch(run_id, metrics=metrics, params=params, tags=[])
        status = STATUS.get(summary.get("status", ""), "FINISHED")
        if status != "RUNNING" and not ended:
            store.update_run_info(run_id, RunStatus.from_string(status), ms(summary.get("end_time")), None)
        now = time.perf_counter()
        if now - last > 10 or i == len(todo):
            rate = i / (now - started)
            progress(f"MLflow store: {len(runs) - len(todo) + i:,} / {len(runs):,} runs ({rate:.0f} runs/s, "
                     f"~{(len(todo) - i) / rate / 60:.0f} min left)")
            last = now
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    if argv[0] == "build":  # build STORE_URI LIST_FILE: the run folders one a line
        runs = [Path(line) for line in Path(argv[2]).read_text().splitlines() if line]
        seconds = build(argv[1], runs, lambda line: print(line, file=sys.stderr, flush=True))
        print(json.dumps({"build_s": seconds}))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
