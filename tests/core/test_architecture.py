"""The rules of the package layout that no single feature test would notice breaking."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import lightning_track
from lightning_track import errors, vocabulary
from lightning_track._moved import MOVED

PACKAGE = Path(lightning_track.__file__).parent

# The layers and tools that must start without torch or Lightning: lt-sync, lt-migrate, lt-run, the
# sink host and anything that only reads or writes a run folder.
TORCH_FREE = [
    "lightning_track", "lightning_track.vocabulary", "lightning_track.errors", "lightning_track.redaction",
    "lightning_track.folder.layout", "lightning_track.folder.fileio", "lightning_track.folder.records",
    "lightning_track.folder.tracking", "lightning_track.folder.signals", "lightning_track.folder.consolelog",
    "lightning_track.run.console", "lightning_track.run.console_relay", "lightning_track.run.system",
    "lightning_track.derived.system", "lightning_track.launch.console", "lightning_track.folder.media",
    "lightning_track.sinks.media", "lightning_track.sinks.tbmedia", "lightning_track.run.media",
    "lightning_track.run.experiment",
    "lightning_track.derived.digest", "lightning_track.derived.summary", "lightning_track.derived.report",
    "lightning_track.run.config", "lightning_track.run.meta", "lightning_track.run.writer",
    "lightning_track.run.sinkhost", "lightning_track.run.hostprocess", "lightning_track.sinkhost",
    "lightning_track.sinks.jsonl", "lightning_track.sinks.tensorboard", "lightning_track.sinks.swanlab",
    "lightning_track.sync", "lightning_track.cli.sync", "lightning_track.migrate", "lightning_track.cli.migrate",
    "lightning_track.launch.runner", "lightning_track.launch.outcome", "lightning_track.cli.run",
    "lightning_track.cli.demo",
    "lightning_track.launch.pipeline", "lightning_track.launch.pipeline_state", "lightning_track.launch.notify",
    "lightning_track.launch.pipeline_driver", "lightning_track.cli.pipeline", "lightning_track.launch.slurm",
    "lightning_track.query", "lightning_track.query.listing", "lightning_track.cli.lt",
    "lightning_track.cli.lt_commands", "lightning_track.query.show", "lightning_track.query.prompt",
    "lightning_track.query.compare", "lightning_track.derived.curves", "lightning_track.derived.plots",
    "lightning_track.query.report_html", "lightning_track.launch.sweep", "lightning_track.launch.sweep_report",
    "lightning_track.query.sweeps", "lightning_track.run.launched", "lightning_track.query.pipelines",
    "lightning_track.sync.watch", "lightning_track.export", "lightning_track.export.mlflow",
    "lightning_track.cli.export", "lightning_track.export.wandb", "lightning_track.sinks.wandb",
    "lightning_track.board", "lightning_track.board.store", "lightning_track.board.serve", "lightning_track.cli.board",
    "lightning_track.sinks.mlflow", "lightning_track.cli.job_checkpoints",
]


def test_torch_free_layers_import_neither_torch_nor_lightning() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {TORCH_FREE!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_the_check_above_can_fail() -> None:
    """The same probe sees torch when a module that needs it is imported (the test is not vacuous)."""
    code = ("import sys, lightning_track.run.logger\n"
            "print('torch' in sys.modules and 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_are_the_moved_modules(old: str) -> None:
    new = importlib.import_module(f"lightning_track.{MOVED[old]}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop(f"lightning_track.{old}", None)
        aliased = importlib.import_module(f"lightning_track.{old}")
    assert aliased is new
    assert new.__spec__.name == f"lightning_track.{MOVED[old]}"  # the alias did not overwrite it
    assert any(issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught)


@pytest.mark.slow
def test_sinkhost_command_still_answers() -> None:
    out = subprocess.run([sys.executable, "-m", "lightning_track.sinkhost", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--in" in out.stdout


def test_every_error_is_one_tree_and_keeps_its_builtin_base() -> None:
    builtin = {
        errors.ConfigError: ValueError, errors.RunFolderError: ValueError, errors.JsonlProblem: ValueError,
        errors.WriterError: RuntimeError, errors.SinkHostError: RuntimeError, errors.SourceError: ValueError,
        errors.CheckpointError: ValueError, errors.SyncError: RuntimeError, errors.UnsafePathError: ValueError,
        errors.TransferError: RuntimeError, errors.TransportError: OSError,
    }
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.LightningTrackError), name
            assert name in (errors.__doc__ or ""), f"{name} is missing from the tree drawn in errors' docstring"
    for cls, base in builtin.items():
        assert issubclass(cls, base), cls


def test_one_line_flattens_messages() -> None:
    assert errors.one_line(OSError(28, "No space left on device")) == "No space left on device"
    assert errors.one_line(ValueError("a\n  b\tc")) == "a b c"
    assert errors.one_line(KeyError()) == "KeyError"
    assert len(errors.one_line(ValueError("x" * 1000), limit=50)) == 50


def test_vocabulary_maps_lightning_words_and_refuses_unknown_ones() -> None:
    assert vocabulary.run_status("success") == vocabulary.COMPLETED
    assert vocabulary.run_status("finished") == vocabulary.COMPLETED
    assert vocabulary.run_status("failed") == vocabulary.FAILED
    assert vocabulary.run_status(vocabulary.INTERRUPTED) == vocabulary.INTERRUPTED
    with pytest.raises(ValueError, match="unknown run status 'weird'"):
        vocabulary.run_status("weird")
    assert vocabulary.exit_status(-15) == 143 and vocabulary.exit_status(3) == 3


def test_one_timestamp_format_is_aware_and_round_trips() -> None:
    from datetime import datetime

    stamp = vocabulary.iso_time(1_795_323_146.123456)
    parsed = datetime.fromisoformat(stamp)
    assert parsed.tzinfo is not None and parsed.microsecond == 123456
    assert vocabulary.parse_iso_time(stamp) == pytest.approx(1_795_323_146.123456, abs=1e-6)


def test_env_names_share_one_prefix_and_old_names_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [getattr(vocabulary, n) for n in vocabulary.__all__ if n.startswith("ENV_") and n != "ENV_PREFIX"]
    assert names and all(n.startswith(vocabulary.ENV_PREFIX) for n in names)
    monkeypatch.delenv(vocabulary.ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("LT_CACHE_DIR", "/old")
    assert vocabulary.env_value(vocabulary.ENV_CACHE_DIR) == "/old"
    monkeypatch.setenv(vocabulary.ENV_CACHE_DIR, "/new")
    assert vocabulary.env_value(vocabulary.ENV_CACHE_DIR) == "/new"


def test_no_module_is_a_grab_bag() -> None:
    """No module over ~450 lines: a bigger one is doing more than one job (split it along its jobs)."""
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 470} == {}


# -- the layer table of docs/architecture.md, and no import cycles -------------------------------------------

from support import architecture  # noqa: E402 - the rules below read source with ast

LAYER_TABLE = architecture.read_layer_table((PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8"))


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A small copy of the package's shape: ``files`` by path under ``lightning_track/``."""
    package = tmp_path / "lightning_track"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text, encoding="utf-8")
    return package


def test_every_import_follows_the_layer_table() -> None:
    assert set(LAYER_TABLE) >= {"vocabulary.py", "errors.py", "redaction.py", "folder/", "run/", "cli/", "export/"}
    assert architecture.layer_violations(PACKAGE, LAYER_TABLE) == []


def test_the_layer_check_reports_a_planted_back_edge(tmp_path: Path) -> None:
    package = _plant(tmp_path, {
        "vocabulary.py": "", "run/logger.py": "", "folder/layout.py": "from ..vocabulary import x\n",
        "folder/records.py": "def later():\n    from ..run import logger\n",  # inside a function, relative
        "derived/digest.py": "import lightning_track.run.logger\n",
        "newpkg/thing.py": "",
    })
    problems = architecture.layer_violations(package, LAYER_TABLE)
    assert sorted(problems) == [
        "lightning_track/derived/digest.py:1 imports lightning_track.run.logger: derived/ may not import run/",
        "lightning_track/folder/records.py:2 imports lightning_track.run.logger: folder/ may not import run/",
        "lightning_track/newpkg/__init__.py: newpkg/ has no row in the table",
        "lightning_track/newpkg/thing.py: newpkg/ has no row in the table",
    ]


def test_the_module_import_graph_has_no_cycle() -> None:
    assert architecture.cycles(PACKAGE) == []


def test_the_cycle_check_reports_a_planted_cycle(tmp_path: Path) -> None:
    package = _plant(tmp_path, {
        "sync/transport/base.py": "def make():\n    from .local import Local\n",
        "sync/transport/local.py": "from .base import Transport\n",
        "sync/plan.py": "from .transport import base\n",
    })
    assert architecture.cycles(package) == [["lightning_track.sync.transport.base",
                                             "lightning_track.sync.transport.local"]]


# -- every file name from folder/layout.py ------------------------------------------------------------------

from lightning_track.folder.layout import RunLayout  # noqa: E402

# Too generic to tell a run file's name from a module path ("lightning_track.run") or another tool's files.
_GENERIC = {RunLayout.RUN_NOTE_SUFFIX, RunLayout.CHECKPOINT_SUFFIX}
RUN_FILE_NAMES = sorted({value.split("{")[0] for key, value in vars(RunLayout).items()
                         if key.isupper() and isinstance(value, str) and ("." in value or "-" in value)
                         and value not in _GENERIC})
# Runicorn's own run layout (meta.json, summary.json, ...), which lt-sync writes for that viewer: not ours.
SPELLING_ALLOWED = {"lightning_track/folder/layout.py", "lightning_track/sync/runicorn.py"}


def test_only_the_layout_spells_a_run_files_name() -> None:
    assert {"summary.json", "meta.json", "metrics.jsonl", "meta.attempt-", "system.node", ".pipeline.json"} <= set(
        RUN_FILE_NAMES)
    assert architecture.spelled_names(PACKAGE, RUN_FILE_NAMES, skip=SPELLING_ALLOWED) == []


def test_the_spelling_check_reports_a_planted_name(tmp_path: Path) -> None:
    package = _plant(tmp_path, {"query/x.py": (
        '"""Reads summary.json."""\n'  # a docstring may name it
        'def f(run, n):\n'
        '    print("no summary.json here")\n'  # so may a message
        '    return run / "summary.json", run / f"meta.attempt-{n}.json", "training_config.yaml"\n')})
    assert architecture.spelled_names(package, RUN_FILE_NAMES, skip=set()) == [
        "lightning_track/query/x.py:4: 'summary.json'", "lightning_track/query/x.py:4: 'meta.attempt-'"]


def test_one_byte_size_spelling_in_binary_units() -> None:
    assert [vocabulary.format_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30 // 2, 2**50)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "1.5 GiB", "1048576.0 GiB"]


# -- __all__ lists a module's own names ------------------------------------------------------------------------


def test_every_all_lists_only_the_modules_own_names() -> None:
    """A name is imported from where it is defined; a package's ``__init__`` may gather its modules' names."""
    assert architecture.foreign_all_names(PACKAGE) == {}


def test_the_all_check_reports_planted_re_exports(tmp_path: Path) -> None:
    package = _plant(tmp_path, {"run/writer.py": (
        "from ..errors import WriterError\nfrom .. import vocabulary\nfrom ..folder import layout\n"
        "__all__ = ['Writer', 'WriterError', 'DONE', 'FILE', 'KIND', 'CHUNK']\n"
        "class Writer: ...\nDONE = vocabulary.DONE\nFILE, KIND = layout.RunLayout.LOGS, 'kind'\nCHUNK = 1 << 20\n")})
    assert architecture.foreign_all_names(package) == {"lightning_track.run.writer": ["WriterError", "DONE", "FILE"]}
