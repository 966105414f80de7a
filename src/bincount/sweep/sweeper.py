"""The Optuna sweep loop behind ``hydra/sweeper=bincount_optuna``: ask, launch, tell, repeat.

Hydra launchers take a batch of jobs and return when all of them are done. Two dispatch modes follow:
``batch`` asks ``n_jobs`` trials, launches them as one batch and waits for the slowest (what the
basic launcher can do: it runs jobs one after another in this process); ``async`` keeps ``n_jobs``
one-job batches in flight on threads and starts a new trial as soon as any finishes, for launchers
whose ``launch`` runs jobs elsewhere and declares ``supports_concurrent_launch = True``. ``auto``
picks async when the launcher allows it. Asking and telling stay on the main thread.
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bincount.sweep.outcome import tell
from bincount.sweep.pruning import env_overrides, export_storage
from bincount.sweep.space import parse_space
from bincount.sweep.study import (counted_trials, default_storage, open_study, recover_interrupted, resolve_direction,
                                  running_trials, safe_url, write_sweep_info)
from bincount.sweep.warmstart import check_given, warm_start

log = logging.getLogger(__name__)
DISPATCH = ("auto", "async", "batch")
STORAGE_KEY = "hydra.sweeper.storage"


class OptunaSweep:
    def __init__(self, sampler: Any, pruner: Any, direction: str, study_name: str, storage: str | None, n_trials: int,
                 n_jobs: int, dispatch: str, max_failure_rate: float, params: Any, enqueue_trials: Any,
                 warm_start: str | None = None, warm_start_storage: str | None = None) -> None:
        self.sampler, self.pruner, self.direction, self.study_name = sampler, pruner, direction, study_name
        self.storage, self.n_trials, self.n_jobs, self.dispatch = storage, n_trials, n_jobs, dispatch
        self.max_failure_rate, self.warm_start, self.warm_start_storage = max_failure_rate, warm_start, \
            warm_start_storage
        self.params = dict(params or {})
        self.enqueue = [dict(OmegaConf.to_container(p) if isinstance(p, DictConfig) else p) for p in enqueue_trials or []]

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def _check_settings(self) -> str:
        check_given(self.warm_start_storage)  # before multirun.yaml, which would hold it, is written
        if self.dispatch not in DISPATCH:
            raise HydraException(f"hydra.sweeper.dispatch={self.dispatch!r} is not valid; valid: {list(DISPATCH)}")
        for key, value, ok in (("n_trials", self.n_trials, self.n_trials >= 1), ("n_jobs", self.n_jobs, self.n_jobs >= 1),
                               ("max_failure_rate", self.max_failure_rate, 0 <= self.max_failure_rate <= 1)):
            if not ok:
                raise HydraException(f"hydra.sweeper.{key}={value!r} is out of range (n_trials, n_jobs >= 1; "
                                     "0 <= max_failure_rate <= 1)")
        concurrent = bool(getattr(self.launcher, "supports_concurrent_launch", False))
        mode = ("async" if concurrent else "batch") if self.dispatch == "auto" else self.dispatch
        if mode == "async" and not concurrent and self.n_jobs > 1:
            raise HydraException(f"hydra.sweeper.dispatch=async needs a launcher that runs jobs concurrently; "
                                 f"{type(self.launcher).__name__} does not. Valid: dispatch=batch or auto")
        if self.n_jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            log.info("The basic launcher runs jobs one at a time: n_jobs=%d only delays feedback to the sampler",
                     self.n_jobs)
        return mode

    def _warn_inconsistent(self, direction: str) -> None:
        """Settings outside the sweeper that would quietly undermine it."""
        mode = OmegaConf.select(self.config, "callbacks.model_checkpoint.mode", default=None)
        if mode in ("max", "min") and mode != direction[:3]:
            log.warning("callbacks.model_checkpoint.mode=%s but the study %ss: the objective would come from the "
                        "worst checkpoint; set callbacks.model_checkpoint.mode=%s", mode, direction, direction[:3])
        cap = OmegaConf.select(self.config, "hydra.launcher.max_parallel_jobs", default=None)
        if isinstance(cap, int) and cap < self.n_jobs:
            log.warning("hydra.sweeper.n_jobs=%d but hydra.launcher.max_parallel_jobs=%d: at most %d trials run at once",
                        self.n_jobs, cap, cap)

    def _local(self) -> bool:
        """Jobs that can reach the study's storage and report to it (pruning): in-process or on this machine."""
        return type(self.launcher).__name__ == "BasicLauncher" or bool(getattr(self.launcher, "runs_locally", False))

    def sweep(self, arguments: list[str]) -> Any:
        mode = self._check_settings()
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage or default_storage(sweep_dir)
        self._mask_storage(storage)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        metric = str(OmegaConf.select(self.config, "optimized_metric", default="val/acc"))
        direction = resolve_direction(self.direction, metric)
        self._warn_inconsistent(direction)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse_space(self.params, arguments, parser)
        pruner = _instance(self.pruner)
        study = open_study(storage, self.study_name, direction, _instance(self.sampler), pruner, space.fixed,
                           list(space.distributions))
        write_sweep_info(sweep_dir, storage, self.study_name, direction, metric)
        if self.warm_start:
            warm_start(study, Path(self.warm_start), space.distributions, self.warm_start_storage, self.storage)
        resumed = running_trials(study) if getattr(self.launcher, "reattaches", False) else []
        if not resumed:
            recover_interrupted(study)
        self._enqueue(study, space)
        prune = pruner is not None and (self._local() or bool(getattr(self.launcher, "prunes_jobs", False)))
        export_storage(storage)  # for the jobs and the end-of-sweep report: never in an override
        log.info("Study %s (%s): %s %s, %d/%d trials done, up to %d in flight (%s dispatch)%s", self.study_name,
                 safe_url(storage), direction, metric, counted_trials(study), self.n_trials, self.n_jobs, mode,
                 ", pruning" if prune else "")
        returns = self._loop(study, space, mode, prune, metric, resumed)
        best = _best(study)
        if best is not None:
            log.info("Best: trial %d, %s = %.6g, %s", best.number, metric, best.value, best.params)
        return returns

    def _mask_storage(self, storage: str) -> None:
        """Keep a password in the storage URL out of ``multirun.yaml`` and every job's ``.hydra/``.

        Hydra saves this config and composes each job's again from its ``hydra.overrides.hydra``; the
        sweeper holds the real URL already, so both get the masked one (an override put last wins
        over a config file's value too).
        """
        masked = safe_url(storage)
        if masked == storage:
            return
        if "'" in masked or "\\" in masked:  # would need escaping inside the quoted override
            masked = masked.split("://", 1)[0] + "://***"
        kept = [o for o in self.config.hydra.overrides.hydra if o.split("=", 1)[0].lstrip("+~") != STORAGE_KEY]
        with read_write(self.config), open_dict(self.config):
            self.config.hydra.sweeper.storage = masked
            self.config.hydra.overrides.hydra = [*kept, f"{STORAGE_KEY}='{masked}'"]

    def _enqueue(self, study, space) -> None:
        if study.trials:  # only a new study: a rerun must not evaluate them again
            return
        for params in self.enqueue:
            unknown = sorted(set(params) - set(space.distributions))
            if unknown:
                raise HydraException(f"hydra.sweeper.enqueue_trials names {unknown}, which are not searched; "
                                     f"valid: {sorted(space.distributions)}")
            study.enqueue_trial(params, skip_if_exists=True)

    def _loop(self, study, space, mode: str, prune: bool, metric: str, resumed: list | None = None) -> list:
        batch_size, slots = (1, self.n_jobs) if mode == "async" else (self.n_jobs, 1)
        limit, failures, returns = self.max_failure_rate * self.n_trials, 0, []
        in_flight: dict[Future, list] = {}
        pool = ThreadPoolExecutor(slots, thread_name_prefix="trial") if slots > 1 else None
        try:
            while True:
                while len(in_flight) < slots and failures <= limit:
                    pending = sum(len(b) for b in in_flight.values())
                    n = min(batch_size, self.n_trials - counted_trials(study) - pending)
                    if n <= 0:
                        break
                    resumed = resumed or []  # an earlier driver's running trials first, under their own numbers
                    trials = [resumed.pop(0) for _ in range(min(n, len(resumed)))] or \
                        [study.ask(space.distributions) for _ in range(n)]
                    jobs, failures = self._compose(study, trials, space, prune, failures, check=mode != "async")
                    if jobs:
                        in_flight[_submit(pool, self._launch, jobs)] = [t for t, _ in jobs]
                if not in_flight:
                    break
                for future in wait(in_flight, return_when=FIRST_COMPLETED).done:
                    trials = in_flight.pop(future)
                    results = _results(future, len(trials))
                    returns.append([r for r in results if not isinstance(r, BaseException)])
                    failures += sum(tell(study, t, r, metric) for t, r in zip(trials, results))
        finally:
            if in_flight and hasattr(self.launcher, "cancel"):  # Ctrl-C or an error: the jobs still running stop
                self.launcher.cancel()
            if pool is not None:  # a cancelled launcher returns once its jobs are stopped: wait for that
                pool.shutdown(wait=not in_flight or hasattr(self.launcher, "cancel"), cancel_futures=True)
        if failures > limit:
            self._abort_report()
            raise HydraException(f"{failures} trials failed, more than max_failure_rate={self.max_failure_rate} x "
                                 f"n_trials={self.n_trials}; see the sweep report in {self.config.hydra.sweep.dir}")
        return returns

    def _compose(self, study, trials, space, prune, failures, check: bool = True):
        """Check each trial's config composes (a bad choice fails that trial, not the sweep).

        Not in async dispatch (``check=False``): each launch there is one trial on a concurrent launcher, which
        composes it anyway, so a bad choice already fails that trial alone (as a launcher error), and a
        second composition (a third of a second each) on the main thread would only delay the next trial.
        """
        from optuna.trial import TrialState

        jobs = []
        for trial in trials:
            overrides = space.overrides(trial.params)
            trial.set_user_attr("overrides", overrides)
            try:
                if check:
                    self.validate_batch_is_legal([overrides])
            except Exception as err:
                trial.set_user_attr("fail_reason", f"config does not compose: {err}"[:1000])
                study.tell(trial, state=TrialState.FAIL)
                log.warning("Trial %d FAIL: config does not compose: %s", trial.number, err)
                failures += 1
                continue
            extra = env_overrides(study.study_name, trial.number, self._pruner_cfg()) if prune else []
            jobs.append((trial, overrides + extra))
        return jobs, failures

    def _pruner_cfg(self) -> dict:
        """The pruner's ``_target_`` config for the job (Hydra handed us the instance already)."""
        node = OmegaConf.select(self.config, "hydra.sweeper.pruner")
        return OmegaConf.to_container(node, resolve=True) if node is not None else {}

    def validate_batch_is_legal(self, batch) -> None:
        from bincount.sweep.compose import COMPOSE_LOCK

        with COMPOSE_LOCK:  # launches of earlier trials compose on their threads meanwhile
            for overrides in batch:
                self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                   sweep_overrides=list(overrides))

    def _launch(self, jobs) -> list:
        return list(self.launcher.launch([o for _, o in jobs], initial_job_idx=jobs[0][0].number))

    def _abort_report(self) -> None:
        try:
            from bincount.sweep.report import write_report

            write_report(Path(self.config.hydra.sweep.dir))
        except Exception as err:  # the abort's own error is the one to show
            log.warning("No sweep report: %s", err)


def _submit(pool: ThreadPoolExecutor | None, fn, *args) -> Future:
    """Run on the pool, or right here (in-process launchers must run on the main thread)."""
    if pool is not None:
        return pool.submit(fn, *args)
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as err:
        future.set_exception(err)
    return future


def _results(future: Future, n: int) -> list:
    """One JobReturn per trial, or the launcher's exception for each trial of a batch that raised."""
    err = future.exception()
    if err is not None:
        return [err] * n
    results = list(future.result())
    if len(results) != n:
        return [RuntimeError(f"the launcher returned {len(results)} results for {n} jobs")] * n
    return results


def _instance(node: Any) -> Any:
    """Hydra instantiates the sweeper's nested ``_target_`` nodes already; a config node is built here."""
    if isinstance(node, (dict, DictConfig)) and "_target_" in node:
        from hydra.utils import instantiate

        return instantiate(node)
    return node


def _best(study):
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None
