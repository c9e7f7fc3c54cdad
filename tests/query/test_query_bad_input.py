"""Odd input to lt's read commands, as a hand edit, another tool or a careless user leaves it: one line
naming the file, key or value, the other runs still shown, nothing written where it should not be."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from support.query import edit_summary

from lightning_track.cli.lt import main


def lt(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err.splitlines()


def add_metric(run: Path, key: str, values: list[float]) -> None:
    """Records of a metric the run's training logged under an odd name (appended as the writer does)."""
    with (run / "metrics.jsonl").open("a") as handle:
        for i, value in enumerate(values):
            handle.write(json.dumps({"step": 100 + i, "time": 1.8e9 + i, "metrics": {key: value}}) + "\n")


def test_odd_summary_shapes_are_one_line_and_the_rest_is_shown(runs_copy, capsys, tmp_path) -> None:
    lora, full = runs_copy["lora"], runs_copy["full"]
    edit_summary(lora, best=[1])
    edit_summary(full, final={"x": "str", "train/loss": {"value": 0.5, "step": 20}})
    said_best = f"{lora / 'summary.json'}: 'best' is a list, expected an object of metrics; ignored"
    said_final = f"{full / 'summary.json'}: final.x is 'str', expected {{\"value\": ..., \"step\": ...}}; ignored"
    for argv in (["show", str(lora)], ["show", str(lora), "--prompt"]):
        code, out, err = lt(capsys, *argv)
        assert code == 0 and err == [f"lt show: {said_best}"] and lora.name in out
    code, out, err = lt(capsys, "show", str(full))
    assert code == 0 and err == [f"lt show: {said_final}"] and re.search(r"train/loss\s+0\.5", out)
    code, out, err = lt(capsys, "compare", str(lora), str(full))
    assert code == 0 and err == [f"lt compare: {said_best}", f"lt compare: {said_final}"]
    html = tmp_path / "r.html"
    code, out, err = lt(capsys, "report", str(lora.parent), "-o", str(html))
    assert code == 0 and out.startswith(f"{html}: 3 runs") and sorted(err) == sorted(
        [f"lt report: {said_best}", f"lt report: {said_final}"])


@pytest.mark.parametrize("expr", ["(" * 500 + "status=completed" + ")" * 500, "not " * 2000 + "status=completed"],
                         ids=["parentheses", "nots"])
def test_deeply_nested_filters_are_refused(made_runs, capsys, expr: str) -> None:
    code, out, err = lt(capsys, "ls", str(made_runs["lora"].parent), "-f", expr)
    assert code == 1 and out == "" and len(err) == 1
    assert err[0].startswith("lt ls: bad filter '") and "too deeply nested (more than 64 levels" in err[0]
    code, out, err = lt(capsys, "ls", str(made_runs["lora"].parent), "-f", "not " * 11 + "(" * 10 + "status=failed"
                        + ")" * 10)
    assert code == 0 and made_runs["nan"].name not in out and made_runs["lora"].name in out


def test_bad_numbers_and_output_paths(made_runs, capsys, tmp_path) -> None:
    root = str(made_runs["lora"].parent)
    with pytest.raises(SystemExit) as info:
        main(["report", root, "--points", "-5", "-o", str(tmp_path / "r.html")])
    assert info.value.code == 2 and "argument --points: expected a whole number >= 1, got '-5'" in \
        capsys.readouterr().err
    code, out, err = lt(capsys, "report", root, "-o", str(tmp_path / "no" / "x.html"))
    assert code == 1 and err == [f"lt report: {tmp_path / 'no' / 'x.html'}: not written: no folder {tmp_path / 'no'}"]
    code, out, err = lt(capsys, "compare", str(made_runs["lora"]), str(made_runs["full"]), "--plot",
                        str(tmp_path / "none" / "p.png"))
    assert code == 1 and err == [f"lt compare: {tmp_path / 'none' / 'p.png'}: not written: no folder "
                                 f"{tmp_path / 'none'}"]
    assert not (tmp_path / "none").exists()


def test_dollar_signs_in_metric_names_plot_as_text(runs_copy, capsys, tmp_path) -> None:
    key = "val/$\\foo{$"
    for run in (runs_copy["lora"], runs_copy["full"]):
        add_metric(run, key, [0.5, 0.4, 0.3])
    plot = tmp_path / "p.png"
    code, out, err = lt(capsys, "compare", str(runs_copy["lora"]), str(runs_copy["full"]), "-m", key, "--plot",
                        str(plot))
    assert code == 0 and err == [] and f"plot: {plot}" in out
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_report_data_block_escapes_markup_in_names(runs_copy, capsys, tmp_path) -> None:
    key = "x/<!--<script>"
    add_metric(runs_copy["lora"], key, [1.0, 2.0])
    html = tmp_path / "r.html"
    code, _, _ = lt(capsys, "report", str(runs_copy["lora"]), "-o", str(html))
    block = re.search(r'<script type="application/json" id="lt-data">(.*?)</script>', html.read_text(), re.S)[1]
    assert code == 0 and "<" not in block and "\\u003c!--\\u003cscript>" in block
    assert key in [chart["key"] for chart in json.loads(block)["charts"]]


def test_terminal_escapes_are_refused_in_tags_and_shown_escaped(runs_copy, capsys) -> None:
    run = runs_copy["full"]
    code, out, err = lt(capsys, "tag", str(run), "+\x1b]0;T\x07")
    assert code == 2 and out == "" and len(err) == 1 and "control characters" in err[0] and "\x1b" not in err[0]
    assert not (run / "annotations.json").exists()
    edit_summary(run, status="failed", reason="boom \x1b]52;c;ZXZpbA==\x07", notes="see \x1b[2J\r here")
    for argv in (["show", str(run)], ["show", str(run), "--prompt"], ["ls", str(run.parent), "-c", "+notes"]):
        code, out, err = lt(capsys, *argv)
        assert code == 0 and "\x1b" not in out and "\x07" not in out and "\r" not in out, argv
        assert "boom \\x1b]52;c;ZXZpbA==\\x07" in out or argv[0] == "ls", argv
    code, out, err = lt(capsys, "note", str(run))
    assert out == "see \\x1b[2J\\x0d here\n"
