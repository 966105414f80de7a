"""``bincount export``: write a model bundle (safetensors + bincount-model.json) for an older run."""

from __future__ import annotations

import argparse
from pathlib import Path

from bincount.bundle.export import export_run
from bincount.bundle.format import BUNDLE_FILE, BundleError
from bincount.bundle.write import MODEL_DIR

ERRORS = (BundleError,)  # with OSError: failures at run time, exit status 1 (see bincount.cli)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory (checkpoints/, resolved_config.yaml)")
    parser.add_argument("-o", "--output", metavar="DIR", help="where the bundle goes (default: RUN/model)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="this checkpoint instead of the run's best one")
    parser.add_argument("--force", action="store_true", help="replace a bundle that is already there")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else Path(args.run) / MODEL_DIR
    if (out / BUNDLE_FILE).exists() and not args.force:
        raise BundleError(f"{out} already holds a bundle; pass --force to replace it")
    written = export_run(args.run, out, args.checkpoint)
    print(f"bundle written to {written}")
    return 0
