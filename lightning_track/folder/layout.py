"""The run folder contract: the one place that knows folder and file names.

Every other module asks a :class:`RunLayout` for paths; nothing else builds a run path by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import RunNotFound
from ..vocabulary import SIGNAL_STATUSES, run_name_time

# How a run folder is named has its own module; these names stay importable from here.
from .run_names import RunName as RunName
from .run_names import parse_run_name as parse_run_name
from .run_names import sanitize_name as sanitize_name

__all__ = ["RunLayout"]

_LIGHTNING_STEP = re.compile(r"(?:^|[-_])step=(?P<step>\d+)")  # ModelCheckpoint's default "epoch=0-step=10"


class RunLayout:
    """Paths of one run folder and of the shared folders beside it under the runs root."""

    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "tensorboard_logs"
    SWANLAB = "swanlab_logs"
    SWANLAB_BOARD_DB = "runs.swanlab"  # in swanlab_logs/: SwanLab's local board's database (SQLite, not a record)
    FINAL_MODEL = "final_model"
    CONFIG = "config.yaml"
    METRICS_JSONL = "metrics.jsonl"
    METRICS_CSV = "metrics.csv"
    SUMMARY = "summary.json"
    META = "meta.json"
    REPORT = "report_draft.md"
    BATCH_TRACKING = "batch_tracking.jsonl"
    CHECKPOINT_MAPPING = "checkpoint_mapping.json"
    LINE_CHECKPOINT_MAPPING = "line_checkpoint_mapping.json"
    SIGNALS = "signals"
    SWANLAB_WORKSPACE = "swanlab_workspace"
    CHECKPOINT_PREFIX = "checkpoint-step-"
    CHECKPOINT_SUFFIX = ".ckpt"
    LAST_CHECKPOINT = "last.ckpt"
    LEGACY = "legacy"  # files carried over unchanged from a migrated legacy run (lt-migrate)
    ANNOTATIONS = "annotations.json"  # tags and notes set after the run (lt tag / lt note)
    EXPORT = "export.json"  # where the run was exported (lt export) and how far each file was sent
    MIRROR_EXPORT = "export.mirror.json"  # the same, of lt-sync --export from a mirror: never synced (export/mirror)
    WANDB = "wandb"  # offline W&B runs (the "wandb" sink, lt export --to wandb): W&B's own folder name
    PLOTS = "plots"
    RUN_PLOT = "plots/metrics.png"  # post_process's curves, linked from report_draft.md
    DROPPED_METRICS = "metrics.dropped-at-attempt-{attempt}.jsonl"  # records a resume took out (never deleted)
    SUPERSEDED_CHECKPOINTS = "superseded-at-attempt-{attempt}"  # under checkpoints/: an earlier attempt's
    LOGS = "logs.txt"  # console output (stdout + stderr) of rank 0, or of the command lt-run launched
    RANK_LOGS = "logs.rank{rank}.txt"  # console output of another rank (DDP), beside it
    SYSTEM_JSONL = "system.jsonl"  # GPU/CPU/memory samples over time
    MEDIA = "media"  # images, text and histograms logged by the run
    MEDIA_JSONL = "media.jsonl"  # their index: key, step, time, file, caption
    ATTEMPT_META = "meta.attempt-{attempt}.json"  # meta.json of a resumed attempt (the first one's stays)
    CODE = "code"  # the code as it ran, beyond the commit (lightning_track.run.capture)
    # in code/: uncommitted changes (as `git apply` takes them), copies of the untracked files git does not
    # ignore, outside a repository the entry script and config files
    CODE_PATCH, CODE_UNTRACKED, CODE_SOURCE = "diff.patch", "untracked", "source"
    REPRODUCE = ".lt-reproduce"  # in a folder lt reproduce made: the run's config (not the project's code)
    # packages, Python, torch/CUDA, GPUs, env vars, seed; hashes of the files the config names; every checkpoint
    ENVIRONMENT, INPUTS, CHECKPOINTS_INDEX = "environment.json", "inputs.json", "checkpoints.json"
    NODE_SYSTEM_JSONL = "system.node{node}.jsonl"  # another node's machine samples (DDP over nodes)
    PIPELINE_STATE_SUFFIX = ".pipeline.json"  # <runs root>/<pipeline>.pipeline.json: a pipeline's step states
    APPEND_ONLY = (METRICS_JSONL, BATCH_TRACKING, LOGS, SYSTEM_JSONL, MEDIA_JSONL)

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.run_dir)!r})"

    # -- names ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def root(self) -> Path:
        return self.run_dir.parent

    @staticmethod
    def run_prefix(dataset: str, method: str) -> str:
        return f"{sanitize_name(dataset, what='dataset')}_{sanitize_name(method, what='method')}"

    @classmethod
    def run_name(cls, dataset: str, method: str, timestamp: str, counter: int = 1) -> str:
        base = f"{cls.run_prefix(dataset, method)}_{timestamp}"
        return base if counter <= 1 else f"{base}-{counter}"

    # -- files in the run folder ---------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / self.CHECKPOINTS

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / self.TENSORBOARD

    @property
    def swanlab_dir(self) -> Path:
        return self.run_dir / self.SWANLAB

    @property
    def final_model_dir(self) -> Path:
        return self.run_dir / self.FINAL_MODEL

    @property
    def config_yaml(self) -> Path:
        return self.run_dir / self.CONFIG

    @property
    def metrics_jsonl(self) -> Path:
        return self.run_dir / self.METRICS_JSONL

    @property
    def metrics_csv(self) -> Path:
        return self.run_dir / self.METRICS_CSV

    @property
    def summary_json(self) -> Path:
        return self.run_dir / self.SUMMARY

    @property
    def meta_json(self) -> Path:
        return self.run_dir / self.META

    @property
    def report_md(self) -> Path:
        return self.run_dir / self.REPORT

    @property
    def batch_tracking_jsonl(self) -> Path:
        return self.run_dir / self.BATCH_TRACKING

    @property
    def checkpoint_mapping_json(self) -> Path:
        return self.run_dir / self.CHECKPOINT_MAPPING

    @property
    def line_checkpoint_mapping_json(self) -> Path:
        return self.run_dir / self.LINE_CHECKPOINT_MAPPING

    @property
    def export_json(self) -> Path:
        return self.run_dir / self.EXPORT

    @property
    def annotations_json(self) -> Path:
        return self.run_dir / self.ANNOTATIONS

    @property
    def logs_txt(self) -> Path:
        return self.run_dir / self.LOGS

    def rank_logs_txt(self, rank: int) -> Path:
        """Console output of ``rank`` (rank 0's is :attr:`logs_txt`)."""
        return self.logs_txt if rank == 0 else self.run_dir / self.RANK_LOGS.format(rank=rank)

    @property
    def system_jsonl(self) -> Path:
        return self.run_dir / self.SYSTEM_JSONL

    @property
    def media_dir(self) -> Path:
        return self.run_dir / self.MEDIA

    @property
    def media_jsonl(self) -> Path:
        return self.run_dir / self.MEDIA_JSONL

    def code_dir(self, attempt: int = 1) -> Path:  # a later attempt's: code/attempt-N/
        return self.run_dir / self.CODE / (f"attempt-{attempt}" if attempt > 1 else "")

    def environment_json(self, attempt: int = 1) -> Path:
        return self.run_dir / (self.ENVIRONMENT if attempt <= 1 else f"environment.attempt-{attempt}.json")

    def attempt_meta_json(self, attempt: int) -> Path:
        """``meta.json`` of attempt ``attempt`` after the first (which keeps :attr:`meta_json`)."""
        return self.run_dir / self.ATTEMPT_META.format(attempt=attempt)

    @property
    def checkpoints_index(self) -> Path:
        return self.run_dir / self.CHECKPOINTS_INDEX

    def node_system_jsonl(self, node: int) -> Path:
        """Machine samples of node ``node`` (node 0's are :attr:`system_jsonl`)."""
        return self.system_jsonl if node == 0 else self.run_dir / self.NODE_SYSTEM_JSONL.format(node=node)

    def node_system_jsonls(self) -> list[Path]:
        """Every other node's samples file present, in name order."""
        return sorted(self.run_dir.glob(self.NODE_SYSTEM_JSONL.format(node="*")))

    def dropped_metrics_jsonl(self, attempt: int) -> Path:
        """Where the records that attempt ``attempt``'s resume took out of ``metrics.jsonl`` go."""
        return self.run_dir / self.DROPPED_METRICS.format(attempt=attempt)

    def dropped_tracking_jsonl(self, attempt: int) -> Path:
        """Where the batch-tracking records that attempt ``attempt``'s resume took out go."""
        return self.run_dir / f"batch_tracking.dropped-at-attempt-{attempt}.jsonl"

    def dropped_tracking_jsonl_after(self, step: int) -> Path:
        """The same, without a RunLogger to number the attempt: named by the restart step."""
        return self.run_dir / f"batch_tracking.dropped-after-step-{step}.jsonl"

    def superseded_checkpoints_dir(self, attempt: int) -> Path:
        """Where an earlier attempt's checkpoints past the restart step go when ``attempt`` rewinds."""
        return self.checkpoints_dir / self.SUPERSEDED_CHECKPOINTS.format(attempt=attempt)

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the run folder when inside it (files of a run never hold absolute paths
        of the machine that wrote them, so a mirror or a moved ``runs/`` stays valid)."""
        try:
            return Path(path).resolve().relative_to(self.run_dir.resolve()).as_posix()
        except (ValueError, OSError):
            return str(path)

    @property
    def legacy_dir(self) -> Path:
        return self.run_dir / self.LEGACY

    @classmethod
    def staging_dir(cls, root: str | Path, name: str, tool: str) -> Path:
        """Where ``tool`` builds run ``name`` before renaming it to ``root/name`` when complete.

        Same filesystem as the target, so the rename is atomic; the hidden parent keeps half-built
        runs out of run listings, and the run folder already has its final name.
        """
        return Path(root) / f".{tool}-staging" / name

    @classmethod
    def checkpoint_filename(cls, step: int) -> str:
        return f"{cls.CHECKPOINT_PREFIX}{step:03d}{cls.CHECKPOINT_SUFFIX}"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / self.checkpoint_filename(step)

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / self.LAST_CHECKPOINT

    @classmethod
    def checkpoint_step(cls, path: str | Path) -> int | None:
        """The step encoded in a ``checkpoint-step-NNN.ckpt`` name, else None."""
        name = Path(path).name
        if not (name.startswith(cls.CHECKPOINT_PREFIX) and name.endswith(cls.CHECKPOINT_SUFFIX)):
            return None
        digits = name[len(cls.CHECKPOINT_PREFIX) : -len(cls.CHECKPOINT_SUFFIX)]
        return int(digits) if digits.isdigit() else None

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every step checkpoint, oldest first."""
        return self.step_checkpoints_in(self.checkpoints_dir)

    @classmethod
    def step_checkpoints_in(cls, folder: str | Path) -> list[tuple[int, Path]]:
        """``(step, path)`` of every complete step checkpoint file in ``folder`` (not ``last.ckpt``, a
        link; not temp files), oldest first."""
        folder = Path(folder)
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            step = cls.checkpoint_step(path)
            if step is not None and not path.is_symlink() and path.is_file():
                found.append((step, path))
        return sorted(found)

    def checkpoint_steps(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every checkpoint whose name gives its step: ours
        (``checkpoint-step-NNN.ckpt``) and Lightning's (``...step=NNN...ckpt``), oldest first."""
        found = dict((path, step) for step, path in self.step_checkpoints())
        if self.checkpoints_dir.is_dir():
            for path in self.checkpoints_dir.glob("*.ckpt"):
                match = _LIGHTNING_STEP.search(path.name)
                if match and path not in found and not path.is_symlink():
                    found[path] = int(match["step"])
        return sorted((step, path) for path, step in found.items())

    # -- shared folders beside the runs --------------------------------------------------------
    @property
    def signals_dir(self) -> Path:
        return self.root / self.SIGNALS

    SIGNAL_STATUSES = SIGNAL_STATUSES
    RUN_NOTE_SUFFIX = ".run"  # <signals>/<exp_id>.run: the run folder a launched command writes to
    LAUNCH_LOGS_SUFFIX = ".logs.txt"  # <signals>/<exp_id>.logs.txt: lt-run's console of a command that named no run

    @classmethod
    def launch_logs(cls, signals_dir: str | Path, exp_id: str) -> Path:
        """Where lt-run keeps the console output of a command that never named its run folder."""
        return Path(signals_dir) / f"{exp_id}{cls.LAUNCH_LOGS_SUFFIX}"

    @classmethod
    def signal_file(cls, signals_dir: str | Path, exp_id: str, status: str, *, json: bool = False) -> Path:
        """``<signals_dir>/<exp_id>.<status>`` (``.json`` appended for the JSON twin)."""
        if status not in cls.SIGNAL_STATUSES:
            raise ValueError(f"signal status {status!r} is not one of {', '.join(cls.SIGNAL_STATUSES)}")
        return Path(signals_dir) / (f"{exp_id}.{status}" + (".json" if json else ""))

    @classmethod
    def pipeline_state_json(cls, root: str | Path, pipeline: str) -> Path:
        """Where pipeline ``pipeline`` keeps its steps' states: a file beside the runs, never taken for a run."""
        return Path(root) / f"{pipeline}{cls.PIPELINE_STATE_SUFFIX}"

    @classmethod
    def pipeline_state_files(cls, root: str | Path) -> list[Path]:
        """Every pipeline state file under the runs root ``root``, in name order."""
        return sorted(Path(root).glob(f"*{cls.PIPELINE_STATE_SUFFIX}"))

    @classmethod
    def pipeline_of_state_file(cls, path: str | Path) -> str:
        """The pipeline's name a state file is named after."""
        return Path(path).name.removesuffix(cls.PIPELINE_STATE_SUFFIX)

    @property
    def swanlab_workspace(self) -> Path:
        return self.root / self.SWANLAB_WORKSPACE

    # -- creating and finding runs ---------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | Path,
        dataset: str,
        method: str,
        timestamp: str | None = None,
    ) -> RunLayout:
        """Create a new, empty run folder; a second run in the same second gets ``-2``, ``-3``, ...

        ``mkdir`` without ``exist_ok`` is the lock: two processes can never get the same folder.
        """
        root = Path(root)
        timestamp = timestamp or run_name_time()
        root.mkdir(parents=True, exist_ok=True)
        counter = 1
        while True:
            run_dir = root / cls.run_name(dataset, method, timestamp, counter)
            try:
                run_dir.mkdir()
            except FileExistsError:
                counter += 1
                continue
            return cls(run_dir)

    @classmethod
    def list_runs(cls, root: str | Path, dataset: str | None = None, method: str | None = None) -> list[RunLayout]:
        """Run folders under ``root`` (optionally of one dataset+method), oldest first."""
        root = Path(root)
        if not root.is_dir():
            return []
        prefix = cls.run_prefix(dataset, method) if dataset is not None and method is not None else None
        runs: list[tuple[str, int, RunLayout]] = []
        for child in root.iterdir():
            parsed = parse_run_name(child.name)
            if parsed is None or not child.is_dir():
                continue
            if prefix is not None and parsed.prefix != prefix:
                continue
            runs.append((parsed.timestamp, parsed.counter, cls(child)))
        return [layout for _, _, layout in sorted(runs, key=lambda r: (r[0], r[1]))]

    @classmethod
    def find_latest(cls, root: str | Path, dataset: str, method: str) -> RunLayout | None:
        runs = cls.list_runs(root, dataset, method)
        return runs[-1] if runs else None

    @staticmethod
    def check_root(root: str | Path) -> None:
        """Fail now, naming the root, if no run folder could be created under it (nothing is written)."""
        root = Path(root)
        existing = root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        problem = None
        if not existing.is_dir():
            problem = "Not a directory"
        elif not os.access(existing, os.W_OK | os.X_OK):
            problem = "Permission denied"
        if problem:
            raise OSError(f"cannot create a run folder under {root}: {problem} ({existing})")

    @classmethod
    def run_of_checkpoint(cls, ckpt_path: str | Path, root: str | Path, dataset: str, method: str
                          ) -> RunLayout | None:
        """The run folder of ``root`` (of this dataset+method) that holds ``ckpt_path``, else None."""
        try:
            path, root_dir = Path(ckpt_path).resolve(), Path(root).resolve()
        except OSError:
            return None
        prefix = cls.run_prefix(dataset, method)
        for parent in path.parents:
            if parent.parent == root_dir:
                parsed = parse_run_name(parent.name)
                return cls(parent) if parsed is not None and parsed.prefix == prefix else None
        return None

    @classmethod
    def resolve_resume(cls, root: str | Path, dataset: str, method: str, resume: bool | str | Path) -> RunLayout:
        """The run folder a resume continues: the newest of dataset+method, a run name, or a path."""
        root = Path(root)
        if resume is True:
            latest = cls.find_latest(root, dataset, method)
            if latest is None:
                raise RunNotFound(
                    f"resume=True but no run of dataset {dataset!r} and method {method!r} exists under {root}"
                )
            return latest
        target = Path(resume)
        candidates = [target] if target.is_absolute() or len(target.parts) > 1 else [root / target, target]
        for candidate in candidates:
            if candidate.is_dir():
                return cls(candidate)
        raise RunNotFound(f"resume target {str(resume)!r} is not a run folder (looked in {root})")
