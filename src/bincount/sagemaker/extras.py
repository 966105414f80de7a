"""Which of the project's extras (pyproject.toml) a job's composed config needs installed in the container.

- ``s3``: an ``s3://`` data root or shards root, or the ``objects``/``shards`` readers (litdata, boto3);
  for ``predict.py``, an ``s3://`` bundle, input or output;
- ``wandb``: a Weights & Biases logger among ``logger``;
- ``sweep``: the job reports to an Optuna study (a pruned trial: ``hydra.job.env_set`` names it);
- ``report``: ``report=true`` (the charts of report.html need matplotlib).

Read from the config as composed for the job, before it launches, so a missing import cannot kill a job
after its instance has started.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from bincount.sweep.pruning import ENV_TRIAL

STREAMING_READERS = ("objects", "shards")


def _value(config: DictConfig, key: str) -> Any:
    """The value at ``key``, resolved if it can be; an interpolation the launcher cannot resolve (a variable
    set only in the job): its text, which still shows an ``s3://`` prefix; ``???`` or no such key: None."""
    try:
        return OmegaConf.select(config, key, default=None, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation the launcher cannot resolve, or another app's shape
        parent, _, leaf = key.rpartition(".")
        try:
            node = OmegaConf.select(config, parent, default=None) if parent else config
            return node._get_node(leaf)._value() if isinstance(node, DictConfig) and leaf in node else None
        except Exception:  # noqa: BLE001
            return None


def _is_s3(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith("s3://")


def uses_wandb(config: DictConfig) -> bool:
    """A logger whose ``_target_`` is a W&B logger (bincount's, or Lightning's ``WandbLogger``)."""
    loggers = OmegaConf.select(config, "logger", default=None)
    if not isinstance(loggers, DictConfig):
        return False
    for name in loggers:
        target = _value(loggers, f"{name}._target_") if isinstance(loggers.get(name), DictConfig) else None
        if isinstance(target, str) and "wandb" in target.lower():
            return True
    return False


def predict_locations(config: DictConfig) -> list[Any]:
    """``predict.py``'s bundle, output and inputs (one string or a list): where it reads and writes."""
    inputs = _value(config, "inputs")
    inputs = list(inputs) if isinstance(inputs, ListConfig) else [inputs]
    return [_value(config, "bundle"), _value(config, "output"), *inputs]


def job_extras(config: DictConfig) -> list[str]:
    """The extras of ``pip install '.[...]'`` this job's config needs, sorted (``[]``: the core only)."""
    extras = set()
    reader = _value(config, "data.reader.mode")
    if any(_is_s3(_value(config, k)) for k in ("data.root", "data.reader.shards")) or reader in STREAMING_READERS:
        extras.add("s3")
    if any(_is_s3(v) for v in predict_locations(config)):
        extras.add("s3")
    if uses_wandb(config):
        extras.add("wandb")
    env_set = OmegaConf.select(config, "hydra.job.env_set", default=None)
    if isinstance(env_set, DictConfig) and ENV_TRIAL in env_set:
        extras.add("sweep")
    if _value(config, "report") is True:
        extras.add("report")
    return sorted(extras)
