"""`lt ls -f` on config keys answered by SQLite (query/filters_sql.py through newest_filter.narrow) prints what the
whole look prints, character for character, for a config value of every kind: float, int, 0 and -0.0, a number
YAML kept as a string, quoted text, words, a glob-like and an escaped string, bool, null, NaN and inf (no kept
config: the run is asked itself), a list, an empty mapping, a missing key, nested keys and a key with a dot;
each filter alone, negated, with several alternatives, ANDed with another filter and ORed with a row's field;
and SQL answered (not the Python path alone)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.query import lean_and_whole, lean_catalog

from lightning_track.query import catalog, kept_beside, newest_filter

CONFIGS = {
    "float": "model:\n  lr: 0.001\n  hidden: 64\n",
    "small": "model:\n  lr: 0.0001\n  hidden: 32\n",
    "text_number": "model:\n  lr: 1e-05\n",  # YAML 1.1 reads 1e-05 as a string: still a number to a filter
    "quoted": "model:\n  lr: '0.01'\n",
    "int": "model:\n  lr: 1\n",
    "zero": "model:\n  lr: 0\n",
    "neg_zero": "model:\n  lr: -0.0\n",
    "bool": "model:\n  lr: true\n",
    "null": "model:\n  lr: null\n",
    "nan": "model:\n  lr: .nan\n",  # JSON cannot hold it: no kept config, the run reads its own
    "inf": "model:\n  lr: .inf\n",
    "list": "model:\n  lr: [0.001, 0.1]\n",
    "empty_map": "model:\n  lr: {}\n",
    "missing": "model:\n  hidden: 64\n",
    "word": "model:\n  lr: abc\n",
    "glob": "model:\n  lr: 'a*b'\n",
    "escaped": 'model:\n  lr: "x\\"y"\n',
    "unicode": "model:\n  lr: é\n",
    "big": "model:\n  lr: 9007199254740993\n",
    "nested": "a:\n  b:\n    c: 5\n'x.y': 3\nmodel:\n  lr: 0.01\n",
    "empty": "",
}
FILTERS = (["model.lr<1e-3"], ["model.lr<=0.001"], ["model.lr=0.001"], ["model.lr!=0.001"], ["model.lr>1e-4"],
           ["model.lr=1e-05"], ['model.lr="1e-05"'], ['model.lr="0.01"'], ["model.lr=0.01|1|abc"], ["model.lr=true"],
           ["model.lr=false"], ["model.lr=null"], ["model.lr!=null"], ["model.lr"], ["not model.lr"],
           ["model.lr=abc"], ["model.lr>abc"], ["model.lr=a*"], ["model.lr=a*b"], ['model.lr="x\\"y"'],
           ["model.lr=é"], ["model.lr=0"], ["model.lr=-0"], ["model.lr<inf"], ["model.lr>-inf"], ["model.lr=nan"],
           ["model.lr!=nan"], ["model.lr<nan"], ["model.lr=1"], ["model.lr>=9007199254740992"],
           ["model.lr>9007199254740992"], ["a.b.c=5"], ["config.a.b.c>4"], ["x.y=3"], ["x.y"],
           ["model.lr<0.01 and a.b.c=5"], ["model.lr<0.01", "model.hidden=64"], ["model.lr<0.01 or status=failed"],
           ["model.lr~^1"], ["model.lr!~e"], ["not (model.lr>0.0005 or model.hidden<40)"], ["nokey<1"],
           ["nokey!=1 and model.lr<1"])
ARGS = ([], ["--all"], ["--json"], ["--reverse", "--last", "2"])


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    yield from lean_catalog(monkeypatch, tmp_path)


@pytest.fixture
def kinds(made_runs: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of a made run for each kind of config value (the run's name says which)."""
    root = tmp_path / "kinds"
    for i, (kind, text) in enumerate(CONFIGS.items()):
        run = Path(shutil.copytree(made_runs["full" if i % 2 else "nan"], root / f"{kind}_{i:02d}"))
        (run / "config.yaml.tmp").write_text(text)
        os.replace(run / "config.yaml.tmp", run / "config.yaml")
    return root


def filtered(capsys, monkeypatch, root: str, flt: list[str], *argv: str) -> tuple[str, bool]:
    return lean_and_whole(capsys, monkeypatch, root, *[part for f in flt for part in ("-f", f)], *argv)


def shown(text: str) -> list[str]:
    return sorted(line.split()[0].rpartition("_")[0] for line in text.splitlines()[1:]
                  if line.strip() and not line.startswith("lt ls:"))


def test_each_kind_of_config_value_is_answered_as_the_whole_look_does(kinds, capsys, monkeypatch) -> None:
    root = str(kinds)
    filtered(capsys, monkeypatch, root, ["model.lr<1e-3"])  # first look: the configs parsed and kept
    catalog.flush_configs()  # (as the process's exit does)
    for flt in FILTERS:
        for argv in ARGS:
            _, lean = filtered(capsys, monkeypatch, root, flt, *argv)
            assert lean and newest_filter.last_narrow["planned"], (flt, argv)
            regex = any("~" in f for f in flt)  # (a regular expression: Python's alone)
            assert (newest_filter.last_narrow["sql"] > 0) is not regex, (flt, argv)  # SQL answered
            assert newest_filter.last_narrow["beside"], (flt, argv)  # on the second connection (kept_beside)

    text, _ = filtered(capsys, monkeypatch, root, ["model.lr<1e-3"], "--all")
    assert shown(text) == ["neg_zero", "small", "text_number", "zero"]  # "1e-05": a number; [0.001, 0.1]: no
    answered = dict(newest_filter.last_narrow)
    # Python's: the 6 texts (float()'s rules), the list (its elements), the empty mapping (its str()), an int
    # past 2**53 (float(int) rounds); NaN and inf: no kept config (each run reads its own)
    assert answered["python"] == 9 and answered["sql"] == len(CONFIGS) - 9 - 2
    text, _ = filtered(capsys, monkeypatch, root, ["model.lr!=0.001"], "--all")
    assert not {"float", "list"} & set(shown(text)) and {"missing", "nan", "null", "word"} <= set(shown(text))
    text, _ = filtered(capsys, monkeypatch, root, ["model.lr=0.001"], "--all")
    assert shown(text) == ["float", "list"]
    text, _ = filtered(capsys, monkeypatch, root, ["model.lr=null"], "--all")
    assert shown(text) == ["null"]
    text, _ = filtered(capsys, monkeypatch, root, ["model.lr"], "--all")
    assert shown(text) == ["big", "bool", "escaped", "float", "glob", "inf", "int", "list", "nested", "quoted",
                           "small", "text_number", "unicode", "word"]
    text, _ = filtered(capsys, monkeypatch, root, ["x.y=3"], "--all")
    assert shown(text) == ["nested"]
    text, _ = filtered(capsys, monkeypatch, root, ["nokey<1"], "--all")
    assert "no run has 'nokey'" in text


def test_a_config_edited_between_looks_is_answered_anew(kinds, capsys, monkeypatch) -> None:
    root = str(kinds)
    filtered(capsys, monkeypatch, root, ["model.lr<1e-3"])
    catalog.flush_configs()
    run = next(kinds.glob("word_*"))
    (run / "config.yaml.tmp").write_text("model:\n  lr: 0.00001\n")  # read as a float now
    os.replace(run / "config.yaml.tmp", run / "config.yaml")
    text, lean = filtered(capsys, monkeypatch, root, ["model.lr<1e-3"], "--all")
    assert lean and "word" in shown(text)
    catalog.flush_configs()
    text, lean = filtered(capsys, monkeypatch, root, ["model.lr<1e-3"], "--all")  # again: from the catalog
    assert lean and "word" in shown(text) and newest_filter.last_narrow["sql"] > 0


def test_a_kept_config_sqlite_cannot_read_is_asked_in_python(kinds, capsys, monkeypatch) -> None:
    root = str(kinds)
    filtered(capsys, monkeypatch, root, ["model.lr<1e-3"])
    catalog.flush_configs()
    run = next(kinds.glob("float_*"))
    conn = sqlite3.connect(catalog.catalog_path())
    with conn:  # a config the catalog holds that is no JSON (another tool's write, a damaged page)
        assert conn.execute("UPDATE configs SET config = ? WHERE path = ?", (b'{"model.lr": ', str(run))).rowcount
    conn.close()
    text, lean = filtered(capsys, monkeypatch, root, ["model.lr<=1e-3"], "--all")
    assert lean and not newest_filter.last_narrow["planned"]  # the Python path answered, as before
    assert "float" in shown(text)


def test_a_run_folder_as_the_root_and_runs_below_sources(kinds, tmp_path, capsys, monkeypatch) -> None:
    run = str(next(kinds.glob("float_*")))
    nested = tmp_path / "nested"
    for source in ("gpu1", "gpu2/deep"):
        shutil.copytree(kinds, nested / source)
    for root in (run, str(nested)):
        filtered(capsys, monkeypatch, root, ["model.lr<1e-3"])
        catalog.flush_configs()
        for flt in FILTERS[:12]:
            _, lean = filtered(capsys, monkeypatch, root, flt, "--all")
            assert lean, (root, flt)
    text, _ = filtered(capsys, monkeypatch, str(nested), ["model.lr=0.001"], "--all")
    assert sorted(line.split()[1] for line in text.splitlines()[1:] if line.strip()) == \
        ["gpu1", "gpu1", "gpu2/deep", "gpu2/deep"]  # the source column: runs below source folders


def test_answers_asked_beside_while_another_writer_commits_are_not_taken(kinds, capsys, monkeypatch) -> None:
    """The second connection's answers are taken only when nobody wrote the catalog while they were asked:
    a write committed then (here at the worst moment, as the look takes them) leaves the look to its one
    combined query, which sees the write."""
    root = str(kinds)
    filtered(capsys, monkeypatch, root, ["model.lr<1e-3"])
    catalog.flush_configs()
    run = next(kinds.glob("float_*"))  # 0.001: SQL's sure "no" to model.lr<1e-3
    asked = kept_beside.Beside.result

    def written_meanwhile(self):
        got = asked(self)
        conn = sqlite3.connect(catalog.catalog_path())
        with conn:  # another writer keeps another config for the run (not its file's: another tool's write)
            conn.execute("UPDATE configs SET config = ? WHERE path = ?", (b'{"model.lr":1e-05}', str(run)))
        conn.close()
        return got

    monkeypatch.setattr(kept_beside.Beside, "result", written_meanwhile)
    text, lean = filtered(capsys, monkeypatch, root, ["model.lr<1e-3"], "--all")
    assert lean and not newest_filter.last_narrow["beside"] and newest_filter.last_narrow["planned"]
    assert "float" in shown(text)  # the combined query's answer: the catalog as written


@pytest.mark.parametrize("spoil", ["reversed", "one_less", "not_a_state", "refused"])
def test_answers_asked_beside_that_are_not_of_the_rows_loaded_are_not_taken(kinds, capsys, monkeypatch,
                                                                            spoil) -> None:
    root = str(kinds)
    filtered(capsys, monkeypatch, root, ["model.lr<1e-3"])
    catalog.flush_configs()
    asked = kept_beside.Beside.result

    def spoilt(self):
        ids, states = asked(self)
        if spoil == "reversed":  # the same rows in another order
            return ",".join(reversed(ids.split(","))), states[::-1]
        if spoil == "one_less":
            return ids.rpartition(",")[0], states[:-1]
        if spoil == "not_a_state":
            return ids, "9" + states[1:]
        return None  # SQLite refused the query on the second connection

    monkeypatch.setattr(kept_beside.Beside, "result", spoilt)
    for flt in (["model.lr<1e-3"], ["model.lr!=0.001"], ["model.lr=a*"]):
        text, lean = filtered(capsys, monkeypatch, root, flt, "--all")
        assert lean and not newest_filter.last_narrow["beside"] and newest_filter.last_narrow["sql"] > 0, flt
    text, _ = filtered(capsys, monkeypatch, root, ["model.lr<1e-3"], "--all")
    assert shown(text) == ["neg_zero", "small", "text_number", "zero"]
