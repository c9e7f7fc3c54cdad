"""What is derived from ``metrics.jsonl``: final and best values, the wide CSV, the streaming digest."""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from ..folder.fileio import atomic_open
from ..folder.records import MetricRecord, read_metrics  # noqa: F401 - read_metrics: lightning_track.metrics (old path)

__all__ = [
    "infer_mode",
    "summarize_metrics",
    "write_metrics_csv",
    "metrics_by_step",
    "MetricsDigest",
]

Mode = Literal["min", "max"]

# Words of a metric's name, matched as whole parts of it (split on anything not a letter or digit), never
# as substrings: ``answer_acc`` is an accuracy although "answer" holds "wer", ``stderr_lines`` is no error.
# A word may carry a count or a variant (``acc5``, ``rouge1``, ``rougeLsum``, ``map50``, ``losses``).
_MIN_WORDS = re.compile(
    r"(?:^|_)(?:loss|losses|err|errs|error|errors|perplexity|ppl|mae|mse|rmse|msle|wer|cer|ter|nll|bpb|bpc|"
    r"distance|regret|cross_entropy|crossentropy|logloss|kl|divergence|fid)(?:\d+)?(?:_|$)"
)
_MAX_WORDS = re.compile(
    r"(?:^|_)(?:top\d+_?)?(?:acc|accuracy|f1|fscore|f1_score|r2|auc|auroc|auprc|roc_auc|precision|recall|bleu|"
    r"sacrebleu|chrf|meteor|rouge(?:l|lsum)?|iou|miou|dice|map|ndcg|mrr|hits|score|reward|rewards|return|returns|"
    r"psnr|ssim|exact_match|em|pass|win_rate|success|success_rate)(?:\d+)?(?:_|$)"
)
_CAMEL = re.compile(r"(?<=[a-z]{2})(?=[A-Z][a-z])")  # valAcc, trainLoss; not mAP, mIoU
_FLOAT = {float}
_STR = {str}
_NO_BEST = re.compile(r"(^|/)(epoch|step|lr|learning_rate|lr-.*|grad_norm.*|time.*|.*_time)$", re.I)


def infer_mode(name: str) -> Mode | None:
    """``"min"`` for losses/errors, ``"max"`` for accuracies/scores, None when best means nothing.

    The last part of the name decides first (``val/acc``, ``val_acc_epoch``, ``train/loss_step``), then
    the whole name (``loss/val``); within one, a loss word wins (``reward_loss`` is a loss).
    """
    if _NO_BEST.search(name):
        return None
    leaf = name.rsplit("/", 1)[-1]
    for part in (leaf, name):
        words = "_".join(re.findall(r"[a-z0-9]+", _CAMEL.sub("_", part).lower()))
        if _MIN_WORDS.search(words):
            return "min"
        if _MAX_WORDS.search(words):
            return "max"
    return None


def summarize_metrics(
    records: Iterable[MetricRecord], modes: Mapping[str, Mode | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Final value of every metric and, where a direction is known, the best value and its step.

    ``modes`` overrides the direction inferred from the name (``None`` disables "best").
    Non-finite values are final values when last, but never "best".
    """
    modes = dict(modes or {})  # filled with the inferred direction of each key as it is first seen
    final: dict[str, dict[str, Any]] = {}
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        for key, value in record.metrics.items():
            final[key] = {"value": value, "step": record.step}
            mode = modes[key] if key in modes else modes.setdefault(key, infer_mode(key))
            if mode is None or not math.isfinite(value):
                continue
            current = best.get(key)
            better = current is None or (value < current["value"] if mode == "min" else value > current["value"])
            if better:
                best[key] = {"value": value, "step": record.step, "mode": mode}
    return {"final": final, "best": best}


def metrics_by_step(records: Iterable[MetricRecord]) -> dict[int, dict[str, float]]:
    """One merged row per step (later values of a key at the same step win)."""
    rows: dict[int, dict[str, float]] = {}
    for record in records:
        rows.setdefault(record.step, {}).update(record.metrics)
    return dict(sorted(rows.items()))


def write_metrics_csv(records: Iterable[MetricRecord], path: str | Path) -> int:
    """Write the wide table (one row per step, one column per metric) atomically; returns rows."""
    rows = metrics_by_step(records)
    columns = sorted({key for row in rows.values() for key in row})
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["step", *columns])
        # repr of a float is its shortest round-trip text, and "nan", "inf", "-inf" for the others.
        writer.writerows([step, *["" if (value := row.get(col)) is None else repr(value) for col in columns]]
                         for step, row in rows.items())
    return len(rows)


class MetricsDigest:
    """What :func:`post_process` derives from ``metrics.jsonl``, gathered while the records are written.

    Why: ``lt-migrate`` writes 100k-step runs; reading ``metrics.jsonl`` back just to build the
    summary and ``metrics.csv`` costs more than a second a run. A digest is fed (:meth:`add`) every
    record appended to an initially empty ``metrics.jsonl``, in order, and gives exactly what
    :func:`summarize_metrics` and :func:`write_metrics_csv` give for the records read back from it.

    Memory stays bounded: per metric its final value and its smallest and largest finite value (so
    the best value follows whatever ``modes`` :meth:`summary` gets); the ``metrics.csv`` rows are
    spooled to an anonymous temp file as they complete, in the sorted columns known so far, and
    :meth:`write_csv` copies them (re-laying out only rows written before the last new column).

    Records the reader would see differently (a step that is not an ``int``, a key that is not a
    ``str``, a value that is not a ``float``) or rows it would merge out of order (a step below the
    one before) make the digest *incomplete*: :func:`post_process` then reads the file as usual.
    """

    SPOOL_IN_MEMORY = 1 << 20  # bytes of rows kept in memory before the spool becomes a temp file
    KEY_SETS = 256  # key tuples whose last step is kept before they are folded per key

    def __init__(self) -> None:
        self.complete = True
        self.last_step: int | None = None
        self.rows = 0
        self._final_values: dict[str, float] = {}
        # The step of each final value: the last step of each key tuple (steps never go down, so a
        # key's final step is the largest of the tuples holding it), folded per key now and then.
        self._tuple_steps: dict[tuple[str, ...], int] = {}
        self._final_steps: dict[str, int] = {}
        # key -> the first smallest / largest finite value and its step
        self._low: dict[str, float] = {}
        self._low_steps: dict[str, int] = {}
        self._high: dict[str, float] = {}
        self._high_steps: dict[str, int] = {}
        self._row_step: int | None = None  # the row still open to records of the same step
        self._row: dict[str, float] = {}
        self._row_keys: tuple[str, ...] = ()
        self._columns: tuple[str, ...] = ()  # sorted: the layout rows are spooled in
        self._column_set: set[str] = set()
        self._forms: dict[tuple[str, ...], tuple[str, Callable[[dict[str, float]], tuple[float, ...]]]] = {}
        self._segments: list[tuple[int, tuple[str, ...]]] = []  # (spool offset, layout from there on)
        self._spool: Any = None
        self._size = 0
        self._lines: list[str] = []
        self._written = False

    def abandon(self) -> None:
        """Give up: the digest no longer stands for the file (``post_process`` will read it)."""
        self.complete = False
        self._lines.clear()
        self._row = {}
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def add(self, records: Iterable[MetricRecord]) -> None:
        """Take the records just appended to ``metrics.jsonl``, in file order."""
        if not self.complete:
            return
        if self._written:
            raise RuntimeError("MetricsDigest.add after write_csv")
        final_values, tuple_steps = self._final_values, self._tuple_steps
        low, low_steps, high, high_steps = self._low, self._low_steps, self._high, self._high_steps
        lines, forms = self._lines, self._forms
        row_step, row, row_keys = self._row_step, self._row, self._row_keys
        for record in records:
            step, metrics = record.step, record.metrics
            if type(step) is not int or type(metrics) is not dict:
                self.abandon()
                return
            keys = tuple(metrics)
            if not (_STR.issuperset(map(type, keys)) and _FLOAT.issuperset(map(type, metrics.values()))):
                self.abandon()
                return
            if step != row_step:
                if row_step is not None:  # the row before is complete: its metrics.csv line
                    if step < row_step:  # metrics_by_step would merge it into an earlier row
                        self.abandon()
                        return
                    form = forms.get(row_keys) or self._form(row_keys)
                    lines.append(form[0] % (row_step, *form[1](row)))
                row_step, row, row_keys = step, metrics, keys
            else:
                row = {**row, **metrics}
                row_keys = tuple(row)
            final_values.update(metrics)
            tuple_steps[keys] = step
            for key, value in metrics.items():
                # NaN and infinities are never best: NaN fails every comparison, the others are
                # checked on the (rare) way to a new smallest or largest value.
                current = low.get(key)
                if current is None:
                    if value - value == 0.0:
                        low[key] = high[key] = value
                        low_steps[key] = high_steps[key] = step
                elif value < current:
                    if value != -math.inf:
                        low[key] = value
                        low_steps[key] = step
                elif value > high[key] and value != math.inf:
                    high[key] = value
                    high_steps[key] = step
        self._row_step, self._row, self._row_keys = row_step, row, row_keys
        self.last_step = row_step
        if len(tuple_steps) > self.KEY_SETS:  # many different key sets: fold them per key
            self._fold_steps()
        self._spool_lines()

    def _fold_steps(self) -> None:
        final_steps = self._final_steps
        for keys, step in self._tuple_steps.items():
            for key in keys:
                if final_steps.get(key, step) <= step:
                    final_steps[key] = step
        self._tuple_steps.clear()

    def _form(self, keys: tuple[str, ...]) -> tuple[str, Callable[[dict[str, float]], Any]]:
        """The row format for these keys, after a new layout when one of them is a new column."""
        if not self._segments or not self._column_set.issuperset(keys):
            self._spool_lines()
            self._column_set.update(keys)
            self._columns = tuple(sorted(self._column_set))
            self._segments.append((self._size, self._columns))
            self._forms.clear()
        elif len(self._forms) >= 256:
            self._forms.clear()
        form = self._forms[keys] = _row_form(keys, self._columns)
        return form

    def _spool_lines(self) -> None:
        if self._lines:
            data = "".join(self._lines).encode("utf-8")
            self.rows += len(self._lines)
            self._lines.clear()
            if self._spool is None:
                self._spool = tempfile.SpooledTemporaryFile(max_size=self.SPOOL_IN_MEMORY)  # noqa: SIM115
            self._spool.write(data)
            self._size += len(data)

    def summary(self, modes: Mapping[str, Mode | None] | None = None) -> dict[str, dict[str, Any]]:
        """:func:`summarize_metrics` of the records added."""
        if not self.complete:
            raise ValueError("incomplete MetricsDigest: read the metrics file instead")
        modes = dict(modes or {})
        self._fold_steps()
        final = {key: {"value": value, "step": self._final_steps[key]} for key, value in self._final_values.items()}
        best: dict[str, dict[str, Any]] = {}
        for key in self._low:  # in the order of each key's first finite value, as summarize_metrics sets them
            mode = modes[key] if key in modes else modes.setdefault(key, infer_mode(key))
            if mode is not None:
                value, step = ((self._low[key], self._low_steps[key]) if mode == "min"
                               else (self._high[key], self._high_steps[key]))
                best[key] = {"value": value, "step": step, "mode": mode}
        return {"final": final, "best": best}

    def write_csv(self, path: str | Path) -> int:
        """:func:`write_metrics_csv` of the records added (same bytes, also atomic); returns rows."""
        if not self.complete:
            raise ValueError("incomplete MetricsDigest: read the metrics file instead")
        if not self._written:
            self._written = True  # the last row is complete: no more records
            if self._row_step is not None:
                form = self._forms.get(self._row_keys) or self._form(self._row_keys)
                self._lines.append(form[0] % (self._row_step, *form[1](self._row)))
            self._spool_lines()
        columns = self._columns
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(["step", *columns])
        with atomic_open(path, "wb") as handle:
            handle.write(header.getvalue().encode("utf-8"))
            if self._spool is not None:
                self._spool.seek(0)
                ends = [offset for offset, _ in self._segments[1:]] + [self._size]
                for (start, layout), end in zip(self._segments, ends, strict=True):
                    data = self._spool.read(end - start)
                    handle.write(data if layout == columns else _relayout(data, layout, columns))
        return self.rows

    def close(self) -> None:
        """Drop the spooled rows (after :meth:`write_csv`, or instead of it)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _row_form(keys: tuple[str, ...], columns: tuple[str, ...]) -> tuple[str, Callable[[dict[str, float]], Any]]:
    """(``%`` format of a metrics.csv row with these keys, getter of its values in column order).

    ``%d`` of an int is its ``str``; ``%r`` of a float its ``repr``: the shortest round-trip text,
    and "nan", "inf", "-inf" for the others, as :func:`write_metrics_csv` writes them.
    """
    present = set(keys)
    order = [col for col in columns if col in present]
    text = ",".join(["%d", *["%r" if col in present else "" for col in columns]]) + "\n"
    if len(order) >= 2:
        return text, itemgetter(*order)
    return text, lambda row: tuple(row[col] for col in order)


def _relayout(data: bytes, layout: tuple[str, ...], columns: tuple[str, ...]) -> bytes:
    """CSV rows (``step,v1,v2...``, no quoting: numbers only) from ``layout`` to ``columns`` (a superset)."""
    where = [columns.index(col) + 1 for col in layout]
    out = []
    blank = [""] * (len(columns) + 1)
    for line in data.decode("utf-8").splitlines():
        cells = line.split(",")
        row = blank.copy()
        row[0] = cells[0]
        for i, cell in zip(where, cells[1:], strict=True):
            row[i] = cell
        out.append(",".join(row))
    out.append("")
    return "\n".join(out).encode("utf-8")
