"""The class Hydra instantiates for ``hydra/launcher=sagemaker*``: a thin shell around ``bincount.sagemaker``.

Hydra imports every module under ``hydra_plugins`` at start-up, so the work (and the SageMaker SDK) is
imported only inside ``launch()``; ``python train.py --help`` and local runs never pay for it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SageMakerLauncher(Launcher):
    # Jobs run elsewhere (SageMaker, or local subprocesses): ``launch`` may be called from several threads at
    # once, so an asynchronous sweep keeps n_jobs trials in flight (bincount.sweep.sweeper).
    supports_concurrent_launch = True
    # Pruned sweep trials: the job writes its metric per epoch where this launcher reads it, and the launcher
    # reports to the study and stops the job the pruner stops (bincount.sagemaker.pruning).
    prunes_jobs = True
    # A relaunch of a sweep whose launcher died finds the jobs it started (state file + tags) and collects them,
    # so the sweeper hands it the study's RUNNING trials again under their numbers (bincount.sweep.study).
    reattaches = True

    def __init__(self, **params: Any) -> None:
        # Hydra passes the launcher node's fields; they become the typed settings in setup() (checked there).
        self.params = params
        self.settings = None  # bincount.sagemaker.settings.LauncherSettings, once set up
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self.cancelled = threading.Event()  # set by cancel(); every launch in flight stops its jobs

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from bincount.sagemaker.settings import settings_from

        # Here, not in launch(): the sweeper writes multirun.yaml between the two, and a preset's environment
        # or tags holding a credential must be refused before that file holds it (docs/security.md).
        self.settings = settings_from(self.params)
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from bincount.sagemaker.runner import launch_sweep

        if self.settings is None:  # setup() sets it with the config, task function and context, or raises
            raise RuntimeError("SageMakerLauncher.launch() before setup(): Hydra calls setup() first with the config, "
                               "the task function and its context; nothing was launched")
        return launch_sweep(self, job_overrides, initial_job_idx)

    def cancel(self) -> None:
        """Stop the jobs of every launch in flight (the sweeper calls it on Ctrl-C in an asynchronous sweep,
        where the interrupt reaches only the main thread); each launch returns once its jobs are stopped."""
        self.cancelled.set()
