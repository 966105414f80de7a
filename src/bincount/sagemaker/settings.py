"""The SageMaker launcher's settings: one typed object, built and checked once, passed to every launcher module.

The schema is also the Hydra plugin's structured config (``hydra/launcher=sagemaker_base`` subclasses it), so
the keys a user can set and the fields the launcher reads cannot drift apart. Hydra imports every plugin at
start-up, so this module imports only the standard library and two small checkers of this project.
"""

import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Mapping, Optional

from bincount.sagemaker.job.network import ClusterError, resolve_network
from bincount.secrets import check

PAYLOADS = ("auto", "script", "pickle")
BACKENDS = ("sagemaker", "local")
# C0 controls and DEL: a newline in a command-line argument can end the SDK's heredoc and run as shell.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# hydra.launcher.requirements goes into the job's requirements file: a plain relative path only.
PLAIN_PATH = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9._/-]+$")


class LauncherConfigError(ValueError):
    pass


# Field types are the typing module's (Dict, List, Optional), which every OmegaConf version reads in a
# structured config; the comments are the user's documentation of each key (docs/sagemaker.md points here).
@dataclass
class LocalSettings:
    # Scratch root holding one /opt/ml-style tree per job (null: <sweep dir>/.sagemaker_local).
    root: Optional[str] = None
    # Copy the code channel like SageMaker does (false: run in place, in the launch directory).
    copy_code: bool = True
    # Python used for the job (null: the launcher's own interpreter).
    python: Optional[str] = None
    # Host count / GPUs the fake container advertises through SM_HOST_COUNT / SM_NUM_GPUS.
    num_gpus: int = 0


@dataclass
class LauncherSettings:
    # "sagemaker": real training jobs (SDK v3 ModelTrainer); "local": subprocesses in /opt/ml-style dirs.
    backend: str = "sagemaker"
    # IAM role ARN the job runs as (required for backend=sagemaker).
    role: Optional[str] = None
    region: Optional[str] = None
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    # Several hosts: how NCCL reaches the others (bincount.sagemaker.job.network). auto: EFA on the types that have
    # it (ml.p4d.24xlarge, ml.p5.48xlarge, ml.g5.48xlarge, ...), NCCL's own TCP elsewhere; efa: refused on a type
    # without EFA; tcp: TCP even where EFA exists. A variable set in `environment` is never replaced.
    network: str = "auto"
    volume_size_gb: int = 50
    max_runtime_s: int = 4 * 3600
    spot: bool = False
    # Spot only: total time including waiting for capacity (>= max_runtime_s).
    max_wait_s: Optional[int] = None
    # Warm pool: keep each job's instance this long after it ends, so the sweep's next trial on it starts in
    # seconds instead of minutes (billed while idle: at most keep_alive_s per job; 0-3600; the single-job preset
    # +launch=sagemaker sets 0; spot jobs get none, SageMaker has no warm pools for spot).
    keep_alive_s: int = 300
    # SageMaker restarts a job that fails on an internal error, up to this many times (RetryStrategy; 0: never;
    # AWS's API reference promises InternalServerError only, not capacity errors). A retry starts the
    # container again and resumes from checkpoints.
    max_retry_attempts: int = 2
    # s3://bucket/prefix: outputs go to <output_s3_uri>/<job>/output/output.tar.gz.
    output_s3_uri: Optional[str] = None
    # s3://bucket/prefix: checkpoints of job k go to <checkpoint_s3_uri>/<sweep id>/<k> (spot resume).
    checkpoint_s3_uri: Optional[str] = None
    # null: the SageMaker PyTorch training image for framework_version, resolved with the SDK.
    image: Optional[str] = None
    # The image's PyTorch (major.minor); null: the newest PyTorch training image the installed SDK knows.
    framework_version: Optional[str] = None
    # Extra environment of the job. Secret-looking names (KEY, TOKEN, SECRET, PASS, PAT, ...) and values
    # (user:password@ URLs, AWS / W&B keys, ...) are refused, as in tags (bincount.secrets).
    environment: Dict[str, str] = field(default_factory=dict)
    # ENV_NAME -> AWS Secrets Manager secret name; the job reads the values itself.
    secrets: Dict[str, str] = field(default_factory=dict)
    tags: Dict[str, str] = field(default_factory=dict)
    # Code channel: the directory uploaded to /opt/ml/input/data/code (null: the launch directory).
    source_dir: Optional[str] = None
    # What of source_dir is uploaded (an allowlist; missing entries are skipped). The entry script, the
    # requirements file and the app's config dir are added. Inside a directory, only the kinds of file a job
    # needs (*.py, *.yaml, *.yml, *.json, *.toml, *.txt) and upload_patterns; a file named here goes whatever
    # its kind. .env, keys, cloud credentials and shell history are never uploaded (bincount.sagemaker.upload).
    include: List[str] = field(default_factory=lambda: [
        "src", "conf", "experiments", "train.py", "pyproject.toml", "constraints.txt", "README.md", "LICENSE"])
    # Not uploaded, inside include: glob patterns matched at every level; a leading "/" anchors one to source_dir.
    ignore_patterns: List[str] = field(default_factory=lambda: [
        ".git", ".venv", "venv", "__pycache__", "*.egg-info", ".pytest_cache", "node_modules", "*.ckpt",
        "/logs", "/data", "/outputs", "/multirun", "/benchmarks", "/.sagemaker_local"])
    # More kinds of file uploaded from the include directories, e.g. ["*.jinja", "*.csv"] (never a credential).
    upload_patterns: List[str] = field(default_factory=list)
    # A file (or the whole code channel) larger than this is named in a warning: data belongs in a data channel.
    max_upload_file_mb: int = 10
    max_upload_mb: int = 100
    # pip requirements installed in the container before the job (relative to source_dir), beside the project
    # with the extras its config needs, under the job's constraints (docs/sagemaker.md "What a job installs").
    requirements: Optional[str] = None
    # Overrides appended to every job, e.g. resume=true so a restarted spot job continues.
    job_overrides: List[str] = field(default_factory=list)
    # The job's output subdirectory linked to /opt/ml/checkpoints (synced to checkpoint_s3_uri).
    checkpoint_subdir: Optional[str] = "checkpoints"
    # auto: re-run the entry script with the overrides (any Python in the container) when the task is
    # a script's @hydra.main; otherwise pickle the task (same Python minor needed). Or script / pickle.
    payload: str = "auto"
    base_job_name: str = "bincount"
    max_parallel_jobs: int = 4
    # Relaunching a sweep in the same sweep dir skips jobs that completed with the same config and code.
    skip_completed: bool = True
    poll_interval_s: float = 30.0
    # A job's output.tar.gz larger than this (in S3, or unpacked) is refused, not downloaded.
    max_output_mb: int = 2048
    # Print the requests and commands, launch nothing.
    dry_run: bool = False
    local: LocalSettings = field(default_factory=LocalSettings)


def settings_from(params: Mapping[str, Any]) -> LauncherSettings:
    """The typed, checked settings from the launcher node Hydra passed (``SageMakerLauncher(**params)``).

    OmegaConf merges the node into the schema, so an unknown key or a value of the wrong type is refused
    with its name here, and interpolations are resolved once."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(LauncherSettings),
                                 {k: v for k, v in dict(params).items() if k != "_target_"})
        settings = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        keys = _keys_beside(key)
        valid = (f"valid keys there: {', '.join(keys)}" if keys is not None
                 else f"hydra.launcher.{key.split('.')[0]} maps names to text")
        raise LauncherConfigError(f"hydra.launcher.{key}: {str(e).splitlines()[0]}; {valid}") from None
    validate(settings)
    return settings


def _keys_beside(key: str) -> list[str] | None:
    """The settings' keys at the level of dotted ``key`` (``local.nope`` -> the fields of LocalSettings); None
    inside a map (``environment``, ``secrets``, ``tags``), where any name is a key."""
    node: Any = LauncherSettings
    for part in key.split(".")[:-1]:
        node = {f.name: f.type for f in fields(node)}.get(part, node)
        if not is_dataclass(node):
            return None
    return [f.name for f in fields(node)]


def validate(s: LauncherSettings) -> None:
    if s.backend not in BACKENDS:
        raise LauncherConfigError(f"hydra.launcher.backend={s.backend!r}; valid: {list(BACKENDS)}")
    if s.payload not in PAYLOADS:
        raise LauncherConfigError(f"hydra.launcher.payload={s.payload!r}; valid: {list(PAYLOADS)}")
    if s.max_parallel_jobs < 1 or s.instance_count < 1:
        raise LauncherConfigError("hydra.launcher.max_parallel_jobs and instance_count must be >= 1")
    if not 0 <= s.keep_alive_s <= 3600:
        raise LauncherConfigError(f"hydra.launcher.keep_alive_s={s.keep_alive_s}: 0 (no warm pool) to 3600 seconds")
    if not 0 <= s.max_retry_attempts <= 30:
        raise LauncherConfigError(f"hydra.launcher.max_retry_attempts={s.max_retry_attempts}: 0 (never) to 30")
    for name in ("environment", "secrets", "tags"):  # OmegaConf lets a list or a map through as a value here
        bad = {k: v for k, v in getattr(s, name).items() if not isinstance(v, str)}
        if bad:
            k, v = next(iter(bad.items()))
            raise LauncherConfigError(f"hydra.launcher.{name}.{CONTROL.sub('?', str(k))[:60]}: a {type(v).__name__}, "
                                      f"not text; hydra.launcher.{name} maps names to text")
    # The job's environment is logged by the SDK's driver and, like tags, shown by DescribeTrainingJob.
    check([*((f"hydra.launcher.environment.{k}", v) for k, v in s.environment.items()),
           *((f"hydra.launcher.tags.{k}", v) for k, v in s.tags.items())])
    check([(f"hydra.launcher.secrets.{k}", v) for k, v in s.secrets.items()], names=False)
    if s.requirements and not PLAIN_PATH.match(s.requirements):
        raise LauncherConfigError(f"hydra.launcher.requirements={CONTROL.sub('?', s.requirements)[:80]!r}: a path "
                                  "relative to source_dir, of letters, digits, '.', '_', '-' and '/' (no '..')")
    if s.framework_version is not None and not re.fullmatch(r"\d+(\.\d+){0,2}", str(s.framework_version)):
        shown = CONTROL.sub('?', str(s.framework_version))[:40]
        raise LauncherConfigError(f"hydra.launcher.framework_version={shown!r}: a PyTorch version such as 2.9 or "
                                  "2.9.0, or null for the newest image the SDK knows")
    if s.spot and s.max_wait_s is not None and s.max_wait_s < s.max_runtime_s:
        raise LauncherConfigError(f"hydra.launcher.max_wait_s={s.max_wait_s} must be >= max_runtime_s="
                                  f"{s.max_runtime_s} (spot waits count against it)")
    if s.backend == "sagemaker" and not s.dry_run:
        missing = [k for k in ("role", "output_s3_uri") if not getattr(s, k)]
        if missing:
            env = {"role": "SAGEMAKER_ROLE_ARN", "output_s3_uri": "BINCOUNT_SM_S3"}
            raise LauncherConfigError(
                f"hydra.launcher.{missing[0]} is not set: export {env[missing[0]]} (or pass hydra.launcher."
                f"{missing[0]}=...); backend=sagemaker needs both {' and '.join(env.values())}: the jobs' IAM role ARN "
                "and the s3://bucket/prefix for code, outputs and checkpoints (docs/sagemaker.md, Set-up)")
    try:  # the network of a multi-host job (bincount.sagemaker.job.network): efa on a type without EFA is refused
        resolve_network(s.network, s.instance_type)
    except ClusterError as e:
        raise LauncherConfigError(f"hydra.launcher.{e}") from None
    if s.backend == "sagemaker":
        check_aws_names(s)


def check_aws_names(s: LauncherSettings) -> None:
    """A malformed role ARN, S3 URI or instance type is refused here, not by AWS after the code upload."""
    from bincount.aws.names import AwsNameError, instance_type, role_arn
    from bincount.s3.endpoint import S3Error, parse_s3_url

    checks = [("role", role_arn), ("instance_type", instance_type), ("output_s3_uri", parse_s3_url),
              ("checkpoint_s3_uri", parse_s3_url)]
    for key, check_one in checks:
        if key == "instance_type" or getattr(s, key):
            try:
                check_one(getattr(s, key))
            except (AwsNameError, S3Error) as e:
                raise LauncherConfigError(f"hydra.launcher.{key}: {e}") from None
