"""What one Hydra job becomes: its composed config, directories, unique name, command and environment.

Both backends run the same spec, so the local backend exercises the exact command line SageMaker gets.
Hydra overrides travel as command arguments, never as SageMaker hyperparameters: v3 exports every
hyperparameter as ``SM_HP_<KEY>``, and a dotted key (``trainer.max_epochs``) kills the job in bash.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets as _random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from bincount.sagemaker.callback import config_sha
from bincount.sagemaker.contract import ENV_CKPT_SUBDIR, ENV_CONFIG_SHA, ENV_JOB_DIR, ENV_SECRETS, looks_secret

# Hydra overrides that configure the launch, not the job (the job runs in RUN mode in the container).
LAUNCH_ONLY = re.compile(r"^[+~]*hydra(/launcher|\.launcher|/sweeper|\.sweeper|\.mode|\.run\.|\.sweep\.)")
PAYLOADS = ("auto", "script", "pickle")
BACKENDS = ("sagemaker", "local")
PICKLE_DIR = "_sagemaker_jobs"


class LauncherConfigError(ValueError):
    pass


@dataclass
class JobSpec:
    idx: int
    overrides: list[str]
    config: DictConfig
    local_dir: Path
    rel_dir: str
    argv: list[str]
    env: dict[str, str]
    sha: str
    base_name: str
    pickle: bytes | None = None
    # Config + entry script (or pickled task): a relaunch skips a completed job only if both are unchanged.
    state_sha: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pickle_path(self) -> str:
        return f"{PICKLE_DIR}/job{self.idx}.pkl"


def validate(p: dict) -> None:
    if p["backend"] not in BACKENDS:
        raise LauncherConfigError(f"hydra.launcher.backend={p['backend']!r}; valid: {list(BACKENDS)}")
    if p["payload"] not in PAYLOADS:
        raise LauncherConfigError(f"hydra.launcher.payload={p['payload']!r}; valid: {list(PAYLOADS)}")
    if p["max_parallel_jobs"] < 1 or p["instance_count"] < 1:
        raise LauncherConfigError("hydra.launcher.max_parallel_jobs and instance_count must be >= 1")
    for name, value in p["environment"].items():
        if looks_secret(name):
            raise LauncherConfigError(
                f"hydra.launcher.environment.{name} looks like a secret and would be logged with the job; "
                f"store it in AWS Secrets Manager and set hydra.launcher.secrets.{name}=<secret name>")
    for key in p["tags"]:
        if looks_secret(key):
            raise LauncherConfigError(f"hydra.launcher.tags.{key} looks like a secret; tags are public metadata")
    if p["spot"] and p["max_wait_s"] is not None and p["max_wait_s"] < p["max_runtime_s"]:
        raise LauncherConfigError(f"hydra.launcher.max_wait_s={p['max_wait_s']} must be >= max_runtime_s="
                                  f"{p['max_runtime_s']} (spot waits count against it)")
    if p["backend"] == "sagemaker" and not p["dry_run"]:
        missing = [k for k in ("role", "output_s3_uri") if not p.get(k)]
        if missing:
            raise LauncherConfigError(f"hydra.launcher.{missing[0]} is required for backend=sagemaker "
                                      "(see docs/sagemaker.md: IAM role ARN and s3://bucket/prefix)")


def resolve_payload(p: dict, task_function: Any) -> str:
    """``script`` when the task is the ``@hydra.main`` of the script being run, else ``pickle``."""
    if p["payload"] != "auto":
        return p["payload"]
    script = sys.argv[0]
    is_script = getattr(task_function, "__module__", None) == "__main__" and script.endswith(".py")
    return "script" if is_script and Path(script).is_file() else "pickle"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def extra_overrides(overrides: list[str], defaults: list[str]) -> list[str]:
    """The launcher's ``job_overrides`` for keys the job does not set itself (the user's value wins)."""
    own = {_key(o) for o in overrides}
    return [d for d in defaults if _key(d) not in own]


def base_job_name(base: str, idx: int) -> str:
    """``<base>-<job number>-<random>``: the SDK appends a timestamp, the random part makes same-second
    launches (and relaunches of the same sweep) unique; SageMaker allows [a-zA-Z0-9-], 63 characters."""
    clean = re.sub(r"[^a-zA-Z0-9-]", "-", base).strip("-")[:24] or "job"
    return f"{clean}-{idx}-{_random.token_hex(3)}"


def job_dirs(config: DictConfig, source_dir: Path) -> tuple[Path, str]:
    """The job's local output dir, and the same dir relative to the code channel inside the job."""
    HydraConfig.instance().set_config(config)  # sweep.subdir may use ${hydra.job.num} / override_dirname
    sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
    local_dir = (sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))).absolute()
    try:
        rel = local_dir.relative_to(source_dir)
    except ValueError:
        rel = Path("multirun") / sweep_dir.name / local_dir.relative_to(sweep_dir.absolute())
    return local_dir, rel.as_posix()


def sweep_key(sweep_dir: Path) -> str:
    """Stable id of a sweep directory: relaunching the same sweep reuses its checkpoints."""
    digest = hashlib.sha1(str(sweep_dir.absolute()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^a-zA-Z0-9-]', '-', sweep_dir.name)[:40]}-{digest}"


def stage_code(source_dir: Path, dest: Path, ignore: list[str]) -> Path:
    """Copy the code channel (what SageMaker uploads to /opt/ml/input/data/code)."""
    if dest.exists():
        shutil.rmtree(dest)
    anywhere = shutil.ignore_patterns(*[i for i in ignore if not i.startswith("/")])
    at_root = shutil.ignore_patterns(*[i[1:] for i in ignore if i.startswith("/")])

    def skip(directory: str, names: list[str]) -> set[str]:
        found = set(anywhere(directory, names))
        return found | set(at_root(directory, names)) if Path(directory) == source_dir else found

    shutil.copytree(source_dir, dest, ignore=skip, symlinks=True)
    return dest


def build_spec(launcher, p: dict, overrides: list[str], idx: int, payload: str, source_dir: Path) -> JobSpec:
    ctx, task_function = launcher.hydra_context, launcher.task_function
    all_overrides = [*overrides, *extra_overrides(overrides, p["job_overrides"])]
    config = ctx.config_loader.load_sweep_config(launcher.config, all_overrides)
    with open_dict(config):
        config.hydra.job.id = f"{p['base_job_name']}_{idx}"
        config.hydra.job.num = idx
    local_dir, rel_dir = job_dirs(config, source_dir)
    env = {ENV_JOB_DIR: rel_dir, **{k: str(v) for k, v in p["environment"].items()}}
    if p["checkpoint_subdir"]:
        env[ENV_CKPT_SUBDIR] = p["checkpoint_subdir"]
    if p["secrets"]:
        env[ENV_SECRETS] = ",".join(f"{k}={v}" for k, v in p["secrets"].items())
    sha, blob = config_sha(config), None
    entry = ["python", "-m", "bincount.sagemaker.entry"]
    if payload == "script":
        script = Path(sys.argv[0]).resolve()
        try:
            script_rel = script.relative_to(source_dir).as_posix()
        except ValueError:
            raise LauncherConfigError(f"the entry script {script} is outside the code channel {source_dir}; "
                                      "set hydra.launcher.source_dir to a directory that contains it") from None
        typed = OmegaConf.to_container(launcher.config.hydra.overrides.hydra, resolve=False)  # ${...} stays text
        hydra_overrides = [o for o in typed if not LAUNCH_ONLY.match(o)]
        argv = [*entry, "--script", script_rel, "--", *all_overrides, *hydra_overrides]
        env[ENV_CONFIG_SHA] = sha
        code = script.read_bytes()
    else:
        import cloudpickle
        from hydra.core.singleton import Singleton

        blob = cloudpickle.dumps({"hydra_context": ctx, "task_function": task_function, "config": config,
                                  "singleton_state": Singleton.get_state()})
        argv = [*entry, "--pickle", f"{PICKLE_DIR}/job{idx}.pkl"]
        code = blob
    state_sha = hashlib.sha256(sha.encode() + code).hexdigest()
    return JobSpec(idx, list(overrides), config, local_dir, rel_dir, argv, env, sha,
                   base_job_name(p["base_job_name"], idx), blob, state_sha)
