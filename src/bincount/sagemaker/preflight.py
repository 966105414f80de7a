"""What is checked with AWS before anything is uploaded or created: the region, the bucket's region, the
training quota and the warm pool. A launch refused here has cost nothing; the same mistake found by
CreateTrainingJob comes after the code upload, once per job. (Names and types are checked earlier, offline,
by ``bincount.sagemaker.settings``.)"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from bincount.aws.session import make_boto_session
from bincount.sagemaker.quotas import check_training_quota
from bincount.sagemaker.settings import LauncherSettings
from bincount.sagemaker.warm_pool import warm_pool_seconds

log = logging.getLogger(__name__)
NO_REGION = "no AWS region: set hydra.launcher.region=<region> (e.g. us-east-1) or AWS_DEFAULT_REGION"


__all__ = ["NO_REGION", "check_bucket_region", "job_region", "make_boto_session", "preflight", "split_s3"]


def split_s3(uri: str) -> tuple[str, str]:
    u = urlparse(uri)
    if u.scheme != "s3" or not u.netloc:
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)")
    return u.netloc, u.path.strip("/")


def job_region(settings: LauncherSettings, boto) -> str:
    """The configured region, else the environment's (the session's); refused if neither, before the SDK's
    Session, whose message names neither."""
    region = settings.region or boto.region_name
    if not region:
        raise ValueError(NO_REGION)
    return region


def check_bucket_region(s3, bucket: str, region: str) -> None:
    """A job's S3 locations must be in its region: refused here, before the code upload, naming both regions.
    Where the user may not ask (no s3:GetBucketLocation), AWS answers for itself when the job is created."""
    try:
        where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"  # None: us-east-1
    except Exception as e:  # noqa: BLE001 - AccessDenied, NoSuchBucket: said once, the launch goes on
        code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
        log.warning("could not check the region of bucket %s (%s); SageMaker needs it in %s", bucket, code, region)
        return
    where = {"EU": "eu-west-1"}.get(where, where)  # the legacy name S3 still returns for eu-west-1
    if where != region:
        raise ValueError(f"bucket {bucket} (hydra.launcher.output_s3_uri) is in {where}, the jobs would run in {region}: "
                         f"SageMaker needs a job's S3 locations in its region; use a bucket in {region} or "
                         f"hydra.launcher.region={where}")


def preflight(settings: LauncherSettings, boto) -> int:
    """Ask AWS what would fail the launch later; the warm pool's seconds each job asks for (0: none)."""
    region = job_region(settings, boto)
    bucket, _ = split_s3(settings.output_s3_uri)
    check_bucket_region(boto.client("s3"), bucket, region)
    quotas = boto.client("service-quotas", region_name=region)
    check_training_quota(quotas, region, settings.instance_type, settings.instance_count, settings.max_parallel_jobs,
                         settings.spot)
    return warm_pool_seconds(quotas, region, settings)
