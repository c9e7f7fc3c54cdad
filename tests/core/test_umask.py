"""The file mode of atomic writes comes from the umask, read without ever setting it (a thread creating a
file while the umask were briefly 0 would get mode 0666)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import script_env

from lightning_track.folder.fileio import read_umask


def test_the_umask_is_read_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    before = os.umask(0o027)
    try:
        def refuse(mask: int) -> int:
            raise AssertionError("os.umask called after import")

        monkeypatch.setattr(os, "umask", refuse)
        assert read_umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(before)


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    code = ("import os, sys; os.umask(0o027)\n"
            "from lightning_track.folder.fileio import atomic_write_text\n"
            "atomic_write_text(sys.argv[1], 'x')\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.json")], check=True, env=script_env(), timeout=60)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o640
