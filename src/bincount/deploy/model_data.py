"""The ``model.tar.gz`` an endpoint serves: a run or bundle directory, a training job, or an S3 URI.

A local bundle is checked (format version, weights hash) before anything is uploaded, packed with
its two files only (never a checkpoint), and put under the same ``s3://bucket/prefix`` the launcher
uses (``BINCOUNT_SM_S3``). A training job's artifact is the ``model.tar.gz`` its ``SM_MODEL_DIR``
became, which holds the bundle every run writes.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE
from bincount.bundle.format import check_weights, read_metadata
from bincount.bundle.load import find_bundle_dir
from bincount.s3.endpoint import parse_s3_url
from bincount.aws.names import resource_name


class DeployError(RuntimeError):
    """Something an endpoint cannot be made from, named with what to do instead."""


def pack_bundle(bundle_dir: Path, archive: Path) -> Path:
    """A ``model.tar.gz`` holding the bundle's two files at its top, as ``SM_MODEL_DIR`` would."""
    with tarfile.open(archive, "w:gz") as tar:
        for name in (BUNDLE_FILE, WEIGHTS_FILE):
            tar.add(bundle_dir / name, arcname=name)
    return archive


def upload_bundle(path: Path, s3_prefix: str, key_name: str, s3_client: Any) -> str:
    bundle_dir = find_bundle_dir(path)
    check_weights(bundle_dir, read_metadata(bundle_dir / BUNDLE_FILE))  # refuse a damaged bundle before paying
    bucket, prefix = parse_s3_url(s3_prefix)
    key = "/".join(p for p in (prefix, "models", key_name, "model.tar.gz") if p)
    with tempfile.TemporaryDirectory(prefix="bincount-deploy-") as tmp:
        archive = pack_bundle(bundle_dir, Path(tmp) / "model.tar.gz")
        with archive.open("rb") as body:
            s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def training_job_artifact(job_name: str, sagemaker_client: Any) -> str:
    resource_name("training job name", job_name)
    job = sagemaker_client.describe_training_job(TrainingJobName=job_name)
    status = job["TrainingJobStatus"]
    if status != "Completed":
        raise DeployError(f"training job {job_name} is {status}, not Completed: it has no model to deploy yet")
    return job["ModelArtifacts"]["S3ModelArtifacts"]


def model_data_url(model: str, *, s3_prefix: str | None, key_name: str, boto_session: Any, sagemaker_client: Any) -> str:
    """The S3 URI of the ``model.tar.gz`` for ``model``; uploads a local bundle first."""
    if model.startswith("s3://"):
        if not model.endswith(".tar.gz"):
            raise DeployError(f"{model} is not a model.tar.gz: SageMaker serves a .tar.gz "
                              "(pass the one a training job wrote, or a local run directory)")
        return model
    path = Path(model).expanduser()
    if path.exists():
        if not s3_prefix:
            raise DeployError(f"{model} is local and must be uploaded first: pass --s3 s3://bucket/prefix "
                              "or set BINCOUNT_SM_S3, as for the SageMaker launcher")
        return upload_bundle(path, s3_prefix, key_name, boto_session.client("s3"))
    if "/" in model or model.endswith(".tar.gz"):
        raise FileNotFoundError(f"model {model} does not exist (a run dir, bundle dir, training job name, "
                                "or s3://.../model.tar.gz)")
    return training_job_artifact(model, sagemaker_client)
