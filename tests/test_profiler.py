"""``profiler=simple|advanced|pytorch`` and ``debug=profile``: real short trainings, files in the run directory,
the top time sinks in report.html, and a bad profiler key refused before training."""

from __future__ import annotations

import pytest
from helpers.train import TINY, compose_cfg

from bincount.config import ConfigError


def profiled_run(overrides, data_dir, tmp_path, monkeypatch):
    from bincount.train import train

    monkeypatch.setenv("BINCOUNT_DATA_DIR", str(data_dir))
    cfg = compose_cfg([*TINY, "debug=profile", "logger=csv", f"paths.output_dir={tmp_path}", *overrides], tmp_path)
    train(cfg)
    return tmp_path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("profile_data")


@pytest.mark.slow
def test_debug_profile_writes_the_simple_summary_and_the_report_shows_its_top_sinks(data_dir, tmp_path, monkeypatch):
    from bincount.report.profile import simple_rows

    run = profiled_run(["report=true"], data_dir, tmp_path, monkeypatch)
    summary = (run / "profile" / "fit-profile.txt").read_text()
    rows = simple_rows(summary)
    assert rows and rows == sorted(rows, key=lambda r: -r[3])
    assert "run_training_epoch" in [r[0] for r in rows]
    assert (run / "csv" / "metrics.csv").is_file()  # a short run, not a broken one
    page = (run / "report.html").read_text()
    assert "where the time went" in page and "profile/fit-profile.txt" in page and "run_training_epoch" in page


@pytest.mark.slow
def test_pytorch_profiler_leaves_an_operator_table_and_a_trace(data_dir, tmp_path, monkeypatch):
    run = profiled_run(["profiler=pytorch", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"],
                       data_dir, tmp_path, monkeypatch)
    assert list((run / "profile").glob("*.pt.trace.json")), sorted(p.name for p in (run / "profile").iterdir())
    assert "aten::" in (run / "profile" / "fit-profile.txt").read_text()  # operator-level times


def test_a_profiler_key_that_does_not_exist_is_refused_by_name(tmp_path):
    from bincount.config import check_config

    cfg = compose_cfg([*TINY, "profiler=simple", "+profiler.extendd=true"], tmp_path)
    with pytest.raises(ConfigError, match=r"profiler: .*SimpleProfiler has no argument 'extendd'.*extended"):
        check_config(cfg)
