"""`lt show` and `lt show --prompt` on real runs (completed, failed), with console and system files."""

from __future__ import annotations

import json

from lightning_track.cli.lt import main
from lightning_track.vocabulary import iso_time


def show(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["show", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_a_failed_run_says_why_first(made_runs, capsys) -> None:
    code, out, err = show(capsys, made_runs["nan"].name, "--root", str(made_runs["nan"].parent))
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0].startswith(made_runs["nan"].name)
    assert lines[1].startswith("status: failed - HealthCheckFailed: health check 'nonfinite_loss' failed at step 15")
    assert lines[2] == "failure: check nonfinite_loss, value nan, step 15"
    assert "metrics" in lines and "config" in lines and "files" in lines
    assert "  model.lr = 0.01" in lines and any(line.strip().startswith("summary.json") for line in lines)


def test_show_lists_checkpoints_console_tail_and_system_peaks(runs_copy, capsys) -> None:
    run = runs_copy["lora"]
    (run / "logs.txt").write_text("".join(f"{iso_time()} line {i}\n" for i in range(50)) + f"{iso_time()} torn")
    samples = [{"time": 1.0, "step": s, "node": 0, "metrics": {"system/cpu_percent": c, "system/rss_gb": 1.5}}
               for s, c in ((1, 50.0), (2, 97.5), (3, 20.0))]
    (run / "system.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("system", None)  # a run killed before its summary had samples: peaks come from system.jsonl
    (run / "summary.json").write_text(json.dumps(summary))
    code, out, _ = show(capsys, str(run), "--lines", "3")
    lines = out.splitlines()
    at = lines.index("console (last 3 lines of logs.txt)")
    assert [line.split(" ", 3)[-1] for line in lines[at + 1:at + 4]] == ["line 47", "line 48", "line 49"]
    assert "  peak system/cpu_percent = 97.5" in lines
    assert any(line.startswith("  checkpoints/") and "step " in line for line in lines)
    code, out, _ = show(capsys, str(run), "--json")
    record = json.loads(out)
    assert record["config"]["model.lr"] == 0.01 and record["system"]["peak system/rss_gb"] == 1.5
    assert record["checkpoints"] and {"name": "metrics.jsonl", "bytes": (run / "metrics.jsonl").stat().st_size} \
        in record["files"]


def test_prompt_is_compact_and_has_the_facts(made_runs, capsys) -> None:
    code, out, _ = show(capsys, str(made_runs["nan"]), "--prompt")
    lines = out.splitlines()
    assert code == 0 and len(lines) < 30
    assert lines[0] == f"Run {made_runs['nan'].name} (dataset toy, method nan)"
    assert lines[2].startswith("Status: failed (HealthCheckFailed: health check 'nonfinite_loss'")
    assert lines[3] == "Failure: check nonfinite_loss, value nan, step 15"
    assert any(line.startswith("Config: model.lr=0.01, model.hidden=64, seed=0") for line in lines)
    assert any(line.startswith("- train/loss: final ") and "(min)" in line for line in lines)
    assert "metrics.jsonl" not in out  # never the raw record
    code, out, _ = show(capsys, str(made_runs["lora"]), "--prompt")
    assert "Tags: baseline" in out and "Notes: first" in out and "Failure" not in out


def test_show_bad_input(runs_copy, capsys, tmp_path) -> None:
    code, out, err = show(capsys, str(tmp_path))
    assert code == 1 and out == "" and err == f"lt show: {tmp_path}: not a run folder (no summary.json, meta.json or " \
        "metrics.jsonl)\n"
    code, out, err = show(capsys, "nope", "--root", str(runs_copy["lora"].parent))
    assert code == 1 and "nope: no such run folder" in err
    (runs_copy["full"] / "summary.json").write_text("{")
    code, out, err = show(capsys, str(runs_copy["full"]))
    assert code == 0 and "status: unknown" in out and "summary.json: invalid JSON" in err
