"""The SageMaker container contract: paths, ``SM_*`` variables, and what they mean for Lightning.

Standard library only: the job side runs in the SageMaker PyTorch image (another Python minor than
the user's) and inside ``bincount.train``, whose local runs must not import anything heavy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bincount.sagemaker.job.network import RESOURCE_CONFIG, Cluster

CONTAINER_ROOT = Path("/opt/ml")
RESULT_FILE = "result.json"  # written by the job: status, return value, error
PICKLED_RESULT = "result.pkl"  # pickle payload, local backend only: the task's return value as an object
PICKLED_RESULT_MAC = "result.pkl.hmac"  # HMAC-SHA256 of result.pkl with the sweep's key (see result_mac)
# Variables the launcher sets for the job (names only: never a secret value).
ENV_CONFIG_SHA = "BINCOUNT_SM_CONFIG_SHA"
ENV_SECRETS = "BINCOUNT_SM_SECRETS"
ENV_JOB_DIR = "BINCOUNT_SM_JOB_DIR"
ENV_CKPT_SUBDIR = "BINCOUNT_SM_CHECKPOINT_SUBDIR"
# What the job's pip install was: the constraints file (relative to the code channel) and the requirement
# (``bincount[s3,wandb]``); set by the real backend only, the job checks the installed versions against them.
ENV_PINS = "BINCOUNT_SM_PINS"
ENV_INSTALLED = "BINCOUNT_SM_INSTALLED"
# The sweep's result key (hex): set by the local backend only, since it must never leave the launching machine.
ENV_RESULT_KEY = "BINCOUNT_SM_RESULT_KEY"


def result_mac(key: bytes, job_dir: str, data: bytes) -> str:
    """HMAC of a pickled result, bound to its job directory (one job's result cannot pass for another's)."""
    return hmac.new(key, job_dir.encode() + b"\0" + data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Layout:
    """The ``/opt/ml`` tree of one job; ``root`` is ``/`` in a real container, a scratch dir locally."""

    root: Path

    @property
    def ml(self) -> Path:
        return self.root / "opt" / "ml" if self.root != Path("/") else CONTAINER_ROOT

    code = property(lambda self: self.ml / "input" / "data" / "code")
    config = property(lambda self: self.ml / "input" / "config")
    model = property(lambda self: self.ml / "model")
    output = property(lambda self: self.ml / "output")
    output_data = property(lambda self: self.ml / "output" / "data")
    failure = property(lambda self: self.ml / "output" / "failure")
    checkpoints = property(lambda self: self.ml / "checkpoints")

    def make(self) -> "Layout":
        for d in (self.code, self.config, self.model, self.output_data, self.checkpoints):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def env(self, job_name: str, hosts: int = 1, rank: int = 0, num_gpus: int = 0, interface: str = "lo",
            instance_type: str = "local") -> dict[str, str]:
        """The variables SageMaker's v3 drivers export (the subset a training script reads)."""
        names = [f"algo-{i + 1}" for i in range(hosts)]
        return {
            "SM_MODEL_DIR": str(self.model), "SM_OUTPUT_DIR": str(self.output),
            "SM_OUTPUT_DATA_DIR": str(self.output_data), "SM_CHECKPOINT_DIR": str(self.checkpoints),
            "SM_CHANNEL_CODE": str(self.code), "SM_INPUT_CONFIG_DIR": str(self.config),
            "SM_CURRENT_HOST": names[rank], "SM_HOSTS": json.dumps(sorted(names)),
            "SM_HOST_COUNT": str(hosts), "SM_CURRENT_HOST_RANK": str(sorted(names).index(names[rank])),
            "SM_MASTER_ADDR": "algo-1", "SM_MASTER_PORT": "7777", "SM_NETWORK_INTERFACE_NAME": interface,
            "SM_CURRENT_INSTANCE_TYPE": instance_type, "SM_NUM_GPUS": str(num_gpus),
            "SM_NUM_CPUS": str(os.cpu_count() or 1), "SM_HPS": "{}", "TRAINING_JOB_NAME": job_name,
        }


def job_layout(env=os.environ) -> Layout:
    """The layout of the running job, found from its variables (the scratch root locally)."""
    data = env.get("SM_OUTPUT_DATA_DIR")
    if not data:
        return Layout(Path("/"))
    return Layout(Path(data).parents[3]) if Path(data).parents[2].name == "opt" else Layout(Path("/"))


def lightning_cluster_args(env=os.environ) -> dict:
    """Trainer arguments the job's machines dictate (empty outside a SageMaker job).

    Lightning checks ``num_nodes * devices`` against torchrun's WORLD_SIZE, so both come from the
    ``SM_*`` variables rather than from the user's config.
    """
    if "TRAINING_JOB_NAME" not in env or not ({"SM_HOSTS", "SM_HOST_COUNT"} & set(env)):
        return {}
    cluster = Cluster.from_env(env, job_layout(env).config / RESOURCE_CONFIG)
    args: dict = {"num_nodes": cluster.hosts}
    if cluster.gpus > 0:
        args["devices"] = cluster.gpus
    return args
