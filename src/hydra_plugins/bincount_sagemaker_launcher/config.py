"""Typed config of the SageMaker launcher: ``hydra/launcher=sagemaker_base`` / ``sagemaker_local_base``.

Kept free of heavy imports: Hydra imports every plugin module at start-up, so this file must cost
nothing when the launcher is not used. The project's presets in ``conf/hydra/launcher/``
(``sagemaker``, ``sagemaker_multi_gpu``, ``sagemaker_multi_node``, ``sagemaker_local``) extend these
nodes; other Hydra apps can use the ``*_base`` nodes directly.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class LocalBackendConf:
    # Scratch root holding one /opt/ml-style tree per job (null: <sweep dir>/.sagemaker_local).
    root: Optional[str] = None
    # Copy the code channel like SageMaker does (false: run in place, in the launch directory).
    copy_code: bool = True
    # Python used for the job (null: the launcher's own interpreter).
    python: Optional[str] = None
    # Host count / GPUs the fake container advertises through SM_HOST_COUNT / SM_NUM_GPUS.
    num_gpus: int = 0


@dataclass
class SageMakerLauncherConf:
    _target_: str = "hydra_plugins.bincount_sagemaker_launcher.launcher.SageMakerLauncher"
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
    local: LocalBackendConf = field(default_factory=LocalBackendConf)


@dataclass
class SageMakerLocalLauncherConf(SageMakerLauncherConf):
    backend: str = "local"
    instance_type: str = "local"
    poll_interval_s: float = 0.5
    max_parallel_jobs: int = 2


cs = ConfigStore.instance()
cs.store(group="hydra/launcher", name="sagemaker_base", node=SageMakerLauncherConf, provider="bincount")
cs.store(group="hydra/launcher", name="sagemaker_local_base", node=SageMakerLocalLauncherConf, provider="bincount")
