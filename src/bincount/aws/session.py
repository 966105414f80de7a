"""The boto3 session every AWS-facing command starts from (boto3 imported only when one is made)."""

from __future__ import annotations


def make_boto_session(region: str | None):
    """A session in ``region``, or in the environment's region (AWS_DEFAULT_REGION, the profile) when None.
    Commands call it through their own module's name, so a test can swap in a session that records calls."""
    import boto3

    return boto3.Session(region_name=region)
