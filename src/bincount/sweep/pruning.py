"""Hand a running Optuna trial to a local training job, so Lightning can report to it and prune.

The sweeper cannot pass Python objects through Hydra's launcher, so it sets three environment
variables for the job (``hydra.job.env_set``): the study's storage URL, the study name and the
trial number. The job reopens the study from the same storage (sqlite works from any local process)
and attaches optuna-integration's ``PyTorchLightningPruningCallback`` to the Trainer. Only local
launchers get these variables: a SageMaker job cannot reach the driver's sqlite file.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV_STORAGE = "BINCOUNT_OPTUNA_STORAGE"
ENV_STUDY = "BINCOUNT_OPTUNA_STUDY"
ENV_TRIAL = "BINCOUNT_OPTUNA_TRIAL"


def env_overrides(storage: str, study_name: str, trial_number: int) -> list[str]:
    """Hydra overrides that make ``run_job`` set the variables for one job only."""
    from hydra.core.override_parser.types import Override

    values = {ENV_STORAGE: storage, ENV_STUDY: study_name, ENV_TRIAL: str(trial_number)}
    return [f"+hydra.job.env_set.{k}={Override._get_value_element_as_str(v)}" for k, v in values.items()]


def trial_from_env():
    """The running trial named by the environment, or None when this job is not a pruned sweep trial."""
    if not os.environ.get(ENV_TRIAL):
        return None
    import optuna

    study = optuna.load_study(study_name=os.environ[ENV_STUDY], storage=os.environ[ENV_STORAGE])
    number = int(os.environ[ENV_TRIAL])
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
        log.warning("Cannot attach Optuna pruning (%s: %s); the trial runs unpruned", type(err).__name__, err)
        return []
    if trial is None:
        return []
    from optuna_integration import PyTorchLightningPruningCallback

    log.info("Optuna trial %d: reporting %s each epoch for pruning", trial.number, monitor)
    return [PyTorchLightningPruningCallback(trial, monitor=monitor)]
