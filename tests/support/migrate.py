"""Helpers shared by the migrate tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mode of every file under ``root`` (to prove the source was not written)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return out


def run_dir(tree: Path, flavour: int) -> Path:
    """The legacy run folder of flavour 0 (HF), 1 (old torch.save) or 2 (mixed) in an example tree."""
    names = {0: "icoding/arc-challenge/icoding_20250720_143052_lora",
             1: "my_proj/gsm8k/my_proj_20250720_144752_full_ft",
             2: "icoding/arc-challenge/icoding_20250720_150452_qlora"}
    return tree / names[flavour]
