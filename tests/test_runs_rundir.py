"""Reading run directories (``bincount.compare.rundir``) on hand-made directories: every damaged file is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bincount.compare.rundir import RunError, find_runs, flatten, load_run, read_predictions, split_overrides


def make_run(path: Path, metrics: dict | str | None = None, config: str | None = "seed: 1\nhead: {name: linear}\n",
             overrides: str | None = "- seed=1\n", config_name: str = ".hydra/config.yaml") -> Path:
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        (path / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    if config is not None:
        (path / config_name).write_text(config)
    if overrides is not None:
        (path / ".hydra" / "overrides.yaml").write_text(overrides)
    return path


def test_flatten_makes_dotted_keys_and_keeps_lists():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}, "f": None}


def test_load_run_prefers_resolved_config_and_drops_run_specific_keys(tmp_path):
    run = make_run(tmp_path / "r", {"test/acc": 0.5}, config="seed: ${oc.env:X}\n")
    (run / "resolved_config.yaml").write_text(
        f"seed: 3\npaths: {{output_dir: {run}, log_dir: /logs}}\ntrainer: {{default_root_dir: {run}, max_epochs: 2}}\n")
    loaded = load_run(run)
    assert loaded.config == {"seed": 3, "paths.log_dir": "/logs", "trainer.max_epochs": 2}
    assert loaded.overrides == ["seed=1"] and loaded.sweep is None


def test_sweep_detected_from_multirun_yaml(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    assert load_run(make_run(tmp_path / "sweep" / "0", {"objective": 1.0})).sweep == tmp_path / "sweep"


@pytest.mark.parametrize("kwargs,message", [
    ({"metrics": "{not json"}, "metrics.json: malformed JSON"),
    ({"metrics": "[1, 2]"}, "metrics.json: expected a JSON object"),
    ({"metrics": None}, "metrics.json: missing"),
    ({"metrics": {}, "config": None}, "no config (resolved_config.yaml or .hydra/config.yaml)"),
    ({"metrics": {}, "config": "a: [unclosed\n"}, "config.yaml: unreadable YAML"),
    ({"metrics": {}, "config": "- a list\n"}, "config.yaml: expected a mapping"),
    ({"metrics": {}, "overrides": "seed: 1\n"}, "overrides.yaml: expected a list"),
])
def test_damaged_files_are_named(tmp_path, kwargs, message):
    with pytest.raises(RunError) as info:
        load_run(make_run(tmp_path / "r", **kwargs))
    assert message in str(info.value) and str(tmp_path / "r") in str(info.value)


def test_find_runs_reports_broken_and_keeps_the_rest(tmp_path):
    make_run(tmp_path / "a", {"test/acc": 0.1})
    make_run(tmp_path / "b", "{")
    make_run(tmp_path / "a" / "checkpoints" / "x", {"test/acc": 0.3})  # inside skipped folders: not a run
    make_run(tmp_path / "c")  # Hydra's config but no metrics.json yet: unfinished
    runs, problems, unfinished = find_runs(tmp_path)
    assert [r.path.name for r in runs] == ["a"] and unfinished == [tmp_path / "c"]
    assert len(problems) == 1 and str(tmp_path / "b" / "metrics.json") in problems[0]


def test_runs_command_mentions_unfinished_runs(tmp_path, capsys):
    from bincount.cli import main

    make_run(tmp_path / "done", {"test/acc": 0.1})
    make_run(tmp_path / "killed")
    assert main(["runs", str(tmp_path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert len(__import__("json").loads(captured.out)) == 1
    assert "1 run directory without metrics.json" in captured.err and str(tmp_path / "killed") in captured.err


def test_split_overrides():
    class R:
        def __init__(self, o):
            self.overrides = o

    common, own = split_overrides([R(["a=1", "b=2"]), R(["a=1", "b=3"])])
    assert common == ["a=1"] and own == [["b=2"], ["b=3"]]
    assert split_overrides([R(["a=1"])]) == ([], [["a=1"]])


@pytest.mark.parametrize("text,message", [
    ("id,true,pred\n", "not a predictions.csv"),
    ("", "not a predictions.csv"),
    ("id,true_count,pred_count,prob_1\n1,2,x,0.1\n", ":2: malformed row"),
    ("id,true_count,pred_count,prob_1\n1,2,2,0.1\n1,2,3,0.1\n", ":3: duplicate id '1'"),
])
def test_read_predictions_errors(tmp_path, text, message):
    path = tmp_path / "predictions.csv"
    path.write_text(text)
    with pytest.raises(RunError) as info:
        read_predictions(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_read_predictions(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("id,true_count,pred_count,prob_1,prob_2\n007,1,2,0.4,0.6\n")
    assert read_predictions(path) == {"007": (1, 2)}
    with pytest.raises(RunError, match="missing"):
        read_predictions(tmp_path / "nope.csv")


def test_sweep_best_follows_the_metric_direction(tmp_path, capsys):
    from bincount.cli import main

    for name, loss_sweep in (("acc_sweep", False), ("loss_sweep", True)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "multirun.yaml").write_text("hydra: {}\n")
        for job, value in (("0", 0.3), ("1", 0.7), ("2", 0.5)):
            metric = "val/loss" if loss_sweep else "val/acc"
            make_run(tmp_path / name / job, {"objective": value, "optimized_metric": metric, metric: value})
    assert main(["runs", str(tmp_path), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| acc_sweep | 3 | val/acc | 0.7000 | 1 |" in out
    assert "| loss_sweep | 3 | val/loss | 0.3000 | 0 |" in out
