"""``lt board [RUN|ROOT ...]``: SwanLab's board on any run folders, side by side, kept up to date.

Builds the board's store from the run folders (in the user's cache, or ``--dir``), starts the board on
it, and feeds it the runs' new lines every ``--every`` seconds until Ctrl+C. The run folders are only
read. ``--once``: build or update the store and exit (``swanlab watch DIR`` shows it later).
Exit 0; 2 for bad arguments (no board installed, a busy port, a store another ``lt board`` feeds); 1 when
no run was found.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..query.format import printable
from ..vocabulary import EXIT_FAILURE, EXIT_OK
from ._errors import reports

__all__ = ["main"]


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds > 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lt board", description="SwanLab's board on run folders, however they "
                                     "were made (with or without SwanLab, offline, migrated, mirrored), side by "
                                     "side; new lines appear while the board runs. The folders are only read.")
    parser.add_argument("runs", nargs="*", metavar="RUN|ROOT", help="run folders or folders of runs (default: runs)")
    parser.add_argument("--port", type=int, default=5092, help="the board's port (default: 5092)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--dir", metavar="DIR", help="the board's store (default: in the user's cache)")
    parser.add_argument("--every", type=_positive, default=2.0, metavar="SECONDS",
                        help="how often the store takes the runs' new lines (default: 2)")
    parser.add_argument("--once", action="store_true", help="build or update the store, then exit (no board)")
    return parser


def _warn(message: str) -> None:
    print(f"lt board: {printable(message)}", file=sys.stderr, flush=True)


@reports("lt board")
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from ..board import BoardStore, default_store, serve

    specs = args.runs or ["runs"]
    folder = Path(args.dir or default_store()).expanduser().resolve()
    for spec in specs:  # the store is written; the runs never are
        root = Path(spec).resolve()
        if folder == root or root in folder.parents or folder in root.parents:
            raise ConfigError(f"--dir {args.dir or folder}: the board's store would be in or over {spec}, which"
                              " lt board only reads; give --dir a folder outside it")
    seen: set[str] = set()

    def report(result) -> None:  # noqa: ANN001 - a PassResult
        for problem in result.problems:
            if problem not in seen:  # a torn or bad line is said once, not every pass
                seen.add(problem)
                _warn(problem)

    with BoardStore(folder) as store:
        first = store.update(specs)
        report(first)
        if not first.runs:
            _warn(f"no run found under {', '.join(map(str, specs))}")
            return EXIT_FAILURE
        print(printable(first.line(store.folder)), flush=True)
        if args.once:
            return EXIT_OK

        def started(url: str) -> None:
            print(f"SwanLab's board: {url}  (new lines every {args.every:g} s; Ctrl+C to stop)", flush=True)

        return serve(store, specs, args.host, args.port, args.every, report, started)


if __name__ == "__main__":
    sys.exit(main())
