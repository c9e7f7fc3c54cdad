"""`lt report`: one self-contained HTML file; its size on many long runs; and the page in headless Chromium
(renders without console errors, every chart draws, zoom/hover/smoothing/log/hide work)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import orjson
import pytest
from support.system import require, which

from lightning_track.cli.lt import main
from lightning_track.vocabulary import iso_time

CHROMIUM = which("chromium|chromium-browser")


def page_data(text: str) -> dict:
    match = re.search(r'<script type="application/json" id="lt-data">(.*?)</script>', text, re.S)
    return json.loads(match[1])


def report(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_report_is_self_contained_and_has_every_section(made_runs, capsys, tmp_path) -> None:
    out_file = tmp_path / "r.html"
    code, out, err = report(capsys, str(made_runs["lora"].parent), "-o", str(out_file))
    assert code == 0 and err == [] and out[0].startswith(f"{out_file}: 3 runs, ")
    text = out_file.read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text) and "<link" not in text  # nothing fetched
    for heading in ("Runs", "Failures", "Metrics", "Config differences", "Curves"):
        assert f"<h2>{heading}</h2>" in text
    assert "nonfinite_loss" in text and made_runs["nan"].name in text
    data = page_data(text)
    assert [r["name"] for r in data["runs"]] == sorted((p.name for p in made_runs.values()),
                                                        key=lambda n: [p.name for p in made_runs.values()].index(n))
    keys = [c["key"] for c in data["charts"]]
    assert keys[0] == "val/loss" and "epoch" not in keys and "health/loss" in keys
    health = next(c for c in data["charts"] if c["key"] == "health/loss")
    assert health["series"][0]["bad"] == [[15, "nan"]] and health["series"][0]["y"] == [None]
    loss = next(c for c in data["charts"] if c["key"] == "train/loss")
    jsonl = [json.loads(line) for line in (made_runs["full"] / "metrics.jsonl").read_text().splitlines()]
    full_series = next(s for s in loss["series"] if data["runs"][s["run"]]["name"] == made_runs["full"].name)
    want = [(r["step"], r["metrics"]["train/loss"]) for r in jsonl if "train/loss" in r["metrics"]]
    assert full_series["x"] == [s for s, _ in want]
    assert full_series["y"] == pytest.approx([v for _, v in want], rel=1e-4)  # 5 significant digits


def test_report_of_named_runs_filters_and_bad_input(made_runs, capsys, tmp_path) -> None:
    root = str(made_runs["lora"].parent)
    out_file = tmp_path / "two.html"
    code, out, err = report(capsys, root, "-f", "dataset=arc", "-o", str(out_file), "-m", "val/loss", "-m", "nope")
    assert code == 0 and err == ["lt report: no run has metric 'nope'"]
    charts = page_data(out_file.read_text())["charts"]
    assert [c["key"] for c in charts if c["x"] == "step"] == ["val/loss"]  # system.jsonl's charts come after
    assert all(c["key"].startswith("system/") for c in charts if c["x"] != "step")
    code, out, err = report(capsys, str(made_runs["nan"]), "zzz", "-o", str(tmp_path / "one.html"), "--root", root)
    assert code == 0 and any("zzz: no such run folder" in line for line in err)
    code, out, err = report(capsys, root, "-f", "x<<", "-o", str(tmp_path / "bad.html"))
    assert code == 1 and "bad filter" in err[0] and not (tmp_path / "bad.html").exists()
    code, out, err = report(capsys, root, "-f", "status=running", "-o", str(tmp_path / "none.html"))
    assert code == 1 and err[-1].endswith("not written: no run to report on")


def synthetic_runs(root: Path, runs: int, steps: int, metrics: int) -> None:
    """Runs with the files lt reads (summary, metrics.jsonl), written fast; a spike and a NaN in each."""
    rng = np.random.default_rng(0)
    for r in range(runs):
        run = root / f"big_r{r}_20260101_0000{r:02d}"
        run.mkdir(parents=True)
        base = np.exp(-np.arange(steps) / (steps / 5))[:, None] + rng.normal(0, 0.01, (steps, metrics))
        base[steps // 3, 0] = 40.0
        lines = []
        for i in range(steps):
            values = {f"m{k}/loss": float(base[i, k]) for k in range(metrics)}
            if i == steps // 2:
                values["m1/loss"] = "NaN"
            lines.append(orjson.dumps({"step": i + 1, "time": 1.7e9 + i, "metrics": values}))
        (run / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        (run / "summary.json").write_text(json.dumps({"status": "completed", "start_time": iso_time(1.7e9),
                                                      "last_step": steps, "run_name": run.name}))


def test_report_of_many_long_runs_stays_small_and_keeps_spikes(tmp_path, capsys) -> None:
    synthetic_runs(tmp_path / "runs", runs=10, steps=20_000, metrics=10)  # > 400 records: the size of 100k steps
    out_file = tmp_path / "big.html"
    code, out, _ = report(capsys, str(tmp_path / "runs"), "-o", str(out_file))
    assert code == 0
    size = out_file.stat().st_size
    assert size <= 2 * 1024 * 1024, size
    data = page_data(out_file.read_text())
    assert len(data["charts"]) == 10 and all(len(c["series"]) == 10 for c in data["charts"])
    m0 = data["charts"][[c["key"] for c in data["charts"]].index("m0/loss")]["series"][0]
    assert len(m0["x"]) == 400 and max(m0["hi"]) == 40.0  # the one-step spike survives downsampling
    m1 = data["charts"][[c["key"] for c in data["charts"]].index("m1/loss")]["series"][0]
    assert m1["bad"] == [[10_001, "nan"]]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(made_runs, tmp_path, capsys) -> None:
    require("chromium")  # skipped by name where it is missing (a failure under CI, which installs it)
    synthetic_runs(tmp_path / "runs", runs=3, steps=5_000, metrics=3)
    for path in made_runs.values():
        shutil.copytree(path, tmp_path / "runs" / path.name)
    (tmp_path / "runs" / made_runs["lora"].name / "logs.txt").write_text(f"{iso_time()} hello </script><b>x</b>\n")
    # a near-constant series (two samples one unit in the last place apart): its axis must still draw
    with open(tmp_path / "runs" / made_runs["lora"].name / "system.jsonl", "a") as samples:
        for t, value in ((1.0, 15.6), (2.0, 15.600000000000001)):
            samples.write(json.dumps({"time": time.time() + t, "step": 1, "metrics": {"system/flat_gb": value}}) + "\n")
    out_file = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "runs"), "-o", str(out_file)]) == 0
    charts = len(page_data(out_file.read_text())["charts"])
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1280,2000",
           "--enable-logging=stderr", "--v=0", "--dump-dom", f"{out_file.as_uri()}#selftest"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body is not None, done.stderr[-2000:]
    assert f'data-drawn="{charts}"' in body[0] and "data-error" not in body[0], body[0]
    assert 'data-selftest="ok zoom,hover,smooth,log,hide"' in body[0], body[0]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert "hello &lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in done.stdout  # console text escaped, page intact


OPTIMIZERS = ("adam", "sgd", "lion")


def thousand_runs(tmp_path: Path) -> dict[str, dict]:
    """1,000 runs, each with a different best m0/loss (in no order), a config (lr, optimizer, layers) and
    every seventh run failed; returns each run's facts by name."""
    synthetic_runs(tmp_path / "runs", runs=1000, steps=300, metrics=1)
    facts: dict[str, dict] = {}
    for run in (tmp_path / "runs").iterdir():
        r = int(run.name.split("_")[1][1:])
        summary = json.loads((run / "summary.json").read_text())
        value = (r * 7919 % 1000) / 1000  # every value once, in no order
        summary["best"] = {"m0/loss": {"value": value, "step": 10, "mode": "min"}}
        summary["start_time"] = iso_time(1.7e9 + 60 * r)  # started one after the other
        if r % 7 == 0:
            summary.update(status="failed", failure={"check": "nonfinite_loss", "value": "NaN", "step": 10})
        (run / "summary.json").write_text(json.dumps(summary))
        lr = 10.0 ** -(1 + r % 4)
        (run / "config.yaml").write_text(f"lr: {lr}\noptimizer: {OPTIMIZERS[r % 3]}\nlayers: {1 + r % 5}\n")
        facts[run.name] = {"best": value, "lr": lr, "optimizer": OPTIMIZERS[r % 3], "layers": 1 + r % 5,
                           "status": summary["status"]}
    return facts


def many_view(text: str) -> dict:
    match = re.search(r'<script type="application/json" id="lt-many">(.*?)</script>', text, re.S)
    data = json.loads(match[1])
    columns = {c["key"]: [c["dict"][k] for k in c["codes"]] if "codes" in c else c["values"] for c in data["columns"]}
    return {**data, "by_key": columns}


def test_report_of_a_thousand_runs_holds_every_run_the_configs_and_small_curves(tmp_path, capsys) -> None:
    facts = thousand_runs(tmp_path)
    out_file = tmp_path / "many.html"
    code, out, err = report(capsys, str(tmp_path / "runs"), "-o", str(out_file))
    assert code == 0 and out[0].startswith(f"{out_file}: 1000 runs, "), (out, err)
    text = out_file.read_text()
    view = many_view(text)
    cols = view["by_key"]
    names = cols["label"]
    assert len(set(names)) == 1000 and names[:2] == ["a", "b"]
    assert names[25:28] == ["z", "aa", "ab"] and names[701:704] == ["zz", "aaa", "aab"]  # past 702: three letters
    assert view["metric"] == "m0/loss" and view["mode"] == "min"
    assert sorted(cols["run"]) == sorted(facts)  # every run a row
    for i, name in enumerate(cols["run"]):  # each row's values are that run's
        want = facts[name]
        assert (cols["best"][i], cols["lr"][i], cols["optimizer"][i], cols["layers"][i], cols["status"][i]) == (
            want["best"], want["lr"], want["optimizer"], want["layers"], want["status"]), name
    assert {c["key"] for c in view["columns"] if c.get("config")} == {"lr", "optimizer", "layers"}
    ticked = {cols["run"][i] for i in view["selected"]}
    assert ticked == set(sorted(facts, key=lambda n: facts[n]["best"])[:10])  # the ten best ticked at first
    assert len(view["curves"]) == 1000  # every run's m0/loss curve, downsampled: 300 records -> 200 points
    curve = view["curves"][str(cols["run"].index("big_r5_20260101_000005"))]
    steps = np.cumsum(curve[0])
    assert len(steps) == len(curve[1]) == 200 and steps[0] == 1 and steps[-1] <= 300 and np.all(np.diff(steps) > 0)
    assert text.count('<div class="fail">') == 50 and "and 93 more" in text  # 143 failed: the first 50 listed
    assert out_file.stat().st_size < 2.5 * 1024 * 1024  # mostly the 1,000 curves: about 2 KiB each
    # a smaller file: fewer points a curve, the curves of the best 100 runs only (the ten ticked among them)
    code, _, _ = report(capsys, str(tmp_path / "runs"), "-o", str(out_file), "--points", "50", "--curves", "100")
    text = out_file.read_text()
    view = many_view(text)
    assert code == 0 and {len(c[1]) for c in view["curves"].values()} == {50}
    best_100 = set(sorted(facts, key=lambda n: facts[n]["best"])[:100])
    assert {view["by_key"]["run"][int(i)] for i in view["curves"]} == best_100
    assert {str(i) for i in view["selected"]} <= set(view["curves"])
    assert "for the 100 runs with the best values" in text and "at most 50 points each" in text
    code, _, err = report(capsys, str(tmp_path / "runs"), "-o", str(tmp_path / "nope.html"), "-m", "nope")
    assert code == 0 and err == ["lt report: no run has metric 'nope'"]


@pytest.mark.slow
def test_the_thousand_run_report_sorts_filters_and_draws_ticked_curves_in_headless_chromium(tmp_path) -> None:
    require("chromium")
    facts = thousand_runs(tmp_path)
    out_file = tmp_path / "many.html"
    assert main(["report", str(tmp_path / "runs"), "-o", str(out_file)]) == 0
    cols = many_view(out_file.read_text())["by_key"]
    # the state a shared link carries: sorted by best descending, a filter, two runs ticked; then the selftest
    # clicks a column twice, sorts by best, filters, unticks all, ticks three rows and a point of the best view
    query = "lr<0.01 optimizer=sgd"
    state = f"#sort=best&desc=1&q={quote(query)}&sel={cols['label'][0]},{cols['label'][1]}&selftest-many"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000", "--window-size=1280,2000",
           "--enable-logging=stderr", "--v=0", "--dump-dom", out_file.as_uri() + state]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body is not None, done.stderr[-2000:]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body[0]))
    assert "data-error" not in attrs and "data-many-selftest" in attrs, body[0]
    test = json.loads(html.unescape(attrs["data-many-selftest"]))
    matching = [n for n, f in facts.items() if f["lr"] < 0.01 and f["optimizer"] == "sgd"]
    assert test["rows"] == test["listed"] == len(matching)
    assert test["first"] == max(matching, key=lambda n: facts[n]["best"]) and test["curves"] == 2
    assert test["run_asc"] == min(facts) and test["run_desc"] == max(facts)
    assert test["best_asc"] == min(facts, key=lambda n: facts[n]["best"])
    assert test["completed"] == sum(f["status"] == "completed" for f in facts.values())
    assert test["under"] == sum(f["best"] < 0.1 and f["status"] == "completed" for f in facts.values())
    assert test["bad"].startswith("filter: no column nosuch (run, status,")
    assert (test["none"], test["ticked"], test["ticked_curves"], test["series"], test["canvases"]) == (0, 3, 3, 3, 1)
    # the best view's middle point (by start) toggled: one run, r500 or a neighbour (1,000 points in ~1,100 px)
    assert test["point"] in {f"big_r{r}_20260101_0000{r}" for r in (499, 500, 501)}
    assert attrs["data-many-rows"] == "1000" and attrs["data-many-best"] == "1000" and attrs["data-many-config"] == "3"
    table = re.search(r'<table id="lt-runs">.*?</table>', done.stdout, re.S)[0]
    assert table.count("<tr data-i=") == 1000  # every row in the page, sorted by best ascending (the selftest)
    assert re.findall(r'<tr data-i="\d+"[^>]*><td><input[^>]*></td><td>[a-z]+</td><td>([^<]+)</td>', table)[:3] == \
        sorted(facts, key=lambda n: facts[n]["best"])[:3]
    assert done.stdout.count('data-drawn="1"') == 1 + 3  # the best view and one view per config key drew
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
