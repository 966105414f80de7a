"""The ``bincount`` command: one entry point, one module per subcommand.

Training itself is ``python train.py`` (Hydra owns that command line); ``bincount`` holds the tools
around it. Subcommand modules are imported only when chosen, so ``bincount --help`` stays fast and
optional extras (boto3, sagemaker, wandb) are never imported by commands that do not need them.

Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``, and may list in
``ERRORS`` the exception types that mean "this failed" rather than "this is a bug". The conventions
live here, once, so that every subcommand behaves the same in a script: results on stdout, messages
on stderr as ``bincount CMD: error: ...``, and the exit status says what went wrong:

* 0 success; 2 a usage mistake: argparse's own checks, or ``argparse.ArgumentTypeError`` raised by
  ``run`` for a value that only makes sense checked against the others (printed with the usage line);
* 1 a failure at run time: ``OSError`` (a missing path, a full disk) or one of the module's ``ERRORS``;
* 130 Ctrl-C. None of these prints a traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add a subcommand by adding a line here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "render": ("bincount.data.synthetic", "render synthetic bins in the ABID layout"),
    "fetch": ("bincount.commands.fetch", "fetch ABID (capstone list, a count range, or all) from S3 to a dir or bucket"),
    "sweep-report": ("bincount.sweep.cli", "sweep report (table, best config, plots) for a multirun dir"),
    "runs": ("bincount.compare.runs", "list runs and sweeps under the output root with their key metrics, sortable"),
    "compare": ("bincount.compare.compare", "compare runs: config differences, metrics, McNemar's test and bootstrap CIs"),
    "pack": ("bincount.commands.pack", "pack an ABID-layout dataset (local or s3://) into shuffled shards for streaming"),
    "report": ("bincount.report.cli", "(re)build a run directory's report.html and PNG charts"),
    "export": ("bincount.commands.export", "write a model bundle (safetensors + bincount-model.json) for an older run"),
    "predict": ("bincount.predict.cli", "predict counts with a model bundle for images, folders, ABID roots or s3://"),
    "serve": ("bincount.serve.cli", "serve a model bundle over HTTP on SageMaker's inference contract (/ping, /invocations)"),
    "deploy": ("bincount.deploy.cli", "deploy a model bundle to a SageMaker real-time or serverless endpoint"),
    "invoke": ("bincount.deploy.invoke", "send images to a deployed endpoint and print its answers as JSON lines"),
    "undeploy": ("bincount.deploy.undeploy", "delete an endpoint, its endpoint config and its models"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bincount")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bincount", description="Tools around bincount training runs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that will run
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run, _errors=(OSError, *getattr(mod, "ERRORS", ())), _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status (``--help`` and usage mistakes included: no exit)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as stop:  # argparse: --help/--version (0) or a usage mistake (2), already printed
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except argparse.ArgumentTypeError as mistake:  # shown as argparse shows its own mistakes
        from bincount.text import plain

        args._parser.print_usage(sys.stderr)
        print(plain(f"{args._parser.prog}: error: {mistake}"), file=sys.stderr)
        return 2
    except args._errors as failure:  # the message may quote a key or a file written by someone else
        from bincount.text import plain

        print(plain(f"bincount {args.command}: error: {failure}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bincount {args.command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as missing:  # an optional part not installed: what to install, not a traceback
        if not missing.name or missing.name.split(".")[0] in ("bincount", "hydra_plugins"):
            raise
        print(f"bincount {args.command}: error: {install_hint(missing.name)}", file=sys.stderr)
        return 1


# The extra of pyproject.toml that brings each optional package (the rest are core dependencies).
EXTRA_OF = {"boto3": "s3", "botocore": "s3", "litdata": "s3", "urllib3": "s3", "wandb": "wandb",
            "sagemaker": "sagemaker", "cloudpickle": "sagemaker", "starlette": "serve", "uvicorn": "serve",
            "httptools": "serve", "uvloop": "serve"}


def install_hint(module: str) -> str:
    """``needs the package 'boto3', which is not installed: pip install -c constraints.txt -e ".[s3]"``."""
    top = module.split(".")[0]
    extra = EXTRA_OF.get(top)
    how = f'pip install -c constraints.txt -e ".[{extra}]"' if extra else "pip install -c constraints.txt -e ."
    return f"needs the package {top!r}, which is not installed: {how}"


if __name__ == "__main__":
    sys.exit(main())
