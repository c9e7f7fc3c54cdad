"""The --filter language: parsing, semantics and one-line errors (pure)."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from lightning_track.errors import FilterError
from lightning_track.query.filters import MISSING, parse_filter, parse_length

RUN = {"status": "failed", "dataset": "arc-challenge", "method": "lora", "model.lr": 0.0005, "seed": "1e-3",
       "tag": ["baseline", "v2"], "best.val/loss": 0.42, "final.val/acc": math.nan, "use_bias": True,
       "start": datetime(2026, 12, 1, 12, 0).timestamp(), "age": 3 * 3600.0, "notes": "", "name": "arc_lora_1"}


def match(expr: str, run: dict = RUN) -> bool:
    return parse_filter(expr).matches(lambda key: run.get(key, MISSING))


@pytest.mark.parametrize("expr, expected", [
    ("status=failed", True), ("status==failed", True), ("status!=failed", False),
    ("status=failed|crashed", True), ("status=completed|crashed", False),
    ("dataset=arc*", True), ("dataset=*chall*", True), ("dataset=arc", False), ("name~lora", True),
    ("name!~^x", True), ("model.lr<1e-3", True), ("model.lr>=1e-3", False), ("config.model.lr<0.001", True),
    ("seed<0.01", True),  # YAML kept "1e-3" as a string: still a number here
    ("best.val/loss<=0.42", True), ("best.val/loss<0.42", False),
    ("final.val/acc>0", False), ("final.val/acc<0", False),  # NaN matches no comparison
    ("final.val/acc=nan", False), ("final.val/acc!=0", True), ("model.lr>nan", False),
    ("model.lr=0.0005", True), ("model.lr<=0.0005", True), ("model.lr>0.0005", False), ("model.lr>0.0001", True),
    ('model.lr="0.0005"', True), ("model.lr='5e-4'", False),  # quoted: compared as text
    ("model.lr=0.0005|0.1", True), ("model.lr!=0.1|0.2", True),
    ("tag=baseline", True), ("tags=v2", True), ("tag=old", False), ("tag!=old", True), ("tag!=v2", False),
    ("start>2026-12-01", True), ("start>2026-12-01T13:00", False), ("age<2d", True), ("age>=4h", False),
    ("use_bias=true", True), ("use_bias=false", False),
    ("missing.key=1", False), ("missing.key!=1", True), ("missing.key", False), ("notes", False), ("tag", True),
    ("status=failed and method=lora", True), ("status=failed method=full", False),
    ("status=completed or method=lora", True), ("not status=completed", True), ("!(status=failed)", False),
    ("(status=completed || tag=v2) && model.lr<1", True), ("status='failed'", True), ('name="arc_lora_1"', True),
])
def test_expressions(expr: str, expected: bool) -> None:
    assert match(expr) is expected


def test_keys_are_reported_for_unknown_key_warnings() -> None:
    assert parse_filter("a=1 or (b<2 and not c)").keys() == ["a", "b", "c"]


@pytest.mark.parametrize("expr, message", [
    ("model.lr<<1", "expected a value after '<' at column 10"),
    ("status=", "expected a value after '=' at the end"),
    ("(status=failed", "missing ')' at the end"),
    ("status=failed)", "unexpected ')' at column 14"),
    ("", "empty expression"),
    ("and", "expected a key, got 'and' at column 1"),
    ("start>yesterday", "start takes a date or time"),
    ("age<2days", "age takes"),
    ("name~'a(b'", "bad regular expression"),
    ("status=a||", "empty alternative"),
])
def test_errors_name_the_expression_and_where(expr: str, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(expr)
    text = str(caught.value)
    assert text.startswith(f"bad filter {expr!r}: ") and message in text and "\n" not in text


def test_lengths() -> None:
    assert [parse_length(t) for t in ("90s", "30m", "2h", "1.5d", "1w", "45")] == [90, 1800, 7200, 129600, 604800, 45]
