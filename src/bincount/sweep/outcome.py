"""One job's outcome told to its Optuna trial: COMPLETE with a finite number, PRUNED (by the job or its launcher),
or FAIL with the reason kept in the trial (``fail_reason``, what the sweep report shows)."""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import OmegaConf

from bincount.sweep.pruning import JobPruned

log = logging.getLogger("bincount.sweep.sweeper")  # the sweep's log lines, from one logger


def tell(study, trial, result, metric: str) -> bool:
    """Record one job's outcome; True when the trial failed."""
    import optuna
    from optuna.trial import TrialState

    job_dir = _job_dir(result)
    if job_dir:
        trial.set_user_attr("job_dir", job_dir)
    state, value, reason = TrialState.FAIL, None, None
    if isinstance(result, BaseException):
        reason = f"the launcher raised {type(result).__name__}: {result}"
    else:
        try:
            value = result.return_value
        except (optuna.TrialPruned, JobPruned) as err:  # pruned in the job, or by its launcher
            state, reason = TrialState.PRUNED, str(err)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
        else:
            try:
                value = float(value)
                state = TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL
                reason = None if state == TrialState.COMPLETE else f"{metric} is {value}"
            except (TypeError, ValueError):
                reason = f"the job returned {value!r}, not a number ({metric})"
    if reason:
        trial.set_user_attr("fail_reason", reason[:1000])
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    log.info("Trial %d %s%s", trial.number, state.name, f" {metric}={value:.6g}" if state == TrialState.COMPLETE
             else f": {reason}")
    return state == TrialState.FAIL


def _job_dir(result: Any) -> str | None:
    cfg = getattr(result, "hydra_cfg", None)
    return OmegaConf.select(cfg, "hydra.runtime.output_dir", default=None) if cfg is not None else None
