"""Fixtures that several test files use, registered for all of them by ``tests/conftest.py``.

They import the SDK and boto3 when used, not when this plugin loads: a machine without the
sagemaker extra still collects every test file (the files that need it skip themselves).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto_server (S3 and the SageMaker API) on a free loopback port, one per test module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """Test credentials and endpoints pointing at ``moto_endpoint``, with ``helpers.sagemaker.BUCKET`` made."""
    import boto3

    from helpers.sagemaker import BUCKET

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL_S3": moto_endpoint, "AWS_ENDPOINT_URL_SAGEMAKER": moto_endpoint,
                 "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    return moto_endpoint


@pytest.fixture
def fake_sagemaker(aws, monkeypatch):
    """Records each CreateTrainingJob request and plays the container, which moto does not run.

    On fetch it uploads the output.tar.gz of ``fake.output(request)`` (file name -> content) where the
    job would leave it (``output_s3_uri=s3://BUCKET/out``), then the launcher's own fetch downloads it.
    ``request["_args"]`` is the job's command line after the entry module, read from the SDK's sm_train.sh.
    The archive is built by ``helpers.sagemaker.tarball``, looked up at each fetch (tests swap it).
    """
    import boto3

    from bincount.sagemaker import preflight, remote
    from helpers import sagemaker

    fake = SimpleNamespace(requests=[], output=lambda req: {"result.json": '{"status": "COMPLETED", "return_value": 1}'})

    def session(region):
        s = boto3.Session(region_name=region)
        s.events.register("before-parameter-build.sagemaker.CreateTrainingJob", lambda params, **_: fake.requests.append(params))
        return s

    original_fetch = remote.SageMakerBackend.fetch

    def fetch_after_fake_job(self, handle, local_dir):
        req = next(r for r in fake.requests if r["TrainingJobName"] == handle.name)
        script = sagemaker.read_s3(next(c for c in req["InputDataConfig"] if c["ChannelName"] == "sm_drivers")
                                   ["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/") + "/sm_train.sh").decode()
        req["_script"] = script
        req["_args"] = script.split("bincount.sagemaker.job.entry", 1)[1].split()
        boto3.client("s3").put_object(Bucket=sagemaker.BUCKET, Key=f"out/{handle.name}/output/output.tar.gz",
                                      Body=sagemaker.tarball(fake.output(req)))
        original_fetch(self, handle, local_dir)

    monkeypatch.setattr(preflight, "make_boto_session", session)
    monkeypatch.setattr(remote.SageMakerBackend, "fetch", fetch_after_fake_job)
    return fake
