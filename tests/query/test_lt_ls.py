"""`lt ls` through its entry point: rows, columns, filters, sort, --json, and the bad-input rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from support.query import edit_summary

from lightning_track.cli.lt import main
from lightning_track.vocabulary import iso_time


def ls(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["ls", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_table_has_one_row_per_run_with_the_default_columns(made_runs, capsys) -> None:
    code, out, err = ls(capsys, str(made_runs["lora"].parent))
    assert code == 0 and err == []
    assert out[0].split() == ["name", "dataset", "method", "status", "start", "wall", "span", "last", "step",
                              "host", "tags", "best.val/loss"]
    assert len(out) == 4
    row = next(line for line in out if made_runs["nan"].name in line)
    assert "failed (nonfinite_loss@15)" in row
    assert "baseline" in next(line for line in out if made_runs["lora"].name in line)


def test_filters_sort_columns_and_last(made_runs, capsys) -> None:
    root = str(made_runs["lora"].parent)
    code, out, _ = ls(capsys, root, "-f", "dataset=arc", "--filter", "model.lr<0.005")
    assert code == 0 and len(out) == 2 and made_runs["full"].name in out[1]
    code, out, _ = ls(capsys, root, "--sort", "-step", "-c", "name,step,model.lr,best.val/loss")
    assert out[0].split() == ["name", "last", "step", "model.lr", "best.val/loss"]
    assert [line.split()[1] for line in out[1:]] == ["30", "20", "15"]
    code, out, _ = ls(capsys, root, "-f", "dataset=arc", "--sort", "model.lr", "-c", "+seed", "-n", "1")
    assert len(out) == 2 and out[0].split()[-1] == "seed" and made_runs["lora"].name in out[1]
    code, out, _ = ls(capsys, root, "-f", "tag=baseline")
    assert len(out) == 2 and made_runs["lora"].name in out[1]
    code, out, _ = ls(capsys, root, "-f", "status=failed|crashed", "-f", "age<1d")
    assert len(out) == 2 and made_runs["nan"].name in out[1]


def test_the_table_shows_the_newest_rows_and_says_how_many_it_left_out(made_runs, capsys, monkeypatch) -> None:
    from lightning_track.query import listing

    monkeypatch.setattr(listing, "TABLE_ROWS", 2)  # 50 by default: 3 runs stand for 100,000
    root = str(made_runs["lora"].parent)
    code, every, _ = ls(capsys, root, "--all")
    assert code == 0 and len(every) == 4
    code, out, err = ls(capsys, root)
    names = [line.split()[0] for line in every[1:]]
    assert code == 0 and [line.split()[0] for line in out[1:]] == names[-2:]  # the newest, in the same order
    assert err == ["lt ls: … 1 older runs not shown: --all or --last N"]
    code, out, err = ls(capsys, root, "-n", "3")
    assert [line.split()[0] for line in out[1:]] == names and err == []
    code, out, err = ls(capsys, root, "--json")
    assert len(json.loads("\n".join(out))) == 3 and err == []


def test_json_output(made_runs, capsys) -> None:
    code, out, _ = ls(capsys, str(made_runs["lora"].parent), "--json", "-c", "+model.lr")
    rows = json.loads("\n".join(out))
    assert code == 0 and {r["method"] for r in rows} == {"lora", "full", "nan"}
    lora = next(r for r in rows if r["method"] == "lora")
    summary = json.loads((made_runs["lora"] / "summary.json").read_text())
    assert lora["best"]["val/loss"] == summary["best"]["val/loss"]["value"]
    assert lora["columns"]["model.lr"] == 0.01 and lora["tags"] == ["baseline"] and lora["last_step"] == 30
    nan = next(r for r in rows if r["method"] == "nan")
    assert nan["status"] == "failed" and nan["failure"]["check"] == "nonfinite_loss"
    # written record by record, the text is still the one indented JSON array a whole-list dump gives
    assert "\n".join(out) == orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()
    code, out, _ = ls(capsys, str(made_runs["lora"].parent), "--json", "-f", "dataset=nothing")
    assert code == 1 and out == ["[]"]


def test_bad_input_rules(runs_copy, capsys, tmp_path: Path) -> None:
    root = runs_copy["lora"].parent
    (runs_copy["full"] / "summary.json").write_text("{")
    (root / "arc_y_20260101_000000").mkdir()
    edit_summary(runs_copy["nan"], status="running", heartbeat=iso_time(time.time() - 900))
    code, out, err = ls(capsys, str(root))
    assert code == 0 and len(out) == 4  # the torn run is still listed, as unknown
    assert "unknown" in next(line for line in out if runs_copy["full"].name in line)
    assert "crashed" in next(line for line in out if runs_copy["nan"].name in line)
    assert len(err) == 2 and all(line.startswith("lt ls: ") for line in err)
    assert any(f"{runs_copy['full'] / 'summary.json'}: invalid JSON" in line for line in err)
    # a filter that does not parse: nothing shown, exit 1, the expression and column named
    code, out, err = ls(capsys, str(root), "-f", "model.lr<<1")
    assert code == 1 and out == []
    assert err == ["lt ls: bad filter 'model.lr<<1': expected a value after '<' at column 10"]
    # a key no run has: said once, the listing still runs (here nothing matches: exit 1)
    code, out, err = ls(capsys, str(root), "-f", "modle.lr<1")
    assert code == 1 and "lt ls: no run has 'modle.lr'" in err[-2] and "no run matches" in err[-1]
    code, out, err = ls(capsys, str(root), "-c", "name,best.nope")
    assert code == 0 and any("no run has 'best.nope'" in line for line in err) and len(out) == 4
    code, out, err = ls(capsys, str(tmp_path / "nowhere"))
    assert code == 1 and out == [] and err == [f"lt ls: {tmp_path / 'nowhere'}: no such folder"]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = ls(capsys, str(empty))
    assert code == 1 and err == [f"lt ls: no runs found under {empty}"]


@pytest.mark.slow
def test_lt_ls_starts_without_torch_lightning_or_pandas(made_runs) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "lightning_track.cli.lt", "ls", str(made_runs["lora"].parent), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=60)  # its time: bench_runs.py
    assert len(json.loads(out.stdout)) == 3
    code = ("import sys, lightning_track.cli.lt as m; m.main(['ls', sys.argv[1]]); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'lightning', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code, str(made_runs["lora"].parent)], check=True, capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_run_folder_whose_name_is_not_utf8_is_shown_with_its_bytes_escaped(made_runs, tmp_path: Path) -> None:
    """A name from another system's encoding, printed to a strict UTF-8 stdout (a terminal, a pipe): the table,
    --json and the report show its undecodable bytes as \\xff (as ``ls -b``), never a traceback."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(made_runs["full"], root / made_runs["full"].name)
    shutil.copytree(made_runs["lora"], os.fsdecode(bytes(root) + b"/arc_\xff\xfe_20000101_000000"))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LIGHTNING_TRACK_CACHE_DIR": str(tmp_path / "cache")}

    def lt(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, encoding="utf-8", timeout=120)

    for _ in range(2):  # first look, then through the catalog
        table = lt("ls", "runs", "--all")
        assert table.returncode == 0 and table.stderr == "", table.stderr
        assert "arc_\\xff\\xfe_20000101_000000" in table.stdout and made_runs["full"].name in table.stdout
        listed = lt("ls", "runs", "--json")
        assert listed.returncode == 0, listed.stderr
        assert sorted(run["name"] for run in json.loads(listed.stdout)) == \
            sorted(["arc_\\xff\\xfe_20000101_000000", made_runs["full"].name])
    report = lt("report", "runs", "-o", "report.html")
    assert report.returncode == 0, report.stderr
    assert "arc_\\xff\\xfe_20000101_000000" in (tmp_path / "report.html").read_text(encoding="utf-8")
