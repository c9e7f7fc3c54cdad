"""Which node was lost, from what each node last wrote: real files in a run folder, their times set."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning_track.derived.nodes import lost_record, name_lost_nodes, node_files, peer_lost, silent_nodes
from lightning_track.folder.layout import RunLayout


def _touch(path: Path, when: float) -> None:
    path.write_text("x\n")
    os.utime(path, (when, when))


def test_the_node_whose_files_stopped_is_named_with_its_ranks(tmp_path: Path) -> None:
    layout, now = RunLayout(tmp_path), time.time()
    _touch(layout.system_jsonl, now - 1)  # node 0: ranks 0, 1
    _touch(layout.rank_logs_txt(1), now - 50)  # rank 1 printed long ago, node 0's samples still come
    _touch(layout.node_system_jsonl(1), now - 30)  # node 1: ranks 2, 3, silent for 30 s
    _touch(layout.rank_logs_txt(3), now - 40)
    files = node_files(layout, nodes=2, ranks_per_node=2)
    assert [(f.node, f.ranks) for f in files] == [(0, (0, 1)), (1, (2, 3))]
    assert files[1].last_write == now - 30  # its newest file
    (silent,) = silent_nodes(files, now, quiet_after=6)
    assert silent.node == 1
    assert silent_nodes(files, now, quiet_after=60) == []  # within the quiet time: nobody is named
    entries, words = lost_record([silent], ["gpu1", "gpu2"], now)
    assert entries == [{"node": 1, "name": "gpu2", "ranks": [2, 3], "last_write": entries[0]["last_write"],
                        "silent_s": 30.0}]
    assert words == "node 1 (gpu2, ranks 2, 3) nothing written for 30 s"


def test_when_every_node_is_quiet_none_is_blamed(tmp_path: Path) -> None:
    layout, now = RunLayout(tmp_path), time.time()
    _touch(layout.system_jsonl, now - 100)
    _touch(layout.node_system_jsonl(1), now - 100)
    assert silent_nodes(node_files(layout, 2, 1), now, quiet_after=5) == []
    # a node that never wrote anything, beside a live one, is named
    _touch(layout.system_jsonl, now)
    layout.node_system_jsonl(1).unlink()
    (never,) = silent_nodes(node_files(layout, 2, 1), now, quiet_after=5)
    assert never.last_write is None and lost_record([never], [], now)[1] == "node 1 (rank 1) never wrote"


def test_a_failure_gets_the_lost_nodes_in_its_record_and_reason(tmp_path: Path) -> None:
    layout, now = RunLayout(tmp_path), time.time()
    _touch(layout.system_jsonl, now)
    _touch(layout.node_system_jsonl(1), now - 20)
    failure = {"check": "exception", "reason": "RuntimeError: Connection reset by peer"}
    named = name_lost_nodes(failure, layout, nodes=2, ranks_per_node=1, system_interval=1.0, names=["n1", "n2"],
                            wait=False)
    assert named["reason"] == ("RuntimeError: Connection reset by peer; stopped answering: node 1 (n2, rank 1) "
                               "nothing written for 20 s")
    assert named["lost"][0]["name"] == "n2" and failure["reason"].endswith("peer")  # the input is left as it was
    _touch(layout.node_system_jsonl(1), time.time())  # both alive: the failure is returned unchanged
    assert name_lost_nodes(failure, layout, nodes=2, ranks_per_node=1, system_interval=1.0, names=[],
                           wait=False) == failure


def test_peer_lost_reads_a_collectives_error() -> None:
    assert peer_lost("RuntimeError: [gloo/transport/tcp/pair.cc:534] Read error [10.77.0.12]:4022: "
                     "Connection reset by peer")
    assert peer_lost("DistBackendError: NCCL watchdog: operation timed out")
    assert not peer_lost("ValueError: bad shape for the batch")
