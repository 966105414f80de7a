"""The S3 client factory against a real ``moto_server``: endpoints, unsigned reads, per-process clients."""

from __future__ import annotations

import os

import pytest
from s3_server import public_bucket, s3_client, s3_endpoint  # noqa: F401

from bincount.s3.endpoint import S3Config, S3Error, get_bytes, get_client, parse_s3_url, resolve_endpoint


@pytest.mark.parametrize("url, expected", [
    ("s3://b", ("b", "")), ("s3://b/", ("b", "")), ("s3://b/a/c/", ("b", "a/c")), ("s3://aft-vbi-pds/x", ("aft-vbi-pds", "x")),
])
def test_parse_s3_url(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["/local/dir", "s3://", "s3:///x", "s3://b/a/../c", "s3://b/a//c", "http://b/x"])
def test_parse_s3_url_refuses(url):
    with pytest.raises(S3Error, match="s3://BUCKET|prefix|parts"):
        parse_s3_url(url)


def test_endpoint_from_config_then_env(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert resolve_endpoint(S3Config()) is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert resolve_endpoint(S3Config()) == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    assert resolve_endpoint(S3Config()) == "http://127.0.0.1:2"
    assert resolve_endpoint(S3Config(endpoint_url="https://minio.local:9000")) == "https://minio.local:9000"
    with pytest.raises(S3Error, match="ftp://x"):
        resolve_endpoint(S3Config(endpoint_url="ftp://x"))
    with pytest.raises(S3Error, match="user name or password") as err:
        resolve_endpoint(S3Config(endpoint_url="http://AKIAX:s3cr3t@127.0.0.1:9000"))
    assert "s3cr3t" not in str(err.value)


def test_unknown_setting_names_valid_ones():
    with pytest.raises(S3Error, match="endpoint_urll.*valid.*endpoint_url"):
        S3Config.from_mapping({"endpoint_urll": "http://x"})


def test_unsigned_read_of_public_bucket_via_env_endpoint(public_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", public_bucket.endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    client = get_client(S3Config(unsigned=True))
    id_ = public_bucket.synthetic_ids[0]
    assert b"EXPECTED_QUANTITY" in get_bytes(client, public_bucket.name, f"metadata/{id_}.json")
    with pytest.raises(FileNotFoundError, match="no-such"):
        get_bytes(client, public_bucket.name, "metadata/no-such.json")


def test_client_is_cached_per_process_and_config(s3_endpoint):
    a = get_client(S3Config(endpoint_url=s3_endpoint))
    assert get_client(S3Config(endpoint_url=s3_endpoint)) is a
    assert get_client(S3Config(endpoint_url=s3_endpoint, unsigned=True)) is not a
    child = os.fork()
    if child == 0:  # a forked child must build its own client
        os._exit(0 if get_client(S3Config(endpoint_url=s3_endpoint)) is not a else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_importing_s3_modules_does_not_import_boto3():
    """Local runs and ``--help`` never pay for boto3: it is imported when a client is first needed."""
    import subprocess
    import sys

    code = ("import sys, bincount.s3, bincount.s3.store, bincount.s3.fetch, bincount.s3.keys, bincount.manifest; "
            "print('boto3' in sys.modules or 'botocore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "False"
