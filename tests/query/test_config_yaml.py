"""The fast config.yaml reader gives exactly PyYAML's reading, or hands the file to PyYAML."""

from __future__ import annotations

import random

import pytest
import yaml

from lightning_track.query.config_yaml import load_config_yaml, read_simple_yaml
from lightning_track.run.config import config_to_yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Values whose YAML spelling is easy to get wrong: YAML 1.1 booleans, numbers that are strings, octal,
# sexagesimal, timestamps, indicators, quotes, comments, non-ASCII, several lines.
ATOMS = [0, 7, -3, 1.0, -0.0, 0.5, 1e-5, 9.999999999999999e-06, 1e20, float("inf"), float("nan"), True, False,
         None, "abc", "1.0", "1", "true", "yes", "no", "on", "off", "null", "~", "", " x ", "a: b", "a #b", "x#y",
         "'q'", '"dq"', "it's", "2024-01-01", "0x1F", "012", "1_000", "1e5", "1.0e5", "-", "- x", "-x", "?x", ":x",
         "a:b", "[1]", "{}", "/data/x.jsonl", "bf16-mixed", "two\nlines", "tab\tx", "ünï", "<<", "=", ".inf",
         "+1", "1.", ".5", "1:30", "${oc.env:X}", "a,b", "*a", "&b", "!t", "|", ">", "%p", "@x", "`x", [], {},
         [1, 2.5, "x"], ["1", None, True], [[1, 2]], [{"a": 1}]]
KEYS = ["a", "lr", "model", "x.y", "_t_", "null", "true", "yes", "1", "a b", "k-1", "on", "y", "e5", "inf"]


def _tree(rng: random.Random, depth: int = 0) -> dict:
    out = {}
    for _ in range(rng.randint(0, 6)):
        key = rng.choice(KEYS) + rng.choice(["", str(rng.randint(0, 9))])
        out[key] = _tree(rng, depth + 1) if depth < 3 and rng.random() < 0.3 else rng.choice(ATOMS)
    return out


def _same(text: str) -> bool:
    """The fast reading is PyYAML's, type for type (``repr``: 1 is not 1.0 is not True), or there is none."""
    got = read_simple_yaml(text)
    return got is None or repr(got) == repr(yaml.load(text, Loader=LOADER))


def test_configs_as_runs_write_them_read_fast_and_as_pyyaml_reads_them() -> None:
    rng = random.Random(1)
    fast = 0
    for _ in range(500):
        tree = _tree(rng)
        text = config_to_yaml(tree)  # what a run writes to config.yaml
        assert _same(text), text
        fast += read_simple_yaml(text) is not None
    assert fast > 30  # the plain configs (most real ones) take the fast path
    real = {"data": {"batch_size": 32, "path": "/data/x.jsonl"}, "model": {"lr": 1e-05, "name": "mlp"},
            "optimizer": {"betas": [0.9, 0.999], "name": "adamw"}, "seed": 0, "trainer": {"precision": "bf16-mixed"}}
    assert read_simple_yaml(config_to_yaml(real)) == real


def test_edited_configs_never_read_differently() -> None:
    """A config edited by hand, broken in every small way: PyYAML's reading or none."""
    base = config_to_yaml({"data": {"batch_size": 32, "path": "/data/x.jsonl"}, "model": {"lr": 1e-05},
                           "optimizer": {"betas": [0.9, 0.999], "name": "adamw"}, "seed": 0})
    edits = [" ", "  ", ":", ": ", "-", "- ", "'", "\n", "\n  ", "\n- ", "#", " #", "1", ".", "e", "{}", "~", "\n-"]
    rng = random.Random(2)
    for _ in range(2000):
        text = base
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice(edits) + text[i:] if rng.random() < 0.5 else text[:i] + text[i + 2:]
        try:
            expected = repr(yaml.load(text, Loader=LOADER))
        except yaml.YAMLError:
            expected = None  # PyYAML refuses it: the fast reader must not accept it
        got = read_simple_yaml(text)
        assert got is None or repr(got) == expected, text


@pytest.mark.parametrize("text", [
    "a: 1 # a comment\n", "# only a comment\n", "a: &x 1\nb: *x\n", "a: {b: 1}\n", "a: \"x\"\n", "a: |\n  text\n",
    "a: one\n  two\n", "a: ü\n", "a:\n- b: 1\n", "---\na: 1\n", "a: 0x10\n", "a: 2024-01-01\n", "a: .inf\n",
    "yes: 1\n", "a:\tb\n", "a: 1\r\nb: 2\r\n", ""])
def test_what_it_is_unsure_of_goes_to_pyyaml(text: str) -> None:
    assert read_simple_yaml(text) is None
    assert repr(load_config_yaml(text.encode())) == repr(yaml.load(text.encode(), Loader=LOADER))


def test_a_broken_file_raises_pyyamls_error() -> None:
    with pytest.raises(yaml.YAMLError):
        load_config_yaml(b"a: [1\nb: 2\n")


def test_a_resolver_added_to_the_loader_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values read before are not reused under other rules."""
    import re

    assert read_simple_yaml("a: xyz\n") == {"a": "xyz"}
    copied = {key: list(rules) for key, rules in LOADER.yaml_implicit_resolvers.items()}
    monkeypatch.setattr(LOADER, "yaml_implicit_resolvers", copied)  # the change stays in this test
    yaml.add_implicit_resolver("tag:yaml.org,2002:null", re.compile("^xyz$"), list("x"), Loader=LOADER)
    assert yaml.load("a: xyz\n", Loader=LOADER) == {"a": None}
    assert read_simple_yaml("a: xyz\n") == {"a": None}
