"""``python train.py`` refuses a credential in an override before Hydra writes anything.

Each case plants a secret where the issue found one leaking (``+paths.x`` lands in ``.hydra/``,
``resolved_config.yaml``, ``hparams.yaml`` and ``report.html``; ``env_set`` and launcher settings reach the
job's command and CloudWatch) and scans the whole working tree of the run for it afterwards: the run
must stop with a message naming the key, and the secret must appear in no output and no file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.secrets import AWS_KEY_ID, AWS_SECRET, WANDB_KEY, files_containing

ROOT = Path(__file__).resolve().parents[1]
# python train.py subprocesses, which train if the check they test is missing.
pytestmark = pytest.mark.slow
CASES = [  # (overrides, the secret planted, the key the message must name)
    ([f"+paths.x={AWS_SECRET}"], AWS_SECRET, "paths.x"),
    (["+wandb.api_key=planted-hunter2"], "planted-hunter2", "wandb.api_key"),
    ([f"+hydra.job.env_set.WANDB_API_KEY={WANDB_KEY}"], WANDB_KEY, "hydra.job.env_set.WANDB_API_KEY"),
    (["data.s3.endpoint_url=http://minio:planted-pw@127.0.0.1:9000"], "planted-pw", "data.s3.endpoint_url"),
    (["-m", "hydra/launcher=sagemaker_local", "+hydra.launcher.environment.DB_PASS=planted-pw2"], "planted-pw2",
     "hydra.launcher.environment.DB_PASS"),
    (["-m", "hydra/launcher=sagemaker_local", f"+hydra.launcher.tags.owner={AWS_KEY_ID}"], AWS_KEY_ID,
     "hydra.launcher.tags.owner"),
]


@pytest.mark.parametrize("overrides, secret, key", CASES, ids=[c[2] for c in CASES])
def test_train_py_refuses_a_planted_secret_and_writes_nothing(overrides, secret, key, tmp_path):
    env = {**os.environ, "BINCOUNT_LOG_DIR": str(tmp_path / "logs"), "BINCOUNT_DATA_DIR": str(tmp_path / "data"),
           "PROJECT_ROOT": str(tmp_path)}
    # A tiny run, so that without the check the planted secret would reach a run directory quickly.
    tiny = ["model=tiny", "data.synthetic.num_images=8", "data.img_size=32", "trainer.max_epochs=1", "report=false"]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, *tiny], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"train.py: refused: override {key!r}" in proc.stderr
    assert secret not in proc.stdout + proc.stderr
    assert files_containing(tmp_path, secret) == []
    assert not (tmp_path / "logs").exists(), "nothing is written before the check"


def test_hydra_flags_are_not_overrides(tmp_path):
    """``--config-dir`` takes a path, not a key: a directory named like a credential is no credential
    (Hydra's own parser splits flags from overrides), but a flag's value is still checked by shape."""
    conf = tmp_path / "password_store" / "conf"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\n")
    env = {**os.environ, "BINCOUNT_LOG_DIR": str(tmp_path / "logs")}
    run = [sys.executable, str(ROOT / "train.py"), "--config-dir", str(conf), "--config-name", "mine", "--cfg", "job"]
    proc = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    token = "hf_" + "Planted0Token1Shape2Only3abcdefghij"
    planted = tmp_path / token
    proc = subprocess.run([*run[:3], str(planted), *run[4:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "option 'config_dir': the value looks like a Hugging Face token" in proc.stderr
    assert token not in proc.stdout + proc.stderr
