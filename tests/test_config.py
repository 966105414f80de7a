"""Configs that catch mistakes before training: every message names the bad value and the choices."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bincount.config import ConfigError, check_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("overrides", [
    [],
    ["model=resnet50", "trainer=gpu"],
    ["model=efficientnet_b4", "data.batch_size=64", "trainer.max_epochs=15"],
    ["head=coral", "optimizer=sgd", "scheduler=onecycle"],
    ["head=regression", "scheduler=step", "trainer=ddp"],
    ["data=abid_sample", "head=mlp_bn", "scheduler=plateau"],
    ["data.interpolation=bilinear", "data.decode=gpu", "data.decode_device=cpu"],
])
def test_valid_configs_pass(overrides):
    check_config(compose_cfg(*overrides))


@pytest.mark.parametrize("overrides, expected", [
    (["+data.batchsize=3"], ["data.batchsize", "Did you mean 'batch_size'"]),
    (["data.batch_size=abc"], ["data.batch_size", "abc"]),
    (["model.pretrained=maybe"], ["model.pretrained", "maybe"]),
    (["model.backbone=resnet5O"], ["resnet5O", "resnet50"]),
    (["head.name=mpl"], ["mpl", "'mlp'", "coral"]),
    (["+head.hiden=3"], ["hiden", "dropout"]),
    (["data.augment=heavy"], ["heavy", "light"]),
    (["data.interpolation=lanczos"], ["lanczos", "bicubic"]),
    (["data.decode=nvjpeg"], ["nvjpeg", "cpu, gpu"]),
    (["model.freeze.policy=some"], ["some", "all_but_last"]),
    (["data.classes.min_count=6"], ["data.classes", "6"]),
    (["data.classes.overflow=wrap"], ["wrap", "clip"]),
    (["+optimizer.betas2=1"], ["betas2", "betas"]),
    (["+trainer.max_epoch=3"], ["max_epoch", "max_epochs"]),
    (["+callbacks.early_stopping.patiense=2"], ["patiense", "patience"]),
])
def test_mistakes_fail_with_the_bad_value_and_choices(overrides, expected):
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg(*overrides))
    for text in expected:
        assert text in str(err.value), (text, str(err.value))


def test_hydra_refuses_unknown_override_before_our_checks():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="batchsize"):
        compose_cfg("data.batchsize=3")


@pytest.mark.slow
def test_help_is_fast_and_lists_groups():
    started = time.time()
    out = subprocess.run([sys.executable, str(CONF.parent / "train.py"), "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert time.time() - started < 10
    for group in ("model:", "head:", "optimizer:", "scheduler:", "trainer:", "experiment:"):
        assert group in out


@pytest.mark.slow
def test_cli_mistake_fails_before_training(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(CONF.parent / "train.py"), "model.backbone=resnet5O", f"paths.log_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "resnet5O" in proc.stderr and "resnet50" in proc.stderr
    assert not list(tmp_path.glob("**/checkpoints"))


@pytest.mark.slow
def test_a_config_mistake_is_one_line_exit_2_and_leaves_no_run_directory(tmp_path):
    env = {**__import__("os").environ, "BINCOUNT_LOG_DIR": str(tmp_path / "logs"), "BINCOUNT_DATA_DIR": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, str(CONF.parent / "train.py"), "head.name=mpl"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "train.py: config error: head.name='mpl' is not a valid choice. Did you mean 'mlp'? "
        "Valid: ['coral', 'corn', 'linear', 'mlp', 'mlp_bn', 'regression']"]
    assert [p for p in (tmp_path / "logs").rglob("*") if p.is_file()] == [], "no half-empty run directory"
    proc = subprocess.run([sys.executable, str(CONF.parent / "train.py"), "head.name=mpl"], capture_output=True,
                          text=True, timeout=120, env={**env, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr, "HYDRA_FULL_ERROR=1 still shows the trace"


@pytest.mark.slow
def test_help_lists_hydra_launchers_and_sweepers():
    out = subprocess.run([sys.executable, str(CONF.parent / "train.py"), "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert re.search(r"^hydra/launcher: .*sagemaker_local", out, re.M) and "hydra/sweeper: basic, bincount_optuna" in out
