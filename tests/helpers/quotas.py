"""botocore's real Service Quotas client, answering through a Stubber (request and response shapes are
validated against the service model), and a clean quota cache for each test."""

from __future__ import annotations

import pytest


def stubbed_quotas_client(*responses, region: str = "us-east-1"):
    """``responses``: ``(operation, page)`` answers, or ``(operation, "ErrorCode")`` for a 403 with that code."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("service-quotas", region_name=region, aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(client)
    for operation, body in responses:
        if isinstance(body, str):
            stub.add_client_error(operation, service_error_code=body, http_status_code=403)
        else:
            stub.add_response(operation, body, {"ServiceCode": "sagemaker"})
    stub.activate()
    return client, stub


@pytest.fixture
def fresh_quotas():
    """``bincount.sagemaker.quotas`` with its per-region cache empty before and after the test."""
    from bincount.sagemaker import quotas

    quotas._CHECKED.clear()
    yield quotas
    quotas._CHECKED.clear()
