"""One run folder into one MLflow run, through MLflow's own client (the ``mlflow`` extra).

What goes where (docs/export.md says it for users): every ``metrics.jsonl`` record as metrics with its
step and time; ``system.jsonl`` samples as ``system/...`` metrics; the flattened, redacted config as
params; status, reason, dataset, method, host, git commit, tags, notes, folder name and attempts as
tags; the status mapped to MLflow's words with start and end times; the run's small files (and, when
asked, the final model and checkpoints) as artifacts.

MLflow refuses some names and values: keys with other characters than its own set, keys over 250
characters, params over 6,000 and tags over 8,000 characters, a param changed after it was logged. The
pure functions below adapt what can be adapted (each adaptation goes into the export record) and a
value the server still refuses is recorded as refused while the rest is sent.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import ExportError, JsonlProblem
from ..folder.layout import RunLayout
from ..folder.records import read_metrics_since
from ..query.runs import RunInfo
from ..redaction import redact
from ..vocabulary import COMPLETED, CRASHED, FAILED, INTERRUPTED, RUNNING, iso_time
from .ahead import Ahead
from .content import artifact_files, lineage_tags, run_params
from .mlflow_client import MlflowConnection, error_code, failure_reason
from .record import SentFile
from .target import Target

__all__ = ["MlflowExporter", "mlflow_key", "fit_value", "run_tags", "STATUS", "MAX_KEY", "MAX_PARAM", "MAX_TAG"]

STATUS = {COMPLETED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED", CRASHED: "KILLED", RUNNING: "RUNNING"}
MAX_KEY, MAX_PARAM, MAX_TAG = 250, 6000, 8000  # mlflow.utils.validation's limits (MLflow 2 and 3)
MAX_METRICS, MAX_PARAMS_TAGS = 1000, 100  # per log_batch call
_READ_LIMIT = 8 << 20  # bytes of a JSONL file parsed at a time
_BAD_CHARS = re.compile(r"[^/\w.\- :]")  # what MLflow allows in a key: validate_param_and_metric_name
_CUT = " …[cut]"
EXPORT_KEY = "lt.export_key"  # a tag naming the export that created the run (see MlflowExporter._create)


# -- pure rules ------------------------------------------------------------------------------------
def mlflow_key(name: str) -> tuple[str, str | None]:
    """``name`` as a key MLflow accepts, and why it had to change (None when it did not)."""
    key = _BAD_CHARS.sub("_", name)
    key = "/".join(part if part not in (".", "..") else part.replace(".", "_") for part in key.split("/"))
    key = re.sub("/{2,}", "/", key).strip("/") or "_"
    if posixpath.normpath(key) != key:  # MLflow refuses a key that resolves to another path
        key = key.replace("/", "_")
    if len(key) > MAX_KEY:
        key = key[: MAX_KEY - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    if key == name:
        return key, None
    return key, ("longer than MLflow's 250 characters" if len(name) > MAX_KEY and _BAD_CHARS.search(name) is None
                 else "MLflow allows only letters, digits, _ - . : / and spaces in a key")


def fit_value(text: str, limit: int) -> tuple[str, str | None]:
    """``text`` cut to ``limit`` characters (marked), and why (None when it fit)."""
    if len(text) <= limit:
        return text, None
    return text[: limit - len(_CUT)] + _CUT, f"value of {len(text)} characters cut to MLflow's limit of {limit}"


def run_tags(run: RunInfo) -> dict[str, str]:
    """Everything about the run that is not a number or a param, as MLflow tags."""
    attempts = run.summary.get("attempts") if isinstance(run.summary.get("attempts"), list) else []
    tags = {"status": run.status, "dataset": run.dataset, "method": run.method, "folder": run.name,
            "attempts": str(len(attempts) or 1)}
    optional = {"reason": run.why, "host": run.host, "source": run.source, "mlflow.note.content": run.notes,
                "mlflow.user": run.meta.get("user"), "exp_id": run.summary.get("exp_id")}
    git = run.meta.get("git")
    if isinstance(git, dict):
        optional["mlflow.source.git.commit"] = git.get("commit")
        optional["mlflow.source.git.branch"] = git.get("branch")
    argv = run.meta.get("argv")
    if isinstance(argv, list) and argv:
        optional["mlflow.source.name"] = str(argv[0])
    tags.update({key: str(value) for key, value in optional.items() if value})
    changes = {str(a.get("attempt", i + 1)): a["config_changes"] for i, a in enumerate(attempts)
               if isinstance(a, dict) and a.get("config_changes")}
    if changes:  # MLflow refuses to change a param: what a resume changed is said here
        tags["config_changes"] = json.dumps(changes, ensure_ascii=False, default=str)
    for tag in run.tags:
        tags[f"tag.{tag}"] = "true"
    tags.update(lineage_tags(run))
    return redact(tags)  # notes or a reason may quote a URL with its credentials


class MlflowExporter:
    """One MLflow target, reached once (``open`` fails at once, sending nothing, when it is not)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.deadline: float | None = None  # time.monotonic() past which no new call is made (a live sink's end)
        self._experiments: dict[str, str] = {}
        self.connection = MlflowConnection(target)
        self.client = self.connection.client
        self._Metric, self._Param, self._RunTag = self.connection.Metric, self.connection.Param, self.connection.RunTag
        self._Error = self.connection.Error
        self._ahead = Ahead()  # the metric batches' requests, one in flight while the next is prepared

    def close(self) -> None:
        self._ahead.close()
        self.connection.close()

    # -- one run ---------------------------------------------------------------------------------
    def export(self, run: RunInfo, entry: dict[str, Any], save: Callable[[], None], *, experiment: str | None,
               with_model: bool, with_checkpoints: bool, result: Any, artifacts: bool = True) -> None:
        """Bring the MLflow run of ``run`` up to date with its folder, recording progress in ``entry``
        and calling ``save`` after each confirmed step."""
        try:
            self._export(run, entry, save, experiment, (with_model, with_checkpoints) if artifacts else None, result)
        except self._Error as exc:
            raise ExportError(f"{run.name}: {self.target.uri} failed: {failure_reason(exc, self.target)}; what it "
                              "confirmed is recorded, and lt export continues from there") from None

    def _export(self, run: RunInfo, entry: dict[str, Any], save: Callable[[], None], experiment: str | None,
                artifacts: tuple[bool, bool] | None, result: Any) -> None:
        layout = run.layout
        self._index: dict[tuple[str, str], str] = {}
        self._taken: dict[str, set[str]] = {}
        sent = entry.setdefault("sent", {})
        metrics = SentFile(layout.metrics_jsonl, sent.get(RunLayout.METRICS_JSONL))
        system = SentFile(layout.system_jsonl, sent.get(RunLayout.SYSTEM_JSONL))
        run_id, why_new = entry.get("run_id"), None
        if run_id:
            stage = self._stage(run_id)
            if stage != "active":
                why_new = (f"the MLflow run {run_id} was deleted on the server" if stage == "deleted" else
                           f"the MLflow run {run_id} was not found (another server or database?)")
            elif metrics.rewritten or system.rewritten:
                self.client.delete_run(run_id)
                why_new = (f"a resume moved records of metrics.jsonl aside and MLflow cannot delete metric values, "
                           f"so the MLflow run {run_id} was deleted")
        if not run_id or why_new:
            kept = {k: entry[k] for k in ("recreated", "creating") if k in entry}
            entry.clear()
            entry.update(kept)
            entry["tracker"] = "mlflow"
            metrics, system = SentFile(layout.metrics_jsonl, None), SentFile(layout.system_jsonl, None)
            sent = entry.setdefault("sent", {})
            name = experiment or run.dataset
            experiment_id = self._experiment(name, result)
            run_id_now = self._create(run, experiment_id, entry, save)
            entry.update({"experiment": name, "experiment_id": experiment_id, "run_id": run_id_now,
                          "link": self._link(experiment_id, run_id_now)})
            if why_new:
                entry.setdefault("recreated", []).append({"at": iso_time(), "old_run_id": run_id, "why": why_new})
                result.notes.append(f"{why_new}: created again as {run_id_now}")
            save()
        run_id = entry["run_id"]
        result.run_id, result.link = run_id, entry.get("link")
        self._send_params(run_id, run_params(run), entry, save, result)
        self._send_tags(run_id, run_tags(run), entry, save, result)
        for sent_file, system_keys in ((metrics, False), (system, True)):
            if sent_file.path.exists():
                self._send_jsonl(run_id, sent_file, system_keys, entry, save, result)
                sent[sent_file.path.name] = sent_file.entry()
        if artifacts is not None:  # (with_model, with_checkpoints)
            self._send_artifacts(run_id, run.path, entry, save, result, *artifacts)
        self._send_status(run_id, run, entry, result)
        entry["exported_at"] = iso_time()
        save()

    def _in_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ExportError(f"{self.target.uri}: stopped at its deadline before everything was sent")

    def _create(self, run: RunInfo, experiment_id: str, entry: dict[str, Any], save: Callable[[], None]) -> str:
        """The MLflow run of ``run``, created once even when an export is stopped mid-call: a token is
        recorded first and given to the run as a tag, so the next export finds the run a stopped
        ``create_run`` made (the server got it, the record did not) instead of making a second one."""
        token = entry.get("creating")
        if token:
            found = self.client.search_runs([experiment_id], filter_string=f"tags.`{EXPORT_KEY}` = '{token}'",
                                            max_results=1)
            if found:
                entry.pop("creating")
                return found[0].info.run_id
        else:
            token = entry["creating"] = uuid.uuid4().hex
            save()
        start = int((run.start or time.time()) * 1000)
        created = self.client.create_run(experiment_id, start_time=start, run_name=run.name,
                                         tags={EXPORT_KEY: token})
        entry.pop("creating")
        return created.info.run_id

    def _stage(self, run_id: str) -> str:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage
        except self._Error as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return "missing"
            raise

    def _experiment(self, name: str, result: Any) -> str:
        if name in self._experiments:
            return self._experiments[name]
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(name)
            except self._Error as exc:  # created by a concurrent export meanwhile
                if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = found.experiment_id
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment_id)
                result.notes.append(f"the MLflow experiment {name!r} was deleted on the server; restored")
        self._experiments[name] = experiment_id
        return experiment_id

    def _link(self, experiment_id: str, run_id: str) -> str | None:
        if not self.target.uri.startswith(("http://", "https://")):
            return None
        return f"{self.target.uri}/#/experiments/{experiment_id}/runs/{run_id}"

    # -- adaptations -----------------------------------------------------------------------------
    def _key(self, kind: str, name: str, entry: dict[str, Any]) -> str:
        """The key ``name`` is sent as, the same every export; a changed key is listed in the record."""
        index = self._index
        known = index.get((kind, name))
        if known is not None:
            return known
        table = entry.setdefault("adaptations", [])
        if not index:
            index.update({(a["kind"], a["name"]): a["sent_as"] for a in table if "sent_as" in a})
            known = index.get((kind, name))
            if known is not None:
                return known
        key, why = mlflow_key(name)
        if why is not None and key in self._taken.setdefault(kind, set()):
            key = key[: MAX_KEY - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
            why += " (and another name became the same key)"
        if why is not None:
            table.append({"kind": kind, "name": name, "sent_as": key, "why": why})
        index[(kind, name)] = key
        self._taken.setdefault(kind, set()).add(key)
        return key

    def _note_cut(self, kind: str, name: str, why: str | None, entry: dict[str, Any]) -> None:
        if why is not None:
            table = entry.setdefault("adaptations", [])
            item = {"kind": kind, "name": name, "why": why}
            if item not in table:
                table.append(item)

    def _refused(self, kind: str, name: str, exc: BaseException, entry: dict[str, Any], result: Any) -> None:
        item = {"kind": kind, "name": name, "why": failure_reason(exc, self.target)}
        refused = entry.setdefault("refused", [])
        if item not in refused:
            refused.append(item)
            result.notes.append(f"MLflow refused {kind} {name!r}: {item['why']}")

    def _batch(self, run_id: str, kind: str, items: list[tuple[str, Any]], entry: dict[str, Any], result: Any
               ) -> list[str]:
        """Send ``(name, entity)`` pairs in one call; when the server refuses the batch for a value, each
        on its own so that only the refused ones stay out. Returns the names that were stored."""
        if not items:
            return []
        self._in_time()
        try:
            self._send(run_id, kind, items)
            return [name for name, _ in items]
        except self._Error as exc:
            return self._one_by_one(run_id, kind, items, exc, entry, result)

    def _one_by_one(self, run_id: str, kind: str, items: list[tuple[str, Any]], exc: BaseException,
                    entry: dict[str, Any], result: Any) -> list[str]:
        """After the server refused ``items`` as one batch: re-raise unless it refused a value; else each on
        its own (a refused batch stores nothing), so that only the refused ones stay out."""
        if error_code(exc) != "INVALID_PARAMETER_VALUE":
            raise exc
        if len(items) == 1:
            self._refused(kind, items[0][0], exc, entry, result)
            return []
        stored = []
        for item in items:
            stored += self._batch(run_id, kind, [item], entry, result)
        return stored

    # -- what is sent ----------------------------------------------------------------------------
    def _send_params(self, run_id: str, params: Mapping[str, str], entry: dict[str, Any],
                     save: Callable[[], None], result: Any) -> None:
        sent = entry.setdefault("params", {})
        refused = {item["name"] for item in entry.get("refused", []) if item.get("kind") == "param"}
        # a value changed since it was sent goes as the config_changes tag; a refused one is not asked again
        new = [(name, value) for name, value in params.items() if name not in sent and name not in refused]
        self._send_values(run_id, "param", new, sent, entry, save, result)

    def _send_tags(self, run_id: str, tags: Mapping[str, str], entry: dict[str, Any], save: Callable[[], None],
                   result: Any) -> None:
        sent = entry.setdefault("tags", {})
        for name in [name for name in sent if name not in tags]:  # removed since (lt tag -x, notes cleared)
            try:
                self.client.delete_tag(run_id, self._key("tag", name, entry))
            except self._Error as exc:
                if error_code(exc) not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                    raise
            del sent[name]
            result.tags += 1
        changed = [(name, value) for name, value in tags.items() if sent.get(name) != value]
        self._send_values(run_id, "tag", changed, sent, entry, save, result)
        save()

    def _send_values(self, run_id: str, kind: str, values: list[tuple[str, str]], sent: dict[str, str],
                     entry: dict[str, Any], save: Callable[[], None], result: Any) -> None:
        """Params or tags in MLflow's batches, each value cut to its limit (the cut noted); what the server
        confirmed goes into ``sent`` and the record is saved after each batch."""
        limit, make = (MAX_PARAM, self._Param) if kind == "param" else (MAX_TAG, self._RunTag)
        for i in range(0, len(values), MAX_PARAMS_TAGS):
            chunk = dict(values[i: i + MAX_PARAMS_TAGS])
            items = []
            for name, value in chunk.items():
                text, why = fit_value(value, limit)
                self._note_cut(kind, name, why, entry)
                items.append((name, make(self._key(kind, name, entry), text)))
            for name in self._batch(run_id, kind, items, entry, result):
                sent[name] = chunk[name]
                setattr(result, f"{kind}s", getattr(result, f"{kind}s") + 1)  # result.params, result.tags
            save()

    def _send_jsonl(self, run_id: str, sent: SentFile, system_keys: bool, entry: dict[str, Any],
                    save: Callable[[], None], result: Any) -> None:
        """The records of ``sent.path`` past what was sent, in batches of 1,000 values, one request in flight:
        the next batch is read and built, and the record of the one before saved, while the server stores
        the current one. The record is advanced only for confirmed batches, in order (at the end of the
        last whole record in them), so it never says sent what the server may lack."""
        pending: tuple[Future | None, list[tuple[str, Any]], int | None, int] | None = None
        try:
            for batch in self._batches(sent, system_keys, entry, result):
                confirmed = self._settle(run_id, pending, system_keys, entry, result) if pending else None
                try:
                    pending = future = None
                    if batch[0]:
                        self._in_time()
                        future = self._ahead.submit(self._send, run_id, "metric", batch[0])
                    pending = (future, *batch)
                finally:  # the confirmed batch is recorded also when the next one cannot go
                    if confirmed is not None:
                        self._confirm(sent, confirmed, entry, save)
            if pending:
                self._confirm(sent, self._settle(run_id, pending, system_keys, entry, result), entry, save)
        finally:
            if pending and pending[0] is not None:
                pending[0].cancel()  # not yet running: never sent

    def _batches(self, sent: SentFile, system_keys: bool, entry: dict[str, Any], result: Any
                 ) -> Iterator[tuple[list[tuple[str, Any]], int | None, int]]:
        """``(items, offset, records)``: each batch of at most 1,000 values past ``sent``, with the offset after
        the last record it completes and how many records it completes (``None`` and 0 for a part of a
        record with more values than a batch holds; no items for trailing lines that hold no value)."""
        Metric = self._Metric
        start = sent.bytes
        while True:
            problems: list[JsonlProblem] = []
            ends: list[int] = []
            records, end = read_metrics_since(sent.path, start, problems, limit=_READ_LIMIT, ends=ends)
            result.notes.extend(str(problem) for problem in problems)
            if end <= start:
                return
            batch: list[tuple[str, Any]] = []
            done = 0  # records in the batches yielded
            for i, record in enumerate(records):
                stamp = int(record.time * 1000)
                items = []
                for name, value in record.metrics.items():
                    if system_keys and not name.startswith("system/"):
                        name = f"system/{name}"
                    items.append((name, Metric(self._key("metric", name, entry), value, stamp, record.step)))
                if batch and len(batch) + len(items) > MAX_METRICS:
                    yield batch, ends[i - 1], i - done
                    batch, done = [], i
                while len(items) > MAX_METRICS:  # one record of more values than a batch holds
                    yield items[:MAX_METRICS], None, 0
                    items = items[MAX_METRICS:]
                batch += items
            yield batch, end, len(records) - done  # past trailing bad lines too
            start = end

    def _send(self, run_id: str, kind: str, items: list[tuple[str, Any]]) -> None:
        """One ``log_batch`` of ``(name, entity)`` pairs of one kind."""
        field = {"param": "params", "tag": "tags", "metric": "metrics"}[kind]
        self.client.log_batch(run_id, **{field: [entity for _, entity in items]})

    def _settle(self, run_id: str, pending: tuple[Future | None, list[tuple[str, Any]], int | None, int],
                system_keys: bool, entry: dict[str, Any], result: Any) -> tuple[int | None, int]:
        """Wait for the batch in flight; count what the server stored. Returns its ``(offset, records)``."""
        future, items, offset, records = pending
        stored = len(items)
        if future is not None:
            try:
                future.result()
            except self._Error as exc:  # nothing else in flight now: each value on its own, here
                stored = len(self._one_by_one(run_id, "metric", items, exc, entry, result))
        if system_keys:
            result.system += stored
        else:
            result.values += stored
        return offset, records

    def _confirm(self, sent: SentFile, confirmed: tuple[int | None, int], entry: dict[str, Any],
                 save: Callable[[], None]) -> None:
        offset, records = confirmed
        if offset is None:  # part of a record: the record is sent when its last part is
            return
        sent.advance(offset, records)
        entry.setdefault("sent", {})[sent.path.name] = sent.entry()
        save()

    def _send_artifacts(self, run_id: str, run_dir: Path, entry: dict[str, Any], save: Callable[[], None],
                        result: Any, with_model: bool, with_checkpoints: bool) -> None:
        sent = entry.setdefault("artifacts", {})
        for rel, path in artifact_files(run_dir, with_model=with_model, with_checkpoints=with_checkpoints):
            stat = path.stat()
            mark = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            if sent.get(rel) == mark:
                continue
            folder = posixpath.dirname(rel)
            self._in_time()
            self.client.log_artifact(run_id, str(path), artifact_path=folder or None)
            sent[rel] = mark
            result.files += 1
            save()

    def _send_status(self, run_id: str, run: RunInfo, entry: dict[str, Any], result: Any) -> None:
        status = STATUS.get(run.status)
        if status is None:  # no readable summary.json: the status is left as it is
            return
        end = int(run.end * 1000) if run.end is not None and status != "RUNNING" else None
        if entry.get("status") == status and entry.get("end_time") == end:
            return
        if status == "RUNNING":
            self.client.update_run(run_id, status=status)
        else:
            self.client.set_terminated(run_id, status=status, end_time=end or int(time.time() * 1000))
        entry["status"], entry["end_time"] = status, end
        result.status = status
