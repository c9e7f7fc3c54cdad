"""The run-folder contract: names and paths (:mod:`.layout`), safe file writes (:mod:`.fileio`), the
records every file holds (:mod:`.records`, :mod:`.tracking`, :mod:`.signals`). Torch-free; everything
else in lightning_track builds on it."""
