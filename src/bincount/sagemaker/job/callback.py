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

from bincount.sagemaker.job.contract import ENV_CONFIG_SHA, RESULT_FILE
from bincount.sagemaker.job.result_file import is_rank_zero, write_result

log = logging.getLogger(__name__)


class ConfigMismatchError(SystemExit):
    """The job's composed config is not the launcher's: the job must stop, with this message.

    Why a ``SystemExit``: Hydra (1.3.8) catches every ``Exception`` a callback raises and turns it into a
    warning, so a ``RuntimeError`` here let the job train on the wrong config; ``SystemExit`` passes through
    and ends the job with exit status 1 and the message on stderr."""

    def __str__(self) -> str:
        return str(self.code)


def config_sha(config: Any) -> str:
    """SHA-256 of the task config (``hydra`` node removed, interpolations unresolved).

    Unresolved, because ``${oc.env:...}`` and ``${hydra:runtime.output_dir}`` legitimately differ
    between the laptop and the container, while the text of the composed config must not.
    """
    from omegaconf import OmegaConf  # the job has it (Hydra's); this module imports only the standard library

    plain = OmegaConf.to_container(config, resolve=False)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


class JobCallback:
    """Hydra's callback interface by its method names (Hydra instantiates the ``_target_`` and calls each
    hook by name; it never checks the base class), so this module needs nothing but the standard library.
    ``tests/test_sagemaker_job_callback.py`` checks it has every hook Hydra's ``Callback`` has."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        expected = os.environ.get(ENV_CONFIG_SHA)
        if not expected:
            return
        actual = config_sha(config)
        if actual != expected:
            raise ConfigMismatchError(
                f"config hash mismatch: the job composed {actual[:12]}, the launcher {expected[:12]}; "
                "the code channel's conf/ or the overrides differ from the launch (see .hydra/config.yaml)")
        log.info("Config hash %s matches the launcher's", actual[:12])

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        out = Path(config.hydra.runtime.output_dir) / RESULT_FILE
        status = job_return.status.name
        if status == "COMPLETED":
            write_result(out, status, job_return._return_value)
        else:
            err = job_return._return_value
            write_result(out, status, error=f"{type(err).__name__}: {err}"[:900])
