"""Which nodes of a multi-node run stopped answering, from what each last wrote in the shared run folder.

Why from the files: when a collective fails ("Connection reset by peer") or hangs, the error names at
best an address, and a hung one names nothing. But every node keeps writing into the run folder while it
lives: its local rank 0 samples the machine into its system file every few seconds, its ranks print into
their consoles. A node whose files stopped changing while the others' go on is the one that was lost.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from ..folder.layout import RunLayout
from ..vocabulary import iso_time

__all__ = ["NodeFiles", "node_files", "silent_nodes", "peer_lost", "lost_record", "name_lost_nodes"]

# words of a collective's error when the other side went away (gloo, NCCL, the TCP store)
_PEER_WORDS = ("connection reset", "connection closed", "connection refused", "broken pipe", "timed out",
               "timeout", "no route to host", "peer", "socket")


@dataclass(frozen=True)
class NodeFiles:
    """One node's files in the run folder and when they last changed (None: none of them exists)."""

    node: int
    ranks: tuple[int, ...]
    last_write: float | None


def node_files(layout: RunLayout, nodes: int, ranks_per_node: int) -> list[NodeFiles]:
    """Each node's last write: its system samples and its ranks' consoles (rank ``k * ranks_per_node + i``
    runs on node ``k``, as torchrun and srun number them)."""
    found = []
    for node in range(nodes):
        ranks = tuple(range(node * ranks_per_node, (node + 1) * ranks_per_node))
        times = []
        for path in (layout.node_system_jsonl(node), *(layout.rank_logs_txt(rank) for rank in ranks)):
            try:
                times.append(os.stat(path).st_mtime)
            except OSError:
                continue
        found.append(NodeFiles(node, ranks, max(times) if times else None))
    return found


def silent_nodes(files: list[NodeFiles], now: float, quiet_after: float) -> list[NodeFiles]:
    """The nodes whose files have not changed for more than ``quiet_after`` s while another node's have
    (when every node is quiet, nothing says which one is lost: none is named)."""
    quiet = [f for f in files if f.last_write is None or now - f.last_write > quiet_after]
    return quiet if len(quiet) < len(files) else []


def peer_lost(message: str) -> bool:
    """Whether an error's text says the other side of a connection went away."""
    text = message.lower()
    return any(word in text for word in _PEER_WORDS)


def lost_record(silent: list[NodeFiles], names: list[str], now: float) -> tuple[list[dict[str, Any]], str]:
    """``summary.json``'s ``failure.lost`` entries and the words for the reason (``node 1 (n2, rank 1) ...``)."""
    entries, words = [], []
    for item in silent:
        name = names[item.node] if item.node < len(names) else None
        quiet = round(now - item.last_write, 1) if item.last_write is not None else None
        entries.append({"node": item.node, "name": name, "ranks": list(item.ranks),
                        "last_write": iso_time(item.last_write) if item.last_write is not None else None,
                        "silent_s": quiet})
        ranks = ", ".join(str(r) for r in item.ranks)
        label = f"node {item.node} ({name + ', ' if name else ''}rank{'s' if len(item.ranks) > 1 else ''} {ranks})"
        words.append(f"{label} nothing written for {quiet:.0f} s" if quiet is not None
                     else f"{label} never wrote")
    return entries, "; ".join(words)


def name_lost_nodes(failure: dict[str, Any], layout: RunLayout, *, nodes: int, ranks_per_node: int,
                    system_interval: float, names: list[str], wait: bool) -> dict[str, Any]:
    """``failure`` with the nodes that stopped writing named (``lost``, and in its reason). Quiet means no
    change for 3 system samples; ``wait``: the collective failed just now, so a lost node's files are still
    fresh: watch them that long before judging."""
    quiet_after = max(3 * (system_interval or 10.0), 2.0)
    deadline = time.monotonic() + (quiet_after + 1.0 if wait else 0.0)
    while True:
        silent = silent_nodes(node_files(layout, nodes, ranks_per_node), time.time(), quiet_after)
        if silent or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not silent:
        return failure
    entries, words = lost_record(silent, names, time.time())
    return {**failure, "reason": f"{failure['reason']}; stopped answering: {words}", "lost": entries}
