"""Early stopping of SageMaker sweep trials (issue 16 item 5), rehearsed on the launcher's local backend.

Each trial is a real tiny training job (a subprocess running the container command) with 20 epochs. The
job writes val/acc per epoch to its checkpoint dir; the launcher reads it, reports to the Optuna trial
and asks the study's pruner, here a threshold no tiny model reaches (val/acc >= 2), so every trial is
pruned at its first report: stopped mid-training, recorded PRUNED with its last value, its slot reused,
and the instance-time not spent in the job state and the sweep report.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data.synthetic.num_images=60", "data.synthetic.size=64", "data.synthetic.workers=1",
        "data.img_size=32", "data.batch_size=16", "data.num_workers=0", "data.persistent_workers=false",
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "logger=csv", "report=false"]
MAX_EPOCHS = 20


@pytest.mark.slow
def test_pruned_jobs_are_stopped_mid_training_and_recorded(tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *TINY, f"trainer.max_epochs={MAX_EPOCHS}",
           "hydra/launcher=sagemaker_local", "hydra.launcher.poll_interval_s=0.2", "hydra/sweeper=bincount_optuna",
           "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=2.0", "hydra.sweeper.n_trials=2",
           "hydra.sweeper.n_jobs=1", "hydra.sweeper.study_name=prune", "optimizer.lr=interval(1e-4,1e-2)",
           f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "BINCOUNT_DATA_DIR": str(tmp_path / "data"), "BINCOUNT_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "pruning" in out.split("dispatch)")[1][:20], "the sweeper prunes through this launcher"
    study = optuna.load_study(study_name="prune", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"], "both slots' trials ran and were pruned"
    for t in study.trials:
        job = json.loads((sweep_dir / str(t.number) / "sagemaker_job.json").read_text())
        assert job["status"] == "Pruned" and "pruned by the study's pruner after epoch" in job["reason"]
        assert 1 <= job["pruned_after_epochs"] < MAX_EPOCHS, "stopped mid-training"
        assert t.intermediate_values and t.value == pytest.approx(job["last_value"])  # its last value kept
        assert job["saved_s"] > 0 and job["billable_s"] > 0
        assert not (sweep_dir / str(t.number) / "metrics.json").exists(), "the run never reached its test"
        log = (sweep_dir / str(t.number) / "sagemaker_job.log").read_text()
        assert "BINCOUNT_OPTUNA" not in log, "the job never tries the study itself"
        assert f"Epoch {MAX_EPOCHS - 1}/" not in log
    with open(sweep_dir / "report" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["PRUNED", "PRUNED"] and all(float(r["saved_s"]) > 0 for r in rows)
    assert "pruning stopped 2 jobs early" in out
