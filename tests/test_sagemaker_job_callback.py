"""The job-side callback stops a real Hydra app whose config differs from the launcher's.

Hydra calls callbacks through ``Callbacks._notify``, which turns any ``Exception`` into a warning: a check
tested only by calling the hook directly passed while a real job trained on with a mismatched config.
Here the app runs as the container runs it: a Hydra script with the callback added by override.
"""

from __future__ import annotations

import os
import subprocess
import sys

from omegaconf import OmegaConf

from bincount.sagemaker.job.callback import config_sha
from bincount.sagemaker.job.contract import ENV_CONFIG_SHA

APP = """
import hydra

@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    print("TRAINED on a =", cfg.a)

main()
"""
CALLBACK = "+hydra.callbacks.bincount_sagemaker._target_=bincount.sagemaker.job.callback.JobCallback"


def run_app(tmp_path, sha: str, a: int = 1) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {**os.environ, ENV_CONFIG_SHA: sha}
    return subprocess.run([sys.executable, str(app), f"+a={a}", CALLBACK, f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_a_mismatched_config_stops_the_job_before_it_runs(tmp_path):
    launcher_sha = config_sha(OmegaConf.create({"a": 1}))
    done = run_app(tmp_path, launcher_sha, a=2)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "TRAINED" not in done.stdout
    assert "config hash mismatch: the job composed" in done.stderr and launcher_sha[:12] in done.stderr


def test_the_launchers_config_runs(tmp_path):
    done = run_app(tmp_path, config_sha(OmegaConf.create({"a": 1})), a=1)
    assert done.returncode == 0, done.stderr
    assert "TRAINED on a = 1" in done.stdout
