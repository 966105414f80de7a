"""Refuse a credential in the *resolved* config before Hydra writes ``.hydra/``, a log or ``multirun.yaml``.

Why: ``train.py`` checks its command line before Hydra starts (``bincount.secrets``), but a value can also
come from a config file (an experiment, a launcher preset's ``environment`` or ``tags``) or from
``${oc.env:DATABASE_URL}``, which resolves to ``postgres://u:pw@host/db`` only inside the config. Such a
value is saved in ``.hydra/``, ``multirun.yaml``, ``resolved_config.yaml`` and the loggers'
hyperparameters. Hydra calls ``on_run_start`` and ``on_multirun_start`` after composing the config and
before anything of the run is written (``run_job`` makes the run directory and ``.hydra/``; the sweeper
writes ``multirun.yaml`` in ``sweep()``), so this callback, registered first in ``conf/hydra/default.yaml``,
resolves every leaf there and stops the run with one line naming the keys, never the values.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from bincount.secrets import REFERENCES, SecretError, problems, refuse, secret_shape

# The bincount Optuna sweeper masks a password in its storage URL before multirun.yaml is written and hands
# the real one to jobs through the environment (bincount.sweep.sweeper._mask_storage, docs/sweeps.md).
OWN_SWEEPER = "hydra_plugins.bincount_optuna_sweeper."
STORAGE = "hydra.sweeper.storage"
_ENV_REF = "oc.env:"
# Where a name is a variable's or a tag's, and "KEY" alone is as secret as on the command line.
STRICT_NAMES = ("hydra.launcher.environment.", "hydra.launcher.tags.", "hydra.job.env_set.")


def leaves(node: DictConfig | ListConfig, path: str = "") -> Iterator[tuple[str, Any, str | None]]:
    """``(dotted key, resolved value, interpolation text or None)`` of every leaf. A leaf that cannot be
    resolved yet (``${hydra:runtime.output_dir}`` before the job starts) has its text as its value."""
    keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        sub = f"{path}[{key}]" if isinstance(node, ListConfig) else f"{path}.{key}" if path else str(key)
        raw = node._get_node(key)._value() if OmegaConf.is_interpolation(node, key) else None
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - any resolution failure: the text is what there is to check
            yield sub, raw if raw is not None else OmegaConf.to_container(node, resolve=False)[key], raw
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            yield from leaves(value, sub)
        else:
            yield sub, value, raw


def _env_values(text: str) -> list[str]:
    """The variables an unresolved ``${oc.env:NAME,...}`` would copy in: checked by value as well."""
    names = [part.split(",")[0].split("}")[0].strip().strip("'\"") for part in text.split(_ENV_REF)[1:]]
    return [os.environ[n] for n in names if n in os.environ]


def config_problems(cfg: DictConfig, exempt: frozenset[str] = frozenset()) -> list[str]:
    """One line per leaf of ``cfg`` whose name (with a non-empty value) or value looks like a credential:
    the resolved value by shape, and the interpolation that made it (``${oc.env:DB_PASSWORD}``) by name.

    Names of variables and tags (``hydra.launcher.environment``, ``tags``, ``hydra.job.env_set``) follow the
    command line's rule; other config keys the looser one of ``secret_name(bare_key=False)``.
    ``hydra.launcher.secrets.<ENV>`` names a secret in AWS Secrets Manager: its name is allowed. ``None`` and
    booleans carry nothing; an empty string has no credential whatever its name (``api_key: ""``).
    """
    found = []
    for key, value, raw in leaves(cfg):
        if key in exempt or value is None or isinstance(value, bool):
            continue
        text = str(value)
        names = text != "" and not (key == REFERENCES or key.startswith(REFERENCES + "."))
        line = problems([(key, text)], "config", names, bare_key=key.startswith(STRICT_NAMES))
        shapes = [secret_shape(raw)] if raw and not line else []
        if not line and raw and _ENV_REF in raw and text == raw:  # unresolved: what the variables hold
            shapes += map(secret_shape, _env_values(raw))
        shapes = [s for s in shapes if s]
        found += line or ([f"config {key!r}: the value looks like {shapes[0]}"] if shapes else [])
    # The app's own keys first: hydra.overrides and hydra.job.override_dirname repeat the command line.
    return sorted(found, key=lambda line: line.startswith("config 'hydra."))


def check_resolved(cfg: DictConfig, multirun: bool = False) -> None:
    """Raise :class:`SecretError` for every credential-looking leaf of ``cfg``, the ``hydra`` node included."""
    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or "")
    exempt = frozenset({STORAGE}) if multirun and sweeper.startswith(OWN_SWEEPER) else frozenset()
    refuse(config_problems(cfg, exempt))


class SecretCheck(Callback):
    """Hydra callback (``hydra.callbacks.leak_check``): the check above, at the start of a run or a multirun."""

    def _check(self, config: DictConfig, multirun: bool) -> None:
        try:
            check_resolved(config, multirun)
        except SecretError as e:  # a user error: one line, exit 1, before anything is written
            sys.exit(f"{Path(sys.argv[0]).name}: {e}")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, multirun=True)
