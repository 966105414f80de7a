"""Real backend: one SageMaker training job per Hydra job, through SDK v3's ``ModelTrainer``.

Imported only when ``hydra.launcher.backend=sagemaker`` launches (the SDK takes seconds to import).
The job runs ``python -m bincount.sagemaker.job.entry ...`` through ``SourceCode(command=, args=)``:
overrides are command arguments (quoted by the SDK), not hyperparameters, and no framework
``distributed=`` driver is used (``entry`` starts torchrun itself).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bincount.sagemaker.job.contract import ENV_INSTALLED, ENV_PINS
from bincount.sagemaker.preflight import job_region, split_s3
from bincount.sagemaker.settings import LauncherSettings
from bincount.sagemaker.spec import JobSpec, OutputRefused, sweep_key
from bincount.sagemaker.staging import StagedCode
from bincount.untrusted_tar import ArchiveTooLarge, Limits, UnsafeArchive, extract

log = logging.getLogger(__name__)
CODE = "/opt/ml/input/data/code"
TRIAL_TAG = "bincount:trial"  # <sweep>/<job>/<config and code sha>: a relaunch finds its job by it
DRY_RUN_ROLE = "arn:aws:iam::000000000000:role/no-role-set"  # a dry run may omit the role; validate() requires it otherwise
STATUS = {"InProgress": "InProgress", "Stopping": "InProgress", "Completed": "Completed", "Failed": "Failed",
          "Stopped": "Stopped"}


def download_output(s3, bucket: str, key: str, local_dir: Path, max_bytes: int) -> bool:
    """Unpack ``s3://bucket/key`` (a job's output.tar.gz) into ``local_dir``; False if there is none.

    The object is written by the job, so nothing is trusted: its size (``ContentLength``) is checked
    before reading, it streams to a temporary file (never whole into memory), and
    ``bincount.untrusted_tar`` checks every member (no links, no names outside ``local_dir``, a cap on
    the members' total size: a gzip bomb is small in S3) before it writes only the regular files.
    """
    where = f"s3://{bucket}/{key}"
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except Exception as e:  # noqa: BLE001 - a failed job may have no output; the result says so
        log.warning("no output at %s: %s", where, e)
        return False
    limit = f"hydra.launcher.max_output_mb={max_bytes // 2**20}"
    if obj["ContentLength"] > max_bytes:
        obj["Body"].close()
        raise OutputRefused(f"{where} is {obj['ContentLength'] / 2**20:.1f} MB, above {limit}: not downloaded "
                            f"(fetch it yourself with aws s3 cp, or raise the limit)")
    with tempfile.TemporaryFile() as tmp:
        shutil.copyfileobj(obj["Body"], tmp)
        tmp.seek(0)
        try:
            extract(tmp, local_dir, where, Limits(max_bytes=max_bytes))
        except ArchiveTooLarge as e:
            raise OutputRefused(f"{e} ({limit})") from None
        except UnsafeArchive as e:
            raise OutputRefused(str(e)) from None
    return True


@dataclass
class RemoteJob:
    name: str
    job: Any
    checkpoints: str = ""  # the job's checkpoint S3 URI (its progress file is read there)


class SageMakerBackend:
    """Submits, polls, stops and collects SageMaker training jobs on ``boto`` (a real session, after
    ``preflight``, or the dry run's offline one); ``keep_alive_s`` is the warm pool each job asks for."""

    def __init__(self, settings: LauncherSettings, sweep_dir: Path, source_dir: Path, files: list[str], boto,
                 keep_alive_s: int) -> None:
        from sagemaker.core.helper.session_helper import Session

        self.settings, self.sweep, self.boto, self.keep_alive_s = settings, sweep_key(sweep_dir), boto, keep_alive_s
        region = job_region(settings, boto)
        bucket, prefix = split_s3(settings.output_s3_uri or "s3://dry-run-bucket")
        # The SDK uploads the code channel and its drivers under the default bucket and prefix: inside
        # output_s3_uri, so a role scoped to that prefix (docs/sagemaker.md, IAM) can read them.
        offline = getattr(boto, "bincount_offline", None)  # a dry run's session: telemetry off too
        self.session = Session(boto_session=boto, default_bucket=bucket, default_bucket_prefix=prefix or None,
                               sagemaker_config=offline.SDK_CONFIG if offline else None)
        self.staged = StagedCode(settings, source_dir, sweep_dir, files, region)

    def checkpoint_uri(self, spec: JobSpec) -> str:
        output = (self.settings.output_s3_uri or 's3://OUTPUT').rstrip('/')
        base = self.settings.checkpoint_s3_uri or f"{output}/checkpoints"
        return f"{base.rstrip('/')}/{self.sweep}/{spec.idx}"

    def trainer(self, spec: JobSpec):
        from sagemaker.core.training.configs import (CheckpointConfig, Compute, OutputDataConfig, SourceCode,
                                                     StoppingCondition, Tag)
        from sagemaker.train.model_trainer import ModelTrainer

        settings = self.settings
        staged, env = self.staged, dict(spec.env)
        if staged.project and staged.constraints:  # the job checks these versions before it trains
            env[ENV_PINS], env[ENV_INSTALLED] = staged.constraints, staged.requirement(spec)
        if (staged.code / "src").is_dir():
            env["PYTHONPATH"] = f"{CODE}/src"
        tags = {**settings.tags, "bincount:sweep": self.sweep, "bincount:job": str(spec.idx),
                TRIAL_TAG: self.trial_tag(spec)}
        trainer = ModelTrainer(
            sagemaker_session=self.session, role=settings.role or DRY_RUN_ROLE, base_job_name=spec.base_name,
            training_image=staged.image,
            source_code=SourceCode(source_dir=str(staged.code), requirements=staged.requirements_file(spec),
                                   command=" ".join(spec.argv[:3]), args=spec.argv[3:]),
            compute=Compute(instance_type=settings.instance_type, instance_count=settings.instance_count,
                            volume_size_in_gb=settings.volume_size_gb, enable_managed_spot_training=settings.spot,
                            keep_alive_period_in_seconds=self.keep_alive_s or None),
            stopping_condition=StoppingCondition(
                max_runtime_in_seconds=settings.max_runtime_s,
                max_wait_time_in_seconds=((settings.max_wait_s or settings.max_runtime_s * 2) if settings.spot
                                          else None)),
            output_data_config=OutputDataConfig(s3_output_path=settings.output_s3_uri),
            checkpoint_config=CheckpointConfig(s3_uri=self.checkpoint_uri(spec), local_path="/opt/ml/checkpoints"),
            environment=env, tags=[Tag(key=k, value=str(v)) for k, v in tags.items()],
        )
        if settings.max_retry_attempts:
            from sagemaker.core.shapes import RetryStrategy

            trainer = trainer.with_retry_strategy(RetryStrategy(maximum_retry_attempts=settings.max_retry_attempts))
        return trainer

    def describe(self, spec: JobSpec) -> str:
        return (f"job {spec.idx}: {self.settings.instance_count} x {self.settings.instance_type} image "
                f"{self.staged.image} extras [{','.join(spec.extras)}] install {self.staged.install_command(spec)} "
                f"command {' '.join(spec.argv)} checkpoints {self.checkpoint_uri(spec)} warm pool {self.keep_alive_s} s")

    def submit(self, spec: JobSpec) -> RemoteJob:
        if spec.pickle is not None:
            (self.staged.code / spec.pickle_path).parent.mkdir(parents=True, exist_ok=True)
            (self.staged.code / spec.pickle_path).write_bytes(spec.pickle)
        trainer = self.trainer(spec)
        trainer.train(wait=False, logs=False)
        job = trainer._latest_training_job  # the SDK keeps the created TrainingJob here
        return RemoteJob(job.training_job_name, job, self.checkpoint_uri(spec))

    def handle_state(self, handle: RemoteJob) -> dict:
        return {}  # the job's name (recorded by the runner) and its tags find it again

    def attach(self, spec: JobSpec, saved: dict) -> RemoteJob | None:
        """The training job an earlier launch created for this sweep's job ``spec.idx``: its name from the state
        file, and its tags (``bincount:sweep``, ``bincount:job``) checked, so a job of another sweep is never taken."""
        from sagemaker.core.resources import TrainingJob

        try:
            job = TrainingJob.get(training_job_name=saved["name"], session=self.boto, region=self.boto.region_name)
        except Exception as e:  # noqa: BLE001 - a ResourceNotFound: it was never created, or is long deleted
            log.info("%s: not found (%s)", saved["name"], type(e).__name__)
            return None
        tags = self.boto.client("sagemaker").list_tags(ResourceArn=job.training_job_arn).get("Tags", [])
        found = {t["Key"]: t["Value"] for t in tags}
        if found.get("bincount:sweep") != self.sweep or found.get("bincount:job") != str(spec.idx):
            log.warning("%s: its tags %s are not this sweep's job %d; not re-attached", saved["name"], found, spec.idx)
            return None
        return RemoteJob(job.training_job_name, job, self.checkpoint_uri(spec))

    def trial_tag(self, spec: JobSpec) -> str:
        """One tag naming the sweep, the job and its config and code: what ``find`` searches for."""
        return f"{self.sweep}/{spec.idx}/{spec.state_sha[:16]}"

    def find(self, spec: JobSpec) -> RemoteJob | None:
        """The newest training job tagged for ``spec`` (same sweep, job number, config and code), for a relaunch
        that has no state file for it: a launcher killed between CreateTrainingJob and writing its state."""
        from sagemaker.core.resources import TrainingJob

        found = self.boto.client("sagemaker").search(
            Resource="TrainingJob", SortBy="CreationTime", SortOrder="Descending", MaxResults=1,
            SearchExpression={"Filters": [{"Name": f"Tags.{TRIAL_TAG}", "Operator": "Equals",
                                           "Value": self.trial_tag(spec)}]}).get("Results", [])
        if not found:
            log.info("job %d: no training job is tagged %s=%s; launching it", spec.idx, TRIAL_TAG, self.trial_tag(spec))
            return None
        name = found[0]["TrainingJob"]["TrainingJobName"]
        job = TrainingJob.get(training_job_name=name, session=self.boto, region=self.boto.region_name)
        return RemoteJob(job.training_job_name, job, self.checkpoint_uri(spec))

    def log_location(self, handle: RemoteJob) -> str:
        return (f"CloudWatch log group /aws/sagemaker/TrainingJobs, streams {handle.name}/algo-* "
                f"(aws logs tail /aws/sagemaker/TrainingJobs --log-stream-name-prefix {handle.name} --follow)")

    def progress(self, handle: RemoteJob) -> str | None:
        """SageMaker's SecondaryStatus (Starting, Downloading, Training, Uploading), read by the last poll."""
        secondary = getattr(handle.job, "secondary_status", None)
        return str(secondary) if isinstance(secondary, str) and secondary else None

    def read_checkpoint_file(self, handle: RemoteJob, name: str, max_bytes: int) -> bytes | None:
        """A file the job wrote into its checkpoint dir, where SageMaker syncs it in S3 while the job runs; None if
        it is not there (yet), or larger than ``max_bytes`` (refused unread)."""
        bucket, key = split_s3(f"{handle.checkpoints.rstrip('/')}/{name}")
        try:
            obj = self.boto.client("s3").get_object(Bucket=bucket, Key=key)
        except Exception:  # noqa: BLE001 - not written yet (no epoch done), or a blip: ask at the next poll
            return None
        if obj["ContentLength"] > max_bytes:
            obj["Body"].close()
            return None
        return obj["Body"].read()

    def billing(self, handle: RemoteJob, elapsed_s: float) -> tuple[float, float]:
        """(training seconds, billable seconds) from the last DescribeTrainingJob; spot bills less than it ran."""
        training = getattr(handle.job, "training_time_in_seconds", None)
        billable = getattr(handle.job, "billable_time_in_seconds", None)
        training = float(training) if isinstance(training, (int, float)) else elapsed_s
        return training, float(billable) if isinstance(billable, (int, float)) else training

    def poll(self, handle: RemoteJob) -> tuple[str, str | None]:
        handle.job.refresh()
        status = STATUS.get(str(handle.job.training_job_status), "InProgress")
        reason = getattr(handle.job, "failure_reason", None)
        return status, reason if isinstance(reason, str) else None

    def stop(self, handle: RemoteJob) -> None:
        try:
            handle.job.stop()
        except Exception as e:  # noqa: BLE001 - keep stopping the others; say which one failed
            log.error("could not stop %s: %s (stop it in the console)", handle.name, e)

    def fetch(self, handle: RemoteJob, local_dir: Path) -> None:
        """``output.tar.gz`` (the job's /opt/ml/output/data) -> the local job dir."""
        bucket, prefix = split_s3(self.settings.output_s3_uri)
        key = f"{prefix}/{handle.name}/output/output.tar.gz".lstrip("/")
        download_output(self.boto.client("s3"), bucket, key, local_dir, int(self.settings.max_output_mb * 2**20))

    def close(self) -> None:
        pass
