"""Multi-host jobs (issue 16, item 2): torchrun's rendezvous from SageMaker's host list, NCCL/EFA from the type.

The rehearsal at the end plays a 2-host job with two real ``python -m bincount.sagemaker.job.entry`` processes,
each with its own /opt/ml tree and the variables a v3 ModelTrainer job has (``SM_HOSTS``, ``SM_CURRENT_HOST``,
``SM_NETWORK_INTERFACE_NAME=lo``, an instance type); algo-1 is mapped to 127.0.0.1 by the rehearsal-only
``BINCOUNT_SM_REHEARSAL_HOSTS``. Real torchrun, gloo on CPU, one all_reduce; each rank writes what it saw.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bincount.sagemaker.job.contract import Layout, lightning_cluster_args
from bincount.sagemaker.job.network import (ENV_REHEARSAL_HOSTS, Cluster, ClusterError, network_env, resolve_network)

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("NCCL_", "FI_", "GLOO_", "RDMAV_")
V3 = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "SM_HOST_COUNT": "2",
      "SM_CURRENT_HOST_RANK": "1", "SM_MASTER_ADDR": "algo-1", "SM_MASTER_PORT": "7777", "SM_NUM_GPUS": "4",
      "SM_NETWORK_INTERFACE_NAME": "eth0", "SM_CURRENT_INSTANCE_TYPE": "ml.p4d.24xlarge", "TRAINING_JOB_NAME": "j"}


def test_rendezvous_from_the_v3_variables():
    cluster = Cluster.from_env(V3)
    assert (cluster.hosts, cluster.rank, cluster.master_addr) == (2, 1, "algo-1")
    assert cluster.torchrun() == ["python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4",
                                  "--node_rank=1", "--master_addr=algo-1", "--master_port=7777"]
    assert lightning_cluster_args(V3) == {"num_nodes": 2, "devices": 4}
    assert lightning_cluster_args({}) == {}, "local runs are unchanged"


def test_hosts_are_ranked_in_sorted_order_as_sagemaker_does():
    env = {**V3, "SM_HOSTS": '["algo-2", "algo-10", "algo-1"]', "SM_HOST_COUNT": "3", "SM_CURRENT_HOST": "algo-2",
           "SM_CURRENT_HOST_RANK": "2"}
    cluster = Cluster.from_env(env)
    assert cluster.names == ("algo-1", "algo-10", "algo-2") and cluster.rank == 2 and cluster.master_addr == "algo-1"


def test_resourceconfig_json_when_the_variables_are_missing(tmp_path):
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-2", "algo-1"],
                                  "network_interface_name": "ens5", "current_instance_type": "ml.g5.12xlarge"}))
    cluster = Cluster.from_env({"SM_NUM_GPUS": "1"}, config)
    assert (cluster.hosts, cluster.rank, cluster.interface, cluster.instance_type) == (2, 0, "ens5", "ml.g5.12xlarge")
    with pytest.raises(ClusterError, match=r"SM_CURRENT_HOST='algo-2' but resourceconfig.json says current_host='algo-1'"):
        Cluster.from_env({"SM_CURRENT_HOST": "algo-2"}, config)
    with pytest.raises(ClusterError, match=r"SM_HOSTS=.*algo-3.* but resourceconfig.json lists hosts"):
        Cluster.from_env({"SM_HOSTS": '["algo-1", "algo-3"]'}, config)


@pytest.mark.parametrize("change, message", [
    ({"SM_CURRENT_HOST_RANK": "0"}, r"SM_CURRENT_HOST_RANK='0' but SM_HOSTS=\['algo-1', 'algo-2'\] with "
                                    r"SM_CURRENT_HOST='algo-2' means SM_CURRENT_HOST_RANK='1'"),
    ({"SM_HOST_COUNT": "3"}, r"SM_HOST_COUNT='3' but .* means SM_HOST_COUNT='2'"),
    ({"SM_MASTER_ADDR": "algo-2"}, r"SM_MASTER_ADDR='algo-2' but .* means SM_MASTER_ADDR='algo-1'"),
    ({"SM_CURRENT_HOST": "algo-9"}, r"SM_CURRENT_HOST='algo-9' is not one of SM_HOSTS"),
    ({"SM_CURRENT_HOST": ""}, r"SM_CURRENT_HOST is not set \(nor current_host in resourceconfig.json\)"),
    ({"SM_HOSTS": "algo-1,algo-2"}, r"SM_HOSTS='algo-1,algo-2' is not a JSON list of host names"),
    ({"SM_HOSTS": "", "SM_HOST_COUNT": "2"}, r"SM_HOST_COUNT=2 but neither SM_HOSTS nor resourceconfig.json"),
])
def test_variables_that_disagree_with_the_host_list_are_named(change, message):
    with pytest.raises(ClusterError, match=message):
        Cluster.from_env({**V3, **change})


def test_one_host_needs_no_rendezvous():
    """The local backend's single host points SM_MASTER_ADDR at loopback: not a contradiction for one host."""
    env = {**Layout(Path("/x")).env("j"), "SM_MASTER_ADDR": "127.0.0.1"}
    cluster = Cluster.from_env(env)
    assert not cluster.distributed and cluster.rank == 0
    assert not Cluster.from_env({}).distributed, "outside a job: one host"


def test_the_rehearsal_map_moves_only_the_master_address():
    assert Cluster.from_env({**V3, ENV_REHEARSAL_HOSTS: "algo-1=127.0.0.1"}).master_addr == "127.0.0.1"
    assert Cluster.from_env({**V3, ENV_REHEARSAL_HOSTS: "algo-2=127.0.0.2"}).master_addr == "algo-1"
    with pytest.raises(ClusterError, match=r"BINCOUNT_SM_REHEARSAL_HOSTS entry 'algo-1:127.0.0.1': expected host=address"):
        Cluster.from_env({**V3, ENV_REHEARSAL_HOSTS: "algo-1:127.0.0.1"})


EFA_RDMA = {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "FI_PROVIDER": "efa", "FI_EFA_FORK_SAFE": "1",
            "NCCL_PROTO": "simple", "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}
TCP = {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "NCCL_NET": "Socket"}


@pytest.mark.parametrize("instance_type, mode, kind, expected", [
    ("ml.p4d.24xlarge", "auto", "efa", EFA_RDMA),
    ("ml.p5.48xlarge", "efa", "efa", EFA_RDMA),
    ("ml.g5.48xlarge", "auto", "efa", {k: v for k, v in EFA_RDMA.items() if k not in ("FI_EFA_USE_DEVICE_RDMA",
                                                                                     "RDMAV_FORK_SAFE")}),
    ("ml.g5.12xlarge", "auto", "tcp", TCP),
    ("ml.p4d.24xlarge", "tcp", "tcp", TCP),
])
def test_network_variables_for_the_instance_type(instance_type, mode, kind, expected):
    cluster = Cluster.from_env({**V3, "SM_CURRENT_INSTANCE_TYPE": instance_type})
    assert network_env(cluster, mode, {}) == (kind, expected, {})


def test_a_variable_the_user_set_is_not_replaced():
    cluster = Cluster.from_env(V3)
    kind, added, kept = network_env(cluster, "auto", {"NCCL_PROTO": "LL128", "NCCL_SOCKET_IFNAME": "=eth1"})
    assert kind == "efa" and "NCCL_PROTO" not in added and "NCCL_SOCKET_IFNAME" not in added
    assert kept == {"NCCL_PROTO": "LL128", "NCCL_SOCKET_IFNAME": "=eth1"} and added["FI_PROVIDER"] == "efa"


def test_no_interface_is_an_error_unless_the_user_names_one():
    env = {k: v for k, v in V3.items() if k != "SM_NETWORK_INTERFACE_NAME"}
    with pytest.raises(ClusterError, match="SM_NETWORK_INTERFACE_NAME is not set .*NCCL_SOCKET_IFNAME"):
        network_env(Cluster.from_env(env), "auto", {})
    mine = {"NCCL_SOCKET_IFNAME": "eth1", "GLOO_SOCKET_IFNAME": "eth1"}
    assert "NCCL_SOCKET_IFNAME" not in network_env(Cluster.from_env(env), "auto", mine)[1]


def test_bad_modes_are_refused_by_name():
    with pytest.raises(ClusterError, match=r"network='fast'; valid: \['auto', 'efa', 'tcp'\]"):
        resolve_network("fast", "ml.p4d.24xlarge")
    with pytest.raises(ClusterError, match=r"network='efa' but instance type 'ml.g5.12xlarge' has no EFA; "
                                           r"EFA types: .*ml.p4d.24xlarge.*Use network=auto or tcp"):
        resolve_network("efa", "ml.g5.12xlarge")


@pytest.mark.parametrize("override, message", [
    ("hydra.launcher.network=fast", r"hydra.launcher.network='fast'; valid: \['auto', 'efa', 'tcp'\]"),
    ("hydra.launcher.network=efa", r"hydra.launcher.network='efa' but instance type 'ml.g5.12xlarge' has no EFA"),
])
def test_the_launcher_refuses_a_bad_network_before_anything_starts(hydra_sweep_runner, tmp_path, override, message):
    from bincount.sagemaker.settings import LauncherConfigError

    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=tmp_path,
                               overrides=["hydra/launcher=sagemaker_base", "hydra.launcher.dry_run=true",
                                          "hydra.launcher.instance_type=ml.g5.12xlarge", "hydra.launcher.instance_count=2",
                                          override, f"hydra.launcher.source_dir={ROOT / 'tests' / 'sagemaker_app'}"])
    with pytest.raises(LauncherConfigError, match=message):
        with sweep:
            pass


def test_the_job_environment_carries_the_network_mode(hydra_sweep_runner, tmp_path):
    """hydra.launcher.network reaches the job by value, in the CreateTrainingJob request the dry run records
    (tcp, not the default auto: the job would otherwise pick EFA on an EFA type)."""
    pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=tmp_path,
                               overrides=["hydra/launcher=sagemaker_base", "hydra.launcher.dry_run=true",
                                          "hydra.launcher.region=us-east-1", "hydra.launcher.network=tcp",
                                          "hydra.launcher.instance_type=ml.p4d.24xlarge",
                                          "hydra.launcher.instance_count=2",
                                          f"hydra.launcher.source_dir={ROOT / 'tests' / 'sagemaker_app'}"])
    with sweep:  # the runner deletes its temp dir on exit: read the request inside
        (job,) = sweep.returns[0]
        request = json.loads((Path(job.working_dir) / "create_training_job.json").read_text())
    assert request["Environment"]["BINCOUNT_SM_NETWORK"] == "tcp"


def test_the_multi_node_preset_picks_the_network_by_type():
    import yaml

    preset = yaml.safe_load((ROOT / "conf" / "hydra" / "launcher" / "sagemaker_multi_node.yaml").read_text())
    assert preset["network"] == "auto" and preset["instance_count"] > 1
    assert resolve_network(preset["network"], preset["instance_type"]) == "tcp", "ml.g5.12xlarge has no EFA"


# --- the two-host rehearsal ---------------------------------------------------------------------------------

SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
names = ["MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "GROUP_RANK", "BINCOUNT_SM_NETWORK"]
seen = {k: v for k, v in os.environ.items() if k.startswith(("NCCL_", "FI_", "GLOO_", "RDMAV_")) or k in names}
with open(os.path.join(os.environ["REHEARSAL_OUT"], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump({"env": seen, "sum": total.item()}, f)
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rehearse(tmp_path: Path, instance_type: str, user: dict[str, str]) -> tuple[list[dict], list[str], int]:
    """Two entry processes as algo-1 and algo-2 of one job; what each rank saw, and each host's output."""
    script, out, port = tmp_path / "rehearsal.py", tmp_path / "ranks", free_port()
    script.write_text(SCRIPT)
    out.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    procs = []
    for rank in (0, 1):
        layout = Layout(tmp_path / f"host{rank + 1}").make()
        env = {**base, **layout.env("rehearsal", hosts=2, rank=rank, interface="lo", instance_type=instance_type),
               "SM_MASTER_PORT": str(port), ENV_REHEARSAL_HOSTS: "algo-1=127.0.0.1", "REHEARSAL_OUT": str(out),
               "BINCOUNT_SM_JOB_DIR": str(tmp_path / f"host{rank + 1}" / "job"), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), base.get("PYTHONPATH", "")]), **user}
        procs.append(subprocess.Popen([sys.executable, "-m", "bincount.sagemaker.job.entry", "--script", str(script), "--"],
                                      env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=120)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:  # entry forwards SIGTERM to torchrun's process group
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(logs)[-6000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks, logs, port


@pytest.mark.slow
@pytest.mark.parametrize("instance_type, user, expected", [
    ("ml.p4d.24xlarge", {"NCCL_PROTO": "LL128"},  # a user's value reaches torchrun in place of NCCL_PROTO=simple
     {"NCCL_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo", "FI_PROVIDER": "efa", "FI_EFA_FORK_SAFE": "1",
      "NCCL_PROTO": "LL128", "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}),
    ("ml.g5.12xlarge", {}, {"NCCL_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo", "NCCL_NET": "Socket"}),
])
def test_two_hosts_rehearsal_reaches_torchrun_with_the_same_rendezvous(tmp_path, instance_type, user, expected):
    ranks, logs, port = rehearse(tmp_path, instance_type, user)
    assert [r["sum"] for r in ranks] == [3.0, 3.0], "one all_reduce across both hosts"
    for rank, seen in enumerate(r["env"] for r in ranks):
        assert {k: seen[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE")} == {
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
        assert seen["RANK"] == seen["GROUP_RANK"] == str(rank), "node rank = index of SM_CURRENT_HOST in SM_HOSTS"
        assert {k: v for k, v in seen.items() if k.startswith(PREFIXES)} == expected, instance_type
    assert ranks[0]["env"] == {**ranks[1]["env"], "RANK": "0", "GROUP_RANK": "0"}, "both hosts saw the same"
    assert "host algo-2 (rank 1 of algo-1,algo-2), rendezvous 127.0.0.1" in logs[1]
    if user:
        assert "kept from the job environment: NCCL_PROTO=LL128" in logs[0]
