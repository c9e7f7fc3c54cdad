"""A filter's comparisons on config keys as SQL over the catalog's kept configs: pure, no I/O.

Why: ``lt ls -f model.lr<1e-3`` where nothing changed over 100,000 runs spent most of what the filter adds
in Python: a second scan of the catalog's rows, every kept config's value fetched, decoded and compared with
:func:`~.filters.compare`. Here SQLite compares in the scan that loads the look's rows, and answers each run
with 1 (matches), 0 (does not) or NULL: "not sure", for the cases SQL cannot decide exactly as
:func:`~.filters.compare` does. Those runs (a value that is a string when the literal is a number:
``float()``'s own rules; a list; a glob or a regular expression; a field of the run's row, not of its
config) are asked in Python as before. SQL's three-valued logic (``0 AND NULL`` is 0, ``1 OR NULL`` is 1,
``NOT NULL`` is NULL) keeps a filter's ``and``/``or``/``not`` exact over the "not sure" answers.

What SQL decides, for one kept config's value (its kind: integer, real, string, true, false, null, array,
object, or missing) against one literal (:class:`~.filters.Literal`'s value: float, bool, None, str):

* a number literal: an integer within 2**53 (where ``float(int)`` is exact) compared as SQLite compares
  (exactly); a real whose JSON text is the literal's own (orjson's, the catalog's writer) is equal to it;
  another real is on the side SQLite's parse of its text is when that is farther from the literal than any
  parse's error can be (:data:`TOLERANCE`: SQLite's text-to-double need not round as Python's does);
  nearer, Python decides. NaN: no number; +-inf: every finite number on one side.
* a text literal: a JSON string without escapes (its characters are the SQL text) or an integer (SQL's
  text of it is ``str(int)``), compared as text (UTF-8 bytes order as code points); a glob pattern: Python.
* ``true``/``false``/``null``: only ``=`` with the same kind; anything else with a literal of another kind
  is 0, as :func:`~.filters._one`'s type rule says; a missing key is 0 (``!=`` negates: 1).
* a key alone (present and truthy): by kind (``0``/``""``/``[]``/``{}``/``false``/``null`` are not).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .filters import Bool, Cmp, Filter, Node, Not

__all__ = ["Plan", "plan", "sayable", "path_of", "TOLERANCE", "MAX_KEYS"]

# SQLite's parse of a JSON number may differ from Python's (correctly rounded) by an ulp or so: a real
# farther than this (relative, or 1e-300 near zero) from the literal is on the side SQLite's value says
TOLERANCE = 1e-9
_EXACT_INT = 2 ** 53  # integers up to this convert to float exactly
_SQL_OPS = {"=": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def path_of(name: str) -> str:
    """SQLite's JSON path of a flattened config's key (``model.lr`` is one key: quoted)."""
    return f'$."{name}"'


def sayable(name: str) -> bool:
    """Whether SQLite's JSON path ``$."name"`` names exactly the key ``name`` (as RowSource's query)."""
    return '"' not in name and "\\" not in name and name.isprintable()


@dataclass
class Plan:
    """A filter list as one SQL expression: ``decision`` (1, 0 or NULL: not sure) over the columns ``v0``,
    ``v1``... (each asked key's JSON text in the config, NULL when missing) and ``x0``, ``x1``... (its SQL
    value: ``->>``), which ``extract`` gives from the config column (in a subquery SQLite does not flatten,
    ``LIMIT -1 OFFSET 0``: each taken once a row); ``params``: the values of the ``?N`` in both."""

    keys: list[str]  # the config keys: v0, v1, ...
    decision: str
    extract: str
    params: list[Any] = field(default_factory=list)

    @property
    def texts(self) -> str:
        """The columns of the asked keys' JSON texts: ``v0, v1, ...``."""
        return ", ".join(f"v{i}" for i in range(len(self.keys)))

    def select(self, columns: str, where: str, values: Sequence[Any] = (), *, join: str = "LEFT JOIN",
               order: str = "") -> tuple[str, list[Any]]:
        """The runs where ``where`` holds, each with ``columns`` and the plan's ``v``/``x`` columns from its kept
        config (``join``: "JOIN" for the runs with one only), as a subquery to select from (in parentheses:
        each config's values taken once); and its params: the plan's, then ``values``, the ``?`` of ``where``."""
        first, parts = len(self.params) + 1, where.split("?")
        numbered = parts[0] + "".join(f"?{n}{part}" for n, part in zip(range(first, first + len(values)), parts[1:],
                                                                       strict=True))
        by = f" ORDER BY {order}" if order else ""
        return (f"(SELECT {columns}, {self.extract} FROM runs {join} configs USING (path) WHERE {numbered}{by} "
                "LIMIT -1 OFFSET 0)", [*self.params, *values])


class _Builder:
    def __init__(self, config_name: Callable[[str], str]) -> None:
        self.config_name = config_name
        self.keys: list[str] = []
        self.params: list[Any] = []

    def ref(self, value: Any) -> str:
        """A numbered parameter (``?N``: one value, used as often as the SQL needs it)."""
        self.params.append(value)
        return f"?{len(self.params)}"

    def key(self, name: str) -> tuple[str, str]:
        """The columns of ``name``'s JSON text and of its SQL value (``->>``: a string's characters)."""
        if name not in self.keys:
            self.keys.append(name)
        i = self.keys.index(name)
        return f"v{i}", f"x{i}"

    def node(self, node: Node) -> str:
        if isinstance(node, Not):
            return f"(NOT {self.node(node.inner)})"
        if isinstance(node, Bool):
            return "(" + f" {node.op.upper()} ".join(self.node(part) for part in node.parts) + ")"
        assert isinstance(node, Cmp)
        name = self.config_name(node.key)
        if not name or not sayable(name):
            return "NULL"  # a field of the run's row: Python decides
        v = self.key(name)
        if node.op is None:
            return self.present(*v)
        op = {"==": "=", "!=": "=", "!~": "~"}.get(node.op, node.op)
        if op == "~":
            inner = "NULL"
        else:
            inner = " OR ".join(self.literal(*v, op, lit.value, lit.text) for lit in node.literals)
        return f"(NOT ({inner}))" if node.op in ("!=", "!~") else f"({inner})"

    def present(self, v: str, x: str) -> str:
        """``Cmp(key)`` without an operator: present, truthy (and not NaN: JSON has none)."""
        real = f"CASE WHEN abs({x}) > 1e-300 THEN 1 WHEN {v} IN ('0.0', '-0.0') THEN 0 END"
        return _kind(v, x, text=f"{v} != '\"\"'", true="1", false="0", null="0", array=f"{v} != '[]'",
                     obj=f"{v} != '{{}}'", missing="0", real=real, integer=f"{x} != 0")

    def literal(self, v: str, x: str, op: str, want: Any, text: str) -> str:
        """One value against one literal, as :func:`~.filters._one` (a missing key: 0, as compare's)."""
        if isinstance(want, bool) or want is None:
            if op != "=":  # an order with true/false/null: never, also for a list's elements
                return "0"
            if want is None:
                return _kind(v, x, null="1", array="NULL", other="0")
            return _kind(v, x, true=str(int(want)), false=str(int(not want)), array="NULL", other="0")
        sql_op = _SQL_OPS[op]
        if isinstance(want, float):
            if math.isnan(want):  # no number equals NaN or is ordered with it
                return _kind(v, x, text="NULL", array="NULL", obj="NULL", other="0")
            if math.isinf(want):  # every finite number is on one side of it
                side = str(int({"=": False, "<": want > 0, "<=": want > 0, ">": want < 0, ">=": want < 0}[op]))
                return _kind(v, x, text="NULL", array="NULL", obj="NULL", other="0", integer=side,
                             real=f"CASE WHEN abs({x}) <= {self.ref(sys.float_info.max)} THEN {side} END")
            equal, w = str(int(op in ("=", "<=", ">="))), self.ref(want)
            tolerance = max(abs(want) * TOLERANCE, 1e-300)
            return _kind(v, x, text="NULL", array="NULL", obj="NULL", other="0",
                         integer=f"CASE WHEN {x} BETWEEN {-_EXACT_INT} AND {_EXACT_INT} THEN {x} {sql_op} {w} END",
                         real=f"CASE WHEN {v} = {self.ref(orjson.dumps(want).decode())} THEN {equal} "
                              f"WHEN abs({x} - {w}) > {self.ref(tolerance)} AND abs({x}) <= "
                              f"{self.ref(sys.float_info.max)} THEN {x} {sql_op} {w} END")
        # a text literal: the value's text against it (a float's is Python's repr: Python decides)
        if op == "=" and any(c in text for c in "*?["):  # a glob: fnmatch's rules
            return _kind(v, x, text="NULL", array="NULL", obj="NULL", integer="NULL", real="NULL", other="0")
        s = self.ref(text)
        # a JSON string without escapes: its characters as they are; a JSON integer's text is str(int)
        return _kind(v, x, text=f"CASE WHEN instr({v}, '\\') = 0 THEN {x} {sql_op} {s} END",
                     integer=f"CASE WHEN {v} != '-0' THEN {v} {sql_op} {s} END", real="NULL", array="NULL",
                     obj="NULL", other="0")


def _kind(v: str, x: str, *, other: str = "NULL", text: str | None = None, true: str | None = None,
          false: str | None = None, null: str | None = None, array: str | None = None, obj: str | None = None,
          integer: str | None = None, real: str | None = None, missing: str | None = None) -> str:
    """A CASE on the kind of a config's value: ``x`` (``->>``) is a real, an integer (or true/false: ``v``,
    the JSON text, says), text (a string, array or object: ``v``'s first character says) or NULL (JSON's
    null, or missing: ``v`` NULL); a kind not given is ``other``. (An integer past SQLite's 64 bits comes as a
    real: compared with the tolerance of a real, never as text.)"""
    def of(then: str | None) -> str:
        return other if then is None else then

    integer_ = of(integer) if of(true) == of(false) == of(integer) else \
        f"CASE {v} WHEN 'true' THEN {of(true)} WHEN 'false' THEN {of(false)} ELSE {of(integer)} END"
    text_ = of(text) if of(text) == of(array) == of(obj) else \
        f"CASE substr({v}, 1, 1) WHEN '\"' THEN {of(text)} WHEN '[' THEN {of(array)} ELSE {of(obj)} END"
    none = of(null) if of(null) == of(missing) else f"CASE WHEN {v} IS NULL THEN {of(missing)} ELSE {of(null)} END"
    return f"CASE typeof({x}) WHEN 'real' THEN {of(real)} WHEN 'integer' THEN {integer_} WHEN 'text' THEN {text_} " \
           f"ELSE {none} END"


def plan(filters: Sequence[Filter], config_name: Callable[[str], str], column: str = "config") -> Plan | None:
    """The SQL of ``filters`` (all of them: and) over ``column`` (a config as the catalog keeps it: the
    flattened config's JSON); ``config_name(key)``: the config key a filter key names, "" for a run's field.
    None when no key is a config key (nothing for SQL to decide) or a literal cannot be bound."""
    for f in filters:
        for key in f.keys():
            name = config_name(key)
            if name and not sayable(name):
                return None  # (RowSource cannot ask SQLite for it either: the runs read it themselves)
    try:
        for f in filters:
            for lit in _literals(f.root):
                lit.text.encode()  # SQLite holds UTF-8 (an undecodable argv byte comes as a surrogate)
    except UnicodeEncodeError:
        return None
    builder = _Builder(config_name)
    decision = " AND ".join(builder.node(f.root) for f in filters)
    for f in filters:  # every config key's text, also of one only a regex asks (Python decides those)
        for key in f.keys():
            if config_name(key):
                builder.key(config_name(key))
    if not builder.keys or len(builder.keys) > MAX_KEYS:
        return None
    paths = [builder.ref(path_of(name)) for name in builder.keys]
    extract = ", ".join(f"{column} -> {path} AS v{i}, {column} ->> {path} AS x{i}" for i, path in enumerate(paths))
    return Plan(builder.keys, decision, extract, builder.params)


MAX_KEYS = 24  # config keys a plan asks at most (a bit each in the catalog_kept's state of a row)


def _literals(node: Node) -> Any:
    if isinstance(node, Cmp):
        yield from node.literals
    elif isinstance(node, Not):
        yield from _literals(node.inner)
    elif isinstance(node, Bool):
        for part in node.parts:
            yield from _literals(part)
