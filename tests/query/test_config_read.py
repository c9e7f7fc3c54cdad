"""Reading config.yaml: ``load_yaml`` gives exactly ``yaml.load``'s value or error (on YAML's corner cases
and on random YAML-like text); the first filter of a look parses its runs' configs in a process pool with
the same values and problems as each run parsing its own; an edited config is read again."""

from __future__ import annotations

import multiprocessing
import os
import random
from pathlib import Path

import pytest
import yaml

from lightning_track.query import catalog, config_cache, config_read
from lightning_track.query.config_read import load_yaml, parse_many
from lightning_track.query.runs import filter_runs, find_runs

CORNERS = [
    "a: 1\nb: [1, 2]\nc: {d: e}\n",
    "lr: 1e-3\nwd: 1.0e-3\nn: 0o17\nm: 017\nh: 0x1F\nt: 1:30\nbig: 123456789012345678901234567890\n",
    "x: .inf\ny: -.Inf\nz: .nan\nu: +1_000\n",
    "yes: no\non: off\nb: True\nc: ~\nd: null\ne: ''\nf: '1'\ng: \"2\"\n",
    "base: &b {lr: 1, wd: 2}\nrun:\n  <<: *b\n  lr: 3\n",
    "list: &l [1, 2]\nagain: *l\n",
    "scalar: &s hello\nagain: *s\n",
    "= : value key\n",
    "when: 2026-12-01\nat: 2026-12-01 10:00:00\n",
    "blob: !!binary aGVsbG8=\n",
    "s: !!set {a, b}\no: !!omap [a: 1, b: 2]\np: !!pairs [a: 1]\n",
    "n: !!str 1\nm: !!int '3'\nk: !!float '2'\nj: !!null ''\n",
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n",
    "1: int key\n2.5: float key\ntrue: bool key\n~: null key\n",
    "dup: 1\ndup: 2\n",
    "r: &r [*r]\n",
    "m: &m {self: *m}\n",
    "custom: !foo bar\n",
    "a: 1\n---\nb: 2\n",
    "a: [1, 2\n",
    "a: b: c\n",
    "\t- tab\n",
    "",
    "# only a comment\n",
    "- a\n- b\n",
    "just a scalar\n",
    "nested: {a: {b: {c: {d: [1, {e: f}]}}}}\n",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "uni: \"\\u00e9\\U0001F600\"\nraw: é\n",
    "[" * 400 + "]" * 400,
]


def outcome(load, text: str) -> tuple[str, str]:
    """What a load gives: the value's repr and type, or the error's type and text."""
    try:
        value = load(text.encode())
    except RecursionError:
        return ("RecursionError", "")
    except Exception as exc:  # noqa: BLE001 - the point is comparing errors too
        return (type(exc).__name__, str(exc))
    return (type(value).__name__, repr(value))


def plain_load(data: bytes):
    return yaml.load(data, Loader=yaml.CSafeLoader)


@pytest.mark.parametrize("text", CORNERS, ids=range(len(CORNERS)))
def test_load_yaml_is_yaml_load_on_yaml_corner_cases(text: str) -> None:
    assert outcome(load_yaml, text) == outcome(plain_load, text)


def test_a_plain_config_is_built_without_yaml_loads_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast walk is what gives a config made of maps, lists and plain scalars (yaml.load only for the
    rest: test above)."""
    load_yaml(b"warm: up\n")
    monkeypatch.setattr(yaml, "load", lambda *_a, **_k: pytest.fail("yaml.load used"))
    assert load_yaml(b"a: {b: 1e-3, c: [1, 2.5, true, null, x]}\nd: 0x10\n") == {
        "a": {"b": "1e-3", "c": [1, 2.5, True, None, "x"]}, "d": 16}


def test_a_tree_deeper_than_pythons_recursion_limit_loads_as_yaml_load_does() -> None:
    def depth(value) -> int:
        levels = 0
        while isinstance(value, list) and value:
            value, levels = value[0], levels + 1
        return levels

    text = b"a: " + b"[" * 5000 + b"]" * 5000
    assert depth(load_yaml(text)["a"]) == depth(plain_load(text)["a"]) == 4999


def test_load_yaml_is_yaml_load_on_random_yaml_like_text() -> None:
    pieces = ["a", "b: ", ":", "- ", "[", "]", "{", "}", ", ", "\n", "  ", "&x ", "*x", "!!str ", "!!int ", "<<: ",
              "'q'", '"d"', "1e-3", "0x1f", "1:30", "yes", "~", ".nan", "2026-12-01", "? ", "#c", "|\n", "1", "é"]
    rng = random.Random(23)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        assert outcome(load_yaml, text) == outcome(plain_load, text), text


def write_runs(root: Path, count: int) -> None:
    for i in range(count):
        run = root / f"ds_m_20260101_{i:06d}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text('{"status": "completed", "start": "2026-01-01T00:00:00Z"}')
        (run / "config.yaml").write_text(f"model:\n  lr: {10.0 ** -(i % 5)}\n  name: m{i}\nseed: {i}\n")


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(catalog, "RACY_S", 0.0)
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "runs"
    write_runs(root, 40)
    broken = root / "ds_m_20260101_000007" / "config.yaml"
    broken.write_text("model: {lr: [1e-3\n")
    monkeypatch.setattr(config_cache, "_entries", None)
    monkeypatch.setattr(config_cache, "_dirty", False)
    yield root
    catalog.flush_configs()  # this test's configs go to this test's cache
    config_cache.flush()


def snapshot(found: list) -> list[tuple]:
    return [(run.name, run.config, list(run.problems)) for run in found]


@pytest.mark.parametrize("catalog_on", [True, False])
def test_a_pooled_first_filter_equals_each_run_parsing_its_own(runs: Path, monkeypatch: pytest.MonkeyPatch,
                                                                catalog_on: bool) -> None:
    """The pool's configs and problems (a config.yaml that is not YAML: the same one line) are the ones a
    run parsing its own file gets, through the catalog and without it."""
    monkeypatch.setattr(config_read, "POOL_MIN", 10**9)
    alone = find_runs(runs, catalog=catalog_on)
    matched_alone = [r.name for r in filter_runs(alone, "model.lr<0.05")]
    catalog.flush_configs()
    monkeypatch.setattr(config_read, "POOL_MIN", 2)
    monkeypatch.setattr(config_read, "FIRST", 1)
    monkeypatch.setattr(config_read, "_cores", lambda: 2)
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(runs.parent / "cache2"))
    monkeypatch.setattr(config_cache, "_entries", None)  # a fresh process: nothing parsed yet
    pooled = find_runs(runs, catalog=catalog_on)
    batches = []
    parse_many = config_read.parse_many
    monkeypatch.setattr(config_read, "parse_many", lambda paths: batches.append(len(paths)) or parse_many(paths))
    assert [r.name for r in filter_runs(pooled, "model.lr<0.05")] == matched_alone
    assert batches == [40]  # every run's config parsed at once
    assert snapshot(pooled) == snapshot(alone)
    assert len(matched_alone) == 23  # lr 0.01, 0.001, 0.0001: 24 of 40 runs, one of them broken
    problem = [p for r in pooled for p in r.problems]
    assert problem == [f"{runs / 'ds_m_20260101_000007' / 'config.yaml'}: not readable YAML ("
                       + " ".join(str(_error("model: {lr: [1e-3\n")).split())[:200] + ")"]


def _error(text: str) -> Exception:
    try:
        yaml.load(text.encode(), Loader=yaml.CSafeLoader)  # bytes, as a run folder's file is read
    except yaml.YAMLError as exc:
        return exc
    raise AssertionError("expected a YAML error")


@pytest.mark.parametrize("pool", [False, True])
def test_lt_ls_filtering_on_config_names_a_broken_config_yaml_in_one_line(
        runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pool: bool) -> None:
    from lightning_track.cli.lt import main

    if pool:
        monkeypatch.setattr(config_read, "POOL_MIN", 2)
        monkeypatch.setattr(config_read, "FIRST", 1)
        monkeypatch.setattr(config_read, "_cores", lambda: 2)
    for _ in range(2):  # first look, then again (a broken file is never kept: said each time)
        assert main(["ls", str(runs), "-f", "model.lr<0.05", "--all"]) == 0
        out, err = capsys.readouterr()
        assert len(out.splitlines()) == 1 + 23
        broken = runs / "ds_m_20260101_000007" / "config.yaml"
        assert [line for line in err.splitlines() if "config.yaml" in line] == [
            f"lt ls: {broken}: not readable YAML (" + " ".join(str(_error("model: {lr: [1e-3\n")).split())[:200] + ")"]
        catalog.flush_configs()


def test_a_pooled_filter_over_runs_the_catalog_kept_without_configs_equals_a_plain_read(
        runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``lt ls`` first (every run kept, no config asked), then ``lt ls -f``: each kept run is built from its
    record and its config parsed in the pool; then the configs come from the catalog."""
    find_runs(runs)
    monkeypatch.setattr(config_read, "POOL_MIN", 2)
    monkeypatch.setattr(config_read, "FIRST", 1)
    monkeypatch.setattr(config_read, "_cores", lambda: 2)
    plain = [r.name for r in filter_runs(find_runs(runs, catalog=False), "model.lr<0.05")]
    kept = find_runs(runs)
    assert type(kept[0]).__name__ == "CatalogRun"
    assert [r.name for r in filter_runs(kept, "model.lr<0.05")] == plain
    catalog.flush_configs()
    again = find_runs(runs)
    assert [r.name for r in filter_runs(again, "model.lr<0.05")] == plain
    assert sum(run._info is not None for run in again) == 1  # only the broken config's run, parsed again


def test_a_config_edited_between_two_looks_is_read_again_through_the_catalog(runs: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_read, "POOL_MIN", 2)
    monkeypatch.setattr(config_read, "FIRST", 1)
    monkeypatch.setattr(config_read, "_cores", lambda: 2)
    first = [r.name for r in filter_runs(find_runs(runs), "model.lr<0.05")]
    catalog.flush_configs()
    edited = runs / "ds_m_20260101_000001" / "config.yaml"  # lr 0.1: not matched before
    edited.write_text(edited.read_text().replace("lr: 0.1", "lr: 0.001"))
    os.utime(edited.parent)  # as an atomic replace does; an edit in place needs `touch RUN` (catalog.py)
    again = [r.name for r in filter_runs(find_runs(runs), "model.lr<0.05")]
    plain = [r.name for r in filter_runs(find_runs(runs, catalog=False), "model.lr<0.05")]
    assert again == plain == sorted([*first, edited.parent.name])


def test_few_configs_to_parse_among_many_runs_are_parsed_by_each_run(runs: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """One look after another where a few runs changed: no scan of every run, no pool."""
    monkeypatch.setattr(config_read, "POOL_MIN", 30)
    monkeypatch.setattr(config_read, "FIRST", 4)
    monkeypatch.setattr(config_read, "_cores", lambda: 2)
    monkeypatch.setattr(config_read, "parse_many", lambda paths: pytest.fail("parsed as a batch"))
    found = find_runs(runs)
    for run in found[:-5]:
        run._config = {}  # as if kept: only the last five parse theirs
    assert len(filter_runs(found, "model.lr<0.05")) == 3


def test_an_interrupt_while_the_pool_parses_stops_its_workers_and_reaches_the_caller(
        runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_read, "POOL_MIN", 2)
    monkeypatch.setattr(config_read, "FIRST", 1)
    monkeypatch.setattr(config_read, "_cores", lambda: 2)
    taken = []

    def take(*args) -> None:
        if len(taken) == 5:
            raise KeyboardInterrupt  # Ctrl-C: the workers ignore SIGINT, the parent raises where it is
        taken.append(args)

    monkeypatch.setattr(config_read, "take_config", take)
    with pytest.raises(KeyboardInterrupt):
        filter_runs(find_runs(runs), "model.lr<0.05")
    assert multiprocessing.active_children() == []


def test_a_worker_killed_mid_pool_leaves_the_rest_parsed_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i in range(600):
        (tmp_path / f"c{i}.yaml").write_text(f"a: {i}\n")
        paths.append(str(tmp_path / f"c{i}.yaml"))
    parent, parse = os.getpid(), config_read.parse_config

    def dies_in_a_worker(path: str):
        if os.getpid() != parent and path.endswith("c300.yaml"):
            os._exit(9)  # as the kernel's out-of-memory killer would end it
        return parse(path)

    monkeypatch.setattr(config_read, "parse_config", dies_in_a_worker)
    assert list(parse_many(paths, workers=2, least=1)) == [("json", f'{{"a":{i}}}'.encode()) for i in range(600)]


def test_parse_many_in_a_pool_gives_each_files_parse_in_order(tmp_path: Path) -> None:
    paths = []
    for i in range(30):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(f"a: {{b: {i}}}\nwhen: 2026-01-0{1 + i % 9}\n" if i % 3 else f"a: [{i}\n")
        paths.append(str(path))
    paths.append(str(tmp_path / "missing.yaml"))
    here = list(parse_many(paths, workers=1))
    assert list(parse_many(paths, workers=2, least=1)) == here
    assert here[1][0] == "flat" and here[1][1]["a.b"] == 1  # a date: no exact JSON, the flat config itself
    assert here[0][0] == "error" and here[-1] == ("error", f"[Errno 2] No such file or directory: '{paths[-1]}'")
