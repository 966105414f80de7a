"""What a user sees when a config is wrong: one line and exit 2 for ``python train.py``, and the close names
of a key Hydra refused as "not in struct"."""

from __future__ import annotations

import inspect

from omegaconf import DictConfig, OmegaConf

from bincount.config.schema import ConfigError, choices_hint

_SET_UP_ONLY = {".hydra", "train.log", "resolved_config.yaml"}


def report_config_error(err: ConfigError, cfg: DictConfig) -> None:
    """For ``python train.py`` (one run): print ``err`` on one line, remove the run directory Hydra made for
    it when it holds nothing but set-up files, and exit 2, a usage mistake. Returns (the caller re-raises) in
    a sweep, whose job failure the sweeper records, or with ``HYDRA_FULL_ERROR=1``, which asks for the trace."""
    import os
    import shutil
    import sys
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode != RunMode.RUN:
        return
    out = Path(cfg.paths.output_dir)
    if out.is_dir() and {p.name for p in out.iterdir()} <= _SET_UP_ONLY:
        import logging

        logging.shutdown()  # close train.log before its directory goes
        shutil.rmtree(out, ignore_errors=True)
    print(f"train.py: config error: {err}", file=sys.stderr)
    sys.exit(2)


def unknown_override_hint(message: str, overrides: list[str], config_dir: str, config_name: str) -> str | None:
    """One line for Hydra's "Key 'max_epoch' is not in struct" (an override of a key that does not exist),
    with the close names of that node (and its ``_target_``'s arguments): ``trainer.max_epoch`` ->
    ``Did you mean 'max_epochs'?``. None when ``message`` is another error. Composes the config again without
    the bad override, so it costs a second only on this error path."""
    import re

    found = re.search(r"Key '([^']+)' is not in struct\s+full_key: (\S+)", message)
    if not found:
        return None
    leaf, full_key = found.groups()
    parent = full_key.rpartition(".")[0]
    from hydra import compose, initialize_config_dir

    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key]
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name, overrides=rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # noqa: BLE001 - another mistake among the overrides: Hydra's own message stands
        return None
    valid = [str(k) for k in node] if isinstance(node, DictConfig) else []
    if isinstance(node, DictConfig) and "_target_" in node:
        from hydra._internal.utils import _locate

        try:
            valid += [p for p in inspect.signature(_locate(node["_target_"])).parameters if p != "self"]
        except Exception:  # noqa: BLE001 - a target that cannot be imported: the node's own keys only
            pass
    valid = sorted({v for v in valid if not v.startswith("_")})
    if leaf in valid:  # an argument of the target that the config file does not set
        return f"{full_key!r} is not set by the config, so it cannot be overridden: add it with +{full_key}=VALUE"
    return f"unknown config key {full_key!r}.{choices_hint(leaf, valid)}"
