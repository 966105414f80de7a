"""``bincount sweep-report``'s command line: its help names each argument and what it defaults to, and
``--storage`` reaches the report (a study in a storage other than sweep.json's own file)."""

from __future__ import annotations

import json

import pytest

from bincount.cli import main


def test_the_help_says_what_each_argument_is_and_its_default(capsys):
    assert main(["sweep-report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: bincount sweep-report [-h] [--storage STORAGE] sweep_dir" in text
    assert "sweep_dir a multirun dir (hydra.sweep.dir): Optuna or basic-sweeper grid" in text
    assert ("--storage STORAGE the study's storage URL when sweep.json's is not this sweep's own SQLite file "
            "(default: $BINCOUNT_OPTUNA_STORAGE when its masked form is the URL in SWEEP_DIR/sweep.json, which keeps "
            "a password out of the command line; else sweep.json's own SQLite file)") in text


def test_storage_given_on_the_command_line_is_the_one_read(tmp_path, capsys, monkeypatch):
    """sweep.json names a file that does not exist; --storage names where the study really is."""
    optuna = pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    real = f"sqlite:///{tmp_path / 'real.db'}"
    study = optuna.create_study(study_name="s", storage=real, direction="maximize")
    for x in (0.25, 0.75):
        study.enqueue_trial({"x": x})
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, x)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"study_name": "s", "storage": f"sqlite:///{tmp_path / 'gone.db'}",
                                                  "optimized_metric": "val/acc", "direction": "maximize"}))
    assert main(["sweep-report", str(sweep), "--storage", real]) == 0
    rows = (sweep / "report" / "trials.csv").read_text().splitlines()
    assert rows[0] == "number,status,objective,duration_s,x,overrides,job_dir,reason"
    assert [(r.split(",")[:3], r.split(",")[4]) for r in rows[1:]] == [(["0", "COMPLETE", "0.25"], "0.25"),
                                                                      (["1", "COMPLETE", "0.75"], "0.75")]
    assert not (tmp_path / "gone.db").exists()
