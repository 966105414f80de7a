"""Early stopping of SageMaker sweep trials, the launcher's side: decided on the launcher's machine.

Why here: the study's storage (often a sqlite file on the laptop) is out of a job's reach, so the job
only writes its validation metric per epoch (``bincount.sagemaker.job.progress``) into its checkpoint
directory, which SageMaker syncs to S3 while the job runs. Chosen over metric definitions parsed from the
log: those reach CloudWatch, not DescribeTrainingJob, so reading them back per epoch needs another API and
permission, while the checkpoint prefix is one the launcher already reads and writes. At each poll the
launcher reads the file, reports new epochs to the trial and asks the study's pruner; a pruned job is
stopped (StopTrainingJob) and its trial recorded as pruned, with the saving in the job's state.

The trial comes in the job's overrides (``hydra.job.env_set``, as for local jobs: ``bincount.sweep.pruning``);
the launcher takes those out of the job's command line and keeps them here.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from omegaconf import OmegaConf

from bincount.aws.prices import billing_state
from bincount.sagemaker.job.progress import ENV_PROGRESS, MAX_PROGRESS_BYTES, PROGRESS_FILE, parse_progress
from bincount.sagemaker.settings import LauncherSettings

log = logging.getLogger(__name__)
ENV_SET = re.compile(r"^\+?hydra\.job\.env_set\.(BINCOUNT_OPTUNA_(?:STUDY|TRIAL|PRUNER))='?([^']*)'?$")


def split_trial(overrides: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(the overrides without the trial's variables, the variables, the job's environment for a pruned trial):
    the job must not try to reach the study; it writes its progress file instead, which this launcher reads."""
    keep, trial = [], {}
    for override in overrides:
        m = ENV_SET.match(override)
        if m:
            trial[m.group(1)] = m.group(2)
        else:
            keep.append(override)
    return keep, trial, ({ENV_PROGRESS: "1"} if trial else {})


class JobPruner:
    """One running trial, reported to from the launcher; ``observe`` says when the study's pruner stops it."""

    def __init__(self, trial_env: dict[str, str]) -> None:
        import os

        from bincount.sweep.pruning import trial_from_env

        self.trial = trial_from_env({**os.environ, **trial_env})  # the storage URL is in the sweeper's env
        self.reported: set[int] = set()
        self.last: tuple[int, float] | None = None

    def observe(self, progress: dict[int, float]) -> str | None:
        """Report the epochs not yet reported; the reason to stop, if the pruner says so."""
        if self.trial is None:
            return None
        for step in sorted(s for s in progress if s not in self.reported):
            value = progress[step]
            self.trial.report(value, step)
            self.reported.add(step)
            self.last = (step, value)
            if self.trial.should_prune():
                return f"pruned by the study's pruner after epoch {step + 1} (value {value:.6g})"
        return None


def saving(elapsed_s: float, epochs_done: int, max_epochs: Any) -> float | None:
    """Seconds of the job not run: the rest of its epochs at the pace so far (None without max_epochs)."""
    if not isinstance(max_epochs, int) or max_epochs <= 0 or epochs_done <= 0 or epochs_done >= max_epochs:
        return None
    return elapsed_s * (max_epochs / epochs_done - 1)


def prune_if_asked(backend, spec, handle) -> None:
    """Report the job's new epochs to its trial; stop the job if the study's pruner says so."""
    try:
        pruner = spec.extra.get("pruner") or spec.extra.setdefault("pruner", JobPruner(spec.extra["trial"]))
        written = backend.read_checkpoint_file(handle, PROGRESS_FILE, MAX_PROGRESS_BYTES)
        verdict = pruner.observe(parse_progress(written))
    except Exception as e:  # noqa: BLE001 - the study is unreachable: the job runs on, unpruned
        log.warning("%s: cannot ask the pruner (%s: %s); the job runs unpruned", handle.name, type(e).__name__, e)
        spec.extra.pop("trial")
        return
    if verdict and not spec.extra.get("pruned"):
        log.info("%s: %s; stopping it", handle.name, verdict)
        spec.extra["pruned"] = verdict
        backend.stop(handle)


def pruned_state(spec, elapsed: float, settings: LauncherSettings) -> dict:
    """What a pruned job's state records: where it stopped and what stopping saved (the sweep report sums it)."""
    last = spec.extra["pruner"].last
    epochs = last[0] + 1 if last else 0
    saved = saving(elapsed, epochs, OmegaConf.select(spec.config, "trainer.max_epochs", default=None))
    return {"pruned_after_epochs": epochs, "last_value": last[1] if last else None,
            "saved_s": round(saved, 1) if saved is not None else None,
            "saved_usd": (billing_state(saved, saved, settings.instance_type, settings.instance_count)["cost_usd"]
                          if saved else None)}
