"""The ``bincount`` command: one entry point, one module per subcommand.

Training itself is ``python train.py`` (Hydra owns that command line); ``bincount`` holds the tools
around it. Subcommand modules are imported only when chosen, so ``bincount --help`` stays fast and
optional extras (boto3, sagemaker, wandb) are never imported by commands that do not need them.
Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add a subcommand by adding a line here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "render": ("bincount.data.synthetic", "render synthetic bins in the ABID layout"),
    "fetch": ("bincount.s3.fetch", "fetch ABID (capstone list, a count range, or all) from S3 to a dir or bucket"),
    "sweep-report": ("bincount.sweep.cli", "sweep report (table, best config, plots) for a multirun dir"),
    "runs": ("bincount.compare.runs", "list runs and sweeps under the output root with their key metrics, sortable"),
    "compare": ("bincount.compare.compare", "compare runs: config differences, metrics, McNemar's test and bootstrap CIs"),
    "pack": ("bincount.shards.pack", "pack an ABID-layout dataset (local or s3://) into shuffled shards for streaming"),
    "report": ("bincount.report.cli", "(re)build a run directory's report.html and PNG charts"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bincount", description="Tools around bincount training runs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that will run
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
