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
import json
import logging
from pathlib import Path

from bincount.sagemaker.settings import LauncherSettings

log = logging.getLogger(__name__)
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

    from bincount.sagemaker.preflight import job_region, split_s3

    region = job_region(settings, boto3.Session())
    bucket, _ = split_s3(settings.output_s3_uri or "s3://dry-run-bucket")
    return OfflineAWS(region, bucket).session


class DryRunBackend:
    """``hydra.launcher.dry_run=true`` as a backend: the chosen backend is built as for a launch (the SageMaker
    one on the offline session, with no preflight: a dry run asks AWS nothing), each job is described and, for
    SageMaker, its CreateTrainingJob request is built by the SDK and written; nothing starts."""

    def __init__(self, settings: LauncherSettings, sweep_dir: Path, source_dir: Path, files: list[str],
                 key: bytes) -> None:
        self.files = files
        if settings.backend == "local":
            from bincount.sagemaker.local import LocalBackend

            self.backend, self.offline = LocalBackend(settings, sweep_dir, source_dir, files, key), None
            return
        from bincount.sagemaker.remote import SageMakerBackend

        session = offline_session(settings)
        from bincount.sagemaker.warm_pool import requested_seconds

        self.backend = SageMakerBackend(settings, sweep_dir, source_dir, files, session, requested_seconds(settings))
        self.offline = session.bincount_offline

    def run(self, specs: list) -> None:
        """Log what each job would be and write its request beside it; the launch loop never runs."""
        log.info("[dry run] code channel files: %s", ", ".join(self.files))
        for spec in specs:
            log.info("[dry run] %s", self.backend.describe(spec))
            if self.offline is not None:
                log.info("[dry run] job %d: the CreateTrainingJob request the SDK built (not sent): %s", spec.idx,
                         self.request(spec))
        self.backend.close()

    def request(self, spec) -> Path:
        """``<job dir>/create_training_job.json``: the request the SDK builds for ``spec`` on the offline session
        (validated by botocore against the API model), written instead of sent."""
        self.backend.submit(spec)
        path = spec.local_dir / "create_training_job.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.offline.requests[-1], indent=2, default=str) + "\n")
        return path
