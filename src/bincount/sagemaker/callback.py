"""Job-side Hydra callback: refuse a config that differs from the launcher's, record the job's result.

The launcher adds it to the job's command (``+hydra.callbacks.bincount_sagemaker._target_=...``), so
it runs for any Hydra app, in script mode where the job composes its config again from the same
overrides. A mismatch (other config files in the code channel, an override the shell mangled, another
Hydra version) must stop the job before it spends GPU hours on the wrong experiment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bincount.sagemaker.contract import ENV_CONFIG_SHA, RESULT_FILE

log = logging.getLogger(__name__)


class ConfigMismatchError(SystemExit):
    """The job's composed config is not the launcher's: the job must stop, with this message.

    Why a ``SystemExit``: Hydra (1.3.8) catches every ``Exception`` a callback raises and turns it into a
    warning, so a ``RuntimeError`` here let the job train on the wrong config; ``SystemExit`` passes through
    and ends the job with exit status 1 and the message on stderr."""

    def __str__(self) -> str:
        return str(self.code)


def config_sha(config: DictConfig) -> str:
    """SHA-256 of the task config (``hydra`` node removed, interpolations unresolved).

    Unresolved, because ``${oc.env:...}`` and ``${hydra:runtime.output_dir}`` legitimately differ
    between the laptop and the container, while the text of the composed config must not.
    """
    plain = OmegaConf.to_container(config, resolve=False)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def write_result(path: Path, status: str, return_value: Any = None, error: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"status": status, "return_value": jsonable(return_value), "error": error}))
    tmp.replace(path)


def is_rank_zero() -> bool:
    """torchrun sets RANK; Lightning's own DDP launch sets LOCAL_RANK/NODE_RANK in the processes it starts."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


class JobCallback(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        expected = os.environ.get(ENV_CONFIG_SHA)
        if not expected:
            return
        actual = config_sha(config)
        if actual != expected:
            raise ConfigMismatchError(
                f"config hash mismatch: the job composed {actual[:12]}, the launcher {expected[:12]}; "
                "the code channel's conf/ or the overrides differ from the launch (see .hydra/config.yaml)")
        log.info("Config hash %s matches the launcher's", actual[:12])

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        out = Path(config.hydra.runtime.output_dir) / RESULT_FILE
        status = job_return.status.name
        if status == "COMPLETED":
            write_result(out, status, job_return._return_value)
        else:
            err = job_return._return_value
            write_result(out, status, error=f"{type(err).__name__}: {err}"[:900])
