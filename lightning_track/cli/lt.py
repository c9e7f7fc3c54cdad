"""``lt``: one command for looking at runs, and the existing tools as subcommands.

    lt ls [ROOT ...] [--filter EXPR] [--sort KEY] [--columns COLS] [--json]
    lt show RUN [--prompt] [--json]
    lt compare RUN RUN ... [--metric KEY ...] [--plot FILE.png]
    lt report RUN|ROOT ... -o report.html [--filter EXPR]
    lt tag RUN ... [+TAG] [-TAG] ...       lt note RUN [TEXT] [--append]
    lt reproduce RUN [--into DIR] [--run [--anyway]]
    lt run | sync | migrate | demo ...     (= lt-run, lt-sync, lt-migrate, lt-demo)
    lt export RUN|ROOT ... --to mlflow://HOST:PORT [--experiment NAME] [--with-model] [--with-checkpoints]
    lt board [RUN|ROOT ...] [--port P] [--host H] [--dir DIR] [--every N] [--once]
    lt run --pipeline FILE [--jobs N] [--from STEP] [--notify URL ...] [--status]

Messages about single runs, files or lines go to stderr, one line each, and the other runs are still
shown; the exit code is 1 only when nothing could be shown. Imports stay lazy so ``lt ls`` starts fast.
"""

from __future__ import annotations

import argparse
import sys

from ..vocabulary import EXIT_OK
from ._args import positive_int

__all__ = ["main"]

_TOOLS = {"run": "run", "sync": "sync", "migrate": "migrate", "demo": "demo", "export": "export", "board": "board"}
_TOOL_HELP = {"export": "send runs to an MLflow tracker, only what is new (lt export --help)",
              "board": "SwanLab's board on any runs, side by side, kept up to date (lt board --help)"}
_USAGE = __doc__.split("\n\n")[1]



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lt", usage=_USAGE, description="Look at run folders: list, show, "
                                     "compare, report; tag and note them. Also: lt run|sync|migrate|demo.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stale", type=float, default=None, metavar="SECONDS",
                        help="a running run silent this long is crashed (default: 120)")

    ls = sub.add_parser("ls", parents=[common], help="one row per run")
    ls.add_argument("roots", nargs="*", metavar="ROOT", help="runs folders, mirrors or run folders (default: runs)")
    ls.add_argument("-f", "--filter", action="append", default=[], metavar="EXPR",
                    help="e.g. 'status=failed', 'model.lr<1e-3', 'tag=baseline', 'age<2d' (repeat: all must hold)")
    ls.add_argument("-s", "--sort", metavar="KEY", help="a column or key; -KEY (write --sort=-KEY) for descending")
    ls.add_argument("-r", "--reverse", action="store_true", help="reverse the order")
    ls.add_argument("-c", "--columns", metavar="COLS", help="comma-separated keys; +COLS adds to the defaults")
    ls.add_argument("-m", "--metric", metavar="KEY", help="the metric whose best value is shown")
    ls.add_argument("-n", "--last", type=int, metavar="N",
                    help="only the last N rows (the table's default: the last 50, the newest runs)")
    ls.add_argument("-a", "--all", action="store_true", help="every row in the table")
    ls.add_argument("--json", action="store_true", help="a JSON list, one object per run (always every run)")

    show = sub.add_parser("show", parents=[common], help="one run: status and why, config, metrics, files")
    show.add_argument("run", metavar="RUN", help="a run folder, its name, or a unique part of it")
    show.add_argument("--root", action="append", metavar="ROOT", help="where to look for RUN (default: runs)")
    show.add_argument("--prompt", action="store_true", help="a compact summary to hand to an AI assistant")
    show.add_argument("--json", action="store_true", help="the run's record as JSON")
    show.add_argument("--lines", type=int, default=20, metavar="N", help="last lines of logs.txt (default: 20)")

    compare = sub.add_parser("compare", parents=[common], help="runs side by side: config diff, metrics, curves")
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--root", action="append", metavar="ROOT", help="where to look for RUN (default: runs)")
    compare.add_argument("-m", "--metric", action="append", metavar="KEY", help="metric(s) to compare and chart")
    compare.add_argument("--plot", metavar="FILE.png", help="also write the overlaid curves as a PNG")
    compare.add_argument("--width", type=positive_int, default=72, help="terminal chart width (default: 72)")

    report = sub.add_parser("report", parents=[common], help="one self-contained HTML file")
    report.add_argument("runs", nargs="+", metavar="RUN|ROOT")
    report.add_argument("-o", "--output", required=True, metavar="FILE.html")
    report.add_argument("--root", action="append", metavar="ROOT", help="where to look for RUN (default: runs)")
    report.add_argument("-f", "--filter", action="append", default=[], metavar="EXPR",
                        help="runs of a ROOT to include")
    report.add_argument("-m", "--metric", action="append", metavar="KEY", help="only these metrics")
    report.add_argument("--points", type=positive_int, default=None, metavar="N",
                        help="points per curve after downsampling (default: 400; past 30 runs: 200)")
    report.add_argument("--curves", type=positive_int, default=None, metavar="N",
                        help="past 30 runs: the runs whose curve the file holds, the best N (default: 1000)")
    report.add_argument("--title", default=None)

    repro = sub.add_parser("reproduce", help="restore a run's code, config and command; --run starts it again")
    repro.add_argument("run", metavar="RUN", help="a run folder, its name, or a unique part of it")
    repro.add_argument("--root", action="append", metavar="ROOT", help="where to look for RUN (default: runs)")
    repro.add_argument("--into", metavar="DIR", help="a new folder for the code (default: ./reproduce-<run>)")
    repro.add_argument("--run", dest="start", action="store_true",
                       help="start the command through lt-run as a new run tagged reproduces=<run>")
    repro.add_argument("--anyway", action="store_true", help="with --run: start even what could not be fully restored")

    tag = sub.add_parser("tag", help="add (+TAG or TAG) and remove (-TAG) tags: lt tag RUN ... +a -b")
    tag.add_argument("args", nargs=argparse.REMAINDER, metavar="RUN ... [+TAG|-TAG] ...")

    _note_arguments(sub.add_parser("note", help="set (or --append to) a run's notes; without TEXT, print them"))

    for name in _TOOLS:
        sub.add_parser(name, help=_TOOL_HELP.get(name, f"= lt-{name} (same arguments)"), add_help=False)
    return parser


def _note_arguments(note: argparse.ArgumentParser) -> argparse.ArgumentParser:
    note.add_argument("run", metavar="RUN")
    note.add_argument("text", nargs="?", metavar="TEXT")
    note.add_argument("--append", action="store_true", help="add TEXT as a new line")
    note.add_argument("--root", action="append", metavar="ROOT")
    return note


def _fix_sort(argv: list[str]) -> list[str]:
    """``--sort -start`` reads as an option to argparse; join it as ``--sort=-start``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--sort", "-s") and i + 1 < len(argv) and argv[i + 1].startswith("-") and len(argv[i + 1]) > 1:
            out.append(f"--sort={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = argv[: argv.index("--")] if "--" in argv else argv
    if options[:1] == ["run"] and any(a.split("=")[0] == "--pipeline" for a in options):  # lt run --pipeline FILE
        from .pipeline import main as pipeline_main

        return pipeline_main(argv[1:])
    if argv and argv[0] in _TOOLS:
        import importlib

        tool = importlib.import_module(f"lightning_track.cli.{_TOOLS[argv[0]]}")
        return int(tool.main(argv[1:]) or 0)
    if argv and argv[0] == "tag":  # "-old" must not read as an option
        from ._errors import reported
        from .lt_commands import cmd_tag

        return reported("lt tag", cmd_tag, argv[1:])
    if argv and argv[0] == "note":  # options after TEXT too: lt note RUN "text" --append
        args = _note_arguments(argparse.ArgumentParser(prog="lt note")).parse_intermixed_args(argv[1:])
        args.command = "note"
    else:
        args = _parser().parse_args(_fix_sort(argv))
    if args.command is None:
        _parser().print_help()
        return EXIT_OK
    from . import lt_commands
    from ._errors import reported

    return reported(f"lt {args.command}", getattr(lt_commands, f"cmd_{args.command}"), args)


if __name__ == "__main__":
    sys.exit(main())
