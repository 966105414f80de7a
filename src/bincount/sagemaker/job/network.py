"""The environment a multi-host job's processes need: torchrun's rendezvous and NCCL's network.

Why here: the launcher starts jobs in ModelTrainer's command mode, where the SDK's own torchrun driver
(``sagemaker/train/container_drivers/distributed_drivers/torchrun_driver.py``) never runs, so neither its
rendezvous flags nor its NCCL/EFA variables reach the job; ``entry.py`` starts torchrun with what this
module computes.

Rendezvous. The host list is the source of truth: ``SM_HOSTS`` (a JSON list) and ``SM_CURRENT_HOST``, which
the v3 driver ``container_drivers/scripts/environment.py`` exports from ``/opt/ml/input/config/resourceconfig.json``
(read here too when the variables are missing). That driver ranks hosts in sorted order, so the master is the
first sorted host and a node's rank its index. ``SM_HOST_COUNT``, ``SM_CURRENT_HOST_RANK`` and ``SM_MASTER_ADDR``
(hard-coded ``algo-1``) are derived from the same list; a job whose variables disagree with it stops with the
names and values, rather than hanging in a rendezvous that cannot complete.

Standard library only: ``entry.py`` imports it in the container, whose Python is not the user's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_NETWORK = "BINCOUNT_SM_NETWORK"  # hydra.launcher.network, for the job
NETWORKS = ("auto", "efa", "tcp")
# Rehearsals only (the local two-host test): ``algo-1=127.0.0.1,...``, read like /etc/hosts, so processes on one
# machine can play SageMaker's hosts. Never set by the launcher; a real job resolves algo-N through its own hosts file.
ENV_REHEARSAL_HOSTS = "BINCOUNT_SM_REHEARSAL_HOSTS"
RESOURCE_CONFIG = "resourceconfig.json"

# Types whose EFA NCCL can use. The first nine are the installed SDK's own list (sagemaker-train 1.27,
# container_drivers/common/utils.py SM_EFA_NCCL_INSTANCES), the types its torchrun driver enables EFA for; the
# EC2 user guide's EFA list (awsdocs/amazon-ec2-user-guide, efa.md) has the same g4dn, g5, p3dn, p4d and trn1
# sizes. p5en, p6-b200, g6.48xlarge and g6e.48xlarge are later EFA types that SageMaker training accepts. Other
# g5/g6 sizes (ml.g5.12xlarge ...) have none. To check a type: aws ec2 describe-instance-types
# --filters Name=network-info.efa-supported,Values=true (the EC2 guide's command).
EFA_TYPES = frozenset({
    "ml.g4dn.8xlarge", "ml.g4dn.12xlarge", "ml.g5.48xlarge", "ml.p3dn.24xlarge", "ml.p4d.24xlarge",
    "ml.p4de.24xlarge", "ml.p5.48xlarge", "ml.p5e.48xlarge", "ml.trn1.32xlarge",
    "ml.p5en.48xlarge", "ml.p6-b200.48xlarge", "ml.g6.48xlarge", "ml.g6e.48xlarge"})
# Types whose EFA does RDMA (GPUDirect): the SDK's SM_EFA_RDMA_INSTANCES, which agrees with the p4d/p4de/p5
# case of AWS's DLC EFA test (aws/deep-learning-containers test/efa/scripts/nccl_allreduce.sh), plus p5en and
# p6-b200. libfabric refuses FI_EFA_USE_DEVICE_RDMA=1 on a device without RDMA, so this list stays short.
EFA_RDMA_TYPES = frozenset({"ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge", "ml.p5e.48xlarge",
                            "ml.trn1.32xlarge", "ml.p5en.48xlarge", "ml.p6-b200.48xlarge"})


class ClusterError(ValueError):
    """The job's host variables are missing or contradict each other, or the network cannot be set up."""


def read_resource_config(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ClusterError(f"{path} is not readable JSON: {e}") from None


def _one(env, config: dict, var: str, key: str) -> str | None:
    """The variable, or the resource config's key; both set and different is an error naming both."""
    value, other = env.get(var) or None, config.get(key)
    if value is not None and other is not None and value != other:
        raise ClusterError(f"{var}={value!r} but {RESOURCE_CONFIG} says {key}={other!r}")
    return value if value is not None else other


def _hosts(env, config: dict) -> list[str] | None:
    raw, listed = env.get("SM_HOSTS"), config.get("hosts")
    parsed = None
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not parsed or not all(isinstance(h, str) and h for h in parsed):
            raise ClusterError(f"SM_HOSTS={raw[:200]!r} is not a JSON list of host names "
                               '(SageMaker writes e.g. ["algo-1", "algo-2"])')
        if listed is not None and sorted(listed) != sorted(parsed):
            raise ClusterError(f"SM_HOSTS={raw!r} but {RESOURCE_CONFIG} lists hosts {listed}")
    hosts = parsed if parsed is not None else listed
    return sorted(hosts) if hosts else None


def rehearsal_hosts(env) -> dict[str, str]:
    """``algo-1=127.0.0.1,algo-2=127.0.0.1`` -> ``{"algo-1": "127.0.0.1", ...}`` (empty outside rehearsals)."""
    mapping = {}
    for entry in filter(None, (e.strip() for e in env.get(ENV_REHEARSAL_HOSTS, "").split(","))):
        name, sep, address = entry.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not re.fullmatch(r"[A-Za-z0-9.:_-]+", address):
            raise ClusterError(f"{ENV_REHEARSAL_HOSTS} entry {entry[:80]!r}: expected host=address, "
                               "e.g. algo-1=127.0.0.1 (comma-separated)")
        mapping[name] = address
    return mapping


@dataclass(frozen=True)
class Cluster:
    """The job's hosts as SageMaker lists them (sorted, as its drivers rank them) and this host among them."""

    names: tuple[str, ...]
    current: str
    gpus: int
    master_addr: str
    master_port: str
    interface: str | None = None
    instance_type: str | None = None

    hosts = property(lambda self: len(self.names))
    rank = property(lambda self: self.names.index(self.current))

    @classmethod
    def from_env(cls, env=os.environ, resource_config: Path | None = None) -> "Cluster":
        config = read_resource_config(resource_config)
        gpus, port = int(env.get("SM_NUM_GPUS") or 0), env.get("SM_MASTER_PORT") or "7777"
        interface = _one(env, config, "SM_NETWORK_INTERFACE_NAME", "network_interface_name")
        instance_type = _one(env, config, "SM_CURRENT_INSTANCE_TYPE", "current_instance_type")
        names = _hosts(env, config)
        if names is None:
            if int(env.get("SM_HOST_COUNT") or 1) > 1:
                raise ClusterError(f"SM_HOST_COUNT={env['SM_HOST_COUNT']} but neither SM_HOSTS nor {RESOURCE_CONFIG} "
                                   "lists the hosts: torchrun's rendezvous comes from that list")
            return cls(("localhost",), "localhost", gpus, "127.0.0.1", port, interface, instance_type)  # not a job
        current = _one(env, config, "SM_CURRENT_HOST", "current_host")
        if current is None:
            raise ClusterError(f"SM_CURRENT_HOST is not set (nor current_host in {RESOURCE_CONFIG}): this host's rank "
                               f"among SM_HOSTS={names} is unknown")
        if current not in names:
            raise ClusterError(f"SM_CURRENT_HOST={current!r} is not one of SM_HOSTS={names} "
                               f"(nor is current_host in {RESOURCE_CONFIG})")
        derived = {"SM_HOST_COUNT": str(len(names)), "SM_CURRENT_HOST_RANK": str(names.index(current))}
        if len(names) > 1:  # one host needs no rendezvous (the local backend points SM_MASTER_ADDR at loopback)
            derived["SM_MASTER_ADDR"] = names[0]
        for var, expected in derived.items():
            if env.get(var) not in (None, "", expected):
                raise ClusterError(f"{var}={env[var]!r} but SM_HOSTS={names} with SM_CURRENT_HOST={current!r} "
                                   f"means {var}={expected!r} (the sorted host list is the source of truth)")
        master = rehearsal_hosts(env).get(names[0], names[0])
        return cls(tuple(names), current, gpus, master, port, interface, instance_type)

    @property
    def distributed(self) -> bool:
        """Several hosts need torchrun; several GPUs on one host are Lightning's own DDP launch."""
        return self.hosts > 1

    def torchrun(self, python: str = "python") -> list[str]:
        """torchrun across the job's hosts, one process per GPU (SageMaker's command mode starts none).

        ``python -m torch.distributed.run`` is torchrun without relying on PATH.
        """
        return [python, "-m", "torch.distributed.run", f"--nnodes={self.hosts}", f"--nproc_per_node={max(self.gpus, 1)}",
                f"--node_rank={self.rank}", f"--master_addr={self.master_addr}",
                f"--master_port={self.master_port}"]


def resolve_network(mode: str, instance_type: str | None) -> str:
    """``auto``/``efa``/``tcp`` -> ``efa`` or ``tcp`` for this instance type; ``efa`` where there is none is refused."""
    if mode not in NETWORKS:
        raise ClusterError(f"network={mode!r}; valid: {list(NETWORKS)}")
    has_efa = instance_type in EFA_TYPES
    if mode == "efa" and not has_efa:
        raise ClusterError(f"network='efa' but instance type {instance_type!r} has no EFA; EFA types: "
                           f"{', '.join(sorted(EFA_TYPES))}. Use network=auto or tcp (or set FI_* in environment)")
    return "efa" if mode == "efa" or (mode == "auto" and has_efa) else "tcp"


def network_env(cluster: Cluster, mode: str, env) -> tuple[str, dict[str, str], dict[str, str]]:
    """The network (``efa``/``tcp``), the variables to add for it, and those ``env`` already sets (kept as they are).

    Where each setting comes from:

    - ``NCCL_SOCKET_IFNAME``: SageMaker's ``network_interface_name``, as the SDK's torchrun and mpi drivers set it;
      ``GLOO_SOCKET_IFNAME`` the same, PyTorch's variable for gloo (CPU collectives, the rehearsal).
    - EFA: ``FI_PROVIDER=efa`` (SDK drivers; AWS's DLC EFA test); ``NCCL_PROTO=simple``, the toolkit's fix "to
      handle the out-of-order data delivery from EFA" (sagemaker-training-toolkit 9a5ed9f; the SDK's mpi driver
      sets it with EFA only); ``FI_EFA_FORK_SAFE=1`` (DLC EFA test: dataloader workers fork); on RDMA types
      ``FI_EFA_USE_DEVICE_RDMA=1`` and ``RDMAV_FORK_SAFE=1`` (SDK torchrun driver, DLC test).
    - TCP: no ``FI_*``, and ``NCCL_NET=Socket`` (NCCL's name for its own TCP transport): the image's aws-ofi-nccl
      plugin would otherwise put NCCL on libfabric's tcp provider.

    A variable the job already has (the launcher's ``environment``, the image) is the user's choice and wins.
    """
    kind = resolve_network(mode, cluster.instance_type)
    wanted: dict[str, str] = {}
    if cluster.interface:
        wanted.update(NCCL_SOCKET_IFNAME=cluster.interface, GLOO_SOCKET_IFNAME=cluster.interface)
    elif not {"NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"} <= set(env):
        raise ClusterError(f"SM_NETWORK_INTERFACE_NAME is not set (nor network_interface_name in {RESOURCE_CONFIG}): "
                           "set NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME in hydra.launcher.environment")
    if kind == "efa":
        wanted.update(FI_PROVIDER="efa", FI_EFA_FORK_SAFE="1", NCCL_PROTO="simple")
        if cluster.instance_type in EFA_RDMA_TYPES:
            wanted.update(FI_EFA_USE_DEVICE_RDMA="1", RDMAV_FORK_SAFE="1")
    else:
        wanted["NCCL_NET"] = "Socket"
    return kind, {k: v for k, v in wanted.items() if k not in env}, {k: env[k] for k in wanted if k in env}
