"""Where S3 lives and how to talk to it: ``s3://`` URLs, the endpoint, and one boto3 client per process.

Why a module of its own: every S3 user in the project (fetch, the manifest, per-object reads, shards)
must agree on the same few rules, and each rule has bitten before:

- Endpoints: AWS by default; any S3-compatible server (MinIO, ``moto_server``) via ``endpoint_url`` or
  the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables. Plain ``http://`` is allowed for
  those, and path-style addressing is used so that ``127.0.0.1:PORT`` works as a host.
- Public buckets such as ``aft-vbi-pds`` are read *unsigned* (no credentials needed or sent).
- boto3 clients must not cross ``fork`` (DataLoader workers): :func:`get_client` creates one lazily per
  process id and configuration.
- Throttling (503 SlowDown), connection resets and timeouts are retried by botocore's ``standard``
  retry mode with exponential backoff; connect/read timeouts make a dead endpoint an error, not a hang.
  A reset *while reading a body* is not retried by botocore, so :func:`get_bytes` retries that itself.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping
from urllib.parse import urlparse

from bincount.layout import check_size

ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
DEFAULT_REGION = "us-east-1"
_clients: dict[tuple, Any] = {}
_lock = threading.Lock()


class S3Error(ValueError):
    """A bad S3 URL or setting; the message names the bad value and what is expected."""


@dataclass(frozen=True)
class S3Config:
    """How to reach S3; the fields mirror the ``data.s3`` config node (no credentials ever live here)."""

    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS itself
    region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION / us-east-1
    unsigned: bool = False  # anonymous reads of public buckets
    max_pool_connections: int = 32  # >= the threads that share one client
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 8  # botocore standard retries: 503 SlowDown, 5xx, resets, timeouts

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> S3Config:
        """Build from a config node; unknown keys are an error naming the valid ones."""
        values = dict(values or {})
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise S3Error(f"unknown S3 setting(s) {unknown}; valid: {sorted(valid)}")
        return cls(**values)


def is_s3_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")`` (the prefix without slashes at either end)."""
    if not is_s3_url(url):
        raise S3Error(f"{url!r} is not an S3 URL; expected s3://BUCKET[/PREFIX]")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket or "/" in bucket or bucket in (".", ".."):
        raise S3Error(f"{url!r} has no valid bucket name; expected s3://BUCKET[/PREFIX]")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise S3Error(f"{url!r}: the prefix {prefix!r} has empty, '.' or '..' parts")
    return bucket, prefix


def resolve_endpoint(config: S3Config) -> str | None:
    """The endpoint URL to use: the config's, else the standard variables, else None (AWS)."""
    url = config.endpoint_url or next((os.environ[v] for v in ENDPOINT_ENV_VARS if os.environ.get(v)), None)
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.username or parsed.password:  # never echo it: the URL itself holds a secret
        raise S3Error("the S3 endpoint URL contains a user name or password; pass credentials through the "
                      "standard AWS variables, profile or IAM role, never in the URL")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise S3Error(f"S3 endpoint {url!r} must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:9000)")
    return url


def _resolve_region(config: S3Config) -> str:
    return config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def get_client(config: S3Config = S3Config()) -> Any:
    """This process's boto3 S3 client for ``config`` (created on first use; never shared across fork).

    boto3 clients are thread-safe, so one client serves a thread pool of up to ``max_pool_connections``.
    """
    endpoint = resolve_endpoint(config)
    key = (os.getpid(), config, endpoint, _resolve_region(config))
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = _make_client(config, endpoint)
    return client


def _make_client(config: S3Config, endpoint: str | None) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    options: dict[str, Any] = dict(
        region_name=_resolve_region(config),
        max_pool_connections=int(config.max_pool_connections),
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"mode": "standard", "max_attempts": int(config.max_attempts)},
    )
    if endpoint is not None:
        options["s3"] = {"addressing_style": "path"}  # hosts like 127.0.0.1:9000 have no bucket subdomains
    if config.unsigned:
        options["signature_version"] = UNSIGNED
    session = boto3.session.Session()  # a private session: the default one is not thread-safe to create
    return session.client("s3", endpoint_url=endpoint, config=Config(**options))


def transient_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    return (BotoConnectionError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError, ProtocolError,
            ConnectionError, TimeoutError)


def get_bytes(client: Any, bucket: str, key: str, attempts: int = 5, max_bytes: int | None = None) -> bytes:
    """GET an object's bytes; a connection reset or timeout while reading the body is retried with backoff.

    Written by hand because botocore retries the request but not the streaming read that follows it.
    ``FileNotFoundError`` for a missing key, so callers treat S3 and local files alike.
    """
    from botocore.exceptions import ClientError

    transient = transient_errors()
    for attempt in range(attempts):
        try:
            response = client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                if max_bytes is not None:
                    check_size(f"s3://{bucket}/{key}", int(response.get("ContentLength", 0)), max_bytes)
                return body.read()
            finally:
                body.close()
        except ClientError as e:
            if error_code(e) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"s3://{bucket}/{key}") from None
            raise
        except transient:
            if attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def error_code(error: Exception) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``404``, ``AccessDenied``...)."""
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
