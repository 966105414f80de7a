"""Hydra's view of the sweeper: its config schema, the sampler/pruner groups, and a thin class.

Hydra imports every module under ``hydra_plugins`` on each start, so this one imports only Hydra and
dataclasses; Optuna is imported by ``bincount.sweep.sweeper`` when a sweep actually starts. The
maintained ``hydra-optuna-sweeper`` (1.3) pins optuna<3 and its sqlite storage breaks under SQLAlchemy
2, which is why bincount owns this small plugin (docs/sweeps.md).
"""

# No "from __future__ import annotations": Hydra execs this module outside sys.modules, which breaks
# dataclasses that resolve string annotations.

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import MISSING, DictConfig


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    multivariate: bool = False
    constant_liar: bool = False  # True helps when n_jobs > 1 (pending trials count as "bad")


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 1


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
    qmc_type: str = "sobol"


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 1
    interval_steps: int = 1


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4


@dataclass
class ThresholdPrunerConf:
    """Stop a trial whose value leaves [lower, upper] after n_warmup_steps epochs (e.g. val/acc below 0.3)."""
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: Optional[float] = None
    upper: Optional[float] = None
    n_warmup_steps: int = 0


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class BincountOptunaSweeperConf:
    _target_: str = "hydra_plugins.bincount_optuna_sweeper.optuna_sweeper.BincountOptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    pruner: Any = MISSING  # hydra/sweeper/pruner=none turns pruning off
    # maximize | minimize | auto (from optimized_metric: val/acc -> maximize, val/loss -> minimize)
    direction: str = "auto"
    study_name: str = "sweep"
    # An Optuna storage URL; null = sqlite file optuna.db in hydra.sweep.dir.
    storage: Optional[str] = None
    # Total finished trials the study should reach; rerunning continues towards it.
    n_trials: int = 20
    # Trials in flight at once (the launcher's concurrency: e.g. SageMaker training jobs).
    n_jobs: int = 1
    # auto | async | batch: async starts a trial as soon as one finishes (launchers that allow it).
    dispatch: str = "auto"
    # Abort once more than max_failure_rate * n_trials trials of this invocation failed.
    max_failure_rate: float = 0.2
    # Search space: key -> Hydra sweep syntax (interval, tag(log, interval), int(interval), range, choice).
    params: Optional[Dict[str, str]] = None
    # Trials to evaluate first in a new study (e.g. a report's tuned values): [{key: value}, ...].
    enqueue_trials: Optional[List[Dict[str, Any]]] = None
    # Another sweep dir whose finished trials seed this study when it is new (those in this search space).
    warm_start: Optional[str] = None
    # The storage URL of warm_start's study when it is not that sweep's own optuna.db (no password here: put a
    # URL with one in BINCOUNT_OPTUNA_STORAGE). The URL in its sweep.json alone opens nothing elsewhere.
    warm_start_storage: Optional[str] = None


_cs = ConfigStore.instance()
_cs.store(group="hydra/sweeper", name="bincount_optuna", node=BincountOptunaSweeperConf, provider="bincount")
for _name, _node in {"tpe": TPESamplerConf, "random": RandomSamplerConf, "cmaes": CmaEsSamplerConf,
                     "qmc": QMCSamplerConf, "gp": GPSamplerConf}.items():
    _cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="bincount")
for _name, _node in {"median": MedianPrunerConf, "hyperband": HyperbandPrunerConf,
                     "successive_halving": SuccessiveHalvingPrunerConf, "threshold": ThresholdPrunerConf,
                     "none": NopPrunerConf}.items():
    _cs.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="bincount")


class BincountOptunaSweeper(Sweeper):
    """Delegates to ``bincount.sweep.sweeper.OptunaSweep`` (imported at setup: Optuna is heavy)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self._impl: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from bincount.sweep.sweeper import OptunaSweep

        self._impl = OptunaSweep(**self.kwargs)
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from bincount.sweep.study import StudyConfigError

        try:
            return self._impl.sweep(arguments)
        except StudyConfigError as err:  # a setting to fix: its one-line message, not a traceback
            raise SweepSettingError(str(err)) from None


class SweepSettingError(CompactHydraException):
    """Hydra prints a compact exception as its message alone."""
