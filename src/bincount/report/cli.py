"""``bincount report RUN_DIR [RUN_DIR ...]``: (re)build run reports from the run directories' files.

For runs trained with ``report=false``, runs from before reports existed, or after copying a run
directory from a cluster; it needs no GPU, model or network.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directory (holds metrics.json), e.g. logs/train/runs/2026-01-01_12-00-00")
    parser.add_argument("--output", default=None,
                        help="HTML file to write (one RUN_DIR only; default: RUN_DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    from bincount.report.page import write_report
    from bincount.report.rundata import RunDirError
    from bincount.text import plain

    if args.output and len(args.run_dirs) > 1:
        raise argparse.ArgumentTypeError(f"--output takes one RUN_DIR, got {len(args.run_dirs)}: {args.run_dirs}")
    failed = 0
    for run_dir in args.run_dirs:  # one broken run does not stop the others; the status still says so
        try:
            print(write_report(run_dir, args.output))
        except RunDirError as err:
            print(plain(f"bincount report: error: {err}"), file=sys.stderr)  # the message names the run dir
            failed += 1
    return 1 if failed else 0
