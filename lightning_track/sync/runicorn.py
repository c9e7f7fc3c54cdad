"""A Runicorn storage view of the synced runs, so a stock ``runicorn viewer --storage ROOT`` shows them.

What the viewer reads (runicorn 0.7.2, ``storage/file_utils.py`` and ``viewer/api``): run folders
under ``ROOT/runs/<path...>/<run_id>/`` recognised by ``meta.json`` or ``status.json``;
``meta.json`` (path, alias, created_at, hostname; we leave out ``pid`` so the viewer never marks a
mirrored run as crashed because no such process exists on the viewer machine); ``status.json``
(status running/finished/failed/interrupted, started_at, ended_at); ``summary.json``; and
``events.jsonl`` lines ``{"ts", "type": "metrics", "data": {"global_step", "time", metric...}}``,
which its cache re-reads incrementally from the last size it saw -- so lines are only ever appended
whole, and the run id is ``YYYYmmdd_HHMMSS_<6 hex>`` as Runicorn's own ids are.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import posixpath
from datetime import datetime
from typing import Any

from ..folder.fileio import restore_nonfinite
from ..folder.layout import RunLayout, parse_run_name, sanitize_name
from ..vocabulary import COMPLETED, FAILED, INTERRUPTED, RUNNING, parse_iso_time, run_name_time
from .endpoints import Endpoint
from .manifest import Manifest, part_path, tail_hash
from .plan import Plan
from .transport import Transport, make_transport

__all__ = ["RunicornView", "view_run_id", "metrics_to_events"]

RUNS = "runs"
META, STATUS, SUMMARY, EVENTS = "meta.json", "status.json", "summary.json", "events.jsonl"
VIEW_STATE = ".lt-sync-view.json"
# Our run status (summary.json) -> the word Runicorn's status.json uses; anything else reads as finished.
_STATUS = {RUNNING: "running", COMPLETED: "finished", FAILED: "failed", INTERRUPTED: "interrupted"}
_READ = 4 << 20


def view_run_id(run_name: str, fallback_time: float = 0.0) -> str:
    """Runicorn-style id ``YYYYmmdd_HHMMSS_xxxxxx``: the run's own timestamp plus a stable hash of its name."""
    parsed = parse_run_name(run_name)
    stamp = parsed.timestamp if parsed else run_name_time(datetime.fromtimestamp(fallback_time))
    return f"{stamp}_{hashlib.sha1(run_name.encode('utf-8')).hexdigest()[:6]}"


def _finite(value: Any) -> Any:
    """A metric value as Runicorn can chart it: NaN and infinities (ours are spelled as strings) become null."""
    value = restore_nonfinite(value)
    return None if isinstance(value, float) and not math.isfinite(value) else value


def metrics_to_events(data: bytes) -> tuple[str, int, int]:
    """Convert whole ``metrics.jsonl`` lines to Runicorn events; returns (text, bytes consumed, bad lines).

    Only bytes up to the last newline are consumed, so a line still being written waits for the next cycle.
    """
    end = data.rfind(b"\n") + 1
    out: list[str] = []
    bad = 0
    for raw in data[:end].splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            step = int(record["step"])
            metrics = record.get("metrics") or {}
            when = float(record.get("time") or 0.0)
            payload = {str(k): _finite(v) for k, v in dict(metrics).items()
                       if isinstance(v, (int, float, str)) or v is None}
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        payload.update(global_step=step, time=when)
        out.append(json.dumps({"ts": when, "type": "metrics", "data": payload}, allow_nan=False,
                              ensure_ascii=False, separators=(",", ":")) + "\n")
    return "".join(out), end, bad


def _epoch(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_iso_time(value)
        except ValueError:
            return None
    return None


class RunicornView:
    """Maintains ``ROOT/runs/<dataset>/<method>/<run_id>/`` for every synced run.

    ``ROOT`` is a path on the destination's machine (where the viewer runs).
    """

    def __init__(self, root: str, dest: Endpoint) -> None:
        self.endpoint = Endpoint(path=root, host=dest.host, user=dest.user, port=dest.port) if dest.is_remote \
            else Endpoint(path=posixpath.abspath(root))
        self.transport: Transport = make_transport(self.endpoint)

    async def open(self) -> None:
        await self.transport.open(create=True)
        await self.transport.makedirs(RUNS)

    async def close(self) -> None:
        await self.transport.close()

    async def update(self, reader: Transport, src: Manifest, plan: Plan) -> int:
        """Refresh the view of every run in ``src`` (its files read through ``reader``, a side that holds
        them); returns how many runs were touched."""
        touched = {a.rel for a in plan.actions}
        runs: dict[str, dict[str, Any]] = {}
        for rel, entry in src.files.items():
            top, _, name = rel.partition("/")
            if name in (RunLayout.METRICS_JSONL, RunLayout.META, RunLayout.SUMMARY, RunLayout.LOGS):
                runs.setdefault(top, {})[name] = entry
        gate = asyncio.Semaphore(8)

        async def one(run: str, files: dict[str, Any]) -> bool:
            async with gate:
                return await self._update_run(reader, run, files, f"{run}/{RunLayout.METRICS_JSONL}" in touched)

        touched = await asyncio.gather(*(one(run, files) for run, files in sorted(runs.items())))
        return sum(touched)

    async def _read_json(self, transport: Transport, rel: str) -> dict[str, Any]:
        try:
            data = json.loads(await transport.read(rel, 0, 1 << 20))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    async def _write_atomic(self, rel: str, text: str) -> None:
        tmp = part_path(rel)
        await self.transport.write_at(tmp, 0, text.encode("utf-8"), truncate=True)
        await self.transport.rename(tmp, rel)

    async def _update_run(self, reader: Transport, run: str, files: dict[str, Any], touched: bool) -> bool:
        meta = await self._read_json(reader, f"{run}/{RunLayout.META}") if RunLayout.META in files else {}
        summary = await self._read_json(reader, f"{run}/{RunLayout.SUMMARY}") if RunLayout.SUMMARY in files else {}
        parsed = parse_run_name(run)
        dataset = meta.get("dataset") or summary.get("dataset") or (parsed.prefix if parsed else run)
        method = meta.get("method") or summary.get("method") or "default"
        try:
            path = f"{sanitize_name(str(dataset), what='dataset')}/{sanitize_name(str(method), what='method')}"
        except ValueError:
            path = "unknown/default"
        newest = max(e.mtime for e in files.values())
        view = f"{RUNS}/{path}/{view_run_id(run, newest)}"
        await self.transport.makedirs(view)
        state = await self._read_json(self.transport, f"{view}/{VIEW_STATE}")
        created = _epoch(meta.get("created")) or (parsed.started.timestamp() if parsed else float(newest))
        docs = {
            META: {"id": view.rsplit("/", 1)[-1], "path": path, "alias": run, "created_at": created,
                   "hostname": meta.get("host"), "python": (meta.get("versions") or {}).get("python"),
                   "platform": None, "workspace_root": meta.get("cwd"), "source": "lightning_track",
                   "source_run": run},
            STATUS: {"status": _STATUS.get(str(summary.get("status", RUNNING)), "finished"),
                     "started_at": _epoch(summary.get("start_time")) or created,
                     **({"ended_at": _epoch(summary.get("end_time"))} if summary.get("end_time") else {})},
            SUMMARY: {"source_run": run, "last_step": summary.get("last_step"),
                      "final": {k: _finite(v.get("value")) for k, v in (summary.get("final") or {}).items()
                                if isinstance(v, dict)},
                      "best": {k: {**v, "value": _finite(v.get("value"))}
                               for k, v in (summary.get("best") or {}).items() if isinstance(v, dict)}},
        }
        changed = False
        digests = dict(state.get("digests") or {})
        for name, doc in docs.items():
            text = json.dumps(doc, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
            digest = tail_hash(text.encode("utf-8"))
            if digests.get(name) != digest:
                await self._write_atomic(f"{view}/{name}", text)
                digests[name] = digest
                changed = True
        metrics = files.get(RunLayout.METRICS_JSONL)
        events_rel = f"{view}/{EVENTS}"
        offset = int(state.get("source_offset") or 0)
        events_size = int(state.get("events_size") or 0)
        if metrics is not None:
            events_now = await self.transport.stat(events_rel)
            size = metrics.size
            metrics_rel = f"{run}/{RunLayout.METRICS_JSONL}"
            rebuild = events_now is None or events_now.size < events_size or offset > size
            if not rebuild and offset and state.get("source_tail") and touched:
                # Appended to, or rewritten (a resumed run may drop records)? Compare the converted prefix's tail.
                n = min(256, offset)
                rebuild = tail_hash(await reader.read(metrics_rel, offset - n, n)) != state["source_tail"]
            if rebuild:
                offset, events_size = 0, 0
            elif events_now is not None and events_now.size > events_size:
                await self.transport.truncate(events_rel, events_size)  # a killed update's extra lines
            while offset < size:
                data = await reader.read(metrics_rel, offset, min(_READ, size - offset))
                text, used, _bad = metrics_to_events(data)
                if used == 0:
                    break
                payload = text.encode("utf-8")
                await self.transport.write_at(events_rel, events_size, payload, truncate=events_size == 0)
                offset, events_size, changed = offset + used, events_size + len(payload), True
            if rebuild and events_size == 0:
                await self.transport.write_at(events_rel, 0, b"", truncate=True)
            if offset and (touched or rebuild or "source_tail" not in state):
                n = min(256, offset)
                state["source_tail"] = tail_hash(await reader.read(metrics_rel, offset - n, n))
        logs = files.get(RunLayout.LOGS)
        if logs is not None and await self._append_logs(reader, run, view, logs.size, state):
            changed = True
        if changed or state.get("digests") != digests:
            state.update(digests=digests, source_offset=offset, events_size=events_size)
            await self._write_atomic(f"{view}/{VIEW_STATE}", json.dumps(state, indent=2) + "\n")
        return changed

    async def _append_logs(self, reader: Transport, run: str, view: str, size: int, state: dict[str, Any]) -> bool:
        """The run's ``logs.txt`` appended to the view's, whole lines only: the viewer's log tab tails that file
        (an open handle reading on), so lines synced later appear without restarting it."""
        source, target = f"{run}/{RunLayout.LOGS}", f"{view}/{RunLayout.LOGS}"
        offset, written = int(state.get("logs_offset") or 0), int(state.get("logs_size") or 0)
        now = await self.transport.stat(target)
        if now is None or now.size < written or offset > size:
            offset = written = 0  # a new view, or one that cannot be trusted: from the start
        elif now.size > written:
            await self.transport.truncate(target, written)  # a killed update's extra bytes
        changed = False
        while offset < size:
            data = await reader.read(source, offset, min(_READ, size - offset))
            whole = data[: data.rfind(b"\n") + 1]
            if not whole:
                break  # a line still being written: the next cycle
            await self.transport.write_at(target, written, whole, truncate=written == 0)
            offset, written, changed = offset + len(whole), written + len(whole), True
        state.update(logs_offset=offset, logs_size=written)
        return changed
