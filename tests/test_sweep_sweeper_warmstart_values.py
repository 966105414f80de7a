"""Fast value checks of the Optuna sweeper's loop (``bincount.sweep.sweeper``) and of warm starts
(``bincount.sweep.warmstart``), without training and without Hydra in a subprocess.

The studies are real Optuna studies (in memory, or SQLite files under tmp_path). The launcher is the
sweeper's collaborator, so a small in-process fake stands in for it: its ``launch()`` records each call and
returns Hydra ``JobReturn`` objects whose values come from the trial's own overrides. Hydra's config loader
(used only to check that a trial's config composes) is faked the same way. Each test checks what the sweeper
recorded: the trials' params, values, states and user attrs, which launches it made, what it logged and wrote.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from bincount.sweep import sweeper as sweeper_mod  # noqa: E402
from bincount.sweep.pruning import JobPruned, env_overrides  # noqa: E402
from bincount.sweep.space import SearchSpace, parse_space  # noqa: E402
from bincount.sweep.study import (ENV_STORAGE, StudyConfigError, default_storage, open_study,  # noqa: E402
                                  write_sweep_info)
from bincount.sweep.outcome import _job_dir, tell  # noqa: E402
from bincount.sweep.sweeper import OptunaSweep, _best, _instance, _results, _submit  # noqa: E402
from bincount.sweep.warmstart import check_given, own_sqlite, read_info, source_storage, warm_start  # noqa: E402

X = {"x": FloatDistribution(0, 1)}
OUT_OF_RANGE = "is out of range (n_trials, n_jobs >= 1; 0 <= max_failure_rate <= 1)"
NO_REPORT_SUFFIX = "has no trials: no study (sweep.json) and no job dirs with .hydra/"


# --- the collaborators: a launcher and a config loader that record what the sweeper asks of them --------------


def job_return(status: JobStatus, value, number: int | None = None) -> JobReturn:
    ret = JobReturn()
    ret.status, ret.return_value = status, value
    if number is not None:
        ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": f"/jobs/{number}"}}})
    return ret


def params_of(overrides) -> dict:
    """The trial's sampled and fixed overrides (not the pruning handover's ``+hydra.job.env_set...``)."""
    return dict(o.split("=", 1) for o in overrides if not o.startswith("+hydra."))


class FakeLauncher:
    """Runs each job here: its value is ``x`` from its overrides (or what ``outcome`` says)."""

    def __init__(self, outcome=None, **flags) -> None:
        self.calls: list[tuple[int, list[list[str]]]] = []
        self.threads: list[str] = []
        self.outcome = outcome or (lambda number, params: job_return(JobStatus.COMPLETED, float(params["x"]), number))
        for key, value in flags.items():
            setattr(self, key, value)

    def launch(self, job_overrides, initial_job_idx):
        self.calls.append((initial_job_idx, [list(o) for o in job_overrides]))
        self.threads.append(threading.current_thread().name)
        return [self.outcome(initial_job_idx + i, params_of(o)) for i, o in enumerate(job_overrides)]


class BasicLauncher(FakeLauncher):
    """Named like Hydra's in-process launcher: the sweeper treats that one as local."""


class FakeLoader:
    """Hydra's config loader as far as the sweeper uses it: ``load_sweep_config`` fails for ``bad`` overrides."""

    def __init__(self, bad=()) -> None:
        self.bad, self.calls = set(bad), []

    def load_sweep_config(self, master_config, sweep_overrides):
        self.calls.append((master_config, sweep_overrides))
        bad = [o for o in sweep_overrides if o in self.bad]
        if bad:
            raise ValueError(f"no such choice: {bad[0]}")
        return master_config


def make_sweep(**kw) -> OptunaSweep:
    args = dict(sampler=None, pruner=None, direction="auto", study_name="s", storage=None, n_trials=3, n_jobs=1,
                dispatch="auto", max_failure_rate=0.5, params={}, enqueue_trials=[])
    return OptunaSweep(**{**args, **kw})


def sweep_config(sweep_dir: Path, metric: str | None = "val/acc", hydra_overrides=(), pruner=None, **top):
    cfg = {"hydra": {"sweep": {"dir": str(sweep_dir)}, "overrides": {"hydra": list(hydra_overrides), "task": []},
                     "sweeper": {"storage": None, "pruner": pruner}}, **top}
    if metric is not None:
        cfg["optimized_metric"] = metric
    return OmegaConf.create(cfg)


def attach(sweep: OptunaSweep, launcher, sweep_dir: Path, loader: FakeLoader | None = None, **cfg) -> OptunaSweep:
    """What ``setup`` gives the sweep, with the fakes: its launcher, Hydra's context and the config."""
    sweep.launcher = launcher
    sweep.hydra_context = SimpleNamespace(config_loader=loader or FakeLoader())
    sweep.config = sweep_config(sweep_dir, **cfg)
    return sweep


def memory_study(direction: str = "maximize", seed: int = 0):
    return optuna.create_study(direction=direction, study_name="s", sampler=optuna.samplers.RandomSampler(seed=seed))


def x_space(*fixed: str) -> SearchSpace:
    return SearchSpace(distributions={"x": FloatDistribution(0, 1)}, fixed=list(fixed))


def messages(caplog, name: str = "bincount") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(name)]


def random_xs(n: int, seed: int = 0) -> list[float]:
    """The x values a RandomSampler(seed) asks first, in order (what a sweep with that sampler runs)."""
    study = memory_study(seed=seed)
    return [study.ask(X).params["x"] for _ in range(n)]


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch):
    """A sweep exports its storage URL into this process's environment: restored after each test."""
    monkeypatch.setenv(ENV_STORAGE, "set-by-the-test")
    monkeypatch.delenv(ENV_STORAGE)


# --- small functions ----------------------------------------------------------------------------------------


def test_init_keeps_plain_copies_of_params_and_enqueued_trials():
    enqueue = OmegaConf.create([{"x": 0.25}, {"x": 0.75, "m": "a"}])
    sweep = make_sweep(params=OmegaConf.create({"x": "interval(0,1)"}), enqueue_trials=enqueue, warm_start="/old",
                       warm_start_storage="sqlite:///o.db")
    assert sweep.params == {"x": "interval(0,1)"} and type(sweep.params) is dict
    assert sweep.enqueue == [{"x": 0.25}, {"x": 0.75, "m": "a"}] and all(type(p) is dict for p in sweep.enqueue)
    assert (sweep.warm_start, sweep.warm_start_storage) == ("/old", "sqlite:///o.db")
    plain = make_sweep(params=None, enqueue_trials=None)
    assert plain.params == {} and plain.enqueue == []
    assert (plain.warm_start, plain.warm_start_storage) == (None, None)
    given = {"x": 0.5}
    assert make_sweep(enqueue_trials=[given]).enqueue == [{"x": 0.5}]


def test_setup_instantiates_the_configured_launcher_with_the_context():
    target = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    cfg = OmegaConf.create({"hydra": {"launcher": {"_target_": target}}})
    ctx = SimpleNamespace(config_loader=FakeLoader(), callbacks=None)

    def task(c):
        return 0.0

    sweep = make_sweep()
    sweep.setup(hydra_context=ctx, task_function=task, config=cfg)
    assert sweep.hydra_context is ctx and sweep.config is cfg
    assert f"{type(sweep.launcher).__module__}.{type(sweep.launcher).__name__}" == target  # Hydra's plugin scan
    assert sweep.launcher.task_function is task and sweep.launcher.hydra_context is ctx
    assert sweep.launcher.config is cfg


def test_submit_runs_here_without_a_pool_and_keeps_the_error():
    here = threading.current_thread().name
    future = _submit(None, lambda a, b: (a + b, threading.current_thread().name), 2, 3)
    assert future.done() and future.result() == (5, here)

    def boom(_):
        raise ConnectionError("spot capacity")

    failed = _submit(None, boom, 1)
    assert failed.done() and isinstance(failed.exception(), ConnectionError)
    assert str(failed.exception()) == "spot capacity"
    with ThreadPoolExecutor(1, thread_name_prefix="elsewhere") as pool:
        on_pool = _submit(pool, lambda a: (a * 2, threading.current_thread().name), 21)
        value, thread = on_pool.result(timeout=10)
    assert value == 42 and thread.startswith("elsewhere")


def done(result=None, error=None) -> Future:
    f: Future = Future()
    f.set_exception(error) if error is not None else f.set_result(result)
    return f


def test_results_one_per_trial_or_the_error_for_each():
    err = ConnectionError("gone")
    assert _results(done(error=err), 3) == [err, err, err]
    a, b = job_return(JobStatus.COMPLETED, 1.0), job_return(JobStatus.COMPLETED, 2.0)
    assert _results(done((a, b)), 2) == [a, b]
    assert type(_results(done(iter([a, b])), 2)) is list
    wrong = _results(done([a]), 2)
    assert len(wrong) == 2 and wrong[0] is wrong[1] and type(wrong[0]) is RuntimeError
    assert str(wrong[0]) == "the launcher returned 1 results for 2 jobs"
    assert str(_results(done([a, b, a]), 2)[0]) == "the launcher returned 3 results for 2 jobs"


def test_instance_builds_config_nodes_and_passes_objects_through():
    built = _instance({"_target_": "optuna.samplers.RandomSampler", "seed": 3})
    assert type(built) is optuna.samplers.RandomSampler
    node = _instance(OmegaConf.create({"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.3}))
    assert type(node) is optuna.pruners.ThresholdPruner
    sampler = optuna.samplers.RandomSampler()
    assert _instance(sampler) is sampler and _instance(None) is None
    no_target = {"seed": 3}
    assert _instance(no_target) is no_target


def test_job_dir_is_the_jobs_output_dir_when_hydra_recorded_one():
    assert _job_dir(job_return(JobStatus.COMPLETED, 1.0, number=7)) == "/jobs/7"
    assert _job_dir(job_return(JobStatus.COMPLETED, 1.0)) is None
    no_runtime = job_return(JobStatus.COMPLETED, 1.0)
    no_runtime.hydra_cfg = OmegaConf.create({"hydra": {"job": {"name": "x"}}})
    assert _job_dir(no_runtime) is None
    assert _job_dir(RuntimeError("launcher")) is None


def test_best_is_none_until_a_trial_completes():
    study = memory_study()
    study.tell(study.ask(X), state=TrialState.FAIL)
    assert _best(study) is None
    study.tell(study.ask(X), 0.2)
    study.tell(study.ask(X), 0.9)
    assert _best(study).number == 2 and _best(study).value == 0.9


# --- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dispatch, concurrent, n_jobs, mode", [
    ("auto", False, 2, "batch"),
    ("auto", True, 2, "async"),
    ("batch", True, 2, "batch"),
    ("async", True, 3, "async"),
    ("async", False, 1, "async"),  # one job at a time needs no concurrent launcher
    ("batch", False, 1, "batch"),
])
def test_dispatch_mode_follows_the_setting_and_the_launcher(dispatch, concurrent, n_jobs, mode):
    sweep = make_sweep(dispatch=dispatch, n_jobs=n_jobs)
    sweep.launcher = FakeLauncher(supports_concurrent_launch=concurrent)
    assert sweep._check_settings() == mode


def test_async_with_a_launcher_that_cannot_is_refused_by_name():
    sweep = make_sweep(dispatch="async", n_jobs=2)
    sweep.launcher = FakeLauncher()
    with pytest.raises(HydraException) as err:
        sweep._check_settings()
    assert str(err.value) == ("hydra.sweeper.dispatch=async needs a launcher that runs jobs concurrently; "
                              "FakeLauncher does not. Valid: dispatch=batch or auto")


@pytest.mark.parametrize("key, value", [("n_trials", 0), ("n_trials", -3), ("n_jobs", 0),
                                        ("max_failure_rate", -0.1), ("max_failure_rate", 1.5)])
def test_each_out_of_range_setting_is_named(key, value):
    sweep = make_sweep(**{key: value})
    sweep.launcher = FakeLauncher()
    with pytest.raises(HydraException) as err:
        sweep._check_settings()
    assert str(err.value) == f"hydra.sweeper.{key}={value!r} {OUT_OF_RANGE}"


@pytest.mark.parametrize("rate", [0, 0.0, 1, 1.0])
def test_the_range_bounds_are_allowed(rate):
    sweep = make_sweep(n_trials=1, n_jobs=1, max_failure_rate=rate)
    sweep.launcher = FakeLauncher()
    assert sweep._check_settings() == "batch"


def test_a_bad_dispatch_lists_the_valid_ones():
    sweep = make_sweep(dispatch="Auto")
    sweep.launcher = FakeLauncher(supports_concurrent_launch=True)
    with pytest.raises(HydraException) as err:
        sweep._check_settings()
    assert str(err.value) == "hydra.sweeper.dispatch='Auto' is not valid; valid: ['auto', 'async', 'batch']"


def test_a_password_in_warm_start_storage_is_refused_first():
    sweep = make_sweep(dispatch="sideways", n_trials=0, warm_start_storage="postgresql://tuner:hunter2@db.example/o")
    sweep.launcher = FakeLauncher()
    with pytest.raises(StudyConfigError) as err:
        sweep._check_settings()
    assert str(err.value).startswith("hydra.sweeper.warm_start_storage='postgresql://tuner:***@db.example/o' holds")


@pytest.mark.parametrize("n_jobs, logged", [(1, []), (2, [
    "The basic launcher runs jobs one at a time: n_jobs=2 only delays feedback to the sampler"])])
def test_the_basic_launcher_with_several_jobs_is_explained(caplog, n_jobs, logged):
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher as HydraBasicLauncher

    sweep = make_sweep(n_jobs=n_jobs)
    sweep.launcher = HydraBasicLauncher()
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert sweep._check_settings() == "batch"
    assert messages(caplog) == logged


def test_other_launchers_with_several_jobs_log_nothing(caplog):
    sweep = make_sweep(n_jobs=3)
    sweep.launcher = FakeLauncher()
    with caplog.at_level(logging.INFO, logger="bincount"):
        sweep._check_settings()
    assert messages(caplog) == []


CHECKPOINT = ("callbacks.model_checkpoint.mode={0} but the study {1}s: the objective would come from the worst "
              "checkpoint; set callbacks.model_checkpoint.mode={2}")
CAP = "hydra.sweeper.n_jobs={0} but hydra.launcher.max_parallel_jobs={1}: at most {1} trials run at once"


@pytest.mark.parametrize("mode, direction, cap, n_jobs, expected", [
    ("max", "minimize", None, 1, [CHECKPOINT.format("max", "minimize", "min")]),
    ("min", "maximize", None, 1, [CHECKPOINT.format("min", "maximize", "max")]),
    ("min", "minimize", None, 1, []),
    ("max", "maximize", None, 1, []),
    ("auto", "minimize", None, 1, []),  # not a mode the check knows: no claim about it
    (None, "minimize", 2, 4, [CAP.format(4, 2)]),
    (None, "minimize", 3, 4, [CAP.format(4, 3)]),
    (None, "minimize", 4, 4, []),  # the cap allows every trial the sweeper starts
    (None, "minimize", 5, 4, []),
    (None, "minimize", "2", 4, []),  # not a number the launcher uses as one
    ("max", "minimize", 1, 2, [CHECKPOINT.format("max", "minimize", "min"), CAP.format(2, 1)]),
])
def test_settings_outside_the_sweeper_that_undermine_it_are_warned_about(caplog, mode, direction, cap, n_jobs,
                                                                         expected):
    cfg = {}
    if mode is not None:
        cfg["callbacks"] = {"model_checkpoint": {"mode": mode}}
    if cap is not None:
        cfg["hydra"] = {"launcher": {"max_parallel_jobs": cap}}
    sweep = make_sweep(n_jobs=n_jobs)
    sweep.config = OmegaConf.create(cfg)
    with caplog.at_level(logging.INFO, logger="bincount"):
        sweep._warn_inconsistent(direction)
    assert messages(caplog) == expected
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name.startswith("bincount"))


def test_local_means_in_process_or_on_this_machine():
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher as HydraBasicLauncher

    sweep = make_sweep()
    for launcher, local in [(HydraBasicLauncher(), True), (BasicLauncher(), True), (FakeLauncher(), False),
                            (FakeLauncher(runs_locally=True), True), (FakeLauncher(runs_locally=False), False),
                            (FakeLauncher(prunes_jobs=True), False)]:
        sweep.launcher = launcher
        assert sweep._local() is local, launcher


def test_pruner_cfg_is_the_resolved_target_node_or_empty(tmp_path):
    sweep = make_sweep()
    sweep.config = OmegaConf.create({"low": 0.3, "hydra": {"sweeper": {"pruner": {
        "_target_": "optuna.pruners.ThresholdPruner", "lower": "${low}"}}}})
    assert sweep._pruner_cfg() == {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.3}
    assert type(sweep._pruner_cfg()) is dict
    sweep.config = OmegaConf.create({"hydra": {"sweeper": {"pruner": None}}})
    assert sweep._pruner_cfg() == {}
    sweep.config = OmegaConf.create({"hydra": {"sweeper": {}}})
    assert sweep._pruner_cfg() == {}


def test_validate_batch_composes_each_trials_overrides_against_the_config(tmp_path):
    loader = FakeLoader(bad={"model=nope"})
    sweep = attach(make_sweep(), FakeLauncher(), tmp_path, loader)
    sweep.validate_batch_is_legal([("model=tiny", "x=0.5"), ["x=0.25"]])
    assert [(cfg is sweep.config, overrides) for cfg, overrides in loader.calls] == [
        (True, ["model=tiny", "x=0.5"]), (True, ["x=0.25"])]
    assert all(type(overrides) is list for _, overrides in loader.calls)
    with pytest.raises(ValueError, match="no such choice: model=nope"):
        sweep.validate_batch_is_legal([["model=nope"]])


# --- the storage URL kept out of what Hydra saves ---------------------------------------------------------------


@pytest.mark.parametrize("storage, masked", [
    ("postgresql://tuner:hunter2@db.example.com/optuna", "postgresql://tuner:***@db.example.com/optuna"),
    ("postgresql://tuner:hunter2@d'b/o", "postgresql://***"),  # a quote would end the quoted override
    ("postgresql://tuner:hunter2@d\\b/o", "postgresql://***"),
    ("sqlite:///a.db?password=hunter2", "sqlite:///a.db?password=***"),
])
def test_a_storage_password_is_masked_in_the_config_and_its_override(tmp_path, storage, masked):
    sweep = attach(make_sweep(), FakeLauncher(), tmp_path, hydra_overrides=[
        f"hydra.sweeper.storage={storage}", "+hydra.sweeper.storage=a", "++hydra.sweeper.storage=b",
        "~hydra.sweeper.storage", "hydra.sweeper.n_trials=3", "hydra.sweeper.storage_x=1"])
    sweep._mask_storage(storage)
    assert sweep.config.hydra.sweeper.storage == masked
    assert list(sweep.config.hydra.overrides.hydra) == [
        "hydra.sweeper.n_trials=3", "hydra.sweeper.storage_x=1", f"hydra.sweeper.storage='{masked}'"]
    assert "hunter2" not in OmegaConf.to_yaml(sweep.config)


def test_a_storage_without_a_password_leaves_the_config_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = attach(make_sweep(), FakeLauncher(), tmp_path, hydra_overrides=[f"hydra.sweeper.storage={url}"])
    sweep._mask_storage(url)
    assert sweep.config.hydra.sweeper.storage is None
    assert list(sweep.config.hydra.overrides.hydra) == [f"hydra.sweeper.storage={url}"]


# --- enqueued trials ----------------------------------------------------------------------------------------


def test_enqueued_trials_go_first_once_each_in_a_new_study():
    sweep = make_sweep(enqueue_trials=[{"x": 0.25}, {"x": 0.25}, {"x": 0.75}])
    study = memory_study()
    sweep._enqueue(study, x_space())
    assert [t.state for t in study.trials] == [TrialState.WAITING, TrialState.WAITING]
    assert [study.ask(X).params for _ in range(2)] == [{"x": 0.25}, {"x": 0.75}]


def test_a_study_with_trials_gets_no_enqueued_trials_again():
    study = memory_study()
    study.tell(study.ask(X), 0.5)
    make_sweep(enqueue_trials=[{"x": 0.25}])._enqueue(study, x_space())
    assert len(study.trials) == 1


def test_an_enqueued_trial_with_unsearched_keys_is_refused_by_name():
    sweep = make_sweep(enqueue_trials=[{"x": 0.25, "z": 1, "a": 2}])
    with pytest.raises(HydraException) as err:
        sweep._enqueue(memory_study(), x_space())
    assert str(err.value) == "hydra.sweeper.enqueue_trials names ['a', 'z'], which are not searched; valid: ['x']"


# --- one job's outcome becomes the trial's state ------------------------------------------------------------


class Stop(BaseException):
    """Not an Exception: what a Ctrl-C looks like to the sweeper's loop."""


@pytest.mark.parametrize("make_result, metric, state, value, reason", [
    (lambda: job_return(JobStatus.COMPLETED, 0.123456789, 0), "val/acc", TrialState.COMPLETE, 0.123456789, None),
    (lambda: job_return(JobStatus.COMPLETED, "0.5", 0), "val/acc", TrialState.COMPLETE, 0.5, None),
    (lambda: job_return(JobStatus.COMPLETED, 3, 0), "val/acc", TrialState.COMPLETE, 3.0, None),
    (lambda: job_return(JobStatus.COMPLETED, float("nan"), 0), "val/acc", TrialState.FAIL, None, "val/acc is nan"),
    (lambda: job_return(JobStatus.COMPLETED, float("inf"), 0), "val/rmse", TrialState.FAIL, None, "val/rmse is inf"),
    (lambda: job_return(JobStatus.COMPLETED, -math.inf, 0), "val/acc", TrialState.FAIL, None, "val/acc is -inf"),
    (lambda: job_return(JobStatus.COMPLETED, None, 0), "val/acc", TrialState.FAIL, None,
     "the job returned None, not a number (val/acc)"),
    (lambda: job_return(JobStatus.COMPLETED, "abc", 0), "val/mae", TrialState.FAIL, None,
     "the job returned 'abc', not a number (val/mae)"),
    (lambda: job_return(JobStatus.COMPLETED, {"a": 1}, 0), "val/acc", TrialState.FAIL, None,
     "the job returned {'a': 1}, not a number (val/acc)"),
    (lambda: job_return(JobStatus.FAILED, RuntimeError("CUDA out of memory"), 0), "val/acc", TrialState.FAIL, None,
     "RuntimeError: CUDA out of memory"),
    (lambda: job_return(JobStatus.FAILED, optuna.TrialPruned("pruned at epoch 2"), 0), "val/acc", TrialState.PRUNED,
     None, "pruned at epoch 2"),
    (lambda: job_return(JobStatus.FAILED, JobPruned("stopped by its launcher at epoch 3"), 0), "val/acc",
     TrialState.PRUNED, None, "stopped by its launcher at epoch 3"),
    (lambda: ConnectionError("spot capacity"), "val/acc", TrialState.FAIL, None,
     "the launcher raised ConnectionError: spot capacity"),
    (lambda: RuntimeError("e" * 2000), "val/acc", TrialState.FAIL, None, "the launcher raised RuntimeError: " + "e" * 2000),
    (lambda: job_return(JobStatus.FAILED, ValueError("v" * 1500), 0), "val/acc", TrialState.FAIL, None,
     "ValueError: " + "v" * 1500),
])
def test_a_jobs_outcome_becomes_the_trials_state_value_reason_and_log_line(caplog, make_result, metric, state, value,
                                                                           reason):
    study = memory_study()
    study.tell(study.ask(X), 0.1)  # trial 0: the one under test is number 1
    trial = study.ask(X)
    result = make_result()
    with caplog.at_level(logging.INFO, logger="bincount"):
        failed = tell(study, trial, result, metric)
    frozen = study.trials[1]
    assert failed is (state == TrialState.FAIL)
    assert frozen.state == state and frozen.value == value
    assert frozen.user_attrs.get("fail_reason") == (reason[:1000] if reason else None), "kept to 1000 characters"
    assert frozen.user_attrs.get("job_dir") == (None if isinstance(result, BaseException) else "/jobs/0")
    line = f"Trial 1 {state.name} {metric}={value:.6g}" if state == TrialState.COMPLETE else \
        f"Trial 1 {state.name}: {reason}"
    assert messages(caplog) == [line]


def test_the_log_line_rounds_the_value_to_six_digits(caplog):
    study = memory_study()
    with caplog.at_level(logging.INFO, logger="bincount"):
        tell(study, study.ask(X), job_return(JobStatus.COMPLETED, 1234567.891), "val/loss")
    assert messages(caplog) == ["Trial 0 COMPLETE val/loss=1.23457e+06"]
    assert "job_dir" not in study.trials[0].user_attrs


def test_an_interrupt_inside_a_jobs_return_value_is_not_swallowed():
    study = memory_study()
    with pytest.raises(Stop):
        tell(study, study.ask(X), job_return(JobStatus.FAILED, Stop()), "val/acc")


# --- composing each trial before it is launched ---------------------------------------------------------------


def test_compose_fails_only_the_trials_whose_config_does_not_compose(tmp_path, caplog):
    loader = FakeLoader(bad={"x=0.75"})
    sweep = attach(make_sweep(), FakeLauncher(), tmp_path, loader)
    study = memory_study()
    study.enqueue_trial({"x": 0.25})
    study.enqueue_trial({"x": 0.75})
    trials = [study.ask(X), study.ask(X)]
    with caplog.at_level(logging.INFO, logger="bincount"):
        jobs, failures = sweep._compose(study, trials, x_space("model=tiny"), prune=False, failures=2)
    assert failures == 3
    assert [(t.number, o) for t, o in jobs] == [(0, ["model=tiny", "x=0.25"])]
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.FAIL]
    assert [t.user_attrs["overrides"] for t in study.trials] == [["model=tiny", "x=0.25"], ["model=tiny", "x=0.75"]]
    assert study.trials[1].user_attrs["fail_reason"] == "config does not compose: no such choice: x=0.75"
    assert "fail_reason" not in study.trials[0].user_attrs
    assert messages(caplog) == ["Trial 1 FAIL: config does not compose: no such choice: x=0.75"]
    assert caplog.records[-1].levelno == logging.WARNING
    assert [o for _, o in loader.calls] == [["model=tiny", "x=0.25"], ["model=tiny", "x=0.75"]]


def test_compose_keeps_a_long_reason_to_a_thousand_characters(tmp_path):
    class Loud(FakeLoader):
        def load_sweep_config(self, master_config, sweep_overrides):
            raise ValueError("w" * 3000)

    sweep = attach(make_sweep(), FakeLauncher(), tmp_path, Loud())
    study = memory_study()
    jobs, failures = sweep._compose(study, [study.ask(X)], x_space(), prune=False, failures=0)
    assert (jobs, failures) == ([], 1)
    assert study.trials[0].user_attrs["fail_reason"] == ("config does not compose: " + "w" * 3000)[:1000]


def test_compose_without_the_check_and_with_pruning_adds_the_handover(tmp_path):
    loader = FakeLoader(bad={"x=0.75"})
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.4}
    sweep = attach(make_sweep(), FakeLauncher(), tmp_path, loader, pruner=pruner)
    study = memory_study()
    study.enqueue_trial({"x": 0.75})
    trial = study.ask(X)
    jobs, failures = sweep._compose(study, [trial], x_space(), prune=True, failures=0, check=False)
    assert failures == 0 and loader.calls == [], "async dispatch leaves composing to the launch"
    [(got, overrides)] = jobs
    assert got is trial
    assert overrides == ["x=0.75", *env_overrides("s", 0, pruner)]
    handed = overrides[-1].split("=", 1)[1].strip("'")
    assert json.loads(base64.urlsafe_b64decode(handed)) == pruner
    assert study.trials[0].user_attrs["overrides"] == ["x=0.75"], "the handover is not part of the trial's record"


# --- the loop: batches, concurrency, failures --------------------------------------------------------------------


def loop(tmp_path, launcher, mode="batch", prune=False, resumed=None, study=None, loader=None, **kw):
    sweep = attach(make_sweep(**kw), launcher, tmp_path, loader)
    study = study or memory_study()
    returns = sweep._loop(study, x_space(), mode, prune, "val/acc", resumed)
    return sweep, study, returns


def test_batch_launches_n_jobs_trials_at_a_time_until_n_trials(tmp_path):
    launcher = FakeLauncher()
    loader = FakeLoader()
    _, study, returns = loop(tmp_path, launcher, n_jobs=2, n_trials=5, loader=loader)
    xs = random_xs(5)
    assert launcher.calls == [(0, [[f"x={xs[0]}"], [f"x={xs[1]}"]]), (2, [[f"x={xs[2]}"], [f"x={xs[3]}"]]),
                              (4, [[f"x={xs[4]}"]])]
    assert [[r.return_value for r in batch] for batch in returns] == [[xs[0], xs[1]], [xs[2], xs[3]], [xs[4]]]
    assert [(t.number, t.state, t.value, t.params) for t in study.trials] == [
        (n, TrialState.COMPLETE, x, {"x": x}) for n, x in enumerate(xs)]
    assert [t.user_attrs for t in study.trials] == [
        {"overrides": [f"x={x}"], "job_dir": f"/jobs/{n}"} for n, x in enumerate(xs)]
    assert [o for _, o in loader.calls] == [[f"x={x}"] for x in xs], "batch dispatch checks each trial composes"
    main = threading.main_thread().name
    assert launcher.threads == [main] * 3, "an in-process launcher runs on the main thread"


def test_a_study_that_reached_n_trials_launches_nothing(tmp_path):
    study = memory_study()
    for v in (0.1, 0.2):
        study.tell(study.ask(X), v)
    study.tell(study.ask(X), state=TrialState.FAIL)
    launcher = FakeLauncher()
    _, _, returns = loop(tmp_path, launcher, n_jobs=2, n_trials=3, study=study)
    assert launcher.calls == [] and returns == []
    launcher = FakeLauncher()
    _, study, returns = loop(tmp_path, launcher, n_jobs=4, n_trials=5, study=study)
    assert [(i, len(o)) for i, o in launcher.calls] == [(3, 2)], "only what is left of n_trials"
    assert len(study.trials) == 5


def test_async_keeps_n_jobs_trials_in_flight_on_worker_threads(tmp_path):
    both_running = threading.Barrier(2, timeout=20)

    def outcome(number, params):
        if number in (0, 1):
            both_running.wait()  # breaks (and fails the trial) unless trials 0 and 1 run at the same time
        return job_return(JobStatus.COMPLETED, float(params["x"]), number)

    launcher = FakeLauncher(outcome, supports_concurrent_launch=True)
    loader = FakeLoader()
    _, study, returns = loop(tmp_path, launcher, mode="async", n_jobs=2, n_trials=3, loader=loader)
    assert sorted(i for i, _ in launcher.calls) == [0, 1, 2]
    assert all(len(overrides) == 1 for _, overrides in launcher.calls), "one trial per launch"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3, [t.user_attrs for t in study.trials]
    assert len(returns) == 3 and all(len(batch) == 1 for batch in returns)
    assert loader.calls == [], "no composition on the main thread in async dispatch"
    assert all(name.startswith("trial_") for name in launcher.threads), launcher.threads


def test_async_with_one_job_runs_on_the_main_thread(tmp_path):
    launcher = FakeLauncher(supports_concurrent_launch=True)
    _, study, _ = loop(tmp_path, launcher, mode="async", n_jobs=1, n_trials=2)
    assert [i for i, _ in launcher.calls] == [0, 1]
    assert launcher.threads == [threading.main_thread().name] * 2


def failing_first(k: int):
    def outcome(number, params):
        if number < k:
            return job_return(JobStatus.FAILED, RuntimeError(f"boom {number}"), number)
        return job_return(JobStatus.COMPLETED, float(params["x"]), number)
    return outcome


def test_failures_up_to_the_limit_let_the_sweep_finish(tmp_path):
    launcher = FakeLauncher(failing_first(2))
    _, study, returns = loop(tmp_path, launcher, n_trials=4, max_failure_rate=0.5)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE,
                                               TrialState.COMPLETE]
    assert [t.user_attrs.get("fail_reason") for t in study.trials] == ["RuntimeError: boom 0", "RuntimeError: boom 1",
                                                                      None, None]
    assert [len(batch) for batch in returns] == [1, 1, 1, 1], "a failed job's JobReturn is returned too"


def test_one_failure_past_the_limit_stops_the_sweep_and_names_the_limit(tmp_path, caplog):
    launcher = FakeLauncher(failing_first(10))
    with caplog.at_level(logging.INFO, logger="bincount"):
        with pytest.raises(HydraException) as err:
            loop(tmp_path, launcher, n_trials=4, max_failure_rate=0.5)
    assert str(err.value) == (f"3 trials failed, more than max_failure_rate=0.5 x n_trials=4; see the sweep report "
                              f"in {tmp_path}")
    assert [i for i, _ in launcher.calls] == [0, 1, 2]
    assert messages(caplog)[-1] == f"No sweep report: {tmp_path} {NO_REPORT_SUFFIX}"


def test_a_zero_failure_rate_stops_at_the_first_failure(tmp_path):
    launcher = FakeLauncher(failing_first(1))
    with pytest.raises(HydraException) as err:
        loop(tmp_path, launcher, n_trials=3, max_failure_rate=0)
    assert str(err.value).startswith("1 trials failed, more than max_failure_rate=0 x n_trials=3; ")
    assert len(launcher.calls) == 1


def test_a_batch_stops_starting_trials_at_the_limit_but_counts_the_whole_batch(tmp_path):
    launcher = FakeLauncher(failing_first(10))
    with pytest.raises(HydraException) as err:
        loop(tmp_path, launcher, n_jobs=3, n_trials=6, max_failure_rate=0.4)
    assert str(err.value).startswith("3 trials failed, more than max_failure_rate=0.4 x n_trials=6; ")
    assert [(i, len(o)) for i, o in launcher.calls] == [(0, 3)]
    failures_at_limit = FakeLauncher(failing_first(3))
    _, study, _ = loop(tmp_path, failures_at_limit, n_jobs=3, n_trials=6, max_failure_rate=0.5)
    assert [(i, len(o)) for i, o in failures_at_limit.calls] == [(0, 3), (3, 3)]
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3 + ["COMPLETE"] * 3


def test_a_launcher_error_fails_every_trial_of_its_batch(tmp_path):
    class Down(FakeLauncher):
        def launch(self, job_overrides, initial_job_idx):
            super().launch(job_overrides, initial_job_idx)
            raise ConnectionError("spot capacity")

    launcher = Down()
    _, study, returns = loop(tmp_path, launcher, n_jobs=2, n_trials=2, max_failure_rate=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in study.trials] == [
        "the launcher raised ConnectionError: spot capacity"] * 2
    assert returns == [[]]


def test_a_launcher_that_returns_too_few_results_fails_the_batch(tmp_path):
    class Short(FakeLauncher):
        def launch(self, job_overrides, initial_job_idx):
            return super().launch(job_overrides, initial_job_idx)[:1]

    _, study, returns = loop(tmp_path, Short(), n_jobs=2, n_trials=2, max_failure_rate=1)
    assert [t.user_attrs["fail_reason"] for t in study.trials] == [
        "the launcher raised RuntimeError: the launcher returned 1 results for 2 jobs"] * 2
    assert returns == [[]]


def test_a_trial_that_does_not_compose_is_not_launched_and_the_batch_starts_at_the_next(tmp_path):
    study = memory_study()
    for x in (0.75, 0.25, 0.5):
        study.enqueue_trial({"x": x})
    launcher = FakeLauncher()
    _, study, returns = loop(tmp_path, launcher, n_jobs=2, n_trials=3, study=study, max_failure_rate=1,
                             loader=FakeLoader(bad={"x=0.75"}))
    assert launcher.calls == [(1, [["x=0.25"]]), (2, [["x=0.5"]])]
    assert [(t.state.name, t.value) for t in study.trials] == [("FAIL", None), ("COMPLETE", 0.25), ("COMPLETE", 0.5)]
    assert [[r.return_value for r in batch] for batch in returns] == [[0.25], [0.5]]


def test_a_batch_where_no_trial_composes_launches_nothing_and_counts_the_failures(tmp_path):
    study = memory_study()
    for x in (0.75, 0.75):
        study.enqueue_trial({"x": x}, skip_if_exists=False)
    launcher = FakeLauncher()
    with pytest.raises(HydraException, match=r"^2 trials failed, more than max_failure_rate=0.25 x n_trials=4"):
        loop(tmp_path, launcher, n_jobs=2, n_trials=4, study=study, max_failure_rate=0.25,
             loader=FakeLoader(bad={"x=0.75"}))
    assert launcher.calls == []


def test_resumed_trials_run_first_under_their_own_numbers(tmp_path):
    study = memory_study()
    study.tell(study.ask(X), 0.5)  # 0: done
    study.enqueue_trial({"x": 0.3})
    left = optuna.trial.Trial(study, study.ask(X)._trial_id)  # 1: left running by an earlier driver
    launcher = FakeLauncher()
    _, study, _ = loop(tmp_path, launcher, n_jobs=2, n_trials=4, study=study, resumed=[left])
    assert [(i, [params_of(o)["x"] for o in jobs]) for i, jobs in launcher.calls][0] == (1, ["0.3"])
    assert [(i, len(o)) for i, o in launcher.calls] == [(1, 1), (2, 2)], "the resumed one alone, then new ones"
    assert [(t.number, t.state.name) for t in study.trials] == [(n, "COMPLETE") for n in range(4)]
    assert study.trials[1].value == 0.3


def stop_while_trial_1_runs(started: threading.Event, release: threading.Event, ended: list):
    """Trial 0 ends (as a Stop for the main thread) once trial 1 has started; trial 1 runs until released."""
    def outcome(number, params):
        if number == 0:
            started.wait(20)
            return job_return(JobStatus.FAILED, Stop(), number)
        started.set()
        release.wait(20)
        ended.append(number)
        return job_return(JobStatus.COMPLETED, 0.5, number)
    return outcome


def test_an_interrupt_cancels_the_jobs_still_running_and_waits_for_them(tmp_path):
    started, release = threading.Event(), threading.Event()

    class Cancellable(FakeLauncher):
        cancelled = 0

        def cancel(self):
            self.cancelled += 1
            release.set()

    ended: list[int] = []
    launcher = Cancellable(stop_while_trial_1_runs(started, release, ended), supports_concurrent_launch=True)
    with pytest.raises(Stop):
        loop(tmp_path, launcher, mode="async", n_jobs=2, n_trials=2)
    assert launcher.cancelled == 1
    assert ended == [1], "the sweeper waited for the cancelled job to stop"


def test_an_interrupt_with_a_launcher_that_cannot_cancel_does_not_wait(tmp_path):
    started, release = threading.Event(), threading.Event()
    ended: list[int] = []
    launcher = FakeLauncher(stop_while_trial_1_runs(started, release, ended), supports_concurrent_launch=True)
    try:
        with pytest.raises(Stop):
            loop(tmp_path, launcher, mode="async", n_jobs=2, n_trials=2)
        assert ended == [], "nothing to stop the job with: the sweeper does not wait for it"
    finally:
        release.set()


def test_a_finished_sweep_cancels_nothing(tmp_path):
    class Cancellable(FakeLauncher):
        cancelled = 0

        def cancel(self):
            self.cancelled += 1

    launcher = Cancellable(supports_concurrent_launch=True)
    loop(tmp_path, launcher, mode="async", n_jobs=2, n_trials=3)
    assert launcher.cancelled == 0
    batch = Cancellable()
    loop(tmp_path, batch, n_trials=2)
    assert batch.cancelled == 0


# --- a whole sweep, from sweep(arguments) ------------------------------------------------------------------------


def run_sweep(sweep_dir: Path, launcher, arguments=("x=interval(0,1)",), loader=None, cfg=None, **kw):
    sweep = attach(make_sweep(sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0}, **kw), launcher,
                   sweep_dir, loader, **(cfg or {}))
    return sweep, sweep.sweep(list(arguments))


def load(sweep_dir: Path, name: str = "s"):
    return optuna.load_study(study_name=name, storage=default_storage(sweep_dir))


def test_a_sweep_writes_its_files_runs_n_trials_and_logs_each_step(tmp_path, caplog):
    sweep_dir = tmp_path / "nested" / "sweep"
    launcher = BasicLauncher()
    loader = FakeLoader()
    with caplog.at_level(logging.INFO, logger="bincount"):
        sweep, returns = run_sweep(sweep_dir, launcher, ["model=tiny", "x=interval(0,1)"], loader=loader,
                                   cfg={"metric": None}, params={"x": "interval(0.5,0.6)", "y": "3"})
    storage = default_storage(sweep_dir)
    xs = random_xs(3)
    assert json.loads((sweep_dir / "sweep.json").read_text()) == {
        "storage": storage, "study_name": "s", "direction": "maximize", "optimized_metric": "val/acc"}
    assert OmegaConf.load(sweep_dir / "multirun.yaml") == sweep.config
    assert os.environ[ENV_STORAGE] == storage
    study = load(sweep_dir)
    assert [(t.number, t.state.name, t.value, t.params) for t in study.trials] == [
        (n, "COMPLETE", x, {"x": x}) for n, x in enumerate(xs)], "the command line's space wins over params"
    assert [t.user_attrs["overrides"] for t in study.trials] == [["y=3", "model=tiny", f"x={x}"] for x in xs]
    assert study.user_attrs == {"fixed_overrides": ["model=tiny", "y=3"], "search_space": ["x"]}
    assert [[r.return_value for r in batch] for batch in returns] == [[x] for x in xs]
    assert [i for i, _ in launcher.calls] == [0, 1, 2]
    assert [o for _, o in loader.calls] == [["y=3", "model=tiny", f"x={x}"] for x in xs]
    best = max(range(3), key=lambda n: xs[n])
    assert messages(caplog) == [
        f"Study s ({storage}): maximize val/acc, 0/3 trials done, up to 1 in flight (batch dispatch)",
        *(f"Trial {n} COMPLETE val/acc={x:.6g}" for n, x in enumerate(xs)),
        f"Best: trial {best}, val/acc = {xs[best]:.6g}, {{'x': {xs[best]!r}}}",
    ]


def test_a_rerun_continues_the_study_to_the_new_n_trials(tmp_path, caplog):
    run_sweep(tmp_path, FakeLauncher(), n_trials=2, enqueue_trials=[{"x": 0.25}])
    launcher = FakeLauncher()
    with caplog.at_level(logging.INFO, logger="bincount"):
        _, returns = run_sweep(tmp_path, launcher, n_trials=3, enqueue_trials=[{"x": 0.75}])
    assert [i for i, _ in launcher.calls] == [2]
    assert messages(caplog)[0].endswith(": maximize val/acc, 2/3 trials done, up to 1 in flight (batch dispatch)")
    study = load(tmp_path)
    assert study.trials[0].params == {"x": 0.25} and study.trials[2].params != {"x": 0.75}, \
        "enqueued trials only in a new study"
    assert len(study.trials) == 3 and len(returns) == 1


def test_a_sweep_with_a_given_storage_and_a_minimized_metric(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    launcher = FakeLauncher(supports_concurrent_launch=True)
    cfg = {"metric": "val/loss", "callbacks": {"model_checkpoint": {"mode": "max"}}}
    with caplog.at_level(logging.INFO, logger="bincount"):
        run_sweep(tmp_path / "sweep", launcher, cfg=cfg, storage=url, n_trials=2, n_jobs=2)
    assert sorted((i, len(jobs)) for i, jobs in launcher.calls) == [(0, 1), (1, 1)], "async: one trial per launch"
    assert not (tmp_path / "sweep" / "optuna.db").exists()
    study = optuna.load_study(study_name="s", storage=url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and len(study.trials) == 2
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["direction"] == "minimize"
    logged = messages(caplog)
    assert logged[0] == CHECKPOINT.format("max", "minimize", "min")
    assert logged[1] == f"Study s ({url}): minimize val/loss, 0/2 trials done, up to 2 in flight (async dispatch)"
    best = min(study.trials, key=lambda t: t.value)
    assert logged[-1] == f"Best: trial {best.number}, val/loss = {best.value:.6g}, {best.params}"
    assert os.environ[ENV_STORAGE] == url


def test_a_sweep_whose_trials_all_fail_logs_no_best(tmp_path, caplog):
    launcher = FakeLauncher(failing_first(10))
    with caplog.at_level(logging.INFO, logger="bincount"):
        run_sweep(tmp_path, launcher, n_trials=2, max_failure_rate=1)
    assert not any(m.startswith("Best:") for m in messages(caplog))
    assert [t.state.name for t in load(tmp_path).trials] == ["FAIL", "FAIL"]


PRUNER = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.1}


@pytest.mark.parametrize("pruner, make_launcher, prune", [
    (None, lambda: BasicLauncher(), False),
    (PRUNER, lambda: FakeLauncher(), False),  # a job elsewhere cannot reach the study
    (PRUNER, lambda: FakeLauncher(runs_locally=True), True),
    (PRUNER, lambda: FakeLauncher(prunes_jobs=True), True),  # the launcher reports for its jobs
    (PRUNER, lambda: BasicLauncher(), True),
    (None, lambda: FakeLauncher(runs_locally=True, prunes_jobs=True), False),
])
def test_pruning_is_on_with_a_pruner_and_a_launcher_that_can_report(tmp_path, caplog, monkeypatch, pruner,
                                                                    make_launcher, prune):
    opened = []

    def spy(*args):  # the real open_study; the test keeps the study it returned (Optuna stores no pruner)
        opened.append(open_study(*args))
        return opened[-1]

    monkeypatch.setattr(sweeper_mod, "open_study", spy)
    launcher = make_launcher()
    with caplog.at_level(logging.INFO, logger="bincount"):
        run_sweep(tmp_path, launcher, n_trials=1, pruner=dict(pruner) if pruner else None,
                  cfg={"pruner": pruner})
    assert messages(caplog)[0].endswith("(batch dispatch), pruning" if prune else "(batch dispatch)")
    [(number, [overrides])] = launcher.calls
    x = load(tmp_path).trials[0].params["x"]
    assert overrides == [f"x={x}", *(env_overrides("s", 0, pruner) if prune else [])]
    [study] = opened
    assert type(study.sampler) is optuna.samplers.RandomSampler
    assert type(study.pruner) is (optuna.pruners.ThresholdPruner if pruner else optuna.pruners.MedianPruner)


def test_a_sweep_warm_starts_from_an_earlier_sweep_and_counts_its_trials(tmp_path, caplog):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    old_sweep(tmp_path / "old", [(0.2, 1.0), (0.4, 3.0)], storage=shared)
    launcher = FakeLauncher()
    with caplog.at_level(logging.INFO, logger="bincount"):
        run_sweep(tmp_path / "new", launcher, n_trials=3, storage=shared, warm_start=str(tmp_path / "old"))
    study = optuna.load_study(study_name="s", storage=shared)
    assert [(t.params, t.value) for t in study.trials[:2]] == [({"x": 0.2}, 1.0), ({"x": 0.4}, 3.0)]
    assert [i for i, _ in launcher.calls] == [2], "the copied trials count towards n_trials"
    assert f"Study s: warm start from {tmp_path / 'old'}: 2 trial(s) copied, 0 outside this search space skipped" \
        in messages(caplog)
    assert messages(caplog)[-1] == "Best: trial 1, val/acc = 3, {'x': 0.4}"


def test_a_sweep_warm_starts_through_warm_start_storage(tmp_path):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    old_sweep(tmp_path / "old", [(0.2, 1.0)], storage=shared)
    run_sweep(tmp_path / "new", FakeLauncher(), n_trials=2, warm_start=str(tmp_path / "old"),
              warm_start_storage=shared)
    assert [t.user_attrs.get("warm_start_from") for t in load(tmp_path / "new").trials] == [
        f"{tmp_path / 'old'}#0", None]


def running_study(sweep_dir: Path, x: float = 0.3):
    """A study whose earlier driver stopped while trial 1 (x) ran; trial 0 had completed."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(default_storage(sweep_dir), "s", "maximize", None, None, [], ["x"])
    study.tell(study.ask(X), 0.9)
    study.enqueue_trial({"x": x})
    study.ask(X)
    return study


def test_a_launcher_that_reattaches_collects_the_running_trial_under_its_number(tmp_path, caplog):
    running_study(tmp_path)
    launcher = FakeLauncher(reattaches=True)
    with caplog.at_level(logging.INFO, logger="bincount"):
        run_sweep(tmp_path, launcher, n_trials=3)
    assert [(i, params_of(o[0])["x"]) for i, o in launcher.calls][0] == (1, "0.3")
    assert [i for i, _ in launcher.calls] == [1, 2]
    assert [(t.number, t.state.name) for t in load(tmp_path).trials] == [(0, "COMPLETE"), (1, "COMPLETE"),
                                                                         (2, "COMPLETE")]
    assert "Study s: 1 trial(s) left running by an earlier driver (1): re-attaching" in messages(caplog)


def test_without_reattaching_a_running_trial_is_failed_and_retried(tmp_path, caplog):
    running_study(tmp_path)
    launcher = FakeLauncher()
    with caplog.at_level(logging.INFO, logger="bincount"):
        run_sweep(tmp_path, launcher, n_trials=3)
    trials = load(tmp_path).trials
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"),
                                                          (3, "COMPLETE")]
    assert trials[1].user_attrs["interrupted"] is True and trials[2].params == {"x": 0.3}
    assert [i for i, _ in launcher.calls] == [2, 3]
    assert "Study s: 1 interrupted trial(s) marked FAIL and queued again" in messages(caplog)
    assert messages(caplog)[1].endswith(": maximize val/acc, 1/3 trials done, up to 1 in flight (batch dispatch)")


def test_a_sweep_enqueues_trials_in_a_new_study(tmp_path):
    launcher = FakeLauncher()
    run_sweep(tmp_path, launcher, n_trials=2, enqueue_trials=OmegaConf.create([{"x": 0.125}]))
    assert launcher.calls[0] == (0, [["x=0.125"]])


def test_a_setting_error_is_raised_before_the_sweep_dir_is_written(tmp_path):
    with pytest.raises(HydraException, match="n_jobs=0 is out of range"):
        run_sweep(tmp_path / "sweep", FakeLauncher(), n_jobs=0)
    assert not (tmp_path / "sweep").exists()


# --- warm start: which sweep.json, which storage, which trials ---------------------------------------------------


def old_sweep(sweep_dir: Path, trials, storage: str | None = None, name: str = "old",
              dists=None) -> str:
    """A finished sweep as the sweeper leaves it: a study with ``trials`` ((params or x, value or state)) and its
    sweep.json."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(sweep_dir)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for params, outcome in trials:
        params = params if isinstance(params, dict) else {"x": params}
        d = dists or {k: FloatDistribution(0, 2) if k == "x" else CategoricalDistribution(["a", "b", "c"])
                      for k in params}
        state = outcome if isinstance(outcome, TrialState) else TrialState.COMPLETE
        study.add_trial(create_trial(params=params, distributions={k: d[k] for k in params}, state=state,
                                     value=outcome if state == TrialState.COMPLETE else None))
    write_sweep_info(sweep_dir, storage, name, "maximize", "score")
    return storage


def plant(sweep_dir: Path, info) -> Path:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(info if isinstance(info, str) else json.dumps(info))
    return sweep_dir


def test_warm_start_copies_the_completed_trials_that_fit_this_space(tmp_path, caplog):
    old = tmp_path / "old"
    old_sweep(old, [(0.2, 1.0), (0.5, TrialState.FAIL), (0.7, 2.0), (0.3, TrialState.PRUNED), (1.5, 5.0),
                    ({"x": 0.4, "m": "a"}, 6.0), (1.0, 7.0), (0.0, 8.0)])
    study = memory_study()
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert warm_start(study, old, X) == 4
    assert [(t.number, t.state, t.params, t.value) for t in study.trials] == [
        (0, TrialState.COMPLETE, {"x": 0.2}, 1.0), (1, TrialState.COMPLETE, {"x": 0.7}, 2.0),
        (2, TrialState.COMPLETE, {"x": 1.0}, 7.0), (3, TrialState.COMPLETE, {"x": 0.0}, 8.0)]
    assert [t.user_attrs for t in study.trials] == [{"warm_start_from": f"{old}#{n}"} for n in (0, 2, 6, 7)]
    assert all(t.distributions == X for t in study.trials), "the trials take this sweep's distributions"
    assert messages(caplog) == [f"Study s: warm start from {old}: 4 trial(s) copied, 2 outside this search space "
                                "skipped"]


def test_warm_start_skips_a_choice_that_this_space_no_longer_has(tmp_path):
    """It raised ValueError from CategoricalDistribution.to_internal_repr instead of skipping the trial."""
    old = tmp_path / "old"
    old_sweep(old, [({"m": "a"}, 1.0), ({"m": "b"}, 2.0)])
    study = memory_study()
    assert warm_start(study, old, {"m": CategoricalDistribution(["b", "c"])}) == 1
    assert [(t.params, t.value) for t in study.trials] == [({"m": "b"}, 2.0)]


def test_warm_start_skips_a_value_of_another_kind(tmp_path):
    """A choice of strings earlier, a float range now: the old trials are outside this space, not an error."""
    old = tmp_path / "old"
    old_sweep(old, [({"m": "a"}, 1.0), ({"m": "b"}, 2.0)])
    study = memory_study()
    assert warm_start(study, old, {"m": FloatDistribution(0.0, 1.0)}) == 0
    assert study.trials == []


def test_warm_start_skips_trials_missing_a_parameter_or_off_an_int_step(tmp_path):
    old = tmp_path / "old"
    int_dists = {"n": IntDistribution(0, 10), "m": CategoricalDistribution(["a", "b", "c"])}
    old_sweep(old, [({"n": 4, "m": "a"}, 1.0), ({"n": 3, "m": "a"}, 2.0), ({"n": 4}, 3.0), ({"n": 6, "m": "b"}, 4.0)],
              dists=int_dists)
    study = memory_study()
    space = {"n": IntDistribution(0, 10, step=2), "m": CategoricalDistribution(["a", "b"])}
    assert warm_start(study, old, space) == 2
    assert [(t.params, t.value) for t in study.trials] == [({"n": 4, "m": "a"}, 1.0), ({"n": 6, "m": "b"}, 4.0)]


def test_a_study_with_trials_is_not_warm_started_again(tmp_path, caplog):
    old = plant(tmp_path / "old", {"study_name": "old", "storage": f"sqlite:///{tmp_path / 'elsewhere.db'}"})
    study = memory_study()
    study.tell(study.ask(X), 0.5)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert warm_start(study, old, X) == 0
    assert len(study.trials) == 1 and not (tmp_path / "elsewhere.db").exists()
    assert messages(caplog) == [f"Study s already has trials: warm_start={old} is not applied again"]


def test_an_empty_earlier_study_copies_nothing(tmp_path, caplog):
    old = tmp_path / "old"
    old_sweep(old, [(0.5, TrialState.FAIL)])
    study = memory_study()
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert warm_start(study, str(old), X) == 0
    assert study.trials == []
    assert messages(caplog) == [f"Study s: warm start from {old}: 0 trial(s) copied, 0 outside this search space "
                                "skipped"]


def test_warm_start_opens_a_storage_elsewhere_through_given_or_current(tmp_path):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    old_sweep(tmp_path / "old", [(0.2, 1.0)], storage=shared)
    assert warm_start(memory_study(), tmp_path / "old", X, given=shared) == 1
    assert warm_start(memory_study(), tmp_path / "old", X, current=shared) == 1
    with pytest.raises(StudyConfigError, match="not that sweep's own SQLite file"):
        warm_start(memory_study(), tmp_path / "old", X)


def test_warm_start_reads_sweep_json_even_for_a_study_with_trials(tmp_path):
    study = memory_study()
    study.tell(study.ask(X), 0.5)
    with pytest.raises(StudyConfigError) as err:
        warm_start(study, tmp_path, X)
    assert str(err.value) == f"hydra.sweeper.warm_start={tmp_path}: no sweep.json there (a bincount_optuna sweep " \
                             "dir has one)"


def test_a_missing_study_is_one_line_naming_it(tmp_path):
    old = tmp_path / "old"
    storage = old_sweep(old, [(0.2, 1.0)])
    plant(old, {"study_name": "gone\x1b[2J", "storage": storage})
    with pytest.raises(StudyConfigError) as err:
        warm_start(memory_study(), old, X)
    assert str(err.value) == (f"hydra.sweeper.warm_start={old}: cannot load study 'gone[2J' from {storage} "
                              "(KeyError: 'Record does not exist.')")


def test_a_storage_that_cannot_open_is_one_line_and_masked(tmp_path):
    old = plant(tmp_path / "old", {"study_name": "old", "storage": "sqlite:///x.db"})
    with pytest.raises(StudyConfigError) as err:
        warm_start(memory_study(), old, X, given="sqlite://tuner:hunter2@/x.db")
    assert str(err.value) == (
        f"hydra.sweeper.warm_start={old}: cannot load study 'old' from sqlite://tuner:***@/x.db (ArgumentError: "
        "Invalid SQLite URL: sqlite://tuner:***@/x.db Valid SQLite URL forms are: sqlite:///:memory: (or, sqlite://) "
        "sqlite:///relative/path/to/file.db sqlite:////absolute/path/to/file.db)")


def test_a_password_the_driver_quotes_in_its_error_is_hidden(tmp_path, monkeypatch):
    url = "postgresql://tuner:hunter2@db.example.com/optuna"

    def unreachable(study_name, storage):  # a database driver that quotes the URL and the password
        raise ConnectionError(f"could not connect to {storage}:\n  password 'hunter2' rejected")

    monkeypatch.setattr(optuna, "load_study", unreachable)
    old = plant(tmp_path / "old", {"study_name": "old", "storage": "postgresql://tuner:***@db.example.com/optuna"})
    with pytest.raises(StudyConfigError) as err:
        warm_start(memory_study(), old, X, given=url)
    masked = "postgresql://tuner:***@db.example.com/optuna"
    assert str(err.value) == (f"hydra.sweeper.warm_start={old}: cannot load study 'old' from {masked} "
                              f"(ConnectionError: could not connect to {masked}: password '***' rejected)")


@pytest.mark.parametrize("content, problem", [
    ("{not json", "is not readable JSON (JSONDecodeError: Expecting property name enclosed in double quotes: "
                  "line 1 column 2 (char 1))"),
    (b"\xff\xfe", "is not readable JSON (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: "
                  "invalid start byte)"),
    ('{"a":\n\n  ', "is not readable JSON (JSONDecodeError: Expecting value: line 3 column 3 (char 9))"),
    ([1, 2], "has no study_name or storage (a non-empty string each); it was not written by a bincount_optuna "
             "sweep"),
    ({"storage": "sqlite:///x.db"}, "has no study_name (a non-empty string each); it was not written by a "
                                    "bincount_optuna sweep"),
    ({"study_name": "s"}, "has no storage (a non-empty string each); it was not written by a bincount_optuna sweep"),
    ({"study_name": "", "storage": "sqlite:///x.db"}, "has no study_name (a non-empty string each); it was not "
                                                     "written by a bincount_optuna sweep"),
    ({"study_name": "s", "storage": 7}, "has no storage (a non-empty string each); it was not written by a "
                                        "bincount_optuna sweep"),
    ({"study_name": ["s"], "storage": ""}, "has no study_name or storage (a non-empty string each); it was not "
                                           "written by a bincount_optuna sweep"),
])
def test_a_broken_sweep_json_is_one_line_naming_the_file_and_the_problem(tmp_path, content, problem):
    sweep_dir = tmp_path / "old"
    sweep_dir.mkdir()
    if isinstance(content, bytes):
        (sweep_dir / "sweep.json").write_bytes(content)
    else:
        plant(sweep_dir, content)
    with pytest.raises(StudyConfigError) as err:
        read_info(sweep_dir)
    assert str(err.value) == f"hydra.sweeper.warm_start={sweep_dir}: {sweep_dir / 'sweep.json'} {problem}"
    with pytest.raises(StudyConfigError) as err:
        read_info(sweep_dir, asked_by="bincount sweep-report X")
    assert str(err.value) == f"bincount sweep-report X: {sweep_dir / 'sweep.json'} {problem}"


def test_read_info_without_a_file_says_so_and_returns_a_good_one_whole(tmp_path):
    (tmp_path / "sweep.json").mkdir()  # not a file
    with pytest.raises(StudyConfigError) as err:
        read_info(tmp_path, asked_by="whoever")
    assert str(err.value) == "whoever: no sweep.json there (a bincount_optuna sweep dir has one)"
    info = {"study_name": "s", "storage": "sqlite:///x.db", "direction": "maximize", "extra": [1]}
    assert read_info(plant(tmp_path / "good", info)) == info


def test_own_sqlite_is_an_existing_plain_sqlite_file_inside_the_dir(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "sub").mkdir(parents=True)
    db = sweep_dir / "optuna.db"
    db.write_bytes(b"")
    (sweep_dir / "sub" / "deep.db").write_bytes(b"")
    (tmp_path / "outside.db").write_bytes(b"")
    (sweep_dir / "link.db").symlink_to(tmp_path / "outside.db")
    assert own_sqlite(sweep_dir, f"sqlite:///{db}") == db.resolve()
    assert own_sqlite(sweep_dir, f"sqlite+pysqlite:///{db}") == db.resolve()
    assert own_sqlite(sweep_dir, f"sqlite:///{sweep_dir / 'sub' / 'deep.db'}") == (sweep_dir / "sub" / "deep.db")
    assert own_sqlite(sweep_dir, f"sqlite:///{sweep_dir}/sub/../optuna.db") == db
    monkeypatch.chdir(sweep_dir)
    assert own_sqlite(Path("."), "sqlite:///optuna.db") == db, "relative paths are from the working directory"
    (sweep_dir / "file:optuna.db").write_bytes(b"")
    assert own_sqlite(sweep_dir, "sqlite:///file:optuna.db") is None, "a file: name is a URI to SQLite"
    (sweep_dir / ":memory:").write_bytes(b"")
    assert own_sqlite(sweep_dir, "sqlite:///:memory:") is None, "SQLite opens no file for that name"
    assert own_sqlite(sweep_dir, "sqlite:///sub/deep.db") == sweep_dir / "sub" / "deep.db"
    for url in [f"sqlite:///{sweep_dir}/../outside.db", f"sqlite:///{sweep_dir}/link.db", f"sqlite:///{sweep_dir}/no.db",
                f"sqlite:///{sweep_dir / 'sub'}", f"sqlite:///{db}?mode=ro", f"sqlite:///file:{db}",
                "sqlite:///:memory:", "sqlite://", f"postgresql://u@h/{db}", "not a url", "::"]:
        assert own_sqlite(sweep_dir, url) is None, url


def test_source_storage_prefers_what_the_user_passed(tmp_path):
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    own = old_sweep(tmp_path / "old", [])
    secret = "postgresql://tuner:hunter2@db.example.com/optuna"
    masked = "postgresql://tuner:***@db.example.com/optuna"
    old = tmp_path / "old"
    assert source_storage(old, elsewhere, given="sqlite:///given.db", current=elsewhere, env={}) == "sqlite:///given.db"
    assert source_storage(old, elsewhere, current=elsewhere, env={ENV_STORAGE: "sqlite:///other.db"}) == elsewhere
    assert source_storage(old, masked, current=secret, env={ENV_STORAGE: secret + "2"}) == secret
    assert source_storage(old, masked, current="sqlite:///mine.db", env={ENV_STORAGE: secret}) == secret
    assert source_storage(old, masked, current=None, env={ENV_STORAGE: secret}) == secret
    assert source_storage(old, masked, current="", env={ENV_STORAGE: secret}) == secret
    assert source_storage(old, own, env={}) == own
    assert source_storage(old, own, given="", current="sqlite:///mine.db", env={ENV_STORAGE: ""}) == own


def test_source_storage_uses_this_processs_environment_by_default(tmp_path, monkeypatch):
    secret = "postgresql://tuner:hunter2@db.example.com/optuna"
    monkeypatch.setenv(ENV_STORAGE, secret)
    assert source_storage(tmp_path, "postgresql://tuner:***@db.example.com/optuna") == secret


def test_source_storage_refuses_anything_else_in_one_line(tmp_path):
    recorded = "postgresql://tuner:hunter2@db.example.com/optuna"
    with pytest.raises(StudyConfigError) as err:
        source_storage(tmp_path, recorded, current="sqlite:///mine.db", env={ENV_STORAGE: "sqlite:///env.db"})
    assert str(err.value) == (
        f"hydra.sweeper.warm_start={tmp_path}: its sweep.json names the storage "
        f"'postgresql://tuner:***@db.example.com/optuna', which is not that sweep's own SQLite file in {tmp_path}; "
        "not opened (whoever wrote sweep.json chose that URL). If that study is yours, pass its URL: "
        "hydra.sweeper.warm_start_storage=URL (or BINCOUNT_OPTUNA_STORAGE=URL when it holds a password)")
    with pytest.raises(StudyConfigError) as err:
        source_storage(tmp_path, "weird\x1b[2Jname", env={}, asked_by="bincount sweep-report D",
                       how_to_pass="--storage URL")
    assert str(err.value) == (
        f"bincount sweep-report D: its sweep.json names the storage 'weird[2Jname', which is not that sweep's own "
        f"SQLite file in {tmp_path}; not opened (whoever wrote sweep.json chose that URL). If that study is yours, "
        "pass its URL: --storage URL (or BINCOUNT_OPTUNA_STORAGE=URL when it holds a password)")


@pytest.mark.parametrize("url", [None, "", "sqlite:///x.db", "postgresql://tuner@db.example.com/o"])
def test_check_given_lets_a_url_without_a_password_through(url):
    assert check_given(url) is None


def test_check_given_refuses_a_password_without_showing_it():
    with pytest.raises(StudyConfigError) as err:
        check_given("postgresql://tuner:hunter2@db.example.com/o?sslmode=require")
    assert str(err.value) == (
        "hydra.sweeper.warm_start_storage='postgresql://tuner:***@db.example.com/o?sslmode=require' holds a password, "
        "which Hydra would save in multirun.yaml; set BINCOUNT_OPTUNA_STORAGE=URL instead (it is used when the "
        "sweep's sweep.json records that URL, masked)")


def test_the_sweeper_module_exports_what_the_plugin_uses():
    assert sweeper_mod.DISPATCH == ("auto", "async", "batch")
    assert sweeper_mod.STORAGE_KEY == "hydra.sweeper.storage"
    assert parse_space({"x": "interval(0,1)"}, [], __import__(
        "hydra.core.override_parser.overrides_parser", fromlist=["OverridesParser"]).OverridesParser.create()
    ).distributions == X
