"""The SQL a config-key filter becomes (query/filters_sql.py) answers each kept config exactly as
``filters.compare`` does, or says "not sure" (NULL, then Python asks): seeded random values of every kind a
kept config holds against random filters, in the SQLite this Python has; and the plain cases are decided in
SQL (a number, a bool, null or a missing key against a number, bool or null; text against text)."""

from __future__ import annotations

import math
import random
import sqlite3
import sys

import orjson
import pytest

from lightning_track.errors import FilterError
from lightning_track.query.filters import MISSING, parse_filter
from lightning_track.query.filters_sql import TOLERANCE, plan

KEY = "model.lr"  # a nested key's flattened name: the JSON path quotes the dot
NUMBERS = ["0.001", "1e-3", "5", "-2", "0", "-0", "0.5", "1e-05", "2.5e-300", "1e308", "9007199254740993",
           "-9007199254740992", "nan", "NaN", "inf", "-inf", "1_000", "0x10"]
WORDS = ["true", "False", "null", "none", "abc", "ab", "é", "a*", "?b", "[ab]c", "1e-05x", '"0.001"', '"5"',
         "'1e-3'", '"true"', '"a b"', '"x\\"y"', '"é"', "\u00e9\u0301", "-"]
OPS = ["=", "==", "!=", "<", "<=", ">", ">=", "~", "!~"]


def random_value(rng: random.Random, depth: int = 0) -> object:
    """A value a flattened config can hold exactly as JSON (what the catalog keeps), of every kind."""
    kind = rng.randrange(12 if depth == 0 else 9)
    if kind == 0:
        return rng.choice([0, 1, -1, 5, 2, 2 ** 53, 2 ** 53 + 1, -(2 ** 53) - 1, 2 ** 63 - 1, -(2 ** 63),
                           2 ** 64 - 1, 10 ** 6, rng.randrange(-10 ** 6, 10 ** 6)])
    if kind == 1:
        return rng.choice([0.0, -0.0, 0.001, 1e-3 + 2e-19, 0.0009999999999999998, 1e-05, 1e-4, 0.5, 5.0, -2.0,
                           2.5e-300, 5e-324, 1e308, sys.float_info.max, -sys.float_info.max, 9007199254740992.0,
                           1e16, 0.1 + 0.2])
    if kind == 2:  # random doubles of every size, and next to a literal
        x = rng.choice([10 ** rng.uniform(-310, 308), rng.uniform(-10, 10), float(rng.choice(NUMBERS[:9]))])
        for _ in range(rng.randrange(3)):
            x = math.nextafter(x, rng.choice([math.inf, -math.inf]))
        return x if math.isfinite(x) else 1.0
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:  # text that float() reads, and text it does not
        return rng.choice(["1e-05", "0.001", " 1e-3 ", "1_000", "nan", "-Infinity", "inf", "5", "-0", "0x10",
                           "\u0661\u0662", "1e-05x", ""])
    if kind == 6:
        return rng.choice(["abc", "ab", "a", "abd", "é", "e\u0301", "a*", "x\"y", "back\\slash", "line\nfeed",
                           "nul\u0000", "[ab]c", "bc", "true", "null", "a b", "😀", "Z", "~"])
    if kind == 7:
        return "".join(rng.choice("ab*?[]-0.1eé") for _ in range(rng.randrange(4)))
    if kind == 8:
        return rng.choice([{}, {"a": 1}, {"lr": 0.001}])
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]  # a list (kinds 9-11), maybe empty


def random_filter(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return f"not ({random_filter(rng, depth + 1)})"
    if depth < 2 and roll < 0.3:
        return f"({random_filter(rng, depth + 1)} {rng.choice(['and', 'or'])} {random_filter(rng, depth + 1)})"
    key = rng.choice([KEY, f"config.{KEY}", "other"])
    if roll < 0.37:
        return key  # present and truthy
    op = rng.choice(OPS)
    literal = rng.choice(NUMBERS + WORDS)
    if op in ("=", "==", "!=") and rng.random() < 0.2 and not literal.startswith(("'", '"')):
        literal += "|" + rng.choice([n for n in NUMBERS + WORDS if not n.startswith(("'", '"'))])
    return f"{key}{op}{literal}"


def parses(text: str) -> bool:
    try:
        parse_filter(text)
        return True
    except FilterError:  # a literal that is no regular expression (~?b)
        return False


def config_name(key: str) -> str:
    return key.removeprefix("config.")


def answers(texts: list[str], configs: list[object]) -> tuple[list[list[int | None]], list]:
    """Each filter's SQL answer for each config (a BLOB of orjson's bytes, as the catalog keeps it)."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE configs (n INTEGER PRIMARY KEY, config BLOB NOT NULL)")
    conn.executemany("INSERT INTO configs VALUES (?, ?)",
                     [(i, orjson.dumps({} if value is MISSING else {KEY: value})) for i, value in enumerate(configs)])
    filters = [parse_filter(text) for text in texts]
    out = []
    for f in filters:
        planned = plan([f], config_name)
        assert planned is not None, f.text
        out.append([row[0] for row in conn.execute(
            f"SELECT {planned.decision} FROM (SELECT n, {planned.extract} FROM configs LIMIT -1 OFFSET 0) ORDER BY n",
            planned.params)])
    return out, filters


def plain(value: object, literal: object, op: str) -> bool:
    """A case SQL must decide: no list, no regex, no glob; text against text; a number not next to the literal."""
    if op in ("~", "!~") or isinstance(value, (list, dict)):
        return False
    if value is MISSING or isinstance(value, bool) or value is None or isinstance(literal, (bool, type(None))):
        return True
    if isinstance(literal, str):
        if op in ("=", "==", "!=") and any(c in literal for c in "*?["):
            return False
        if isinstance(value, str):
            return "\\" not in orjson.dumps(value).decode()
        return isinstance(value, int) and -(2 ** 63) <= value < 2 ** 63  # (a float's text is Python's repr)
    if isinstance(value, str):
        return False  # float()'s rules
    if not math.isfinite(literal):
        return True
    if isinstance(value, int):
        return abs(value) <= 2 ** 53
    return orjson.dumps(value) == orjson.dumps(literal) or \
        abs(value - literal) > 2 * max(abs(literal) * TOLERANCE, 1e-300)


@pytest.mark.parametrize("seed", range(4))
def test_the_sql_answer_is_filters_compare_or_not_sure(seed: int) -> None:
    rng = random.Random(seed)
    configs = [random_value(rng) for _ in range(300)] + [MISSING] * 5
    assert all(value is MISSING or orjson.loads(orjson.dumps(value)) == value for value in configs)
    texts = [text for text in (random_filter(rng) for _ in range(200)) if parses(text)][:150]
    found, filters = answers(texts, configs)
    decided = 0
    for f, column in zip(filters, found, strict=True):
        for value, answer in zip(configs, column, strict=True):
            expected = f.matches(lambda key, value=value: value if config_name(key) == KEY else MISSING)
            if answer is not None:
                decided += 1
                assert answer in (0, 1) and bool(answer) is expected, (f.text, value, answer)
    assert decided > 0.5 * len(texts) * len(configs)  # most answers are SQL's


def test_the_plain_cases_are_decided_in_sql() -> None:
    rng = random.Random(7)
    configs = [random_value(rng) for _ in range(400)] + [MISSING] * 5
    simple = [f"{KEY}{op}{literal}" for op in OPS if op not in ("~", "!~") for literal in NUMBERS + WORDS]
    assert all(map(parses, simple))
    found, filters = answers(simple, configs)
    for f, column in zip(filters, found, strict=True):
        cmp = f.root
        literal = cmp.literals[0].value
        for value, answer in zip(configs, column, strict=True):
            expected = f.matches(lambda key, value=value: value if key == KEY else MISSING)
            if plain(value, literal, cmp.op):
                assert answer is not None, (f.text, value)
            if answer is not None:
                assert bool(answer) is expected, (f.text, value, answer)


@pytest.mark.parametrize("value, text, expected", [
    (0.001, "model.lr<1e-3", 0), (0.001, "model.lr<=1e-3", 1), (0.0001, "model.lr<1e-3", 1),
    (1e-05, "model.lr<1e-3", 1), ("1e-05", "model.lr<1e-3", None),  # a number YAML kept as a string: Python's
    (5, "model.lr=5", 1), (5, "model.lr!=5", 0), (5, 'model.lr="5"', 1), (True, "model.lr=1", 0),
    (True, "model.lr=true", 1), (None, "model.lr=null", 1), (None, "model.lr!=null", 0), (MISSING, "model.lr!=1", 1),
    (MISSING, "model.lr<1", 0), (MISSING, "model.lr", 0), (0, "model.lr", 0), ("", "model.lr", 0), ([], "model.lr", 0),
    ([0.001], "model.lr=0.001", None), ("abc", "model.lr=abc", 1), ("abc", "model.lr>abd", 0),
    ("abc", "model.lr=a*", None),
    (2 ** 53 + 1, "model.lr>9007199254740992", None), (0.1, "model.lr<nan", 0), (0.1, "model.lr<inf", 1),
    (-0.0, "model.lr=0", None), (0.0, "model.lr=0", 1), ("x", "model.lr~x", None),
])
def test_single_answers(value: object, text: str, expected: int | None) -> None:
    found, _ = answers([text], [value])
    assert found[0][0] == expected


def test_a_filter_on_the_rows_fields_alone_is_not_planned() -> None:
    assert plan([parse_filter("status=failed")], lambda key: "" if key == "status" else key) is None
    assert plan([parse_filter("a\\b=1")], config_name) is None  # not sayable as a JSON path


def test_a_plans_select_numbers_its_values_after_the_plans_own() -> None:
    planned = plan([parse_filter("model.lr<1e-3"), parse_filter("x=a")], config_name)
    conn = sqlite3.connect(":memory:")
    conn.executescript("CREATE TABLE runs (path TEXT PRIMARY KEY, ended INTEGER);"
                       "CREATE TABLE configs (path TEXT PRIMARY KEY, config BLOB)")
    conn.executemany("INSERT INTO runs VALUES (?, 1)", [("/r/a",), ("/r/b",), ("/r/c",), ("/s/d",)])
    conn.executemany("INSERT INTO configs VALUES (?, ?)", [("/r/a", b'{"model.lr": 0.0001, "x": "a"}'),
                                                           ("/r/c", b'{"model.lr": 0.1}'), ("/s/d", b"{}")])
    n = len(planned.params)
    runs, params = planned.select("path", "path >= ? AND path < ? AND ended", ["/r/", "/r0"], order="path")
    assert params == [*planned.params, "/r/", "/r0"] and f"path >= ?{n + 1} AND path < ?{n + 2}" in runs
    assert conn.execute(f"SELECT path, {planned.texts}, {planned.decision} FROM {runs}", params).fetchall() == [
        ("/r/a", "0.0001", '"a"', 1), ("/r/b", None, None, 0), ("/r/c", "0.1", None, 0)]
    runs, params = planned.select("path", "path >= ?", ["/r/"], join="JOIN")  # the runs with a kept config
    assert sorted(row[0] for row in conn.execute(f"SELECT path FROM {runs}", params)) == ["/r/a", "/r/c", "/s/d"]
    with pytest.raises(ValueError):
        planned.select("path", "path >= ? AND path < ?", ["/r/"])  # a "?" without its value
