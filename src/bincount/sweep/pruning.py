"""Hand a running Optuna trial to a local training job, so Lightning can report to it and prune.

The sweeper cannot pass Python objects through Hydra's launcher. The study name, the trial number and
the pruner's config (Optuna stores no pruner with a study, and ``load_study`` would default to median)
differ per trial and travel as ``hydra.job.env_set`` overrides. The storage URL is the same for every
trial and may hold a database password, and an override is saved in ``.hydra/`` and ``multirun.yaml``
and printed by the launcher: so the sweeper puts it in its own environment (``export_storage``),
which in-process jobs share and local subprocess launchers pass on. The job reopens the study from
the same storage and attaches optuna-integration's ``PyTorchLightningPruningCallback``. A SageMaker job
cannot reach the driver's storage: its launcher reports for it (``bincount.sagemaker.pruning``), with the
same variables read here from the job's overrides.
"""

from __future__ import annotations

import base64
import json
import logging
import os

from bincount.sweep.study import ENV_STORAGE, redact

log = logging.getLogger(__name__)

class JobPruned(RuntimeError):
    """A job that its launcher stopped because the study's pruner said so (the sweeper records it as pruned,
    as it does ``optuna.TrialPruned``); defined here so launchers need no Optuna import to say it."""


ENV_STUDY = "BINCOUNT_OPTUNA_STUDY"
ENV_TRIAL = "BINCOUNT_OPTUNA_TRIAL"
ENV_PRUNER = "BINCOUNT_OPTUNA_PRUNER"


def export_storage(storage: str) -> None:
    """The study's storage URL for the jobs (and the end-of-sweep report) of this process: never an override."""
    os.environ[ENV_STORAGE] = storage


def env_overrides(study_name: str, trial_number: int, pruner: dict | None = None) -> list[str]:
    """Hydra overrides that make ``run_job`` set the variables for one job only; ``pruner`` is its
    ``_target_`` config, sent as base64 JSON (Hydra's override grammar would parse JSON's braces)."""
    values = {ENV_STUDY: study_name, ENV_TRIAL: str(trial_number),
              ENV_PRUNER: base64.urlsafe_b64encode(json.dumps(pruner or {}).encode()).decode()}
    bad = [k for k, v in values.items() if "'" in v or "\\" in v]
    if bad:
        raise ValueError(f"cannot pass {bad} to the trial: quotes and backslashes are not allowed there")
    return [f"+hydra.job.env_set.{k}='{v}'" for k, v in values.items()]


def trial_from_env(env=None):
    """The running trial named by ``env`` (this process's environment by default), or None when it names none."""
    env = os.environ if env is None else env
    if not env.get(ENV_TRIAL):
        return None
    import optuna
    from hydra.utils import instantiate

    pruner_cfg = json.loads(base64.urlsafe_b64decode(env.get(ENV_PRUNER) or "e30=").decode())  # e30= is {}
    pruner = instantiate(pruner_cfg) if pruner_cfg else None
    study = optuna.load_study(study_name=env[ENV_STUDY], storage=env[ENV_STORAGE], pruner=pruner)
    number = int(env[ENV_TRIAL])
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if frozen is None or frozen.state != optuna.trial.TrialState.RUNNING:
        log.warning("Optuna trial %s is not running in study %s; no pruning for this job", number, study.study_name)
        return None
    return optuna.trial.Trial(study, frozen._trial_id)  # Optuna's public constructor takes the storage id


def pruning_callbacks(monitor: str) -> list:
    """``[PyTorchLightningPruningCallback]`` for a sweep trial, ``[]`` otherwise (never fails the run)."""
    try:
        trial = trial_from_env()
    except Exception as err:  # a missing storage must not kill a trial that would otherwise train fine
        log.warning("Cannot attach Optuna pruning (%s: %s); the trial runs unpruned", type(err).__name__,
                    redact(str(err), os.environ.get(ENV_STORAGE, "")))
        return []
    if trial is None:
        return []
    from optuna_integration import PyTorchLightningPruningCallback

    log.info("Optuna trial %d: reporting %s each epoch for pruning", trial.number, monitor)
    return [PyTorchLightningPruningCallback(trial, monitor=monitor)]
