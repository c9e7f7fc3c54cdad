"""The eval step of the pipeline tests: reads a finished run folder, writes eval.json into it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

run = Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text())
assert summary["status"] == "completed", summary["status"]
rows = (run / "metrics.jsonl").read_text().splitlines()
(run / "eval.json").write_text(json.dumps({"records": len(rows), "final": summary["final"]}))
print(f"evaluated {run}")
