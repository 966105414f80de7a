"""The OmegaConf resolvers the configs use, registered once by ``train.py`` (and anything composing ``conf/``).

- ``bincount_run_dir``: the run directory, or the earlier run to continue with ``resume=true``.
- ``bincount_metric_mode``: ``max`` or ``min`` for a metric name, so ``optimized_metric`` alone decides
  which way checkpointing and sweepers optimise (``val/rmse`` must not keep the *worst* checkpoint).

This module stays import-light (no torch): ``train.py`` imports it before ``--help``.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from bincount.resume import bincount_run_dir

# Metrics where lower is better; every other metric (acc, within_one, f1, precision, recall) is maximised.
LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse")


def metric_mode(name: str) -> str:
    """``"min"`` or ``"max"`` for a logged metric name such as ``val/rmse`` or ``val/acc``."""
    leaf = str(name).rsplit("/", 1)[-1]
    return "min" if any(leaf == k or leaf.startswith(k + "_") for k in LOWER_IS_BETTER) else "max"


def loader_workers(reserve: int = 1, most: int = 16) -> int:
    """Loader processes for this machine: its CPUs (``SM_NUM_CPUS`` inside SageMaker) minus ``reserve``
    for the training process, at least 1 and at most ``most`` (more rarely helps one GPU)."""
    import os

    cpus = os.environ.get("SM_NUM_CPUS")
    count = int(cpus) if cpus and cpus.isdigit() else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return max(1, min(int(most), count - int(reserve)))


def register_resolvers() -> None:
    for name, fn in (("bincount_run_dir", bincount_run_dir), ("bincount_metric_mode", metric_mode),
                     ("bincount_loader_workers", loader_workers)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)
