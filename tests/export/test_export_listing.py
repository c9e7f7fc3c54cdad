"""lt show and lt ls say where a run was exported (lt export, or lt-sync --export from a mirror), and
``--filter exported=false`` finds what is not yet there: through the runs catalog, equal to a plain read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.sync import make_run

from lightning_track.cli.lt import main as lt_main
from lightning_track.export import export_run
from lightning_track.folder.layout import RunLayout
from lightning_track.query import catalog
from lightning_track.query.runs import filter_runs, find_runs

pytestmark = pytest.mark.slow

NAMES = ("arc_lora_20250101_120000", "arc_full_20250102_120000", "toy_base_20250103_120000")


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(catalog, "RACY_S", 0.0)  # values written just now count as settled
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path / "cache"))


def ls_names(root: Path, *args: str, capsys) -> list[str]:
    assert lt_main(["ls", str(root), "--json", *args]) == 0
    return [run["name"] for run in json.loads(capsys.readouterr().out)]  # oldest first, then by name


def test_show_and_ls_say_where_runs_were_exported_and_the_filter_finds_the_rest(bare_mlflow_server, tmp_path,
                                                                                  capsys) -> None:
    root = tmp_path / "runs"
    direct, mirrored, never = (make_run(root, name, steps=5, status="completed") for name in NAMES)
    assert ls_names(root, "--filter", "not exported", capsys=capsys) == sorted(NAMES)  # now in the catalog too

    uri = bare_mlflow_server.uri
    first = export_run(direct, uri.replace("://", "://bob:hunter2@"))
    second = export_run(mirrored, uri, record_name=RunLayout.MIRROR_EXPORT)
    assert ls_names(root, "--filter", "exported=false", capsys=capsys) == [never.name]
    assert ls_names(root, "--filter", "exported=true", capsys=capsys) == sorted([direct.name, mirrored.name])
    for expr in ("exported=false", "exported=true", "not exported"):  # the catalog's look equals a plain read
        assert [r.name for r in filter_runs(find_runs(root), expr)] == [
            r.name for r in filter_runs(find_runs(root, catalog=False), expr)]

    assert lt_main(["ls", str(root)]) == 0
    table = capsys.readouterr().out
    host = uri.split("://", 1)[1]
    assert "exported to" in table.splitlines()[0]
    line = next(line for line in table.splitlines() if line.startswith(direct.name))
    assert f"{host} {first.run_id[:8]}" in line
    assert next(line for line in table.splitlines() if line.startswith(never.name)).rstrip().endswith("-")

    assert lt_main(["show", str(direct)]) == 0
    shown = capsys.readouterr().out
    block = shown.split("\nexported\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block[0].startswith(f"  mlflow {uri}  run {first.run_id}  experiment arc  FINISHED  sent ")
    assert block[1] == f"    {uri}/#/experiments/{first_experiment(uri, first.run_id)}/runs/{first.run_id}"
    assert "hunter2" not in shown and "bob" not in shown
    line = lt_main_out(["show", str(mirrored)], capsys).split("\nexported\n", 1)[1].splitlines()[0]
    assert f"run {second.run_id}" in line and line.endswith("(from this mirror)")
    assert "\nexported\n" not in lt_main_out(["show", str(never)], capsys)
    record = json.loads(lt_main_out(["show", "--json", str(direct)], capsys))
    assert [(e["target"], e["run_id"], e["record"]) for e in record["exports"]] == [(uri, first.run_id,
                                                                                     "export.json")]


def first_experiment(uri: str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_run(run_id).info.experiment_id


def lt_main_out(argv: list[str], capsys) -> str:
    assert lt_main(argv) == 0
    return capsys.readouterr().out
