"""A run's ``config.yaml`` read fast: the plain subset the runs write, parsed here; anything else by PyYAML.

Why: PyYAML over libyaml still builds a node object per scalar and constructs it in Python, about 0.25 ms
for a 25-key config, which is most of a first ``lt report`` (or ``lt ls -f``) of 10,000 runs. The files
come from OmegaConf's dump (block mappings, indentless block lists of scalars, plain and single-quoted
scalars), which a line-by-line reader takes in a tenth of that. It gives exactly what
``yaml.load(..., Loader=CSafeLoader)`` gives or nothing: each plain scalar's type comes from the loader's
own implicit resolvers, and whatever this reader is not certain of (comments, anchors, flow collections,
double quotes, multi-line scalars, non-ASCII text, a key or number YAML spells unusually) makes it return
None, so the caller parses the file with PyYAML as before.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["load_config_yaml", "read_simple_yaml"]

_STR = "tag:yaml.org,2002:str"
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_./+-]*):(?: +(.*))?")
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_UNSURE_TEXT = re.compile(r"[^\n\x20-\x7e]")  # tabs, CR, non-ASCII, control characters: PyYAML decides
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_BOOLS = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}


_KNOWN_MAX = 50_000
_known: dict[str, Any] = {}  # scalar text -> value: the runs of a sweep repeat most keys and values
_known_for: list[Any] = [None]  # the resolvers _known was filled under


class _Unsure(Exception):
    """Not certainly the plain subset: PyYAML reads the file."""


def _loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _tag(value: str, resolvers: dict[Any, list[tuple[str, Any]]]) -> str:
    """The tag the loader's resolver gives a plain scalar (as ``Resolver.resolve`` does)."""
    for tag, regexp in resolvers.get(value[0] if value else "", []) + resolvers.get(None, []):
        if regexp.match(value):
            return tag
    return _STR


def _scalar(text: str, resolvers: dict[Any, list[tuple[str, Any]]]) -> Any:
    value = _known.get(text, _known)
    if value is not _known:
        return value
    value = _construct(text, resolvers)
    if type(value) in (str, int, float, bool, type(None)):  # immutable: safe to hand out again
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known[text] = value
    return value


def _construct(text: str, resolvers: dict[Any, list[tuple[str, Any]]]) -> Any:
    if text[0] in _INDICATORS:
        if text in ("{}", "[]"):
            return {} if text == "{}" else []
        if text[0] == "'" and len(text) > 1 and text[-1] == "'" and "'" not in text[1:-1].replace("''", ""):
            return text[1:-1].replace("''", "'")
        if text[0] != "-" or len(text) < 2 or text[1] == " ":
            raise _Unsure
    if ": " in text or " #" in text or text[-1] == ":":
        raise _Unsure
    tag = _tag(text, resolvers)
    if tag == _STR:
        return text
    kind = tag.rpartition(":")[2]
    if kind == "null":
        return None
    if kind == "bool":
        return _BOOLS[text.lower()]
    if kind == "int" and _DECIMAL.fullmatch(text):
        return int(text)
    if kind == "float" and not any(c in text for c in "_:nNiI"):  # no underscores, sexagesimal, inf or nan
        return float(text)
    raise _Unsure


def _sequence(lines: list[tuple[int, str]], i: int, indent: int, resolvers: Any) -> tuple[list[Any], int]:
    items = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
        items.append(_scalar(lines[i][1][2:].lstrip(" "), resolvers))
        i += 1
    if i < len(lines) and lines[i][0] > indent:
        raise _Unsure
    return items, i


def _mapping(lines: list[tuple[int, str]], i: int, indent: int, resolvers: Any) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines):
        depth, body = lines[i]
        if depth < indent:
            break
        match = _KEY.fullmatch(body) if depth == indent else None
        if match is None or type(_scalar(match[1], resolvers)) is not str:
            raise _Unsure
        key, rest = match[1], match[2]
        i += 1
        if rest:
            out[key] = _scalar(rest, resolvers)
        elif i < len(lines) and lines[i][1].startswith("- ") and lines[i][0] >= indent:
            out[key], i = _sequence(lines, i, lines[i][0], resolvers)
        elif i < len(lines) and lines[i][0] > indent:
            out[key], i = _mapping(lines, i, lines[i][0], resolvers)
        else:
            out[key] = None
    return out, i


def read_simple_yaml(text: str) -> dict[str, Any] | None:
    """The mapping ``text`` holds when it is the plain subset (then equal to PyYAML's reading), else None."""
    if _UNSURE_TEXT.search(text):
        return None
    lines = []
    for line in text.split("\n"):
        body = line.rstrip(" ")
        if body:
            stripped = body.lstrip(" ")
            lines.append((len(body) - len(stripped), stripped))
    if not lines:
        return None  # PyYAML's None for an empty document
    try:
        resolvers = _loader().yaml_implicit_resolvers
        rules = (id(resolvers), sum(map(len, resolvers.values())))
        if _known_for[0] != rules:  # a resolver added since (yaml.add_implicit_resolver): values may differ
            _known.clear()
            _known_for[0] = rules
        found, end = _mapping(lines, 0, lines[0][0], resolvers)
    except (_Unsure, RecursionError):  # too deep for this reader: PyYAML decides
        return None
    return found if end == len(lines) else None


def load_config_yaml(data: bytes) -> Any:
    """What ``yaml.load(data, Loader=CSafeLoader)`` gives, through :func:`read_simple_yaml` where it can."""
    try:
        found = read_simple_yaml(data.decode("ascii"))
    except UnicodeDecodeError:
        found = None
    if found is not None:
        return found
    import yaml

    return yaml.load(data, Loader=_loader())
