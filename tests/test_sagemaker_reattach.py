"""A sweep survives the machine that launched it (issue 16 item 6), on the launcher's local backend.

The launcher is killed with SIGKILL while two jobs run (its jobs live in their own sessions, as SageMaker
jobs live in AWS); rerunning the same command re-attaches to them instead of launching them again,
collects them, and finishes the study. ``hydra.sweeper.warm_start`` seeds a new study with an old one's trials.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
APP = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_app"


def command(sweep_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(APP / "sleep_app.py"), "-m", f"hydra.sweep.dir={sweep_dir}",
            f"hydra.launcher.source_dir={APP}", *extra]


def states(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/sagemaker_job.json")}


def study(sweep_dir: Path):
    return optuna.load_study(study_name="sleep", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


@pytest.mark.slow
def test_a_killed_launcher_is_rerun_and_reattaches_to_its_running_jobs(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "seconds=interval(6,6.5)"]
    first = subprocess.Popen(command(sweep_dir, *args), cwd=APP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while [s["status"] for s in states(sweep_dir).values()].count("InProgress") < 2:
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.1)
    before = states(sweep_dir)
    first.send_signal(signal.SIGKILL)  # no handler runs: the jobs are left running, as after a lost laptop
    first.wait(30)
    assert all(os.path.exists(f"/proc/{s['pid']}") for s in before.values()), "the jobs outlive their launcher"
    assert [t.state.name for t in study(sweep_dir).trials] == ["RUNNING", "RUNNING"]

    rerun = subprocess.run(command(sweep_dir, *args), cwd=APP, capture_output=True, text=True, timeout=180)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert out.count("re-attached (started by an earlier launch of this sweep)") == 2, out[-3000:]
    trials = study(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and [t.number for t in trials] == [0, 1, 2]
    after = states(sweep_dir)
    for n, saved in before.items():  # the same jobs, collected: none launched twice
        assert after[n]["name"] == saved["name"] and after[n]["status"] == "Completed"
        assert trials[n].value == pytest.approx(trials[n].params["seconds"]) == after[n]["return_value"]
    assert len({s["name"] for s in after.values()}) == 3


@pytest.mark.slow
def test_warm_start_seeds_a_new_study_with_the_old_trials(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    space = "seconds=interval(0.1,0.3)"
    assert subprocess.run(command(old, "hydra.sweeper.n_trials=2", space), cwd=APP, capture_output=True,
                          timeout=180).returncode == 0
    proc = subprocess.run(command(new, "hydra.sweeper.n_trials=3", f"hydra.sweeper.warm_start={old}", space), cwd=APP,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm start from" in proc.stdout + proc.stderr and "2 trial(s) copied" in proc.stdout + proc.stderr
    seeded, fresh = study(new).trials[:2], study(new).trials[2:]
    assert [t.params for t in seeded] == [t.params for t in study(old).trials]
    assert all(t.user_attrs["warm_start_from"].startswith(str(old)) for t in seeded)
    assert len(fresh) == 1 and list(states(new)) == [2], "only the one new trial ran a job"
    other = subprocess.run(command(tmp_path / "other", "hydra.sweeper.n_trials=1", "hydra.sweeper.warm_start="
                                   f"{old}", "seconds=interval(1,2)"), cwd=APP, capture_output=True, text=True,
                           timeout=180)
    assert "0 trial(s) copied, 2 outside this search space skipped" in other.stdout + other.stderr
