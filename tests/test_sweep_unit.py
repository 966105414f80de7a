"""The sweeper's parts without training: search-space parsing, direction, study resume rules, how job
outcomes become trial states, the pruning handover, and the report on a hand-made grid dir.

Everything runs on real Optuna studies in sqlite files under tmp_path and real Hydra objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bincount.sweep import pruning  # noqa: E402
from bincount.sweep.outcome import tell  # noqa: E402
from bincount.sweep.space import SearchSpaceError, parse_space  # noqa: E402
from bincount.sweep.study import (StudyConfigError, counted_trials, open_study, recover_interrupted,  # noqa: E402
                                  resolve_direction)
from bincount.sweep.sweeper import OptunaSweep  # noqa: E402


def space(params=None, args=()):
    return parse_space(params, list(args), OverridesParser.create())


def test_space_maps_each_hydra_syntax_to_an_optuna_distribution():
    s = space({"optimizer.lr": "tag(log, interval(5e-5, 2e-3))", "data.batch_size": "choice(32, 64, 128)"},
              ["head.hidden_dropout=interval(0.3,0.6)", "trainer.max_epochs=int(interval(5,20))",
               "model=resnet50,efficientnet_b4", "data.img_size=range(64,257,64)", "model.pretrained=false"])
    d = s.distributions
    assert d["optimizer.lr"] == FloatDistribution(5e-5, 2e-3, log=True)
    assert d["data.batch_size"] == CategoricalDistribution((32, 64, 128))
    assert d["head.hidden_dropout"] == FloatDistribution(0.3, 0.6)
    assert d["trainer.max_epochs"] == IntDistribution(5, 20)
    assert d["model"] == CategoricalDistribution(("resnet50", "efficientnet_b4"))
    assert d["data.img_size"] == IntDistribution(64, 256, step=64)  # Hydra's range: stop excluded
    assert s.fixed == ["model.pretrained=false"]
    overrides = s.overrides({"optimizer.lr": 1e-4, "data.batch_size": 64, "head.hidden_dropout": 0.5,
                             "trainer.max_epochs": 7, "model": "resnet50", "data.img_size": 128})
    assert overrides[0] == "model.pretrained=false"
    assert "optimizer.lr=0.0001" in overrides and "model=resnet50" in overrides and "data.img_size=128" in overrides
    assert OverridesParser.create().parse_overrides(overrides)  # what the launcher gets parses back


def test_command_line_sweep_wins_over_config_params():
    s = space({"optimizer.lr": "interval(0.1, 0.2)"}, ["optimizer.lr=choice(0.5,0.6)"])
    assert s.distributions["optimizer.lr"] == CategoricalDistribution((0.5, 0.6))


@pytest.mark.parametrize("entry, message", [
    ("optimizer.lr=tag(log, interval(0, 1))", "start > 0"),
    ("optimizer.lr=interval(2, 1)", "start < end"),
    ("optimizer.lr=choice(1,", "cannot parse"),
    ("data.img_size=range(10,10,2)", "empty"),
])
def test_bad_search_space_names_the_entry(entry, message):
    with pytest.raises(SearchSpaceError, match=message) as err:
        space(None, [entry])
    assert entry.split("=")[0] in str(err.value)


def test_nothing_to_search_is_an_error():
    with pytest.raises(SearchSpaceError, match="nothing to search"):
        space(None, ["model=tiny"])


def test_direction_follows_the_metric_and_refuses_contradictions():
    assert resolve_direction("auto", "val/acc") == "maximize"
    assert resolve_direction("auto", "val/loss") == "minimize"
    assert resolve_direction("auto", "val/rmse") == "minimize"
    assert resolve_direction("maximize", "val/acc") == "maximize"
    with pytest.raises(StudyConfigError, match="contradicts"):
        resolve_direction("maximize", "val/rmse")
    with pytest.raises(StudyConfigError, match="hydra.sweeper.direction=maximize or minimize"):
        resolve_direction("auto", "val/mystery")
    with pytest.raises(StudyConfigError, match="valid"):
        resolve_direction("up", "val/acc")


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_rerun_continues_the_study_but_refuses_other_fixed_overrides(storage):
    dists = {"x": FloatDistribution(0, 1)}
    study = open_study(storage, "s", "maximize", None, None, ["model=tiny"], ["x"])
    study.tell(study.ask(dists), 0.5)
    again = open_study(storage, "s", "maximize", None, None, ["model=tiny"], ["x"])
    assert len(again.trials) == 1
    with pytest.raises(StudyConfigError, match=r"only then: \['model=tiny'\]; only now: \['model=resnet50'\]"):
        open_study(storage, "s", "maximize", None, None, ["model=resnet50"], ["x"])
    with pytest.raises(StudyConfigError, match="optimises maximize"):
        open_study(storage, "s", "minimize", None, None, ["model=tiny"], ["x"])


def test_interrupted_trials_are_failed_and_queued_again(storage):
    dists = {"x": FloatDistribution(0, 1)}
    study = open_study(storage, "s", "maximize", None, None, [], ["x"])
    study.tell(study.ask(dists), 0.5)
    left_running = study.ask(dists)  # the driver "died" here
    study = open_study(storage, "s", "maximize", None, None, [], ["x"])
    assert recover_interrupted(study) == 1
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs["interrupted"] is True
    assert counted_trials(study) == 1, "an interrupted trial does not use up the budget"
    assert study.ask(dists).params == left_running.params, "the interrupted trial is retried first"


def make_sweep(**kw) -> OptunaSweep:
    args = dict(sampler=None, pruner=None, direction="auto", study_name="s", storage=None, n_trials=4, n_jobs=1,
                dispatch="auto", max_failure_rate=0.5, params={}, enqueue_trials=[])
    return OptunaSweep(**{**args, **kw})


def job_return(status: JobStatus, value) -> JobReturn:
    ret = JobReturn()
    ret.status, ret.return_value = status, value
    return ret


@pytest.mark.parametrize("status, value, state, reason", [
    (JobStatus.COMPLETED, 0.75, TrialState.COMPLETE, None),
    (JobStatus.FAILED, RuntimeError("CUDA out of memory"), TrialState.FAIL, "RuntimeError: CUDA out of memory"),
    (JobStatus.FAILED, optuna.TrialPruned("pruned at epoch 2"), TrialState.PRUNED, "pruned at epoch 2"),
    (JobStatus.COMPLETED, None, TrialState.FAIL, "returned None"),
    (JobStatus.COMPLETED, float("nan"), TrialState.FAIL, "val/acc is nan"),
])
def test_job_outcomes_become_trial_states(storage, status, value, state, reason):
    study = optuna.create_study(storage=storage, direction="maximize")
    trial = study.ask({"x": FloatDistribution(0, 1)})
    failed = tell(study, trial, job_return(status, value), "val/acc")
    frozen = study.trials[0]
    assert frozen.state == state and failed == (state == TrialState.FAIL)
    assert frozen.value == (value if state == TrialState.COMPLETE else None)
    if reason:
        assert reason in frozen.user_attrs["fail_reason"]


def test_launcher_exception_fails_the_trial(storage):
    study = optuna.create_study(storage=storage)
    trial = study.ask({"x": FloatDistribution(0, 1)})
    assert tell(study, trial, ConnectionError("spot capacity"), "val/loss")
    assert "ConnectionError: spot capacity" in study.trials[0].user_attrs["fail_reason"]


def test_pruning_handover_reports_to_the_study_and_prunes(storage, monkeypatch):
    torch = pytest.importorskip("torch")
    study = optuna.create_study(storage=storage, study_name="p", direction="maximize")
    trial = study.ask({"x": FloatDistribution(0, 1)})
    monkeypatch.delenv(pruning.ENV_TRIAL, raising=False)
    assert pruning.pruning_callbacks("val/acc") == []  # not a sweep trial: nothing attached
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.9}  # not the default median pruner
    monkeypatch.setenv(pruning.ENV_STORAGE, storage)  # what pruning.export_storage sets in the sweeper's process
    for override in pruning.env_overrides("p", trial.number, pruner):  # what the sweeper passes the job
        key, value = override.removeprefix("+hydra.job.env_set.").split("=", 1)
        monkeypatch.setenv(key, str(OverridesParser.create().parse_override(f"k={value}").value()))
    [callback] = pruning.pruning_callbacks("val/acc")
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/acc": torch.tensor(0.5)})
    with pytest.raises(optuna.TrialPruned):
        callback.on_validation_end(trainer, SimpleNamespace(current_epoch=0))
    assert study.trials[0].intermediate_values == {0: 0.5}


def test_pruning_with_an_unreachable_study_warns_and_trains_on(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(pruning.ENV_STORAGE, f"sqlite:///{tmp_path / 'nope.db'}")
    monkeypatch.setenv(pruning.ENV_STUDY, "missing")
    monkeypatch.setenv(pruning.ENV_TRIAL, "0")
    assert pruning.pruning_callbacks("val/acc") == []
    assert "runs unpruned" in caplog.text


def write_job(sweep: Path, number: int, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 42, "head": {"name": overrides[0]}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_report_for_a_grid_dir_without_a_study(tmp_path, capsys):
    from bincount.cli import main

    sweep = tmp_path / "multirun"
    for i, (head, acc) in enumerate([("linear", 0.4), ("coral", 0.6), ("corn", 0.5)]):
        write_job(sweep, i, [f"head={head}", "trainer.max_epochs=1"],
                  {"objective": acc, "optimized_metric": "val/acc", "val/acc": acc, "val/rmse": 1 - acc, "duration_s": 3.0})
    write_job(sweep, 3, ["head=regression", "trainer.max_epochs=1"], None)  # failed or still running
    assert main(["sweep-report", str(sweep)]) == 0
    out = capsys.readouterr().out
    report = sweep / "report"
    rows = (report / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,status,objective,duration_s,head,")
    assert [r.split(",")[1] for r in rows[1:]] == ["COMPLETE", "COMPLETE", "COMPLETE", "INCOMPLETE"]
    best = (report / "best_config.yaml").read_text()
    assert "trial 1, val/acc = 0.6" in best and "python train.py head=coral trainer.max_epochs=1" in best
    assert yaml.safe_load(best)["head"] == {"name": "head=coral"}
    assert yaml.safe_load(best)["defaults"] == [{"hydra": "default"}, "_self_"]
    assert (report / "objective.png").stat().st_size > 1000
    assert "Best: trial 1" in out and "INCOMPLETE" in out


def test_report_of_a_tiny_study_explains_missing_importances(tmp_path, capsys):
    from bincount.sweep.report import write_report
    from bincount.sweep.study import write_sweep_info

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    url = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.create_study(storage=url, study_name="tiny", direction="minimize")
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), 0.3)
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), state=TrialState.FAIL)
    write_sweep_info(sweep, url, "tiny", "minimize", "val/loss")
    report = write_report(sweep)
    assert not (report / "importances.png").exists()
    assert "no parameter importances: 1 completed trial(s)" in capsys.readouterr().out
    assert len((report / "trials.csv").read_text().splitlines()) == 3


def test_report_cli_on_a_missing_dir_says_so(tmp_path, capsys):
    from bincount.cli import main

    assert main(["sweep-report", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_plugin_hook_and_callback_do_not_import_optuna():
    """Every run imports the plugin module (Hydra's scan), the report callback and the pruning hook."""
    import subprocess
    import sys

    code = ("import sys, hydra_plugins.bincount_optuna_sweeper.optuna_sweeper, bincount.sweep.callback; "
            "from bincount.sweep.pruning import pruning_callbacks; assert pruning_callbacks('val/acc') == []; "
            "heavy = [m for m in ('optuna', 'matplotlib', 'sqlalchemy') if m in sys.modules]; "
            "assert not heavy, heavy")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BINCOUNT_OPTUNA")}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


def test_warns_about_settings_that_undermine_the_sweep(caplog):
    from omegaconf import OmegaConf

    sweep = make_sweep(n_jobs=4)
    sweep.config = OmegaConf.create({"callbacks": {"model_checkpoint": {"mode": "max"}},
                                     "hydra": {"launcher": {"max_parallel_jobs": 2}}})
    sweep._warn_inconsistent("minimize")
    assert "set callbacks.model_checkpoint.mode=min" in caplog.text
    assert "at most 2 trials run at once" in caplog.text
    caplog.clear()
    sweep.config = OmegaConf.create({"callbacks": {"model_checkpoint": {"mode": "max"}}})
    sweep._warn_inconsistent("maximize")
    assert caplog.text == ""


def test_dispatch_settings_are_checked_against_the_launcher():
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra.errors import HydraException

    sweep = make_sweep(dispatch="async", n_jobs=2)
    sweep.launcher = BasicLauncher()
    with pytest.raises(HydraException, match="BasicLauncher does not. Valid: dispatch=batch or auto"):
        sweep._check_settings()
    sweep.dispatch = "auto"
    assert sweep._check_settings() == "batch" and sweep._local()
    sweep.dispatch = "sometimes"
    with pytest.raises(HydraException, match=r"dispatch='sometimes' is not valid; valid: \['auto', 'async', 'batch'\]"):
        sweep._check_settings()
    sweep.dispatch, sweep.n_trials = "batch", 0
    with pytest.raises(HydraException, match="n_trials=0 is out of range"):
        sweep._check_settings()


def test_report_cli_says_when_the_study_cannot_be_opened(tmp_path, capsys):
    from bincount.cli import main
    from bincount.sweep.study import write_sweep_info

    write_sweep_info(tmp_path, "postgresql://tuner:secret@127.0.0.1:1/optuna", "s", "maximize", "val/acc")
    assert "secret" not in (tmp_path / "sweep.json").read_text()
    assert main(["sweep-report", str(tmp_path), "--storage", f"sqlite:///{tmp_path / 'missing.db'}"]) == 1
    assert "cannot open study 's'" in capsys.readouterr().err
