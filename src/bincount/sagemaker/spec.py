"""What one Hydra job becomes: its composed config, directories, unique name, command and environment.

Both backends run the same spec, so the local backend exercises the exact command line SageMaker gets.
Hydra overrides travel as command arguments, never as SageMaker hyperparameters: v3 exports every
hyperparameter as ``SM_HP_<KEY>``, and a dotted key (``trainer.max_epochs``) kills the job in bash.
Everything that crosses to the job is checked here first (docs/security.md): no credential in an override,
the environment or a tag, no control character in the command line, only allowlisted files in the code.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets as _random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from bincount.secrets import check_overrides as check_secrets, split_override
from bincount.sagemaker.job.callback import config_sha
from bincount.sagemaker.job.contract import ENV_CKPT_SUBDIR, ENV_CONFIG_SHA, ENV_JOB_DIR, ENV_SECRETS
from bincount.sagemaker.extras import job_extras
from bincount.sagemaker.job.network import ENV_NETWORK
from bincount.sagemaker.pruning import split_trial
from bincount.sagemaker.settings import CONTROL, LauncherConfigError, LauncherSettings

log = logging.getLogger(__name__)

# Hydra overrides that configure the launch, not the job (the job runs in RUN mode in the container).
LAUNCH_ONLY = re.compile(r"^[+~]*hydra(/launcher|\.launcher|/sweeper|\.sweeper|\.mode|\.run\.|\.sweep\.)")
PICKLE_DIR = "_sagemaker_jobs"


class OutputRefused(RuntimeError):
    """A job's output the launcher will not read (too large, or a result it cannot trust)."""


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
    # The project's extras this job's config needs in the container (bincount.sagemaker.extras).
    extras: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # payload=pickle asked for by name: the job's signed result.pkl is unpickled (docs/security.md).
    pickled_result: bool = False

    @property
    def pickle_path(self) -> str:
        return f"{PICKLE_DIR}/job{self.idx}.pkl"


def check_overrides(config: DictConfig, job_overrides, settings: LauncherSettings) -> None:
    """Refuse, before anything is written or launched, what must not reach the job's command line."""
    typed = OmegaConf.to_container(config.hydra.overrides, resolve=False)
    every = [*typed["hydra"], *typed["task"], *settings.job_overrides, *(o for job in job_overrides for o in job)]
    for override in every:
        bad = CONTROL.search(override)
        if bad:
            key = split_override(override)[0]
            raise LauncherConfigError(
                f"override {CONTROL.sub('?', key)[:60]!r} contains a control character ({bad.group()!r}); overrides "
                "become the job's shell command, where a newline can end the SDK's heredoc and run the rest as "
                "shell. Valid: printable characters only (put multi-line text in a config file)")
    check_secrets(every)


def resolve_payload(settings: LauncherSettings, task_function: Any) -> str:
    """``script`` when the task is the ``@hydra.main`` of the script being run, else ``pickle``."""
    if settings.payload != "auto":
        return settings.payload
    script = sys.argv[0]
    is_script = getattr(task_function, "__module__", None) == "__main__" and script.endswith(".py")
    return "script" if is_script and Path(script).is_file() else "pickle"


_ABSENT = object()


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def extra_overrides(overrides: list[str], defaults: list[str], config: DictConfig | None = None) -> list[str]:
    """The launcher's ``job_overrides`` for keys the job does not set itself (the user's value wins), and
    only those the app has: ``trainer=gpu resume=true`` are train.py's, so ``predict.py`` gets none."""
    own = {_key(o) for o in overrides}
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) if config is not None else None

    def applies(key: str) -> bool:
        return config is None or key in (choices or {}) or OmegaConf.select(config, key, default=_ABSENT) is not _ABSENT

    return [d for d in defaults if _key(d) not in own and applies(_key(d))]


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


def build_spec(launcher, settings: LauncherSettings, overrides: list[str], idx: int, payload: str,
               source_dir: Path) -> JobSpec:
    ctx, task_function = launcher.hydra_context, launcher.task_function
    all_overrides = [*overrides, *extra_overrides(overrides, settings.job_overrides, launcher.config)]
    config = ctx.config_loader.load_sweep_config(launcher.config, all_overrides)
    with open_dict(config):
        config.hydra.job.id = f"{settings.base_job_name}_{idx}"
        config.hydra.job.num = idx
    local_dir, rel_dir = job_dirs(config, source_dir)
    env = {ENV_JOB_DIR: rel_dir, ENV_NETWORK: settings.network, **{k: str(v) for k, v in settings.environment.items()}}
    if settings.checkpoint_subdir:
        env[ENV_CKPT_SUBDIR] = settings.checkpoint_subdir
    if settings.secrets:
        env[ENV_SECRETS] = ",".join(f"{k}={v}" for k, v in settings.secrets.items())
    sha, blob = config_sha(config), None
    entry = ["python", "-m", "bincount.sagemaker.job.entry"]
    if payload == "script":
        script = Path(sys.argv[0]).resolve()
        try:
            script_rel = script.relative_to(source_dir).as_posix()
        except ValueError:
            raise LauncherConfigError(f"the entry script {script} is outside the code channel {source_dir}; "
                                      "set hydra.launcher.source_dir to a directory that contains it") from None
        typed = OmegaConf.to_container(launcher.config.hydra.overrides.hydra, resolve=False)  # ${...} stays text
        hydra_overrides = [o for o in typed if not LAUNCH_ONLY.match(o)]
        job_args, trial, trial_env = split_trial(all_overrides)  # a pruned trial: this launcher reports for the job
        env.update(trial_env)
        argv = [*entry, "--script", script_rel, "--", *job_args, *hydra_overrides]
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
    spec = JobSpec(idx, list(overrides), config, local_dir, rel_dir, argv, env, sha,
                   base_job_name(settings.base_job_name, idx), blob, state_sha, job_extras(config))
    if payload == "script" and trial:
        spec.extra["trial"] = trial
    spec.pickled_result = settings.payload == "pickle"
    return spec
