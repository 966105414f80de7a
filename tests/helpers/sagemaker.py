"""The SageMaker launcher's tests against moto_server: the bucket, the role, the job outputs a fake job leaves.

The fixtures that use these (``moto_endpoint``, ``aws``, ``fake_sagemaker``) are in ``helpers.fixtures``.
A test file that imports this module is skipped where the sagemaker extra is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")

from helpers.archives import tar_gz  # noqa: E402

BUCKET = "bincount-test"
ROLE = "arn:aws:iam::123456789012:role/SageMakerBincount"
# The newest PyTorch training image in the installed SDK's image config: the launcher's default.
NEWEST = max(__import__("sagemaker.core.image_uris", fromlist=["_"]).config_for_framework("pytorch")["training"]
             ["version_aliases"], key=lambda v: tuple(map(int, v.split("."))))

APP = Path(__file__).resolve().parents[1] / "sagemaker_app"
REMOTE = ["hydra/launcher=sagemaker_base", f"hydra.launcher.role={ROLE}", "hydra.launcher.region=us-east-1",
          f"hydra.launcher.output_s3_uri=s3://{BUCKET}/out", "hydra.launcher.poll_interval_s=0.1"]


def tarball(files: dict[str, str | bytes]) -> bytes:
    """An output.tar.gz holding ``files``, as the job's /opt/ml/output/data would become.

    ``fake_sagemaker`` looks this name up when a job ends, so a test may monkeypatch it here.
    """
    return tar_gz(files)


def read_s3(uri: str) -> bytes:
    import boto3

    bucket, key = uri[5:].split("/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def sweep_of(hydra_sweep_runner, sweep_dir: Path, overrides: list[str]):
    """A one-job sweep of Hydra's test app (a pickled task: payload=pickle)."""
    return hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                              config_path="configs", config_name="compose.yaml", temp_dir=str(sweep_dir),
                              overrides=overrides)
