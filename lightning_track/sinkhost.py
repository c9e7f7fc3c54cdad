"""``python -m lightning_track.sinkhost``: the documented command of the sink host process.

The host lives in :mod:`lightning_track.run.sinkhost`; ``-m`` needs a real file at this name.
"""

import sys

from .run.sinkhost import *  # noqa: F403 - the old import path, for one release
from .run.sinkhost import main

if __name__ == "__main__":
    sys.exit(main())
