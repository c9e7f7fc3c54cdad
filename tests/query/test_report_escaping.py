"""``lt report`` makes a file to be shared: whatever a run's files hold (dataset, method, notes, tags, config keys
and values, metric names, failure reasons, console lines) must reach the page as text, never as markup. Fast:
runs written as files, the page parsed with html.parser and compared with the same page made from plain words."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from support.system import require, which

from lightning_track.query.compare import labels
from lightning_track.query.report_html import MANY_RUNS, build_report
from lightning_track.query.runs import find_runs
from lightning_track.vocabulary import iso_time

# dataset, method, notes, a tag, a config key, a metric name, a failure reason, a console line
HOSTILE = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "<b>note</b>",
           "\" onmouseover=\"alert(3)", "' autofocus onfocus='alert(4)", "<!--<script a='1'>",
           "</td></tr></table><iframe src=x>", "a&amp;b<style>*{}</style>"]
PLAIN = [f"word{i}" for i in range(len(HOSTILE))]


class Page(HTMLParser):
    """Every element and attribute name the page has, comments, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self.comments: list[str] = []
        self.text: list[str] = []
        self.data_block = ""
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements[(tag, tuple(sorted(name for name, _ in attrs)))] += 1
        self._in_data = ("id", "lt-data") in attrs

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements[(tag, tuple(sorted(name for name, _ in attrs)))] += 1

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data_block += data
        else:
            self.text.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False


def write_runs(root: Path, words: list[str]) -> None:
    """One run per word: each single text (dataset, method, notes, failure reason) takes every word in turn, and
    every list (tags, config keys, metric names, sweep overrides, console lines) holds all of them. Six runs
    make a sweep, two failed."""
    n = len(words)
    for i in range(n):
        run = root / f"r{i}_20260101_00000{i}"
        run.mkdir(parents=True)
        failed = i >= n - 2
        summary = {"status": "failed" if failed else "completed", "start_time": iso_time(1.7e9 + i),
                   "end_time": iso_time(1.7e9 + 60 + i), "last_step": 3, "dataset": words[i],
                   "method": words[(i + 1) % n], "notes": words[(i + 2) % n], "tags": [*words, "plain"],
                   "run_name": run.name, "final": {w: {"value": 0.5 + i, "step": 3} for w in words},
                   "best": {w: {"value": 0.5 + i, "step": 3} for w in words}}
        if failed:
            reason = words[(i + 3) % n]
            summary.update(reason=reason, failure={"check": words[(i + 4) % n], "value": 1.0, "step": 3,
                                                   "reason": reason})
        else:
            summary["sweep"] = {"name": words[0], "trial": i, "overrides": {w: words[(i + 5) % n] for w in words},
                                "metric": words[1], "mode": "max"}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "config.yaml").write_text(yaml.safe_dump({**{w: f"{words[(i + 6) % n]}{i}" for w in words},
                                                         "model": {**{w: i for w in words}, "lr": 0.1}}))
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "time": 1.7e9 + s, "metrics": {w: s * 0.1 + i for w in words}}) + "\n"
            for s in range(1, 4)))
        (run / "system.jsonl").write_text("".join(
            json.dumps({"time": 1.7e9 + s, "metrics": {f"sys/{w}": float(s) for w in words}}) + "\n"
            for s in range(3)))
        (run / "logs.txt").write_text("".join(f"{iso_time(1.7e9)} {w}\n" for w in words))


def report(root: Path, words: list[str]) -> tuple[str, Page]:
    write_runs(root, words)
    runs = find_runs([root])
    assert len(runs) == len(words)
    text = build_report(runs, title=words[0])
    page = Page()
    page.feed(text)
    page.close()
    return text, page


def test_hostile_names_are_text_never_markup(tmp_path: Path) -> None:
    (_, plain), (text, hostile) = report(tmp_path / "plain", PLAIN), report(tmp_path / "hostile", HOSTILE)
    assert hostile.elements == plain.elements  # no element or attribute the page did not make itself
    assert hostile.comments == plain.comments == [] and "<!--" not in text  # html.parser reads an unclosed
    # "<!--" as text; a browser hides the rest of the page in it
    shown = "".join(hostile.text)
    for word in HOSTILE:  # ... and every hostile value is still shown, as the text it is
        assert word in shown, word
    assert "<" not in hostile.data_block  # the JSON block: no way for a name to end or comment out the script
    data = json.loads(hostile.data_block)
    assert {c["key"] for c in data["charts"]} == {*HOSTILE, *(f"sys/{w}" for w in HOSTILE)}


@pytest.mark.slow
def test_hostile_names_in_the_many_run_view_stay_text_in_headless_chromium(tmp_path: Path) -> None:
    """Past MANY_RUNS the page's script builds the table and the charts from JSON: the page Chromium ends with
    has the same elements for hostile words as for plain ones, and shows every hostile word."""
    require("chromium")
    count = MANY_RUNS + 2
    pages = []
    for name, words in (("plain", [f"{PLAIN[i % len(PLAIN)]}{i}" for i in range(count)]),
                        ("hostile", [f"{HOSTILE[i % len(HOSTILE)]}{i}" for i in range(count)])):
        text, _ = report(tmp_path / name, words)
        assert 'id="lt-many"' in text
        out_file = tmp_path / f"{name}.html"
        out_file.write_text(text)
        cmd = [which("chromium|chromium-browser"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1280,2000",
               "--dump-dom", out_file.as_uri() + "#sel=" + ",".join(labels(count))]  # every run ticked: every curve
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # an injected alert() hangs it
        assert "data-error" not in done.stdout[:2000] and 'data-many-curves="32"' in done.stdout, done.stdout[:2000]
        page = Page()
        page.feed(done.stdout)
        pages.append(page)
    plain, hostile = pages
    assert hostile.elements == plain.elements and hostile.comments == plain.comments == []
    shown = "".join(hostile.text)
    for i, word in enumerate(HOSTILE):
        assert f"{word}{i}" in shown, word
