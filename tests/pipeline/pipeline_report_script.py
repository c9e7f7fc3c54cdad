"""The report step of the pipeline tests: a one-line report from the eval step's output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

run = Path(sys.argv[1])
evaluated = json.loads((run / "eval.json").read_text())
(run / "report.txt").write_text(f"{run.name}: {evaluated['records']} records\n")
print("report written")
