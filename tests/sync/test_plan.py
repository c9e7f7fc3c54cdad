"""The sync plan and the manifest's name rules: pure functions, no I/O, no sshd."""

from __future__ import annotations

import pytest

from lightning_track.sync.manifest import (
    PART_SUFFIX,
    Manifest,
    is_append_only,
    is_checkpoint,
    is_internal,
    part_path,
    part_target,
)
from lightning_track.sync.plan import APPEND, COPY, DELETE, REPLACE, make_plan
from lightning_track.sync.transport import FILE, Entry, UnsafePathError, check_name, check_rel

RUN = "arc_lora_20250101_120000"


def f(rel: str, size: int = 10, mtime: int = 1000) -> Entry:
    return Entry(rel, FILE, size, mtime)


def manifest(*entries: Entry, dirs: tuple[str, ...] = (), links: dict[str, str] | None = None,
             parts: dict[str, Entry] | None = None, excluded: tuple[str, ...] = ()) -> Manifest:
    return Manifest(files={e.rel: e for e in entries}, dirs=set(dirs), links=dict(links or {}),
                    parts=dict(parts or {}), excluded_tops=set(excluded))


def kinds(plan) -> dict[str, str]:
    return {a.rel: a.kind for a in plan.actions}


def test_new_unchanged_grown_and_changed_files() -> None:
    src = manifest(f(f"{RUN}/new.yaml"), f(f"{RUN}/same.json"), f(f"{RUN}/metrics.jsonl", 50, 2000),
                   f(f"{RUN}/summary.json", 12, 2000), f(f"{RUN}/metrics.csv", 30, 2000),
                   f(f"{RUN}/train.log", 5, 2000), dirs=(RUN,))
    dst = manifest(f(f"{RUN}/same.json"), f(f"{RUN}/metrics.jsonl", 20), f(f"{RUN}/summary.json", 12),
                   f(f"{RUN}/metrics.csv", 20), f(f"{RUN}/train.log", 9), dirs=(RUN,))
    plan = make_plan(src, dst)
    assert kinds(plan) == {
        f"{RUN}/new.yaml": COPY,
        f"{RUN}/metrics.jsonl": APPEND,  # append-only and grew
        f"{RUN}/summary.json": REPLACE,  # same size, other mtime
        f"{RUN}/metrics.csv": REPLACE,  # grew, but not append-only: rewritten whole by its writer
        f"{RUN}/train.log": REPLACE,  # append-only that shrank (a resumed run dropped records)
    }
    assert plan.unchanged == 1 and plan.refused == [] and plan.mkdirs == []
    append = next(a for a in plan.actions if a.kind == APPEND)
    assert append.offset == 20 and append.src.size == 50
    assert next(a for a in plan.actions if a.kind == COPY).offset == 0
    assert plan.bytes_planned == 10 + (50 - 20) + 12 + 30 + 5
    assert (plan.count(COPY), plan.count(APPEND), plan.count(REPLACE), plan.count(DELETE)) == (1, 1, 3, 0)


def test_same_size_and_mtime_is_unchanged_even_if_the_bytes_differ() -> None:
    """The quick check is size + mtime (as rsync's): nothing else is compared."""
    plan = make_plan(manifest(f("a", 10, 5)), manifest(f("a", 10, 5)))
    assert plan.actions == [] and plan.unchanged == 1


def test_same_mtime_but_another_size_is_a_change() -> None:
    """An append within the same second (mtimes are whole seconds) leaves the mtime as it was: the size
    alone says the file changed. Append-only files get the new bytes, others are replaced whole."""
    src = manifest(f(f"{RUN}/metrics.jsonl", 80, 1000), f(f"{RUN}/summary.json", 14, 1000),
                   f(f"{RUN}/logs.txt", 5, 1000))
    dst = manifest(f(f"{RUN}/metrics.jsonl", 50, 1000), f(f"{RUN}/summary.json", 12, 1000),
                   f(f"{RUN}/logs.txt", 9, 1000))
    plan = make_plan(src, dst)
    assert kinds(plan) == {f"{RUN}/metrics.jsonl": APPEND, f"{RUN}/summary.json": REPLACE,
                           f"{RUN}/logs.txt": REPLACE}  # logs.txt shrank: not an append
    assert plan.unchanged == 0 and plan.bytes_planned == (80 - 50) + 14 + 5
    assert next(a for a in plan.actions if a.kind == APPEND).offset == 50


def test_a_leftover_part_file_is_handed_to_the_copy() -> None:
    part = f(part_path(f"{RUN}/big.bin"), 4)
    plan = make_plan(manifest(f(f"{RUN}/big.bin", 100)), manifest(parts={f"{RUN}/big.bin": part}, dirs=(RUN,)))
    (action,) = plan.actions
    assert (action.kind, action.dst) == (COPY, part)


def test_mkdirs_parents_first_and_only_missing_ones() -> None:
    src = manifest(f(f"{RUN}/tensorboard_logs/x/events.out.tfevents.1"), f(f"{RUN}/a"),
                   dirs=(RUN, f"{RUN}/tensorboard_logs", f"{RUN}/tensorboard_logs/x", f"{RUN}/empty"))
    plan = make_plan(src, manifest(dirs=(RUN,)))
    assert plan.mkdirs == [f"{RUN}/empty", f"{RUN}/tensorboard_logs", f"{RUN}/tensorboard_logs/x"]


def test_destination_symlinks_block_writes_through_them() -> None:
    src = manifest(f(f"{RUN}/a"), f(f"{RUN}/sub/b"), f("other/c"), dirs=(RUN, f"{RUN}/sub", "other"))
    dst = manifest(links={f"{RUN}/a": "symlink", "other": "symlink"}, dirs=(RUN,))
    plan = make_plan(src, dst)
    assert kinds(plan) == {f"{RUN}/sub/b": COPY}
    assert sorted(plan.refused) == [
        f"destination {RUN}/a: is a symlink; refusing to write {RUN}/a through it",
        "destination other: is a symlink; refusing to write other/c through it",
    ]
    assert plan.mkdirs == [f"{RUN}/sub"]  # never "other" (a link), nor anything below it


def test_file_and_folder_clashes_and_source_links_are_refused() -> None:
    src = manifest(f(f"{RUN}/x/y"), f(f"{RUN}/d"), links={f"{RUN}/leak": "symlink pointing out of the tree"})
    dst = manifest(f(f"{RUN}/x"), dirs=(RUN, f"{RUN}/d"))
    plan = make_plan(src, dst)
    assert plan.actions == []
    assert plan.refused == [
        f"source {RUN}/leak: symlink pointing out of the tree, not synced",
        f"destination {RUN}/d: is a folder on the destination but a file in the source",
        f"destination {RUN}/x/y: a parent path is a file on the destination",
    ]


def test_delete_only_when_asked_and_only_what_the_sync_covers() -> None:
    src = manifest(f(f"{RUN}/a"), excluded=("old_run",))
    dst = manifest(f(f"{RUN}/a"), f(f"{RUN}/gone"), f("old_run/metrics.jsonl"))
    assert make_plan(src, dst).actions == []
    plan = make_plan(src, dst, delete=True)
    assert kinds(plan) == {f"{RUN}/gone": DELETE}  # old_run was left out by --since: kept
    assert plan.bytes_planned == 0


@pytest.mark.parametrize(("rel", "append_only"), [
    (f"{RUN}/metrics.jsonl", True), (f"{RUN}/batch_tracking.jsonl", True),
    (f"{RUN}/tensorboard_logs/events.out.tfevents.17.gpu1", True), (f"{RUN}/swanlab_logs/run-1/x.swanlab", True),
    (f"{RUN}/train.log", True), (f"{RUN}/summary.json", False), (f"{RUN}/metrics.csv", False),
    (f"{RUN}/other.jsonl", False), (f"{RUN}/swanlab_logs/runs.swanlab", False),  # the board's SQLite database
])
def test_append_only_names(rel: str, append_only: bool) -> None:
    assert is_append_only(rel) is append_only


@pytest.mark.parametrize(("rel", "checkpoint"), [
    (f"{RUN}/checkpoints/checkpoint-step-005.ckpt", True), (f"{RUN}/checkpoints/notes.txt", True),
    (f"{RUN}/final_model/model.safetensors", True), (f"{RUN}/final_model", True), (f"{RUN}/x.ckpt", True),
    (f"{RUN}/metrics.jsonl", False), (f"{RUN}/checkpoint_mapping.json", False),
])
def test_checkpoint_names(rel: str, checkpoint: bool) -> None:
    assert is_checkpoint(rel) is checkpoint


def test_internal_names_follow_the_temp_file_rule_and_part_files() -> None:
    assert is_internal(f"{RUN}/.summary.json.4711.tmp")  # an atomic write in progress
    assert is_internal(f"{RUN}/.final_model.old-1.tmp")
    assert is_internal(f"{RUN}/.metrics.jsonl{PART_SUFFIX}")  # our own partial copy
    assert not is_internal(f"{RUN}/summary.tmp")  # not hidden: a user's file
    assert not is_internal(f"{RUN}/.hidden")
    assert not is_internal(".tmpdir/summary.json")  # the rule is about the file's own name


@pytest.mark.parametrize("rel", ["a", "run/b.json", "run/sub/.c", "run/.x.tmp"])
def test_part_path_round_trips(rel: str) -> None:
    part = part_path(rel)
    assert part.rsplit("/", 1)[-1].startswith(".") and part.endswith(PART_SUFFIX)
    assert part.rpartition("/")[0] == rel.rpartition("/")[0]  # beside its target: a rename, never a copy
    assert part_target(part) == rel


def test_path_checks() -> None:
    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", "a/./b", "a\x00b"):
        with pytest.raises(UnsafePathError):
            check_rel(bad)
    for bad in ("..", ".", "a/b", "", "a\x00"):
        with pytest.raises(UnsafePathError):
            check_name(bad, "run")
    assert check_rel("run/metrics.jsonl") == "run/metrics.jsonl" and check_rel(".") == ""
    assert check_name(".hidden", "run") == ".hidden"
    assert issubclass(UnsafePathError, ValueError)
