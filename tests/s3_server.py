"""Pytest fixtures for a real S3 server on loopback: ``moto_server`` started on a free port, stopped by PID.

Use from a test module with ``from s3_server import s3_endpoint, public_bucket, ...  # noqa: F401``.
Fixtures (session scope, so a test run starts one server):

- ``s3_endpoint``: ``http://127.0.0.1:PORT`` of a fresh ``moto_server``; fake credentials in the env.
- ``public_bucket``: a bucket named like ``aft-vbi-pds`` (public anonymous read, ABID layout at the
  bucket root) holding 60 synthetic bins (ids ``900001..900060``, counts ``TINY_COUNTS``) and, when
  the real 300-bin sample is found (beside the clone or at ``$BINCOUNT_ABID_SAMPLE``), that too. Returns a :class:`Bucket`.
- ``tiny_bucket``: ``s3://tiny-bins/abid`` with the 60 bins of ``tiny_abid`` (ids ``00001..00060``).

Helpers: :func:`s3_client`, :func:`make_public_bucket`, :func:`upload_abid`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import TINY_COUNTS, find_sample, write_abid

FAKE_KEY_ID = "AKIAFAKEKEYID4TESTS00"
FAKE_SECRET = "fakeSecretKeyThatMustNeverBeLogged0000000"
PUBLIC_BUCKET = "aft-vbi-pds"
SYNTHETIC_ID_OFFSET = 900000  # keeps synthetic ids clear of the real sample's 00001..


@dataclass
class Bucket:
    endpoint: str
    name: str
    prefix: str = ""
    synthetic_ids: list[str] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}".rstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as e:
            if getattr(e, "code", None):  # an HTTP error status: the server is up
                return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before answering on {url}") from None
            if time.time() > deadline:
                raise TimeoutError(f"no answer from {url} after {timeout:g} s") from None
            time.sleep(0.1)


def start_moto(port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``moto_server`` on 127.0.0.1 (a free port unless given); returns (process, endpoint URL)."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc, url


def stop_process(proc: subprocess.Popen) -> None:
    """Stop one process we started, by its own PID (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def s3_client(endpoint: str, unsigned: bool = False):
    from bincount.s3.endpoint import S3Config, get_client

    return get_client(S3Config(endpoint_url=endpoint, unsigned=unsigned, max_attempts=3))


def make_public_bucket(endpoint: str, name: str) -> None:
    """Create ``name`` with a policy granting anonymous ``s3:GetObject``/``s3:ListBucket`` (like ABID's)."""
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name)
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{name}/*"},
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{name}"},
    ]}
    client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))


def upload_abid(endpoint: str, bucket: str, local: Path, prefix: str = "", id_offset: int = 0) -> list[str]:
    """Upload ``local/{bin-images,metadata}`` under ``prefix``; returns the uploaded ids (sorted).

    ``id_offset`` renames numeric ids (``00001`` + 900000 -> ``900001``) so several sets share a bucket.
    """
    client = s3_client(endpoint)
    jobs = []
    for folder, suffix in (("bin-images", ".jpg"), ("metadata", ".json")):
        for path in sorted((Path(local) / folder).glob(f"*{suffix}")):
            id_ = f"{int(path.stem) + id_offset:06d}" if id_offset else path.stem
            key = "/".join(p for p in (prefix.strip("/"), folder, id_ + suffix) if p)
            jobs.append((path, key, id_))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: client.put_object(Bucket=bucket, Key=j[1], Body=j[0].read_bytes()), jobs))
    return sorted({id_ for _, key, id_ in jobs if "/metadata/" in f"/{key}"})


@pytest.fixture(scope="session")
def s3_endpoint():
    """A fresh ``moto_server`` on loopback; fake credentials and region for the session."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID=FAKE_KEY_ID, AWS_SECRET_ACCESS_KEY=FAKE_SECRET, AWS_DEFAULT_REGION="us-east-1")
    proc, url = start_moto()
    try:
        yield url
    finally:
        stop_process(proc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def public_bucket(s3_endpoint, tmp_path_factory) -> Bucket:
    """``aft-vbi-pds`` look-alike: 60 synthetic bins (ids 9000xx) plus the real sample when available."""
    make_public_bucket(s3_endpoint, PUBLIC_BUCKET)
    synthetic = write_abid(tmp_path_factory.mktemp("s3_synthetic"), TINY_COUNTS)
    bucket = Bucket(s3_endpoint, PUBLIC_BUCKET)
    bucket.synthetic_ids = upload_abid(s3_endpoint, PUBLIC_BUCKET, synthetic, id_offset=SYNTHETIC_ID_OFFSET)
    sample = find_sample()
    if sample is not None:
        bucket.sample_ids = upload_abid(s3_endpoint, PUBLIC_BUCKET, sample)
    return bucket


@pytest.fixture(scope="session")
def tiny_bucket(s3_endpoint, tiny_abid) -> Bucket:
    """``s3://tiny-bins/abid``: the 60 bins of ``tiny_abid`` (ids 00001..00060, counts ``TINY_COUNTS``)."""
    s3_client(s3_endpoint).create_bucket(Bucket="tiny-bins")
    ids = upload_abid(s3_endpoint, "tiny-bins", tiny_abid, prefix="abid")
    return Bucket(s3_endpoint, "tiny-bins", "abid", synthetic_ids=ids)
