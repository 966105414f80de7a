"""The CreateTrainingJob requests of a fixed sweep are what they were: a restructure of the launcher changes
no request (issue 26's goal), and any change to one shows up as a diff against a checked-in file.

A 2-job sweep of ``train.py``'s real config through the launcher and SDK v3 against moto_server (the
``fake_sagemaker`` fixture records each request). What legitimately differs between two runs is normalised:
job names and timestamps, content hashes (the code channel's, the config's, the sweep's), and the
machine's paths. ``BINCOUNT_UPDATE_GOLDEN=1`` rewrites the file after a change that is meant.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")
from helpers.sagemaker import BUCKET, ROLE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "create_training_job.json"
OVERRIDES = [
    "hydra/launcher=sagemaker", f"hydra.launcher.role={ROLE}", "hydra.launcher.region=us-east-1",
    f"hydra.launcher.output_s3_uri=s3://{BUCKET}/out", f"hydra.launcher.checkpoint_s3_uri=s3://{BUCKET}/ckpt",
    "hydra.launcher.instance_type=ml.g5.2xlarge", "hydra.launcher.instance_count=2", "hydra.launcher.spot=true",
    "hydra.launcher.max_wait_s=7200", "hydra.launcher.max_runtime_s=3600", "+hydra.launcher.tags.team=vision",
    "+hydra.launcher.environment.FOO=bar", "+hydra.launcher.secrets.WANDB_API_KEY=bincount/wandb",
    "hydra.launcher.payload=script", "hydra.launcher.poll_interval_s=0.1",
    "hydra/sweeper=basic", "model=resnet50", "optimizer.lr=1e-4,3e-4",
]


def normalised(value, root: str, tmp: str):
    """``value`` with what differs between two runs of the same sweep replaced by placeholders."""
    if isinstance(value, dict):
        return {k: normalised(v, root, tmp) for k, v in sorted(value.items()) if k not in ("TrainingJobName", "_script")}
    if isinstance(value, list):
        return [normalised(v, root, tmp) for v in value]
    if not isinstance(value, str):
        return value
    value = value.replace(root, "<repo>").replace(tmp, "<tmp>")
    value = re.sub(r"\d{8}-\d{6}(-\d+)?|\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}(-\d+)?", "<time>", value)
    return re.sub(r"[0-9a-f]{6,64}", "<hex>", value)


@pytest.mark.slow
def test_the_requests_of_a_fixed_sweep_are_unchanged(fake_sagemaker, hydra_sweep_runner, tmp_path, monkeypatch):
    from bincount.resolvers import register_resolvers

    register_resolvers()
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    sweep = hydra_sweep_runner(calling_file=str(ROOT / "train.py"), calling_module=None, task_function=None,
                               config_path="conf", config_name="train", temp_dir=tmp_path,
                               overrides=[*OVERRIDES, f"hydra.launcher.source_dir={ROOT}"])
    with sweep:
        assert len(sweep.returns[0]) == 2
    requests = sorted(fake_sagemaker.requests, key=lambda r: json.dumps(r.get("_args", []), sort_keys=True))
    got = normalised(requests, str(ROOT), str(tmp_path))
    if os.environ.get("BINCOUNT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
