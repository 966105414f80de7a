"""Real backend: one SageMaker training job per Hydra job, through SDK v3's ``ModelTrainer``.

Imported only when ``hydra.launcher.backend=sagemaker`` launches (the SDK takes seconds to import).
The job runs ``python -m bincount.sagemaker.job.entry ...`` through ``SourceCode(command=, args=)``:
overrides are command arguments (quoted by the SDK), not hyperparameters, and no framework
``distributed=`` driver is used (``entry`` starts torchrun itself).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bincount.sagemaker.job.contract import ENV_INSTALLED, ENV_PINS, MAX_PROGRESS_BYTES, PROGRESS_FILE
from bincount.sagemaker.job.pins import job_constraints, parse_pins
from bincount.sagemaker.quotas import check_training_quota, warm_pool_seconds
from bincount.sagemaker.spec import PICKLE_DIR, JobSpec, OutputRefused, stage_code, sweep_key
from bincount.untrusted_tar import ArchiveTooLarge, Limits, UnsafeArchive, extract
from bincount.sagemaker.settings import LauncherSettings

log = logging.getLogger(__name__)
CODE = "/opt/ml/input/data/code"
NO_REGION = "no AWS region: set hydra.launcher.region=<region> (e.g. us-east-1) or AWS_DEFAULT_REGION"
TRIAL_TAG = "bincount:trial"  # <sweep>/<job>/<config and code sha>: a relaunch finds its job by it
DRY_RUN_ROLE = "arn:aws:iam::000000000000:role/no-role-set"  # a dry run may omit the role; validate() requires it otherwise
JOB_CONSTRAINTS = f"{PICKLE_DIR}/constraints.txt"  # the code channel's constraints.txt minus the image's stack
IMAGE_TORCH_NOTE = ("# The image's torch (framework_version): pip fails rather than replace it if a package "
                    "wanted another")
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


def extras_suffix(extras: list[str]) -> str:
    return f"[{','.join(extras)}]" if extras else ""


def project_name(pyproject: Path) -> str | None:
    """``[project] name`` of a pyproject.toml (a regex: the launcher may run on Python 3.10, before tomllib)."""
    m = re.search(r"^\[project\]\s*$(.*?)^name\s*=\s*[\"']([^\"']+)[\"']", pyproject.read_text(), re.M | re.S)
    return m.group(2) if m and "\n[" not in m.group(1) else None


def newest_pytorch() -> str:
    """The newest ``major.minor`` of the SDK's PyTorch training images (its image config, offline): a new SDK
    release brings a new default image without a change here."""
    from sagemaker.core import image_uris

    aliases = image_uris.config_for_framework("pytorch")["training"]["version_aliases"]
    return max(aliases, key=lambda v: tuple(int(x) for x in v.split(".")))


def make_boto_session(region: str | None):
    import boto3

    return boto3.Session(region_name=region)


def split_s3(uri: str) -> tuple[str, str]:
    u = urlparse(uri)
    if u.scheme != "s3" or not u.netloc:
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)")
    return u.netloc, u.path.strip("/")


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


@dataclass
class RemoteJob:
    name: str
    job: Any
    checkpoints: str = ""  # the job's checkpoint S3 URI (its progress file is read there)


class SageMakerBackend:
    def __init__(self, settings: LauncherSettings, sweep_dir: Path, source_dir: Path, files: list[str],
                 boto_session=None) -> None:
        from sagemaker.core.helper.session_helper import Session

        self.settings, self.sweep = settings, sweep_key(sweep_dir)
        self.boto = boto_session or make_boto_session(settings.region)
        if not (settings.region or self.boto.region_name):  # before the SDK's Session, whose message names neither
            raise ValueError(NO_REGION)
        bucket, prefix = split_s3(settings.output_s3_uri or "s3://dry-run-bucket")
        if not settings.dry_run:  # a dry run asks AWS nothing
            region = settings.region or self.boto.region_name
            check_bucket_region(self.boto.client("s3"), bucket, region)
            quotas = self.boto.client("service-quotas", region_name=region)
            check_training_quota(quotas, region, settings.instance_type, settings.instance_count,
                                 settings.max_parallel_jobs, settings.spot)
            self.keep_alive_s = warm_pool_seconds(quotas, region, settings)
        else:
            self.keep_alive_s = 0 if settings.spot else settings.keep_alive_s
        # The SDK uploads the code channel and its drivers under the default bucket and prefix: inside
        # output_s3_uri, so a role scoped to that prefix (docs/sagemaker.md, IAM) can read them.
        offline = getattr(self.boto, "bincount_offline", None)  # a dry run's session: telemetry off too
        self.session = Session(boto_session=self.boto, default_bucket=bucket, default_bucket_prefix=prefix or None,
                               sagemaker_config=offline.SDK_CONFIG if offline else None)
        self.code = stage_code(source_dir, sweep_dir / ".sagemaker" / "code", files)
        self.project = project_name(self.code / "pyproject.toml") if (self.code / "pyproject.toml").is_file() else None
        self.framework_version = settings.framework_version or newest_pytorch()
        self.constraints = self._constraints()
        self.image = settings.image or self._default_image()

    def _default_image(self) -> str:
        from sagemaker.core import image_uris

        region = self.settings.region or self.boto.region_name
        image = image_uris.retrieve(framework="pytorch", region=region, version=self.framework_version,
                                    instance_type=self.settings.instance_type, image_scope="training")
        if not self.settings.framework_version:
            log.info("Training image %s: the newest PyTorch training image the installed SDK knows (pin one with "
                     "hydra.launcher.framework_version=2.9)", image)
        return image

    def _constraints(self) -> str | None:
        """The job's constraints file in the code channel: ``constraints.txt`` without the image's torch stack."""
        src = self.code / "constraints.txt"
        if not src.is_file():
            if self.project:
                log.warning("no constraints.txt in the code channel: the job installs %s unpinned", self.project)
            return None
        text, dropped = job_constraints(src.read_text())
        if not self.settings.image:  # the SDK's image for framework_version: a torch that needs replacing is an error
            text += f"{IMAGE_TORCH_NOTE}\ntorch=={self.framework_version}.*\n"
        (self.code / JOB_CONSTRAINTS).parent.mkdir(parents=True, exist_ok=True)
        (self.code / JOB_CONSTRAINTS).write_text(text)
        log.info("Job constraints %s: %d pins; the image's own torch/CUDA stack (%d packages) is left to it%s",
                 JOB_CONSTRAINTS, len(parse_pins(text)), len(dropped),
                 "" if self.settings.image else f", torch stays the image's {self.framework_version}")
        return JOB_CONSTRAINTS

    def requirement(self, spec: JobSpec) -> str | None:
        """What the job installs of this project, by name: ``bincount[s3,wandb]`` (None: no named project)."""
        return f"{self.project}{extras_suffix(spec.extras)}" if self.project else None

    def install_args(self, spec: JobSpec) -> list[str]:
        """``pip install`` arguments of the job, relative to the code channel ([]: nothing to install)."""
        target = [f".{extras_suffix(spec.extras)}"] if (self.code / "pyproject.toml").is_file() else []
        user = ["-r", self.settings.requirements] if self.settings.requirements else []
        if not target and not user:
            return []
        return [*(["-c", self.constraints] if self.constraints else []), *target, *user]

    def install_command(self, spec: JobSpec) -> str:
        """The job's pip command, for the log (the SDK runs it as ``pip install -r <requirements file>``)."""
        args = self.install_args(spec)
        return shlex.join(["pip", "install", *args]) if args else "(nothing)"

    def _requirements(self, spec: JobSpec) -> str | None:
        """``_sagemaker_jobs/job<k>.requirements.txt``, ``install_args`` as a requirements file: nested
        ``-c``/``-r`` paths are relative to the file, ``.`` to the working directory (the code channel)."""
        args = self.install_args(spec)
        if not args:
            return None
        path = self.code / PICKLE_DIR / f"job{spec.idx}.requirements.txt"
        lines, rest = [f"# job {spec.idx}: {self.install_command(spec)}"], list(args)
        while rest:
            arg = rest.pop(0)
            lines.append(f"{arg} ../{rest.pop(0)}" if arg in ("-c", "-r") else arg)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path.relative_to(self.code).as_posix()

    def checkpoint_uri(self, spec: JobSpec) -> str:
        output = (self.settings.output_s3_uri or 's3://OUTPUT').rstrip('/')
        base = self.settings.checkpoint_s3_uri or f"{output}/checkpoints"
        return f"{base.rstrip('/')}/{self.sweep}/{spec.idx}"

    def trainer(self, spec: JobSpec):
        from sagemaker.core.training.configs import (CheckpointConfig, Compute, OutputDataConfig, SourceCode,
                                                     StoppingCondition, Tag)
        from sagemaker.train.model_trainer import ModelTrainer

        settings = self.settings
        env = dict(spec.env)
        if self.project and self.constraints:  # the job checks these versions before it trains
            env[ENV_PINS], env[ENV_INSTALLED] = self.constraints, self.requirement(spec)
        if (self.code / "src").is_dir():
            env["PYTHONPATH"] = f"{CODE}/src"
        tags = {**settings.tags, "bincount:sweep": self.sweep, "bincount:job": str(spec.idx),
                TRIAL_TAG: self.trial_tag(spec)}
        trainer = ModelTrainer(
            sagemaker_session=self.session, role=settings.role or DRY_RUN_ROLE, base_job_name=spec.base_name,
            training_image=self.image,
            source_code=SourceCode(source_dir=str(self.code), requirements=self._requirements(spec),
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
        return (f"job {spec.idx}: {self.settings.instance_count} x {self.settings.instance_type} image {self.image} "
                f"extras [{','.join(spec.extras)}] install {self.install_command(spec)} "
                f"command {' '.join(spec.argv)} checkpoints {self.checkpoint_uri(spec)} warm pool {self.keep_alive_s} s")

    def submit(self, spec: JobSpec) -> RemoteJob:
        if spec.pickle is not None:
            (self.code / spec.pickle_path).parent.mkdir(parents=True, exist_ok=True)
            (self.code / spec.pickle_path).write_bytes(spec.pickle)
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

    def dry_run_request(self, spec: JobSpec) -> Path:
        """``<job dir>/create_training_job.json``: the request the SDK builds for ``spec`` on the offline session
        (validated by botocore against the API model), written instead of sent."""
        offline = self.boto.bincount_offline
        self.submit(spec)
        path = spec.local_dir / "create_training_job.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(offline.requests[-1], indent=2, default=str) + "\n")
        return path

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

    def read_progress(self, handle: RemoteJob) -> bytes | None:
        """The job's progress file where SageMaker syncs its checkpoint dir (refused unread above the limit)."""
        bucket, key = split_s3(f"{handle.checkpoints.rstrip('/')}/{PROGRESS_FILE}")
        try:
            obj = self.boto.client("s3").get_object(Bucket=bucket, Key=key)
        except Exception:  # noqa: BLE001 - not written yet (no epoch done), or a blip: ask at the next poll
            return None
        if obj["ContentLength"] > MAX_PROGRESS_BYTES:
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
