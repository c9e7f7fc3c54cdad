"""The ``--filter`` language of ``lt ls`` and ``load_runs``: pure, no I/O.

::

    status=failed                    dataset=arc* (glob)        name~lora (regex search)
    model.lr<1e-3                    best.val/loss<=0.5         config.seed!=0
    tag=baseline   tag!=old          start>2026-12-01           age<2d   wall_span>=30m
    exported=false (never sent to a tracker: lt export, lt-sync --export)
    status=failed|crashed            not (method=lora or tag=old)   a=1 b=2 (and)   notes (present)

A key is a run field (name, dataset, method, status, host, tag, start, age, exported, export, ...), ``best.METRIC`` or
``final.METRIC``, ``summary.KEY``/``meta.KEY``, or a config key (``model.lr``, also ``config.model.lr``).
A run without the key never matches, except ``!=`` and ``!~``. ``=`` on a list (tags) means "holds".
Numbers compare as numbers (also a config value YAML kept as a string, ``1e-3``); ``start``/``end``
take a date or time (local), ``age``/``wall_span``/``training_time`` a length (``90s``, ``30m``, ``2h``,
``1.5d``, ``1w``).
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import FilterError

__all__ = ["Filter", "parse_filter", "MISSING", "parse_length", "compare", "TIME_KEYS",
           "LENGTH_KEYS", "KEY_ALIASES"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()  # what a lookup returns for a key the run does not have

# other names of a run's fields, for filters and lt ls columns alike (summary.json's names, the plural)
KEY_ALIASES = {"tags": "tag", "last_step": "step", "wall_span_s": "wall_span", "training_time_s": "training_time"}
TIME_KEYS = frozenset({"start", "end", "heartbeat"})  # values are epoch seconds; literals are dates
# seconds; literals "2h"
LENGTH_KEYS = frozenset({"age", "wall_span", "wall_span_s", "training_time", "training_time_s"})
_OPS = ("==", "!=", "<=", ">=", "!~", "=", "<", ">", "~")
_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TOKEN = re.compile(r"""\s*(?:(?P<paren>[()])|(?P<op>==|!=|<=|>=|!~|=|<|>|~)|(?P<bool>&&|\|\||!(?![=~]))
                       |(?P<quoted>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<word>[^\s()=!<>~"']+))""", re.X)


def parse_length(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1.5d"``, ``"1w"``, ``"45"`` -> seconds."""
    match = _LENGTH.match(text.strip())
    if not match:
        raise FilterError(f"{text!r} is not a length like 90s, 30m, 2h, 1.5d or 1w")
    return float(match[1]) * _UNITS[match[2]]


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()  # naive = local time, as a person means it


@dataclass(frozen=True)
class Literal:
    text: str
    value: Any  # float, bool, None, or the text itself

    @classmethod
    def of(cls, text: str, key: str, quoted: bool, where: Callable[[str], FilterError]) -> Literal:
        if quoted:
            return cls(text, text)
        lowered = text.lower()
        if key in TIME_KEYS:
            try:
                return cls(text, _parse_time(text))
            except ValueError:
                raise where(f"{key} takes a date or time like 2026-12-01 or 2026-12-01T14:30, not {text!r}") from None
        if key in LENGTH_KEYS:
            try:
                return cls(text, parse_length(text))
            except ValueError as exc:
                raise where(f"{key} takes {exc}") from None
        if lowered in ("true", "false"):
            return cls(text, lowered == "true")
        if lowered in ("null", "none"):
            return cls(text, None)
        try:
            return cls(text, float(text))
        except ValueError:
            return cls(text, text)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_ORDER = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _one(actual: Any, op: str, lit: Literal) -> bool:
    """One value against one literal (``!=``/``!~`` are handled by the caller as negations)."""
    want = lit.value
    if type(actual) is float and type(want) is float and op != "~":  # the usual case (model.lr<1e-3): no NaN
        return actual == actual and want == want and _ORDER[op](actual, want)
    if op == "~":
        try:
            return re.search(lit.text, str(actual)) is not None
        except re.error:
            return False
    if isinstance(want, bool) or want is None or isinstance(actual, bool) or actual is None:
        return op == "=" and actual == want and type(actual) is type(want)
    a, b = _number(actual), (want if isinstance(want, float) else None)  # a quoted literal compares as text
    if a is not None and b is not None:
        if math.isnan(a) or math.isnan(b):
            return False
        return _ORDER[op](a, b)
    text, pattern = str(actual), lit.text
    if op == "=":
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(text, pattern)
        return text == pattern
    return _ORDER[op](text, pattern)


def compare(actual: Any, op: str, literals: tuple[Literal, ...]) -> bool:
    """Whether a run's value satisfies ``op`` with any of ``literals`` (``a|b``); lists match by element."""
    if op in ("!=", "!~"):
        return not compare(actual, op[1:] if op == "!~" else "=", literals)
    if op == "==":
        op = "="
    if actual is MISSING:
        return False
    if isinstance(actual, (list, tuple, set)):
        return any(_one(value, op, lit) for value in actual for lit in literals)
    if len(literals) == 1:  # one value, one literal: no generator (a filter asks this of every run)
        return _one(actual, op, literals[0])
    return any(_one(actual, op, lit) for lit in literals)


class Node:
    def matches(self, lookup: Callable[[str], Any]) -> bool:
        raise NotImplementedError

    def keys(self) -> Iterator[str]:
        raise NotImplementedError


@dataclass
class Cmp(Node):
    key: str
    op: str | None = None  # None: the key is present and truthy
    literals: tuple[Literal, ...] = ()

    def matches(self, lookup: Callable[[str], Any]) -> bool:
        actual = lookup(self.key)
        if self.op is None:
            return actual is not MISSING and bool(actual) and actual == actual  # NaN is not "present"
        return compare(actual, self.op, self.literals)

    def keys(self) -> Iterator[str]:
        yield self.key


@dataclass
class Not(Node):
    inner: Node

    def matches(self, lookup: Callable[[str], Any]) -> bool:
        return not self.inner.matches(lookup)

    def keys(self) -> Iterator[str]:
        yield from self.inner.keys()


@dataclass
class Bool(Node):
    op: str  # "and" | "or"
    parts: list[Node] = field(default_factory=list)

    def matches(self, lookup: Callable[[str], Any]) -> bool:
        test = all if self.op == "and" else any
        return test(part.matches(lookup) for part in self.parts)

    def keys(self) -> Iterator[str]:
        for part in self.parts:
            yield from part.keys()


@dataclass
class Filter:
    """A parsed expression: ``matches(lookup)`` with ``lookup(key) -> value or MISSING``."""

    text: str
    root: Node

    def matches(self, lookup: Callable[[str], Any]) -> bool:
        return self.root.matches(lookup)

    def keys(self) -> list[str]:
        return list(dict.fromkeys(self.root.keys()))


MAX_NESTING = 64  # levels of '(' and 'not' in one filter


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, column)
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                if text[pos:].strip() == "":
                    break
                col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
                raise self.error(f"unexpected {text[col - 1]!r}", col)
            kind = match.lastgroup or ""
            value = match[kind]
            col = match.start(kind) + 1
            if kind == "word" and value.lower() in ("and", "or", "not"):
                kind, value = "bool", value.lower()
            elif kind == "bool":
                value = {"&&": "and", "||": "or", "!": "not"}[value]
            self.tokens.append((kind, value, col))
            pos = match.end()
        self.i = 0
        self.depth = 0

    def error(self, message: str, column: int | None = None) -> FilterError:
        where = f" at column {column}" if column else " at the end"
        shown = self.text if len(self.text) <= 80 else self.text[:79] + "…"  # one readable line
        return FilterError(f"bad filter {shown!r}: {message}{where}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.error("expression ends too early")
        self.i += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise self.error("empty expression", None)
        node = self.parse_or()
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token[1]!r}", token[2])
        return node

    def parse_or(self) -> Node:
        parts = [self.parse_and()]
        while (token := self.peek()) is not None and token[:2] == ("bool", "or"):
            self.i += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Bool("or", parts)

    def parse_and(self) -> Node:
        parts = [self.parse_unary()]
        while (token := self.peek()) is not None and token[1] != "or" and token[1] != ")":
            if token[:2] == ("bool", "and"):
                self.i += 1
            parts.append(self.parse_unary())  # juxtaposition is "and" too
        return parts[0] if len(parts) == 1 else Bool("and", parts)

    def parse_unary(self) -> Node:
        kind, value, col = self.take()
        if (kind, value) in (("bool", "not"), ("paren", "(")):
            self.depth += 1  # the parser and the matcher recurse once a level: refuse before Python's limit
            if self.depth > MAX_NESTING:
                raise self.error(f"too deeply nested (more than {MAX_NESTING} levels of '(' and 'not')", col)
        if (kind, value) == ("bool", "not"):
            node: Node = Not(self.parse_unary())
            self.depth -= 1
            return node
        if (kind, value) == ("paren", "("):
            node = self.parse_or()
            self.depth -= 1
            closing = self.peek()
            if closing is None or closing[1] != ")":
                raise self.error("missing ')'", closing[2] if closing else None)
            self.i += 1
            return node
        if kind != "word":
            raise self.error(f"expected a key, got {value!r}", col)
        key = value[len("config."):] if value.startswith("config.") and len(value) > 7 else value
        key = KEY_ALIASES.get(key, key)
        token = self.peek()
        if token is None or token[0] != "op":
            return Cmp(key)
        self.i += 1
        value_token = self.peek()
        if value_token is None or value_token[0] not in ("word", "quoted"):
            raise self.error(f"expected a value after {token[1]!r}", value_token[2] if value_token else None)
        self.i += 1
        vkind, vtext, vcol = value_token
        if vkind == "quoted":
            texts = [re.sub(r"\\(.)", r"\1", vtext[1:-1])]
        else:
            texts = vtext.split("|") if token[1] in ("=", "==", "!=") else [vtext]
        if any(t == "" for t in texts):
            raise self.error(f"empty alternative in {vtext!r}", vcol)

        def where(message: str) -> FilterError:
            return self.error(message, vcol)

        if token[1] in ("~", "!~"):
            try:
                re.compile(texts[0])
            except re.error as exc:
                raise self.error(f"bad regular expression {texts[0]!r} ({exc})", vcol) from None
        return Cmp(key, token[1], tuple(Literal.of(t, key, vkind == "quoted", where) for t in texts))


def parse_filter(text: str) -> Filter:
    """Parse one expression; a :class:`FilterError` names the expression, what is wrong and the column."""
    if not isinstance(text, str):
        raise FilterError(f"bad filter {text!r}: expected a string")
    return Filter(text, _Parser(text).parse())
