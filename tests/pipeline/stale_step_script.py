"""A step whose run stopped beating: a run folder whose summary.json says running with a heartbeat 10
minutes old (as a process OOM-killed mid-run leaves it), named in the run note, then the step waits."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lightning_track.folder.signals import tell_launcher
from lightning_track.vocabulary import iso_time

run = Path(sys.argv[1])
run.mkdir(parents=True)
(run / "summary.json").write_text(json.dumps({"status": "running", "heartbeat": iso_time(time.time() - 600),
                                              "start_time": iso_time(time.time() - 900)}))
tell_launcher(run)
time.sleep(float(sys.argv[2]))
