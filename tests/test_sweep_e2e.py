"""End-to-end sweeps through ``python train.py -m`` on tiny models and tiny synthetic bins.

One Optuna sweep (module fixture) serves most tests: 4 trials of ``hparams_search=capstone_tuner``
with a searched ``data.augment`` whose bad value makes a trial fail inside the job, enqueued first so
the failure is certain. A second invocation of the same command with a larger ``n_trials`` continues
the study. The grid test uses the basic sweeper.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data=synthetic", "trainer=cpu", "model=tiny", "model.pretrained=false", "data.synthetic.num_images=60",
    "data.synthetic.size=64", "data.synthetic.workers=1", "data.img_size=32", "data.num_workers=0",
    "data.persistent_workers=false", "trainer.max_epochs=1", "callbacks.progress_bar=null",
    "callbacks.model_summary=null", "logger=none",
]
SWEEP = [
    "-m", "hparams_search=capstone_tuner", *TINY, "data.augment=choice(light,bogus)",
    "hydra.sweeper.sampler.seed=0", "hydra.sweeper.max_failure_rate=0.5",
    "hydra.sweeper.enqueue_trials=[{data.augment: bogus}]",
]
pytestmark = pytest.mark.slow


def train(args: list[str], data_dir: Path, log_dir: Path, check: bool = True, env: dict | None = None
          ) -> subprocess.CompletedProcess:
    env = {**os.environ, "BINCOUNT_DATA_DIR": str(data_dir), "BINCOUNT_LOG_DIR": str(log_dir), "HYDRA_FULL_ERROR": "1",
           **(env or {})}
    args = [*args, "report=false"]  # the per-run HTML report is another feature; keep the runs lean
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def study_of(sweep_dir: Path):
    info = json.loads((sweep_dir / "sweep.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=info["storage"])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def first_sweep(dirs):
    data_dir, log_dir = dirs
    proc = train([*SWEEP, "hydra.sweeper.n_trials=4"], data_dir, log_dir)
    sweep_dir = log_dir / "train" / "sweeps" / "capstone_tuner"
    trials = [(t.number, t.state, t.value, dict(t.params)) for t in study_of(sweep_dir).trials]
    return sweep_dir, trials, proc.stdout + proc.stderr


def test_sweep_optimises_a_validation_metric_and_records_the_failure(first_sweep):
    sweep_dir, trials, output = first_sweep
    assert (sweep_dir / "optuna.db").is_file()
    assert len(trials) == 4
    number, state, _, params = trials[0]
    assert state == optuna.trial.TrialState.FAIL and params["data.augment"] == "bogus"
    assert "Trial 0 FAIL: ConfigError: data.augment='bogus'" in output
    completed = [t for t in trials if t[1] == optuna.trial.TrialState.COMPLETE]
    assert completed, "the sweep went on after the failed trial"
    for number, _, value, params in completed:
        metrics = json.loads((sweep_dir / str(number) / "metrics.json").read_text())
        assert metrics["optimized_metric"] == "val/acc" and value == pytest.approx(metrics["val/acc"])
        overrides = (sweep_dir / str(number) / ".hydra" / "overrides.yaml").read_text()
        assert f"optimizer.lr={params['optimizer.lr']!r}" in overrides
    study = study_of(sweep_dir)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert all(study.trials[n].intermediate_values for n, *_ in completed), "pruning callback reported each epoch"


def test_sweep_report_files(first_sweep):
    sweep_dir, trials, output = first_sweep
    report = sweep_dir / "report"
    with open(report / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [t[0] for t in trials]
    assert rows[0]["status"] == "FAIL" and "bogus" in rows[0]["reason"]
    assert {"optimizer.lr", "data.batch_size", "val/acc", "overrides", "duration_s"} <= set(rows[0])
    assert (report / "objective.png").stat().st_size > 1000
    header = (report / "best_config.yaml").read_text().split("defaults:")[0]
    assert "python train.py experiment=capstone_resnet50_refined data=synthetic" in header
    assert "hparams_search=" not in header, "the one-run form must not start the sweep again"
    assert (report / "importances.png").is_file() or "no parameter importances" in output
    assert "Sweep: 4 trials" in output


def test_best_config_reruns_to_the_same_validation_metrics(first_sweep, dirs):
    sweep_dir, trials, _ = first_sweep
    data_dir, log_dir = dirs
    study = study_of(sweep_dir)
    best = json.loads((sweep_dir / str(study.best_trial.number) / "metrics.json").read_text())
    rerun_logs = log_dir / "rerun"
    train(["--config-dir", str(sweep_dir / "report"), "--config-name", "best_config"], data_dir, rerun_logs)
    [run] = list((rerun_logs / "train" / "runs").iterdir())
    again = json.loads((run / "metrics.json").read_text())
    for key in ("val/acc", "val/rmse", "val/mae"):
        assert again[key] == pytest.approx(best[key], abs=1e-6), key


def test_second_invocation_continues_the_study(first_sweep, dirs):
    sweep_dir, trials, _ = first_sweep
    data_dir, log_dir = dirs
    proc = train([*SWEEP, "hydra.sweeper.n_trials=5"], data_dir, log_dir)
    study = study_of(sweep_dir)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert [(t.number, t.state, t.value) for t in study.trials[:4]] == [t[:3] for t in trials]
    assert (sweep_dir / "4" / ".hydra").is_dir()
    assert "4/5 trials done" in proc.stdout + proc.stderr


def test_grid_with_the_basic_sweeper_gets_a_report(dirs):
    data_dir, log_dir = dirs
    proc = train(["-m", *TINY, "head=linear,coral"], data_dir, log_dir / "grid")
    [sweep_dir] = list((log_dir / "grid" / "train" / "multiruns").iterdir())
    with open(sweep_dir / "report" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["head"], r["status"]) for r in rows] == [("linear", "COMPLETE"), ("coral", "COMPLETE")]
    assert (sweep_dir / "report" / "best_config.yaml").is_file()
    assert "Sweep: 2 trials" in proc.stdout + proc.stderr


def test_two_trials_through_the_sagemaker_local_launcher(first_sweep, dirs):
    """Issue 4's launcher, local backend: each trial is a subprocess in an /opt/ml tree that re-runs
    train.py with the trial's overrides; the values must come back to the study. (first_sweep has
    rendered the shared synthetic data, so the two parallel jobs do not both render it.)"""
    preset = ROOT / "conf" / "hydra" / "launcher" / "sagemaker_local.yaml"
    assert preset.is_file(), f"{preset.relative_to(ROOT)} is missing (hydra/launcher=sagemaker_local is tracked)"
    data_dir, log_dir = dirs
    proc = train(["-m", "hparams_search=capstone_tuner", *TINY, "hydra/launcher=sagemaker_local",
                  "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.study_name=sm",
                  "hydra.sweeper.enqueue_trials=[]"], data_dir, log_dir / "sm")
    sweep_dir = log_dir / "sm" / "train" / "sweeps" / "sm"
    study = study_of(sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        metrics = json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["val/acc"])
    assert "up to 2 in flight (async dispatch), pruning" in proc.stdout + proc.stderr  # the launcher prunes its jobs
    assert re.search(r"bincount-0-\S+: log \S+/job0/opt/ml/job\.log", proc.stdout + proc.stderr), "where each job logs"
    assert len((sweep_dir / "report" / "trials.csv").read_text().splitlines()) == 3


# SQLite takes no user or password, so this dialect accepts a URL with them and ignores both: a sweep
# with a password in its storage URL runs here without a database server. sitecustomize registers it
# in every process the sweep starts (the driver, in-process jobs, sweep-report).
_DIALECT = """
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
class Dialect(SQLiteDialect_pysqlite):
    supports_statement_cache = True
    def create_connect_args(self, url):
        return super().create_connect_args(url._replace(username=None, password=None, host=None))
"""
_SITE = 'from sqlalchemy.dialects import registry\nregistry.register("sqlitepw", "pwdialect", "Dialect")\n'


def test_a_storage_password_reaches_no_file_of_the_sweep_and_no_output(first_sweep, dirs, tmp_path, monkeypatch):
    """Issue 14, item 7: the URL is in a config file (so Hydra would save and recompose it) and pruning
    is on (so each job needs it): the password is in no file of the log dir and in no output, yet the
    jobs report to the study and the end-of-sweep report opens it."""
    data_dir, log_dir = dirs
    password = "Planted-Sweep-Pw-5521"
    site = tmp_path / "site"
    site.mkdir()
    (site / "pwdialect.py").write_text(_DIALECT)
    (site / "sitecustomize.py").write_text(_SITE)
    url = f"sqlitepw://tuner:{password}@/{tmp_path / 'study.db'}"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "locked.yaml").write_text(f"defaults:\n  - train\n  - _self_\nhydra:\n  sweeper:\n    storage: {url}\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    logs = log_dir / "locked"
    proc = train(["--config-dir", str(conf), "--config-name", "locked", "-m", "hparams_search=capstone_tuner", *TINY,
                  "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=locked", "hydra.sweeper.enqueue_trials=[]"],
                 data_dir, logs, env=env)
    sweep_dir = logs / "train" / "sweeps" / "locked"
    report = subprocess.run([sys.executable, "-m", "bincount.cli", "sweep-report", str(sweep_dir)], cwd=ROOT,
                            env={**os.environ, **env, "BINCOUNT_OPTUNA_STORAGE": url}, capture_output=True, text=True,
                            timeout=300)
    output = proc.stdout + proc.stderr + report.stdout + report.stderr
    assert report.returncode == 0, output[-3000:]
    assert "Sweep: 2 trials" in proc.stdout + proc.stderr and "Sweep: 2 trials" in report.stdout
    leaked = [str(p) for p in logs.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaked and password not in output, leaked or "in the printed output"
    assert "tuner:***@" in (sweep_dir / "multirun.yaml").read_text(), "the masked URL is what was saved"
    monkeypatch.syspath_prepend(str(site))  # the dialect, in this process too
    exec(_SITE)
    study = optuna.load_study(study_name="locked", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.intermediate_values for t in study.trials), "each job reached the study through the environment"
