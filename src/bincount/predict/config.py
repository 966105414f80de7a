"""``predict.py``'s Hydra config, read through ``bincount predict``'s own parser.

The model is ``bundle=`` (not ``model=``): ``predict.py`` shares ``conf/`` with ``train.py``, where
``model`` is a config group.

Why a Hydra app at all: the SageMaker launcher runs Hydra apps, so ``python predict.py +launch=sagemaker
...`` is a job with the same code channel, pinned installs, retries, status lines and cost as training.
Why the CLI's parser: one set of options and one set of checks, so a value the CLI refuses is refused
here too, named by its config key.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

OPTIONS = ("output", "batch_size", "num_workers", "accelerator", "precision", "bad_input", "max_pixels", "ids",
           "endpoint_url")
SUMMARY_KEYS = ("model", "images", "predicted", "bad_count", "csv", "summary_json", "metrics")


class PredictConfigError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit; name the config key instead of the flag
        message = re.sub(r"argument (?:-[a-z]/)?--([a-z-]+)", lambda m: f"{m.group(1).replace('-', '_')}", message)
        message = message.replace("the following arguments are required: MODEL, INPUT", "bundle and inputs are required")
        raise PredictConfigError(message)


def predict_args(cfg: DictConfig) -> argparse.Namespace:
    """The Namespace ``bincount predict`` would parse from the same values (``inputs`` a list or one string)."""
    from bincount.predict.cli import add_arguments

    missing = [k for k in ("bundle", "inputs") if OmegaConf.is_missing(cfg, k) or cfg.get(k) in (None, "", [])]
    if missing:
        raise PredictConfigError(f"set {' and '.join(missing)} (e.g. bundle=logs/train/runs/RUN "
                                 "'inputs=[data/abid/sample]')")
    inputs = cfg.inputs
    inputs = [str(i) for i in inputs] if isinstance(inputs, (list, ListConfig)) else [str(inputs)]
    # Options as --key=value and the paths after "--": a value or path starting with "-" is a value, not a flag.
    argv: list[str] = []
    for key in OPTIONS:
        value: Any = cfg.get(key)
        if value is not None:
            argv.append(f"--{key.replace('_', '-')}={value}")
    if not cfg.get("progress", True):
        argv.append("--no-progress")
    argv += ["--", str(cfg.bundle), *inputs]
    parser = _Parser(prog="predict.py", add_help=False)
    add_arguments(parser)
    return parser.parse_args(argv)


def job_summary(summary: dict) -> dict:
    """What the task returns to Hydra (and a SageMaker job writes to result.json): small and JSON, no file list."""
    return {k: summary.get(k) for k in SUMMARY_KEYS if k in summary}
