"""The dry run's requests, built by the SDK itself, with no call reaching AWS.

Why: a dry run that only describes a job says what the launcher meant to ask; this one shows what the
SDK would send. A botocore ``before-call`` handler (the hook botocore's own Stubber uses) answers every
API call of a private boto3 session: uploads succeed without leaving the machine, ``CreateTrainingJob``
is recorded after botocore has validated it against the API model, and ``DescribeTrainingJob`` answers
from the recorded request, so that the SDK's ``TrainingJob`` can be built as after a real create.
"""

from __future__ import annotations

import copy
import datetime as dt

from bincount.sagemaker.settings import LauncherSettings

ACCOUNT = "000000000000"  # no account: a dry run has no credentials to ask with


class OfflineAWS:
    """A boto3 session whose calls never leave this process; ``requests`` holds each CreateTrainingJob."""

    # The SDK's telemetry (an HTTPS GET per call) is off in a dry run: nothing leaves this machine.
    SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}

    def __init__(self, region: str, bucket: str) -> None:
        import boto3

        self.region, self.bucket, self.requests = region, bucket, []
        self.session = boto3.Session(region_name=region, aws_access_key_id="dry-run", aws_secret_access_key="dry-run")
        self.session.events.register("before-parameter-build.sagemaker.CreateTrainingJob", self._record)
        self.session.events.register("before-call", self._answer)
        self.session.bincount_offline = self

    def _record(self, params, **_):
        self.requests.append(copy.deepcopy(params))

    def _answer(self, model, **_):
        from botocore.awsrequest import AWSResponse

        if model.service_model.service_name == "iam":  # the SDK's role checks: "cannot verify", so it goes on
            return AWSResponse(None, 403, {}, None), {"Error": {"Code": "AccessDenied", "Message": "dry run: no IAM"}}
        return AWSResponse(None, 200, {}, None), self.reply(model.name)

    def reply(self, operation: str) -> dict:
        arn = f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:training-job/"
        if operation == "CreateTrainingJob":
            return {"TrainingJobArn": arn + self.requests[-1]["TrainingJobName"]}
        if operation == "DescribeTrainingJob" and self.requests:
            req = self.requests[-1]
            now = dt.datetime.now(dt.timezone.utc)
            return {**{k: v for k, v in req.items() if k not in ("Tags",)}, "TrainingJobArn": arn + req["TrainingJobName"],
                    "TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting", "CreationTime": now,
                    "ModelArtifacts": {"S3ModelArtifacts": ""}}
        if operation == "ListBuckets":  # the SDK's default_bucket(): it exists, nothing to create
            return {"Buckets": [{"Name": self.bucket, "CreationDate": dt.datetime.now(dt.timezone.utc)}]}
        if operation == "GetCallerIdentity":
            return {"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/dry-run", "UserId": "dry-run"}
        if operation == "CreateMultipartUpload":
            return {"UploadId": "dry-run"}
        if operation == "UploadPart":
            return {"ETag": '"dry-run"'}
        if operation == "GetBucketLocation":
            return {"LocationConstraint": None if self.region == "us-east-1" else self.region}
        return {}


def offline_session(settings: LauncherSettings):
    """The dry run's boto3 session for the launcher's settings (region from them or the environment)."""
    import boto3

    from bincount.sagemaker.remote import NO_REGION, split_s3

    region = settings.region or boto3.Session().region_name
    if not region:
        raise ValueError(NO_REGION)
    bucket, _ = split_s3(settings.output_s3_uri or "s3://dry-run-bucket")
    return OfflineAWS(region, bucket).session
