"""Retries against injected faults: 503 SlowDown, resets before and during the body, delays."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_proxy import FaultProxy
from s3_server import public_bucket, s3_endpoint  # noqa: F401

from bincount.s3.endpoint import S3Config, get_bytes, get_client


@pytest.mark.slow
def test_every_object_read_exactly_despite_faults(public_bucket):
    direct = get_client(S3Config(endpoint_url=public_bucket.endpoint))
    keys = [f"bin-images/{i}.jpg" for i in public_bucket.synthetic_ids]
    expected = {k: get_bytes(direct, public_bucket.name, k) for k in keys}
    with FaultProxy(public_bucket.endpoint, slowdown=0.15, reset=0.1, body_reset=0.1, delay=0.1, seed=1) as proxy:
        client = get_client(S3Config(endpoint_url=proxy.url, max_attempts=10, read_timeout=5))
        with ThreadPoolExecutor(16) as pool:  # botocore backs off up to ~1 s per retry: overlap them
            got = dict(zip(keys, pool.map(lambda k: get_bytes(client, public_bucket.name, k), keys)))
    assert got == expected
    assert proxy.counts["slowdown"] > 0 and proxy.counts["reset"] > 0 and proxy.counts["body_reset"] > 0, proxy.counts


@pytest.mark.slow
def test_persistent_throttling_is_an_error_not_a_hang(public_bucket):
    from botocore.exceptions import ClientError

    with FaultProxy(public_bucket.endpoint, slowdown=1.0) as proxy:
        client = get_client(S3Config(endpoint_url=proxy.url, max_attempts=2))
        with pytest.raises(ClientError, match="SlowDown"):
            get_bytes(client, public_bucket.name, f"metadata/{public_bucket.synthetic_ids[0]}.json")
    assert 2 <= proxy.counts["slowdown"] <= 3  # max_attempts, not an endless retry loop
