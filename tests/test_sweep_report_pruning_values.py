"""Exact values of the sweep report (``bincount.sweep.report``) and the pruning hand-over
(``bincount.sweep.pruning``): which trial is best, what each trial row holds, what the written files say,
what the billing line sums and rounds, and which decisions and messages the pruning hand-over makes.

Everything here is built by hand in ``tmp_path``: job dirs as Hydra writes them, real SQLite Optuna
studies, a rich Console that records. Nothing trains.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bincount.sweep import pruning
from bincount.sweep.report import (
    ReportError,
    Trial,
    _job_state,
    _metrics,
    _overrides,
    best_trial,
    billing_summary,
    from_job_dirs,
    from_study,
    job_dirs,
    single_run_overrides,
    write_best_config,
    write_csv,
    write_report,
)
from bincount.sweep.study import ENV_STORAGE, write_sweep_info

optuna = pytest.importorskip("optuna")
from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

T0 = dt.datetime(2024, 1, 1, 12, 0, 0)


def job(sweep: Path, name: str | int, overrides: list | None = None, metrics: dict | None = None,
        state: dict | str | None = None, config: dict | None = None, hydra: dict | str | None = None) -> Path:
    """A job dir as Hydra (and the SageMaker launcher) leave it."""
    d = sweep / str(name)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if state is not None:
        (d / "sagemaker_job.json").write_text(state if isinstance(state, str) else json.dumps(state))
    if config is not None:
        (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if hydra is not None:
        (d / ".hydra" / "hydra.yaml").write_text(hydra if isinstance(hydra, str) else yaml.safe_dump(hydra))
    return d


def recorded(console) -> str:
    return console.export_text()


def rich_console():
    from rich.console import Console

    return Console(record=True, width=200, color_system=None)


# --------------------------------------------------------------------------------------------------
# billing_summary: sums over the jobs, rounding, and which parts the line has


def _jobs(*states: dict | None) -> list[Trial]:
    return [Trial(i, "COMPLETE", job=dict(s) if s else {}) for i, s in enumerate(states)]


BILLING_CASES = {
    "no SageMaker job at all": (lambda: _jobs(None, None), None),
    "missing and None values count as 0; no spot or pruning part": (
        lambda: _jobs({"billable_s": 540, "cost_usd": 0.5, "status": "Completed"},
                      {"billable_s": 66, "cost_usd": None, "status": "Completed"},
                      {"status": "Failed"}, None),
        "SageMaker: 3 jobs, 10.1 billable instance-minutes, $0.50"),
    "spot savings summed and rounded to cents": (
        lambda: _jobs({"billable_s": 90, "cost_usd": 0.125, "spot_saved_usd": 0.3, "status": "Completed"},
                      {"billable_s": 30, "cost_usd": 0.2, "spot_saved_usd": 0.016, "status": "Completed"},
                      {"billable_s": None, "spot_saved_usd": None, "status": "Failed"}),
        "SageMaker: 3 jobs, 2.0 billable instance-minutes, $0.33 (spot saved $0.32)"),
    "a zero spot saving says nothing": (
        lambda: _jobs({"billable_s": 60, "cost_usd": 1.0, "spot_saved_usd": 0.0, "status": "Completed"}),
        "SageMaker: 1 jobs, 1.0 billable instance-minutes, $1.00"),
    "pruned jobs: their count, the minutes and dollars not spent": (
        lambda: _jobs({"billable_s": 300, "cost_usd": 0.2, "status": "Pruned", "saved_s": 900.0, "saved_usd": 0.704},
                      {"billable_s": 100, "cost_usd": 0.1, "status": "Pruned", "saved_s": 300.0, "saved_usd": 0.2347},
                      {"billable_s": 800, "cost_usd": 0.7, "spot_saved_usd": 1.5, "status": "Completed",
                       "saved_s": None, "saved_usd": None}),
        "SageMaker: 3 jobs, 20.0 billable instance-minutes, $1.00 (spot saved $1.50); pruning stopped 2 jobs early, "
        "about 20.0 instance-minutes ($0.94) not spent"),
    "a pruned job without an estimate saves 0": (
        lambda: _jobs({"billable_s": 45, "cost_usd": 0.05, "status": "Pruned", "saved_s": None, "saved_usd": None}),
        "SageMaker: 1 jobs, 0.8 billable instance-minutes, $0.05; pruning stopped 1 jobs early, "
        "about 0.0 instance-minutes ($0.00) not spent"),
    "only status Pruned counts as pruned": (
        lambda: _jobs({"billable_s": 60, "cost_usd": 0.1, "status": "Stopped", "saved_s": 60, "saved_usd": 0.1},
                      {"billable_s": 60, "cost_usd": 0.1, "status": "pruned", "saved_s": 60, "saved_usd": 0.1}),
        "SageMaker: 2 jobs, 2.0 billable instance-minutes, $0.20"),
}


@pytest.mark.parametrize("make,expected", BILLING_CASES.values(), ids=BILLING_CASES.keys())
def test_billing_summary_line(make, expected):
    assert billing_summary(make()) == expected


# --------------------------------------------------------------------------------------------------
# best_trial


def _ranked():
    return [Trial(0, "COMPLETE", 0.5), Trial(1, "PRUNED", 0.99), Trial(2, "COMPLETE", 0.7), Trial(3, "FAIL", 0.01),
            Trial(4, "COMPLETE", None), Trial(5, "COMPLETE", 0.2), Trial(6, "COMPLETE", 0.7), Trial(7, "RUNNING")]


@pytest.mark.parametrize("direction,number", [("maximize", 2), ("minimize", 5)])
def test_best_trial_is_the_best_completed_objective(direction, number):
    """Pruned and failed trials never win, whatever their value; a tie goes to the earlier trial."""
    trials = _ranked()
    best = best_trial(trials, direction)
    assert best is trials[number] and best.number == number


def test_best_trial_without_a_completed_objective_is_none():
    assert best_trial([Trial(0, "PRUNED", 0.9), Trial(1, "COMPLETE", None), Trial(2, "FAIL")], "maximize") is None
    assert best_trial([], "minimize") is None


# --------------------------------------------------------------------------------------------------
# write_csv: the exact file


def _csv_trials(tmp_path: Path) -> list[Trial]:
    return [
        Trial(0, "COMPLETE", 0.75, {"lr": "0.1", "head": "coral"}, ["head=coral", "lr=0.1"], 12.5,
              {"val/acc": 0.75, "val/loss": 0.5, "other/x": 1}, tmp_path / "0", "",
              {"billable_s": 100, "cost_usd": None, "saved_s": 1.0}),
        Trial(1, "FAIL", None, {"head": "corn"}, ["head=corn"], 3.0, {"val/acc": 0.1, "val/rmse": 2.5},
              tmp_path / "1", "RuntimeError: boom", {"saved_s": 2.0, "reason": "the job's own reason"}),
        Trial(2, "INCOMPLETE", None, {}, [], None, {"val/acc": 0.2}, None, "",
              {"saved_s": 3.0, "reason": "Spot capacity"}),
        Trial(3, "COMPLETE", 0.5, {"lr": "1e-3"}, ["lr=1e-3", "seed=1"], 1.25, {"val/acc": 0.5}, tmp_path / "3",
              "", {"saved_s": 0.5}),
    ]


def test_trials_csv_has_every_column_that_has_a_value_and_nothing_else(tmp_path):
    """Params sorted; key metrics in KEY_METRICS order, only those some trial has (val/acc: all, val/rmse:
    one, test/acc: none); job columns with a non-None value somewhere (cost_usd only None: left out); the
    reason is the trial's, else its job's, else empty; an absent job dir is an empty cell."""
    path = tmp_path / "trials.csv"
    write_csv(path, _csv_trials(tmp_path))
    assert path.read_bytes().decode() == (
        "number,status,objective,duration_s,head,lr,val/acc,val/loss,val/rmse,billable_s,saved_s,overrides,job_dir,"
        "reason\r\n"
        f"0,COMPLETE,0.75,12.5,coral,0.1,0.75,0.5,,100,1.0,head=coral lr=0.1,{tmp_path / '0'},\r\n"
        f"1,FAIL,,3.0,corn,,0.1,,2.5,,2.0,head=corn,{tmp_path / '1'},RuntimeError: boom\r\n"
        "2,INCOMPLETE,,,,,0.2,,,,3.0,,,Spot capacity\r\n"
        f"3,COMPLETE,0.5,1.25,,1e-3,0.5,,,,0.5,lr=1e-3 seed=1,{tmp_path / '3'},\r\n")


def test_trials_csv_of_trials_without_metrics_or_jobs(tmp_path):
    path = tmp_path / "trials.csv"
    write_csv(path, [Trial(7, "RUNNING"), Trial(8, "WAITING", overrides=["a=1", "b=2"])])
    assert path.read_bytes().decode() == ("number,status,objective,duration_s,overrides,job_dir,reason\r\n"
                                          "7,RUNNING,,,,,\r\n"
                                          "8,WAITING,,,a=1 b=2,,\r\n")


# --------------------------------------------------------------------------------------------------
# reading job dirs


def test_the_small_readers_give_empty_values_for_what_is_not_there(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert (_metrics(None), _job_state(None), _overrides(None)) == ({}, {}, [])
    assert (_metrics(bare), _job_state(bare), _overrides(bare)) == ({}, {}, [])
    full = job(tmp_path, "full", ["a=1", "b=x=y"], {"objective": 0.5}, {"status": "Pruned"})
    assert (_metrics(full), _job_state(full), _overrides(full)) == ({"objective": 0.5}, {"status": "Pruned"},
                                                                    ["a=1", "b=x=y"])
    broken = job(tmp_path, "broken", state="{not json")
    (broken / ".hydra" / "overrides.yaml").write_text("")
    assert (_job_state(broken), _overrides(broken)) == ({}, [])


def test_job_dirs_are_numbered_and_sorted_by_number(tmp_path):
    for name in ("10", "2", "0"):
        job(tmp_path, name)
    (tmp_path / "5").mkdir()  # no .hydra/overrides.yaml: not a job dir
    (tmp_path / "7" / ".hydra").mkdir(parents=True)
    (tmp_path / "3").write_text("a file")
    (tmp_path / "optuna.db").write_text("")
    found = job_dirs(tmp_path)
    assert list(found) == [0, 2, 10]
    assert found == {0: tmp_path / "0", 2: tmp_path / "2", 10: tmp_path / "10"}


def test_job_dirs_not_named_by_a_number_come_after_every_number(tmp_path):
    job(tmp_path, "alpha")
    job(tmp_path, "beta")
    found = job_dirs(tmp_path)
    assert list(found) == [1_000_000, 1_000_001]
    assert set(found.values()) == {tmp_path / "alpha", tmp_path / "beta"}
    only = tmp_path / "only"
    only.mkdir()
    job(only, "name")
    assert job_dirs(only) == {1_000_000: only / "name"}


def test_a_grids_trials_from_its_job_dirs(tmp_path):
    """COMPLETE with an objective; INCOMPLETE without (a reason only when metrics.json is missing); the
    parameters are the overrides whose value differs, or which some job lacks; values may hold '='."""
    d0 = job(tmp_path, 0, ["head=coral", "trainer.max_epochs=1", "model.lr=1e-3", "~callbacks.x", "data.path=a=b"],
             {"objective": 0.6, "optimized_metric": "val/acc", "val/acc": 0.6, "duration_s": 3.5},
             {"status": "Completed", "billable_s": 60})
    d1 = job(tmp_path, 1, ["head=corn", "trainer.max_epochs=1", "data.path=a=b"], {"val/acc": 0.2})
    d2 = job(tmp_path, 2, ["head=linear", "trainer.max_epochs=1", "data.path=a=c"], state="{broken")
    assert from_job_dirs(tmp_path) == [
        Trial(0, "COMPLETE", 0.6, {"head": "coral", "model.lr": "1e-3", "data.path": "a=b"},
              ["head=coral", "trainer.max_epochs=1", "model.lr=1e-3", "~callbacks.x", "data.path=a=b"], 3.5,
              {"objective": 0.6, "optimized_metric": "val/acc", "val/acc": 0.6, "duration_s": 3.5}, d0, "",
              {"status": "Completed", "billable_s": 60}),
        Trial(1, "INCOMPLETE", None, {"head": "corn", "data.path": "a=b"},
              ["head=corn", "trainer.max_epochs=1", "data.path=a=b"], None, {"val/acc": 0.2}, d1, "", {}),
        Trial(2, "INCOMPLETE", None, {"head": "linear", "data.path": "a=c"},
              ["head=linear", "trainer.max_epochs=1", "data.path=a=c"], None, {}, d2,
              "no metrics.json: failed or still running", {}),
    ]


def test_a_grid_where_nothing_varies_has_no_parameters(tmp_path):
    job(tmp_path, 0, ["seed=1", "head=coral"], {"objective": 0.1})
    job(tmp_path, 1, ["seed=1", "head=coral"], {"objective": 0.2})
    assert [t.params for t in from_job_dirs(tmp_path)] == [{}, {}]


# --------------------------------------------------------------------------------------------------
# from_study


def _frozen(state, value=None, params=None, user_attrs=None, start=None, seconds=None):
    t = create_trial(state=state, value=value, params=params or {},
                     distributions={k: FloatDistribution(0, 1) for k in (params or {})}, user_attrs=user_attrs or {})
    t.datetime_start = start
    t.datetime_complete = start + dt.timedelta(seconds=seconds) if seconds is not None else None
    return t


@pytest.fixture
def study_sweep(tmp_path):
    """A sweep dir whose SQLite file holds two studies; ``main`` has a finished trial whose job dir is
    elsewhere, a failed one, a running one and a waiting one."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    url = f"sqlite:///{sweep / 'optuna.db'}"
    other = optuna.create_study(storage=url, study_name="other", direction="maximize")
    other.add_trial(_frozen(TrialState.COMPLETE, 0.99, {"x": 0.9}, start=T0, seconds=1))
    study = optuna.create_study(storage=url, study_name="main", direction="maximize")
    elsewhere = job(tmp_path, "elsewhere", ["x=0.25"], {"val/acc": 0.8, "duration_s": 7.0},
                    {"status": "Completed", "cost_usd": 0.1})
    job(sweep, 0, ["x=0.0"], {"val/acc": 0.0, "duration_s": 1.0}, {"status": "Failed"})  # not trial 0's: its attr wins
    study.add_trial(_frozen(TrialState.COMPLETE, 0.8, {"x": 0.25},
                            {"job_dir": str(elsewhere), "overrides": ["x=0.25", "head=coral"]}, T0, 90.5))
    study.add_trial(_frozen(TrialState.FAIL, None, {"x": 0.5}, {"fail_reason": "RuntimeError: boom"}, T0, 10))
    running = job(sweep, 2, [], {"duration_s": 4.0}, {"status": "InProgress", "billable_s": 30})
    study.add_trial(_frozen(TrialState.RUNNING, None, {"x": 0.75}, start=T0 + dt.timedelta(hours=1)))
    study.enqueue_trial({"x": 0.1})
    write_sweep_info(sweep, url, "main", "maximize", "val/acc")
    return SimpleNamespace(dir=sweep, url=url, elsewhere=elsewhere, running=running)


def test_a_studys_trials_take_states_params_durations_from_the_study_and_metrics_from_jobs(study_sweep, monkeypatch):
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    info = json.loads((study_sweep.dir / "sweep.json").read_text())
    study, trials = from_study(study_sweep.dir, info, None)
    assert study.study_name == "main"
    assert trials == [
        Trial(0, "COMPLETE", 0.8, {"x": 0.25}, ["x=0.25", "head=coral"], 90.5, {"val/acc": 0.8, "duration_s": 7.0},
              study_sweep.elsewhere, "", {"status": "Completed", "cost_usd": 0.1}),
        Trial(1, "FAIL", None, {"x": 0.5}, [], 10.0, {}, None, "RuntimeError: boom", {}),
        Trial(2, "RUNNING", None, {"x": 0.75}, [], 4.0, {"duration_s": 4.0}, study_sweep.running, "",
              {"status": "InProgress", "billable_s": 30}),
        Trial(3, "WAITING", None, {}, [], None, {}, None, "", {}),
    ]


def test_the_given_storage_wins_over_the_recorded_one(study_sweep, monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    moved = tmp_path / "moved.db"
    moved.write_bytes((study_sweep.dir / "optuna.db").read_bytes())
    info = {"storage": "sqlite:////nowhere/optuna.db", "study_name": "main"}
    _, trials = from_study(study_sweep.dir, info, f"sqlite:///{moved}")
    assert [(t.number, t.status) for t in trials] == [(0, "COMPLETE"), (1, "FAIL"), (2, "RUNNING"), (3, "WAITING")]


def test_a_foreign_storage_is_not_opened_and_the_error_says_how_to_pass_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    info = {"storage": "postgresql://tuner:***@db.example/optuna", "study_name": "s"}
    with pytest.raises(ReportError) as caught:
        from_study(tmp_path, info, None)
    assert str(caught.value) == (
        f"bincount sweep-report {tmp_path}: its sweep.json names the storage "
        f"'postgresql://tuner:***@db.example/optuna', which is not that sweep's own SQLite file in {tmp_path}; "
        "not opened (whoever wrote sweep.json chose that URL). If that study is yours, pass its URL: "
        "--storage URL (or BINCOUNT_OPTUNA_STORAGE=URL when it holds a password)")


def test_a_study_that_is_not_there_is_a_one_line_error(study_sweep, monkeypatch):
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    with pytest.raises(ReportError) as caught:
        from_study(study_sweep.dir, {"storage": study_sweep.url, "study_name": "gone"}, None)
    assert str(caught.value) == (
        f"cannot open study 'gone' at {study_sweep.url} (KeyError: 'Record does not exist.'); pass its storage URL "
        "in $BINCOUNT_OPTUNA_STORAGE (or with --storage)")


# --------------------------------------------------------------------------------------------------
# single_run_overrides and best_config.yaml


HYDRA_YAML = {"hydra": {"runtime": {"choices": {"head": "coral", "experiment": "abid_small"}}}}
SWEEP_OVERRIDES = ["hparams_search=abid", "+hydra.job.env_set.X='1'", "hydra.launcher.n_jobs=2", "head=coral",
                   "lr=0.1"]
RERUN_CASES = {
    "the sweep's own overrides go, the experiment it chose comes first": (
        SWEEP_OVERRIDES, HYDRA_YAML, ["experiment=abid_small", "head=coral", "lr=0.1"]),
    "nothing dropped: no experiment added": (["head=coral", "lr=0.1"], HYDRA_YAML, ["head=coral", "lr=0.1"]),
    "an experiment override already there is kept as it is": (
        ["hparams_search=abid", "lr=0.1", "experiment=mine"], HYDRA_YAML, ["lr=0.1", "experiment=mine"]),
    "no experiment among the choices": (
        ["hparams_search=abid", "lr=0.1"], {"hydra": {"runtime": {"choices": {"head": "coral"}}}}, ["lr=0.1"]),
    "no choices recorded": (["hydra.sweep.dir=x", "lr=0.1"], {"hydra": {"runtime": {}}}, ["lr=0.1"]),
    "an empty hydra.yaml": (["hparams_search=abid", "lr=0.1"], "", ["lr=0.1"]),
    "no hydra.yaml": (["hparams_search=abid", "lr=0.1"], None, ["lr=0.1"]),
    "only the sweep's overrides": (["hparams_search=abid"], HYDRA_YAML, ["experiment=abid_small"]),
}


@pytest.mark.parametrize("overrides,hydra,expected", RERUN_CASES.values(), ids=RERUN_CASES.keys())
def test_single_run_overrides(overrides, hydra, expected, tmp_path):
    d = job(tmp_path, 0, overrides, hydra=hydra)
    trial = Trial(0, "COMPLETE", 0.5, overrides=list(overrides), job_dir=d)
    assert single_run_overrides(trial) == expected
    assert trial.overrides == overrides  # the trial itself is not changed


def test_single_run_overrides_without_a_job_dir():
    assert single_run_overrides(Trial(0, "COMPLETE", overrides=SWEEP_OVERRIDES)) == ["head=coral", "lr=0.1"]


def test_best_config_is_the_rerun_header_and_the_jobs_config(tmp_path):
    sweep, report = tmp_path / "sweep", tmp_path / "sweep" / "report"
    d = job(sweep, 3, SWEEP_OVERRIDES, config={"seed": 7, "head": {"name": "coral"}}, hydra=HYDRA_YAML)
    report.mkdir()
    out = write_best_config(report, Trial(3, "COMPLETE", 0.8125, overrides=SWEEP_OVERRIDES, job_dir=d), "val/acc",
                            sweep)
    assert out == report / "best_config.yaml"
    assert out.read_text() == (
        f"# The best trial of {sweep} (trial 3, val/acc = 0.8125).\n"
        f"# Re-run it:  python train.py --config-dir {report} --config-name best_config\n"
        "# (or with its overrides: python train.py experiment=abid_small head=coral lr=0.1)\n"
        "# The defaults list pulls in the project's hydra settings (run dirs); every other value is below.\n"
        "defaults:\n"
        "  - hydra: default\n"
        "  - _self_\n"
        "\n"
        "seed: 7\n"
        "head:\n"
        "  name: coral\n")


@pytest.mark.parametrize("with_dir", [True, False])
def test_no_best_config_without_the_jobs_config(with_dir, tmp_path, caplog):
    d = job(tmp_path, 4, ["lr=0.1"]) if with_dir else None
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert write_best_config(tmp_path, Trial(4, "COMPLETE", 0.5, job_dir=d), "val/acc", tmp_path) is None
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("bincount.sweep.report", "WARNING", "Best trial 4 has no .hydra/config.yaml; no best_config.yaml")]
    assert not (tmp_path / "best_config.yaml").exists()


# --------------------------------------------------------------------------------------------------
# write_report: the whole report


def test_report_of_a_grid_minimizing_its_metric(tmp_path, monkeypatch):
    """val/loss is minimized: the lowest objective is best; the SageMaker jobs' line ends the output."""
    sweep = tmp_path / "grid"
    for i, (head, loss) in enumerate([("linear", 0.4), ("coral", 0.25), ("corn", 0.3)]):
        job(sweep, i, [f"head={head}", "seed=1"],
            {"objective": loss, "optimized_metric": "val/loss", "val/loss": loss, "duration_s": 10.0 + i},
            {"status": "Completed", "billable_s": 60.0, "cost_usd": 0.25}, config={"head": head})
    job(sweep, 3, ["head=regression", "seed=1"], state={"status": "Pruned", "billable_s": 30, "cost_usd": 0.05,
                                                         "saved_s": 90, "saved_usd": 0.15, "reason": "pruned at 1"})
    console = rich_console()
    report = write_report(sweep, console=console)
    assert report == sweep / "report"
    assert sorted(p.name for p in report.iterdir()) == ["best_config.yaml", "importances.png", "objective.png",
                                                       "trials.csv"]
    assert (report / "trials.csv").read_text().splitlines() == [
        "number,status,objective,duration_s,head,val/loss,billable_s,cost_usd,saved_s,saved_usd,overrides,job_dir,"
        "reason",
        f"0,COMPLETE,0.4,10.0,linear,0.4,60.0,0.25,,,head=linear seed=1,{sweep / '0'},",
        f"1,COMPLETE,0.25,11.0,coral,0.25,60.0,0.25,,,head=coral seed=1,{sweep / '1'},",
        f"2,COMPLETE,0.3,12.0,corn,0.3,60.0,0.25,,,head=corn seed=1,{sweep / '2'},",
        f"3,INCOMPLETE,,,regression,,30,0.05,90,0.15,head=regression seed=1,{sweep / '3'},"
        "no metrics.json: failed or still running",
    ]
    best = (report / "best_config.yaml").read_text()
    assert best.startswith(f"# The best trial of {sweep} (trial 1, val/loss = 0.25).\n"
                           f"# Re-run it:  python train.py --config-dir {report} --config-name best_config\n"
                           "# (or with its overrides: python train.py head=coral seed=1)\n")
    assert yaml.safe_load(best)["head"] == "coral"
    text = recorded(console)
    assert f"Best: trial 1, val/loss = 0.25; re-run: python train.py --config-dir {report} --config-name best_config" \
        in text
    assert ("SageMaker: 4 jobs, 3.5 billable instance-minutes, $0.80; pruning stopped 1 jobs early, about 1.5 "
            "instance-minutes ($0.15) not spent") in text
    assert "Sweep: 4 trials, objective val/loss" in text
    # A second report over the first one: no error (the plots are not under test there).
    from bincount.sweep import plots

    monkeypatch.setattr(plots, "objective_plot", lambda *a: None)
    monkeypatch.setattr(plots, "importance_plot", lambda *a: "no plot")
    assert write_report(sweep, console=rich_console()) == report
    assert (report / "trials.csv").read_text().splitlines()[2] == (
        f"1,COMPLETE,0.25,11.0,coral,0.25,60.0,0.25,,,head=coral seed=1,{sweep / '1'},")


@pytest.mark.parametrize("metrics,metric,best", [
    ({"optimized_metric": "val/custom_score"}, "val/custom_score", 0),  # direction unknown: maximize
    ({}, "val/acc", 0),  # no optimized_metric recorded: val/acc, maximized
    ({"optimized_metric": "val/mae"}, "val/mae", 1),
], ids=["unknown-direction-maximizes", "default-metric", "mae-minimizes"])
def test_a_grids_metric_and_direction(metrics, metric, best, tmp_path, monkeypatch):
    from bincount.sweep import plots

    monkeypatch.setattr(plots, "objective_plot", lambda *a: None)  # not under test here; matplotlib is slow
    monkeypatch.setattr(plots, "importance_plot", lambda *a: "no plot")
    sweep = tmp_path / "grid"
    job(sweep, 0, ["a=1"], {"objective": 0.9, **metrics}, config={"a": 1})
    job(sweep, 1, ["a=2"], {"objective": 0.1, **metrics}, config={"a": 2})
    console = rich_console()
    report = write_report(sweep, console=console)
    value = (0.9, 0.1)[best]
    assert (report / "best_config.yaml").read_text().startswith(
        f"# The best trial of {sweep} (trial {best}, {metric} = {value}).\n")
    assert f"Best: trial {best}, {metric} = {value}; re-run" in recorded(console)
    assert "SageMaker" not in recorded(console)


def test_report_of_a_study_uses_its_metric_and_direction(study_sweep, monkeypatch):
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    (study_sweep.elsewhere / ".hydra" / "config.yaml").write_text("x: 0.25\n")
    console = rich_console()
    report = write_report(study_sweep.dir, console=console)
    rows = (report / "trials.csv").read_text().splitlines()
    assert rows[0] == ("number,status,objective,duration_s,x,val/acc,billable_s,cost_usd,overrides,job_dir,reason")
    assert rows[1:] == [
        f"0,COMPLETE,0.8,90.5,0.25,0.8,,0.1,x=0.25 head=coral,{study_sweep.elsewhere},",
        "1,FAIL,,10.0,0.5,,,,,,RuntimeError: boom",
        f"2,RUNNING,,4.0,0.75,,30,,,{study_sweep.running},",
        "3,WAITING,,,,,,,,,",
    ]
    assert (report / "best_config.yaml").read_text().startswith(
        f"# The best trial of {study_sweep.dir} (trial 0, val/acc = 0.8).\n")
    text = recorded(console)
    assert "trial 1 failed: RuntimeError: boom" in text
    assert "no parameter importances: 1 completed trial(s), need at least 2" in text
    assert "SageMaker: 2 jobs, 0.5 billable instance-minutes, $0.10" in text


SWEEP_JSON_CASES = {
    "no optimized_metric": ({"storage": "sqlite:///x.db", "study_name": "s", "direction": "maximize"}, "no-metric"),
    "a metric that is not a string": (
        {"storage": "sqlite:///x.db", "study_name": "s", "direction": "maximize", "optimized_metric": 3}, "no-metric"),
    "no direction": ({"storage": "sqlite:///x.db", "study_name": "s", "optimized_metric": "val/acc"}, "no-metric"),
    "direction auto": ({"storage": "sqlite:///x.db", "study_name": "s", "optimized_metric": "val/acc",
                        "direction": "auto"}, "no-metric"),
    "no study name": ({"storage": "sqlite:///x.db", "direction": "maximize", "optimized_metric": "val/acc"},
                      "no-name"),
}


@pytest.mark.parametrize("info,kind", SWEEP_JSON_CASES.values(), ids=SWEEP_JSON_CASES.keys())
def test_a_sweep_json_the_report_cannot_use(info, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the relative sqlite:///x.db, if anything opens it, stays out of the repo
    (tmp_path / "sweep.json").write_text(json.dumps(info))
    job(tmp_path, 0, ["a=1"], {"objective": 0.5})
    with pytest.raises(ReportError) as caught:
        write_report(tmp_path, console=rich_console())
    expected = {
        "no-metric": f"bincount sweep-report {tmp_path}: its sweep.json has no optimized_metric or no direction "
                     "(minimize|maximize); it was not written by a bincount_optuna sweep",
        "no-name": f"bincount sweep-report {tmp_path}: {tmp_path / 'sweep.json'} has no study_name (a non-empty "
                   "string each); it was not written by a bincount_optuna sweep",
    }[kind]
    assert str(caught.value) == expected
    assert not (tmp_path / "report").exists()


def test_a_missing_or_empty_sweep_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        write_report(tmp_path / "nope")
    assert str(caught.value) == f"sweep dir {tmp_path / 'nope'} does not exist"
    (tmp_path / "5").mkdir()  # a dir, but not a job dir
    with pytest.raises(FileNotFoundError) as caught:
        write_report(tmp_path)
    assert str(caught.value) == f"{tmp_path} has no trials: no study (sweep.json) and no job dirs with .hydra/"
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------------------------------
# pruning: the hand-over to the job


PRUNER = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.9}
PRUNER_B64 = "eyJfdGFyZ2V0XyI6ICJvcHR1bmEucHJ1bmVycy5UaHJlc2hvbGRQcnVuZXIiLCAibG93ZXIiOiAwLjl9"


def test_env_overrides_are_three_quoted_env_set_overrides():
    assert pruning.env_overrides("abid-heads", 12, PRUNER) == [
        "+hydra.job.env_set.BINCOUNT_OPTUNA_STUDY='abid-heads'",
        "+hydra.job.env_set.BINCOUNT_OPTUNA_TRIAL='12'",
        f"+hydra.job.env_set.BINCOUNT_OPTUNA_PRUNER='{PRUNER_B64}'",
    ]
    assert pruning.env_overrides("s", 0) == [
        "+hydra.job.env_set.BINCOUNT_OPTUNA_STUDY='s'",
        "+hydra.job.env_set.BINCOUNT_OPTUNA_TRIAL='0'",
        "+hydra.job.env_set.BINCOUNT_OPTUNA_PRUNER='e30='",  # {}
    ]


@pytest.mark.parametrize("name", ["it's", "back\\slash", "both'\\"])
def test_a_study_name_with_a_quote_or_a_backslash_cannot_be_passed(name):
    with pytest.raises(ValueError) as caught:
        pruning.env_overrides(name, 1)
    assert str(caught.value) == ("cannot pass ['BINCOUNT_OPTUNA_STUDY'] to the trial: quotes and backslashes are not "
                                 "allowed there")


def test_export_storage_sets_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_STORAGE, "before")  # restored after the test
    pruning.export_storage("sqlite:///x.db")
    import os

    assert os.environ[ENV_STORAGE] == "sqlite:///x.db"


def test_job_pruned_is_a_runtime_error_with_its_reason():
    err = pruning.JobPruned("pruned after epoch 2 (val/acc = 0.31)")
    assert isinstance(err, RuntimeError) and str(err) == "pruned after epoch 2 (val/acc = 0.31)"


@pytest.fixture
def two_studies(tmp_path):
    """A SQLite storage with a decoy study and ``main``: trial 0 finished, trial 1 running."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    decoy = optuna.create_study(storage=url, study_name="decoy", direction="maximize")
    decoy.ask()
    study = optuna.create_study(storage=url, study_name="main", direction="maximize")
    study.tell(study.ask(), 0.5)
    running = study.ask()
    return SimpleNamespace(url=url, study=study, running=running)


def _env(s, number, pruner=None) -> dict:
    return {pruning.ENV_STUDY: "main", pruning.ENV_TRIAL: str(number), ENV_STORAGE: s.url,
            **({pruning.ENV_PRUNER: pruner} if pruner is not None else {})}


def test_no_trial_named_no_trial(monkeypatch):
    monkeypatch.delenv(pruning.ENV_TRIAL, raising=False)
    assert pruning.trial_from_env({}) is None
    assert pruning.trial_from_env({pruning.ENV_TRIAL: "", pruning.ENV_STUDY: "x"}) is None
    assert pruning.trial_from_env() is None
    assert pruning.pruning_callbacks("val/acc") == []


@pytest.mark.parametrize("pruner,kind", [(PRUNER_B64, "ThresholdPruner"), ("e30=", "MedianPruner"),
                                         ("", "MedianPruner"), (None, "MedianPruner")])
def test_the_running_trial_of_the_named_study_with_its_pruner(pruner, kind, two_studies):
    trial = pruning.trial_from_env(_env(two_studies, 1, pruner))
    assert isinstance(trial, optuna.trial.Trial)
    assert (trial.number, trial.study.study_name, type(trial.study.pruner).__name__) == (1, "main", kind)
    trial.report(0.7, step=0)
    assert two_studies.study.trials[1].intermediate_values == {0: 0.7}


@pytest.mark.parametrize("number", [0, 7])
def test_a_trial_that_is_not_running_gets_no_pruning(number, two_studies, caplog):
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert pruning.trial_from_env(_env(two_studies, number)) is None
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("bincount.sweep.pruning", "WARNING",
         f"Optuna trial {number} is not running in study main; no pruning for this job")]


def test_pruning_callbacks_report_each_epoch_and_prune_by_the_studys_pruner(two_studies, monkeypatch, caplog):
    """ThresholdPruner(lower=0.9) from the job's variables: 0.95 at epoch 0 goes on, 0.5 at epoch 1 is pruned;
    the sanity check reports nothing."""
    torch = pytest.importorskip("torch")
    for key, value in _env(two_studies, 1, PRUNER_B64).items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.INFO, logger="bincount"):
        [callback] = pruning.pruning_callbacks("val/acc")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("bincount.sweep.pruning", "INFO", "Optuna trial 1: reporting val/acc each epoch for pruning")]
    assert callback.monitor == "val/acc" and callback._trial.number == 1

    def epoch(n, value, sanity=False):
        trainer = SimpleNamespace(sanity_checking=sanity, callback_metrics={"val/acc": torch.tensor(value)})
        callback.on_validation_end(trainer, SimpleNamespace(current_epoch=n))

    epoch(0, 0.1, sanity=True)
    epoch(0, 0.95)
    with pytest.raises(optuna.TrialPruned, match=r"^Trial was pruned at epoch 1\.$"):
        epoch(1, 0.5)
    assert two_studies.study.trials[1].intermediate_values == pytest.approx({0: 0.95, 1: 0.5})


def test_pruning_callbacks_with_a_missing_study_warn_and_attach_nothing(two_studies, monkeypatch, caplog):
    for key, value in {**_env(two_studies, 1), pruning.ENV_STUDY: "gone"}.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert pruning.pruning_callbacks("val/acc") == []
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("bincount.sweep.pruning", "WARNING",
         "Cannot attach Optuna pruning (KeyError: 'Record does not exist.'); the trial runs unpruned")]


def test_pruning_callbacks_with_a_password_storage_warn_without_the_password(monkeypatch, caplog):
    monkeypatch.setenv(ENV_STORAGE, "postgresql://tuner:Hunter-2-pw@127.0.0.1:1/optuna")
    monkeypatch.setenv(pruning.ENV_STUDY, "s")
    monkeypatch.setenv(pruning.ENV_TRIAL, "0")
    monkeypatch.delenv(pruning.ENV_PRUNER, raising=False)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert pruning.pruning_callbacks("val/acc") == []
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith("Cannot attach Optuna pruning (") and message.endswith("); the trial runs unpruned")
    assert "Hunter-2-pw" not in message and "(NoneType" not in message and ": None)" not in message
