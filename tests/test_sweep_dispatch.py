"""Dispatch: async keeps n_jobs trials in flight and starts one as soon as any finishes; batch waits for
the slowest; too many failures stop the sweep. The launcher here is a minimal Hydra ``Launcher`` whose
jobs sleep (no training): the thing under test is the sweeper's loop on a real Optuna study.
"""

from __future__ import annotations

import threading
import time

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

optuna = pytest.importorskip("optuna")

from bincount.sweep.space import parse_space  # noqa: E402
from bincount.sweep.sweeper import OptunaSweep  # noqa: E402


class SleepyLauncher(Launcher):
    """Runs each job on its own thread; trial 0 is slow. Records when each trial started and ended.

    With ``hold_first_for`` set, trial 0 does not sleep a fixed time: it waits until that many other trials
    have ended (or 30 s pass). A dispatcher that keeps a slot busy beside it releases it at once; one that
    waits for trial 0 first makes it time out. No race with the machine's load, unlike a fixed sleep.
    """

    supports_concurrent_launch = True

    def __init__(self, fail: bool = False, hold_first_for: int = 0) -> None:
        self.events: list[tuple[str, int, float]] = []
        self.lock = threading.Lock()
        self.others_ended = threading.Condition(self.lock)
        self.fail = fail
        self.hold_first_for = hold_first_for

    def _work(self, number: int) -> None:
        if number != 0:
            time.sleep(0.1)
        elif self.hold_first_for:
            with self.others_ended:
                self.others_ended.wait_for(
                    lambda: sum(1 for k, n, _ in self.events if k == "end" and n != 0) >= self.hold_first_for,
                    timeout=30)
        else:
            time.sleep(1.0)

    def setup(self, **kwargs) -> None:  # pragma: no cover - the sweeper is built by hand here
        pass

    def launch(self, job_overrides, initial_job_idx):
        results = []
        for i, overrides in enumerate(job_overrides):
            number = initial_job_idx + i
            with self.lock:
                self.events.append(("start", number, time.monotonic()))
            self._work(number)
            x = float(next(o.split("=", 1)[1] for o in overrides if o.startswith("x=")))
            ret = JobReturn()
            ret.status, ret.return_value = (JobStatus.FAILED, RuntimeError("boom")) if self.fail else (JobStatus.COMPLETED, x)
            with self.lock:
                self.events.append(("end", number, time.monotonic()))
                self.others_ended.notify_all()
            results.append(ret)
        return results


def run_loop(tmp_path, mode: str, n_jobs: int, n_trials: int, fail: bool = False, max_failure_rate: float = 0.5,
             validate=None, hold_first_for: int = 0):
    sweep = OptunaSweep(sampler=None, pruner=None, direction="maximize", study_name="d", storage=None,
                        n_trials=n_trials, n_jobs=n_jobs, dispatch=mode, max_failure_rate=max_failure_rate,
                        params={}, enqueue_trials=[])
    sweep.launcher = SleepyLauncher(fail=fail, hold_first_for=hold_first_for)
    sweep.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweep.validate_batch_is_legal = validate or (lambda batch: None)  # no Hydra config to compose against here
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize", study_name="d",
                                sampler=optuna.samplers.RandomSampler(seed=0), load_if_exists=True)
    space = parse_space(None, ["x=interval(0,1)"], OverridesParser.create())
    sweep._loop(study, space, mode, prune=False, metric="val/acc")
    return study, sweep.launcher.events


def _times(events, kind):
    return {n: t for k, n, t in events if k == kind}


def test_async_starts_a_new_trial_while_a_slow_one_runs(tmp_path):
    study, events = run_loop(tmp_path, "async", n_jobs=2, n_trials=5, hold_first_for=3)
    starts, ends = _times(events, "start"), _times(events, "end")
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert max(len([n for n in starts if starts[n] <= t < ends[n]]) for t in starts.values()) <= 2, "n_jobs cap"
    assert sum(1 for n in starts if n != 0 and starts[n] < ends[0]) >= 3, "trials 1.. ran beside the slow trial 0"
    assert [t.value for t in study.trials] == [t.params["x"] for t in study.trials]


def test_batch_waits_for_the_slowest_of_each_batch(tmp_path):
    study, events = run_loop(tmp_path, "batch", n_jobs=2, n_trials=4)
    starts, ends = _times(events, "start"), _times(events, "end")
    assert len(study.trials) == 4
    assert starts[2] >= ends[0] and starts[3] >= ends[0], "the second batch starts after the first one ended"


def test_too_many_failures_stop_the_sweep(tmp_path):
    with pytest.raises(HydraException, match=r"2 trials failed, more than max_failure_rate=0.2 x n_trials=6"):
        run_loop(tmp_path, "batch", n_jobs=1, n_trials=6, fail=True, max_failure_rate=0.2)
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert study.trials[0].user_attrs["fail_reason"] == "RuntimeError: boom"


def test_a_rerun_continues_to_n_trials_and_no_further(tmp_path):
    run_loop(tmp_path, "batch", n_jobs=1, n_trials=2)
    study, events = run_loop(tmp_path, "batch", n_jobs=1, n_trials=3)
    assert len(study.trials) == 3 and [n for k, n, _ in events if k == "start"] == [2]
    study, events = run_loop(tmp_path, "batch", n_jobs=1, n_trials=3)
    assert len(study.trials) == 3 and events == [], "the study is complete: nothing is launched"


def test_batch_checks_each_trial_composes_and_async_leaves_it_to_the_launch(tmp_path):
    checked = []

    def validate(batch):
        checked.append(batch)
        if float(batch[0][0].split("=")[1]) > 0.5:
            raise ValueError("no such choice")

    (tmp_path / "batch").mkdir()
    (tmp_path / "async").mkdir()
    study, events = run_loop(tmp_path / "batch", "batch", n_jobs=1, n_trials=4, validate=validate, max_failure_rate=1)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(t.user_attrs["fail_reason"] == "config does not compose: no such choice" for t in failed)
    assert {n for k, n, _ in events if k == "start"} == {t.number for t in study.trials if t.state.name == "COMPLETE"}
    checked.clear()
    study, _ = run_loop(tmp_path / "async", "async", n_jobs=2, n_trials=3, validate=validate)
    assert checked == [] and len(study.trials) == 3, "the concurrent launcher composes each trial itself"
