"""``bincount sweep-report SWEEP_DIR``: the sweep report for any multirun dir, finished or not."""

from __future__ import annotations

import argparse
from pathlib import Path

from bincount.sweep.report import ReportError, write_report

ERRORS = (ReportError,)  # with OSError: failures at run time, exit status 1 (see bincount.cli)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir (hydra.sweep.dir): Optuna or basic-sweeper grid")
    parser.add_argument("--storage", default=None,
                        help="the study's storage URL when sweep.json's is not this sweep's own SQLite file (default: "
                             "$BINCOUNT_OPTUNA_STORAGE when its masked form is the URL in SWEEP_DIR/sweep.json, which "
                             "keeps a password out of the command line; else sweep.json's own SQLite file)")


def run(args: argparse.Namespace) -> int:
    write_report(args.sweep_dir, storage=args.storage)
    return 0
