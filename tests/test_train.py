"""End-to-end: ``train.py`` through Hydra on tiny models and tiny synthetic bins.

Runs go through a real ``python train.py`` subprocess (what users type), except the experiment sweep,
which composes in-process to stay fast. Every run renders into one session-wide data directory, so the
synthetic dataset is rendered once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.train import ROOT, TINY, compose_cfg, read_csv, run_train, single_run_dir

EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.mark.slow
def test_single_run_leaves_config_checkpoints_metrics_and_predictions(data_dir, tmp_path):
    proc = run_train([], data_dir, tmp_path)
    run = single_run_dir(tmp_path)
    console = proc.stdout + proc.stderr
    assert console.count("Seed set to") == 1, console[-3000:]  # Lightning's messages once, in Hydra's format
    # Quiet logs (issue 17): no advert, the hardware lines once though two Trainers run, no noise on stderr.
    assert "litlogger" not in console and "already configured with model summary" not in console
    assert console.count("GPU available:") == 1 and "LeafSpec" not in proc.stderr, proc.stderr[-2000:]
    assert "Total FLOPs: 0\n" not in console, "the summary measures the model on an input of the run's size"
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "resolved_config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["optimized_metric"] == "val/acc"
    assert metrics["objective"] == metrics["val/acc"]
    for key in ("val/acc", "val/rmse", "val/mae", "val/within_one", "val/f1_macro", "test/acc", "test/rmse",
                "test/f1_weighted", "test/confusion_matrix", "data_quality"):
        assert key in metrics, key
    predictions = read_csv(run / "predictions.csv")
    test_size = sum(sum(row) for row in metrics["test/confusion_matrix"])
    assert len(predictions) == test_size > 0
    assert set(predictions[0]) == {"id", "true_count", "pred_count", *(f"prob_{c}" for c in range(1, 6))}
    accuracy = sum(p["true_count"] == p["pred_count"] for p in predictions) / len(predictions)
    assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["epochs_trained"] == 2
    assert (run / "csv" / "metrics.csv").is_file()
    assert any((run / "tensorboard").iterdir())
    # The run ends with how it did (issue 17): the table's numbers are metrics.json's, then the paths.
    tail = console[console.rindex("val     test"):]
    assert re.search(rf"accuracy +{metrics['val/acc']:.4f} +{metrics['test/acc']:.4f}$", tail, re.M), tail
    assert re.search(rf"RMSE +{metrics['val/rmse']:.4f} +{metrics['test/rmse']:.4f}$", tail, re.M), tail
    assert f"2 epochs, best epoch {int(metrics['best_checkpoint'][-8:-5])}, {test_size} test bins" in tail
    assert f"run directory: {run}" in tail
    assert (run / "train.log").read_text().count("run directory:") == 1


@pytest.mark.slow
def test_multirun_basic_launcher_runs_two_jobs(data_dir, tmp_path):
    run_train(["-m", "head=linear,coral", "trainer.max_epochs=1"], data_dir, tmp_path)
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    heads = [json.loads((j / "metrics.json").read_text()) and (j / ".hydra" / "overrides.yaml").read_text() for j in jobs]
    assert "head=linear" in heads[0] and "head=coral" in heads[1]


@pytest.mark.slow
def test_resume_after_kill_continues_from_last_checkpoint(data_dir, tmp_path):
    args = ["trainer.max_epochs=4", "callbacks.early_stopping=null", "data.synthetic.num_images=400"]
    env = {**os.environ, "BINCOUNT_DATA_DIR": str(data_dir), "BINCOUNT_LOG_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while not list((tmp_path / "train").glob("runs/*/checkpoints/last.ckpt")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # let the checkpoint file be complete (Lightning writes it atomically)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run = single_run_dir(tmp_path)
    assert not (run / "metrics.json").exists(), "the run was meant to be killed mid-way"
    killed_at = len(read_csv(run / "csv" / "metrics.csv"))

    result = run_train([*args, "resume=true"], data_dir, tmp_path)
    assert single_run_dir(tmp_path) == run, "resume=true must continue the same run directory"
    assert "Restoring states from the checkpoint" in result.stdout + result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 4
    epochs = {int(float(r["epoch"])) for r in read_csv(run / "csv" / "metrics.csv") if r.get("val/acc")}
    assert epochs == {0, 1, 2, 3} and killed_at > 0


class _Planted:
    """Unpickled, it would create ``path``: what a crafted checkpoint in a shared bucket could run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_that_carries_code(data_dir, tmp_path):
    """Issue 14, item 9: ``resume=true`` refuses ``last.ckpt`` unread (bincount.safe_checkpoint's own check,
    before Lightning's ``weights_only=True`` load)."""
    import torch

    run_train(["trainer.max_epochs=1"], data_dir, tmp_path)
    ckpt = single_run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    marker = tmp_path / "ran"
    state["planted"] = _Planted(str(marker))
    torch.save(state, ckpt)
    proc = run_train(["trainer.max_epochs=1", "resume=true"], data_dir, tmp_path, check=False)
    assert proc.returncode != 0 and f"{ckpt} would import ['__builtin__ exec']" in proc.stdout + proc.stderr
    assert not marker.exists(), "the planted code ran"


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(data_dir, tmp_path):
    run_train(["trainer=ddp_cpu", "trainer.max_epochs=1"], data_dir, tmp_path)
    run = single_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    predictions = read_csv(run / "predictions.csv")
    assert len(predictions) == sum(sum(r) for r in metrics["test/confusion_matrix"]) > 0
    assert len({p["id"] for p in predictions}) == len(predictions), "each test sample predicted exactly once"
    assert sorted(p["id"] for p in predictions) == split_ids(run, "test"), "and every test sample is there"


def split_ids(run: Path, split_name: str) -> list[str]:
    """The ids of one split of the run, from the manifest its resolved config builds (cached by the run)."""
    import yaml

    from bincount.manifest import ClassRange, build_manifest

    data = yaml.safe_load((run / "resolved_config.yaml").read_text())["data"]
    split = data["split"]
    manifest = build_manifest(data["root"], ClassRange(**data["classes"]), (split["train"], split["val"], split["test"]),
                              seed=split["seed"], progress=False)
    return sorted(r.id for r in manifest.split(split_name))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_runs_one_batch(experiment, data_dir, tmp_path, monkeypatch):
    from bincount.train import train

    monkeypatch.setenv("BINCOUNT_DATA_DIR", str(data_dir))
    cfg = compose_cfg([f"experiment={experiment}", "data=synthetic", "trainer=cpu", "debug=fast", *TINY,
                       "model.backbone=test_resnet", "model.pretrained=false", "data.batch_size=8",
                       f"paths.output_dir={tmp_path}", "logger=none"], tmp_path)
    assert cfg.tags, "every experiment tags its runs"
    train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["global_steps"] == 1


@pytest.mark.slow
def test_loggers_get_the_resolved_config_once_and_checkpoints_rebuild_the_model(data_dir, tmp_path, monkeypatch):
    """train() logs the whole resolved config; the module's own kwargs must not be merged in beside it
    (``backbone``, ``num_classes``... at the top level), yet the checkpoint still rebuilds the model."""
    import yaml

    from bincount.models.module import BinCounter
    from bincount.train import train

    monkeypatch.setenv("BINCOUNT_DATA_DIR", str(data_dir))
    cfg = compose_cfg([*TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
                       "+trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", f"paths.output_dir={tmp_path}",
                       "logger=default"], tmp_path)
    train(cfg)
    resolved = yaml.safe_load((tmp_path / "resolved_config.yaml").read_text())
    for logger in ("csv", "tensorboard"):
        logged = yaml.safe_load((tmp_path / logger / "hparams.yaml").read_text())
        assert logged == resolved, f"{logger}: extra {sorted(set(logged) - set(resolved))}"
    model = BinCounter.from_checkpoint(str(tmp_path / "checkpoints" / "last.ckpt"))
    assert model.hparams.backbone == cfg.model.backbone and model.hparams.num_classes == 5


def test_results_doc_has_a_row_per_experiment():
    """docs/results.md (which experiments/recommended.yaml points at) keeps one row per experiment file."""
    rows = [line for line in (ROOT / "docs" / "results.md").read_text().splitlines() if line.startswith("| `")]
    named = [line.split("`")[1] for line in rows]
    assert sorted(n for n in named if not n.startswith("python ")) == EXPERIMENTS  # the measured runs' rows aside
