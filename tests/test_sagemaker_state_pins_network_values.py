"""The SageMaker launcher's job state, a job's pins and a multi-host job's network, checked by value.

Three modules whose answers a user (or the launcher's loop) acts on:

- ``bincount.sagemaker.state``: which earlier job a relaunched sweep re-attaches to, which it refuses (and what
  it logs, word for word), and the state file's exact content, written through a temporary file;
- ``bincount.sagemaker.job.pins``: the job's constraints text, the closure of a requirement and the pins that
  differ, computed over small fake installed distributions (``*.dist-info`` on ``sys.path``), so every version
  and marker is known;
- ``bincount.sagemaker.job.network``: the cluster's hosts, rank, master address and port, the torchrun command,
  the rehearsal host map, and each refusal's whole message.

Each test pins the whole value or message: a reworded message, a dropped argument or a flipped condition fails.
The backends here are fakes that record what ``reattach`` asked of them; nothing trains and nothing starts.
"""

from __future__ import annotations

import logging
import os
import time
import types
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bincount.sagemaker.job import pins
from bincount.sagemaker.job.network import (ENV_REHEARSAL_HOSTS, Cluster, ClusterError, network_env,
                                            read_resource_config, rehearsal_hosts)
from bincount.sagemaker.job.pins import (PinMismatch, canonical, check_installed, differences, job_constraints,
                                         requirement_closure)
from bincount.sagemaker.spec import JobSpec
from bincount.sagemaker.state import STATE_FILE, previous_completion, reattach, save_state

STATE_LOGGER = "bincount.sagemaker.state"


def job_spec(local_dir: Path, idx: int = 0, sha: str = "config-a", state_sha: str = "state-a") -> JobSpec:
    """A launcher's job as ``build_spec`` leaves it, for the fields the code under test reads."""
    return JobSpec(idx, [], OmegaConf.create({}), local_dir, str(idx), ["python", "-m", "bincount.sagemaker.job.entry"],
                   {}, sha, f"bincount-{idx}", state_sha=state_sha)


def messages(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == STATE_LOGGER]


# 1. Re-attaching a relaunched sweep to its jobs (bincount.sagemaker.state) -------------------------------------

@dataclass
class Handle:
    name: str


class AttachOnly:
    """A backend that re-attaches by the recorded name only (as the local backend: it has no ``find``)."""

    def __init__(self, attached: Handle | None = None, error: Exception | None = None) -> None:
        self.attached, self.error, self.calls = attached, error, []

    def attach(self, spec, saved):
        self.calls.append(("attach", spec, dict(saved)))
        if self.error:
            raise self.error
        return self.attached

    def log_location(self, handle) -> str:
        return f"/logs/{handle.name}/job.log"


class Tagged(AttachOnly):
    """A backend that can also look a job up by its tags (as SageMaker's: ``find``)."""

    def __init__(self, found: Handle | None = None, find_error: Exception | None = None, **kw) -> None:
        super().__init__(**kw)
        self.found, self.find_error = found, find_error

    def find(self, spec):
        self.calls.append(("find", spec))
        if self.find_error:
            raise self.find_error
        return self.found


def recorded(tmp_path: Path, idx: int = 0, **fields) -> JobSpec:
    """A job whose earlier launch wrote its .hydra/ and a state (``fields``; none: no state file)."""
    spec = job_spec(tmp_path / str(idx), idx)
    (spec.local_dir / ".hydra").mkdir(parents=True)
    if fields:
        save_state(spec, **fields)
    return spec


def test_a_recorded_running_job_is_reattached_by_its_name(tmp_path, caplog):
    spec = recorded(tmp_path, name="bincount-0-20250101", status="InProgress", started=1000.0, pid=42)
    backend = Tagged(found=Handle("another"), attached=Handle("bincount-0-20250101"))
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        handle = reattach(backend, spec)
    assert handle == Handle("bincount-0-20250101")
    assert backend.calls == [("attach", spec, {"config_sha": "config-a", "state_sha": "state-a",
                                               "name": "bincount-0-20250101", "status": "InProgress",
                                               "started": 1000.0, "pid": 42})], "attached by name, never searched"
    assert backend.calls[0][1] is spec
    assert spec.extra == {"name": "bincount-0-20250101", "started": 1000.0}
    assert messages(caplog) == [("INFO", "bincount-0-20250101: re-attached (started by an earlier launch of this "
                                         "sweep); log /logs/bincount-0-20250101/job.log")]


@pytest.mark.parametrize("state", [
    {"name": "bincount-0-x", "status": "Completed"},  # finished and collected: previous_completion's case
    {"name": "bincount-0-x", "status": "Pruned"},
    {"name": "bincount-0-x", "status": "InProgress", "state_sha": "state-b"},  # another config or code
    {"status": "InProgress"},  # no job name recorded
    {"name": "", "status": "InProgress"},
])
def test_a_recorded_job_that_is_not_running_for_this_config_is_refused(tmp_path, caplog, state):
    """Refused before the backend is asked anything: no attach, and no tag search either (a state exists)."""
    spec = recorded(tmp_path, **state)
    backend = Tagged(found=Handle("tagged"), attached=Handle("bincount-0-x"))
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        assert reattach(backend, spec) is None
    assert (backend.calls, spec.extra, messages(caplog)) == ([], {}, [])


@pytest.mark.parametrize("hydra_dir, backend", [(False, Tagged), (True, AttachOnly)])
def test_no_state_is_searched_by_tag_only_after_a_launch_wrote_hydra_and_where_the_backend_can(tmp_path, caplog,
                                                                                             hydra_dir, backend):
    """No .hydra/: a first launch, nothing to look for. A backend without ``find``: nothing it can look for."""
    spec = job_spec(tmp_path / "0")
    if hydra_dir:
        (spec.local_dir / ".hydra").mkdir(parents=True)
    fake = backend(attached=Handle("bincount-0-x"))
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        assert reattach(fake, spec) is None
    assert (fake.calls, spec.extra, messages(caplog)) == ([], {}, [])


def test_an_unrecorded_job_is_found_by_its_tags(tmp_path, caplog):
    """Killed between CreateTrainingJob and the state file: the job is looked up by tag, and its start is now."""
    spec = recorded(tmp_path)
    backend = Tagged(found=Handle("bincount-0-tagged"), attached=Handle("wrong"))
    before = time.time()
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        handle = reattach(backend, spec)
    assert handle == Handle("bincount-0-tagged")
    assert backend.calls == [("find", spec)] and backend.calls[0][1] is spec
    assert spec.extra["name"] == "bincount-0-tagged" and before <= spec.extra["started"] <= time.time()
    assert messages(caplog) == [("INFO", "bincount-0-tagged: re-attached (started by an earlier launch of this "
                                         "sweep); log /logs/bincount-0-tagged/job.log")]


def test_an_unrecorded_job_not_found_is_launched_without_a_word(tmp_path, caplog):
    spec = recorded(tmp_path, idx=3)
    backend = Tagged(found=None)
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        assert reattach(backend, spec) is None
    assert (backend.calls, spec.extra, messages(caplog)) == ([("find", spec)], {}, [])


def test_a_recorded_job_that_is_gone_is_launched_again(tmp_path, caplog):
    spec = recorded(tmp_path, idx=3, name="bincount-3-20250101", status="InProgress")
    backend = AttachOnly(attached=None)
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        assert reattach(backend, spec) is None
    assert spec.extra == {} and [c[0] for c in backend.calls] == ["attach"]
    assert messages(caplog) == [("INFO", "job 3: bincount-3-20250101 from an earlier launch is gone; "
                                         "launching it again")]


@pytest.mark.parametrize("state, make_backend, said", [  # a factory: each run of the test gets a fresh backend
    ({"name": "bincount-3-20250101", "status": "InProgress"}, lambda: AttachOnly(error=RuntimeError("throttled")),
     "job 3: could not re-attach to bincount-3-20250101 (RuntimeError: throttled); launching it"),
    ({}, lambda: Tagged(find_error=ValueError("search failed")),
     "job 3: could not re-attach to a job tagged for it (ValueError: search failed); launching it"),
])
def test_a_job_that_cannot_be_asked_about_is_launched_again_with_a_warning(tmp_path, caplog, state, make_backend,
                                                                           said):
    backend = make_backend()
    spec = recorded(tmp_path, idx=3, **state)
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        assert reattach(backend, spec) is None
    assert spec.extra == {} and len(backend.calls) == 1
    assert messages(caplog) == [("WARNING", said)]


@pytest.mark.parametrize("state, completed", [
    ({"name": "j", "status": "Completed", "return_value": 0.5}, True),
    ({"name": "j", "status": "Completed", "state_sha": "state-b"}, False),  # completed, but for other code
    ({"name": "j", "status": "InProgress"}, False),
    ({"name": "j", "status": "Failed"}, False),
    (None, False),
])
def test_previous_completion_is_a_completed_job_of_the_same_config_and_code(tmp_path, state, completed):
    spec = job_spec(tmp_path / "0")
    if state is not None:
        save_state(spec, **state)
    expected = {"config_sha": "config-a", "state_sha": "state-a", **state} if completed else None
    assert previous_completion(spec) == expected


def test_the_state_file_is_exact_json_written_through_a_temporary_file(tmp_path, monkeypatch):
    """The shas first, then the fields; a value JSON cannot hold (a path) written as its text; the file appears
    whole by one rename of ``.sagemaker_job.json.tmp``, written in full before the rename."""
    spec = job_spec(tmp_path / "sweep" / "7", idx=7)  # its directory does not exist yet
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((Path(src), Path(dst), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    save_state(spec, name="bincount-7-x", status="InProgress", started=12.5, log=Path("/data/job.log"))
    text = ('{"config_sha": "config-a", "state_sha": "state-a", "name": "bincount-7-x", "status": "InProgress", '
            '"started": 12.5, "log": "/data/job.log"}')
    assert renames == [(spec.local_dir / f".{STATE_FILE}.tmp", spec.local_dir / STATE_FILE, text)]
    assert (spec.local_dir / STATE_FILE).read_text() == text
    assert sorted(p.name for p in spec.local_dir.iterdir()) == [STATE_FILE]


# 2. A job's pins (bincount.sagemaker.job.pins) ----------------------------------------------------------------

NOTE = ("# The job's copy (bincount.sagemaker.job.pins): the image's torch/CUDA stack is not pinned here, so pip "
        "keeps the image's build: ")


def test_canonical_names_are_pep_503():
    assert [canonical(n) for n in ("Foo_Bar.baz", "a__b--c..d", "zope.interface", "PyYAML", "plain")] == [
        "foo-bar-baz", "a-b-c-d", "zope-interface", "pyyaml", "plain"]


def test_job_constraints_text_and_the_pins_left_out():
    text = ("# header\ntorch==2.5.1\nlightning==2.6.0\nTorchVision==0.20.1\n--extra-index-url https://x\n"
            "nvidia_cublas_cu12==12.4.5.8\ntorchmetrics==1.4.0  \n")
    assert job_constraints(text) == (
        NOTE + "torch, torchvision, nvidia-cublas-cu12\n# header\nlightning==2.6.0\n--extra-index-url https://x\n"
               "torchmetrics==1.4.0  \n",
        ["torch", "torchvision", "nvidia-cublas-cu12"])
    assert job_constraints("lightning==2.6.0\n") == (NOTE + "\nlightning==2.6.0\n", [])


def fake_dist(site: Path, name: str, version: str, *requires: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    head = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    info.joinpath("METADATA").write_text(head + "".join(f"Requires-Dist: {r}\n" for r in requires))


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Fake installed distributions, found by importlib.metadata on sys.path:

    pinroot 1.0 requires pin-alpha 1.0, pin-beta 2.0, pin-odd ``nightly`` and pin-odd2 ``snapshot`` (versions
    PEP 440 cannot parse), nvidia-fake-lib 1.0 (the image's stack), pin-gpu 1.0 with [gpu], pin-base-only
    for the base requirement only (``extra == ""``), never pin-py2 (a marker false here), and pin-absent,
    which is not installed (popped first: the last requirement listed)."""
    site = tmp_path / "site"
    fake_dist(site, "pinroot", "1.0", "pin-alpha>=1", "pin-beta", "pin-odd", "pin-odd2", "nvidia-fake-lib",
              'pin-gpu; extra == "gpu"', 'pin-base-only; extra == ""', 'pin-py2; python_version < "3"', "pin-absent")
    for name, version in [("pin-alpha", "1.0"), ("pin-beta", "2.0"), ("pin-odd", "nightly"), ("pin-odd2", "snapshot"),
                          ("nvidia-fake-lib", "1.0"), ("pin-gpu", "1.0"), ("pin-base-only", "1.0"),
                          ("pin-py2", "1.0")]:
        fake_dist(site, name, version)
    monkeypatch.syspath_prepend(str(site))
    return site


PINS = {"pin-alpha": "1.0.0", "pin-absent": "2.0", "pin-beta": "2.1", "pin-odd": "nightly", "pin-odd2": "snapshot-2",
        "nvidia-fake-lib": "9.9", "pin-gpu": "3.0", "pin-py2": "0.1", "pin-unrelated": "1.0"}
BASE = {"pinroot", "pin-alpha", "pin-beta", "pin-odd", "pin-odd2", "nvidia-fake-lib", "pin-base-only", "pin-absent"}


def test_requirement_closure_follows_markers_and_keeps_names_not_installed(installed):
    assert requirement_closure("pinroot") == BASE
    assert requirement_closure("pinroot[gpu]") == BASE | {"pin-gpu"}
    assert requirement_closure("pin-nowhere[x]") == {"pin-nowhere"}


def test_requirement_closure_reads_a_distribution_again_only_for_new_extras(tmp_path, monkeypatch):
    """mix-a is reached as mix-a[y] (by mix-c), mix-a[z] (by mix-b) and mix-a[y] (by the root): read twice, for
    [y] and for the [z] it adds; its third mention adds nothing. mix-d, reached twice with no extras: read once."""
    site = tmp_path / "site"
    fake_dist(site, "mix-root", "1.0", "mix-a[y]", "mix-b")
    fake_dist(site, "mix-b", "1.0", "mix-a[z]", "mix-c", "mix-d")
    fake_dist(site, "mix-c", "1.0", "mix-a[y]", "mix-d")
    fake_dist(site, "mix-a", "1.0", 'mix-y; extra == "y"', 'mix-z; extra == "z"')
    for name in ("mix-d", "mix-y", "mix-z"):
        fake_dist(site, name, "1.0")
    monkeypatch.syspath_prepend(str(site))
    read = []

    def distribution(name):
        read.append(name)
        assert len(read) < 50, f"the closure does not end: {read}"
        return metadata.distribution(name)

    monkeypatch.setattr(pins, "metadata", types.SimpleNamespace(
        distribution=distribution, version=metadata.version, PackageNotFoundError=metadata.PackageNotFoundError))
    assert requirement_closure("mix-root") == {"mix-root", "mix-a", "mix-b", "mix-c", "mix-d", "mix-y", "mix-z"}
    assert Counter(read) == {"mix-root": 1, "mix-a": 2, "mix-b": 1, "mix-c": 1, "mix-d": 1, "mix-y": 1, "mix-z": 1}


def test_differences_list_each_pinned_package_installed_otherwise(installed):
    """Sorted by name: not installed, another version, an unparsable version unequal as text. Equal by PEP 440
    (1.0 == 1.0.0) or as text (nightly), the image's stack, a marker false here and pins outside the closure:
    not listed."""
    expected = [("pin-absent", "2.0", "not installed"), ("pin-beta", "2.1", "2.0"),
                ("pin-odd2", "snapshot-2", "snapshot")]
    assert differences(PINS, "pinroot") == expected
    assert differences(PINS, "pinroot[gpu]") == [*expected[:2], ("pin-gpu", "3.0", "1.0"), expected[2]]
    assert differences({"pin-alpha": "1.0.0", "pin-odd": "nightly", "nvidia-fake-lib": "9.9"}, "pinroot") == []


def test_check_installed_names_every_difference_in_one_message(installed, tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# pins\n" + "".join(f"{k}=={v}\n" for k, v in PINS.items()))
    with pytest.raises(PinMismatch) as e:
        check_installed(constraints, "pinroot")
    assert str(e.value) == (f"installed packages differ from the versions pinned for this job in {constraints} "
                            "(pinroot): pin-absent: expected 2.0, found not installed; pin-beta: expected 2.1, "
                            "found 2.0; pin-odd2: expected snapshot-2, found snapshot")
    with pytest.raises(PinMismatch) as e:
        check_installed(constraints, "pin-nowhere[x]")
    assert str(e.value) == "pin-nowhere is not installed: the job's pip install did not run or failed"
    constraints.write_text("pin-alpha==1.0.0\npin-odd==nightly\nnvidia-fake-lib==9.9\npin-unrelated==1\n")
    assert check_installed(constraints, "pinroot") == 2, "pin-alpha and pin-odd: the image's stack is not counted"


# 3. A multi-host job's network (bincount.sagemaker.job.network) -----------------------------------------------

V3 = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2", "SM_HOST_COUNT": "2",
      "SM_CURRENT_HOST_RANK": "1", "SM_MASTER_ADDR": "algo-1", "SM_MASTER_PORT": "29500", "SM_NUM_GPUS": "4",
      "SM_NETWORK_INTERFACE_NAME": "eth0", "SM_CURRENT_INSTANCE_TYPE": "ml.p4d.24xlarge"}


def test_outside_a_job_the_cluster_is_this_machine_alone():
    assert Cluster.from_env({}) == Cluster(("localhost",), "localhost", 0, "127.0.0.1", "7777", None, None)
    one = Cluster.from_env({"SM_NUM_GPUS": "2", "SM_MASTER_PORT": "29400", "SM_NETWORK_INTERFACE_NAME": "eth0",
                            "SM_CURRENT_INSTANCE_TYPE": "ml.g5.xlarge", "SM_HOST_COUNT": "1"})
    assert one == Cluster(("localhost",), "localhost", 2, "127.0.0.1", "29400", "eth0", "ml.g5.xlarge")
    assert (one.hosts, one.rank, one.distributed) == (1, 0, False)


def test_the_cluster_from_the_v3_variables_and_its_torchrun():
    cluster = Cluster.from_env(V3)
    assert cluster == Cluster(("algo-1", "algo-2"), "algo-2", 4, "algo-1", "29500", "eth0", "ml.p4d.24xlarge")
    assert (cluster.hosts, cluster.rank, cluster.distributed) == (2, 1, True)
    assert cluster.torchrun("/opt/conda/bin/python") == [
        "/opt/conda/bin/python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4", "--node_rank=1",
        "--master_addr=algo-1", "--master_port=29500"]


@pytest.mark.parametrize("gpus", [None, "0", "1"])
def test_torchrun_starts_one_process_on_a_host_without_gpus_or_with_one(gpus):
    env = {**V3, "SM_NUM_GPUS": gpus} if gpus is not None else {k: v for k, v in V3.items() if k != "SM_NUM_GPUS"}
    assert Cluster.from_env(env).torchrun() == [
        "python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--node_rank=1",
        "--master_addr=algo-1", "--master_port=29500"]


def test_derived_variables_left_empty_are_not_contradictions():
    env = {**V3, "SM_HOST_COUNT": "", "SM_CURRENT_HOST_RANK": "", "SM_MASTER_ADDR": "", "SM_MASTER_PORT": ""}
    assert Cluster.from_env(env) == Cluster(("algo-1", "algo-2"), "algo-2", 4, "algo-1", "7777", "eth0",
                                            "ml.p4d.24xlarge")


def test_a_host_count_without_a_host_list_is_refused_by_name():
    with pytest.raises(ClusterError) as e:
        Cluster.from_env({"SM_HOST_COUNT": "2"})
    assert str(e.value) == ("SM_HOST_COUNT=2 but neither SM_HOSTS nor resourceconfig.json lists the hosts: "
                            "torchrun's rendezvous comes from that list")


@pytest.mark.parametrize("raw", ["[]", '["algo-1", ""]', "[1, 2]", '"algo-1"', '{"algo-1": 1}', "algo-1,algo-2",
                                 '["algo-1", null]', "x" * 250])
def test_a_host_list_that_is_not_a_json_list_of_names_is_refused(raw):
    with pytest.raises(ClusterError) as e:
        Cluster.from_env({"SM_HOSTS": raw, "SM_CURRENT_HOST": "algo-1"})
    assert str(e.value) == (f"SM_HOSTS={raw[:200]!r} is not a JSON list of host names "
                            '(SageMaker writes e.g. ["algo-1", "algo-2"])')


def test_the_resource_config_is_read_or_refused_by_name(tmp_path):
    assert read_resource_config(None) == {} and read_resource_config(tmp_path / "missing.json") == {}
    path = tmp_path / "resourceconfig.json"
    path.write_text('{"current_host": "algo-1", "hosts": ["algo-1"]}')
    assert read_resource_config(path) == {"current_host": "algo-1", "hosts": ["algo-1"]}
    path.write_text("not json")
    with pytest.raises(ClusterError) as e:
        Cluster.from_env({}, path)
    assert str(e.value) == f"{path} is not readable JSON: Expecting value: line 1 column 1 (char 0)"


def test_the_rehearsal_map_reads_host_address_pairs():
    env = {ENV_REHEARSAL_HOSTS: " algo-1=127.0.0.1 , algo-2=FE80::1,ALGO_3.x=localhost,, "}
    assert rehearsal_hosts(env) == {"algo-1": "127.0.0.1", "algo-2": "FE80::1", "ALGO_3.x": "localhost"}
    assert rehearsal_hosts({}) == {} and rehearsal_hosts({ENV_REHEARSAL_HOSTS: ""}) == {}
    moved = Cluster.from_env({**V3, ENV_REHEARSAL_HOSTS: "algo-2=10.0.0.2,algo-1=10.0.0.1"})
    assert (moved.names, moved.master_addr) == (("algo-1", "algo-2"), "10.0.0.1")


@pytest.mark.parametrize("entry", ["algo-1", "algo-1=", "=127.0.0.1", "algo 1=127.0.0.1", "algo-1=127.0.0.1/8",
                                   "algo-1=a=b", "a" * 100])
def test_a_rehearsal_entry_that_is_not_host_equals_address_is_refused(entry):
    with pytest.raises(ClusterError) as e:
        rehearsal_hosts({ENV_REHEARSAL_HOSTS: f"algo-9=127.0.0.9,{entry}"})
    assert str(e.value) == (f"BINCOUNT_SM_REHEARSAL_HOSTS entry {entry[:80]!r}: expected host=address, "
                            "e.g. algo-1=127.0.0.1 (comma-separated)")


@pytest.mark.parametrize("user", [{}, {"NCCL_SOCKET_IFNAME": "eth1"}, {"GLOO_SOCKET_IFNAME": "eth1"}])
def test_no_interface_and_not_both_user_variables_is_refused_by_name(user):
    cluster = Cluster.from_env({k: v for k, v in V3.items() if k != "SM_NETWORK_INTERFACE_NAME"})
    with pytest.raises(ClusterError) as e:
        network_env(cluster, "tcp", user)
    assert str(e.value) == ("SM_NETWORK_INTERFACE_NAME is not set (nor network_interface_name in "
                            "resourceconfig.json): set NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME in "
                            "hydra.launcher.environment")
    both = {"NCCL_SOCKET_IFNAME": "eth1", "GLOO_SOCKET_IFNAME": "eth1"}
    assert network_env(cluster, "tcp", both) == ("tcp", {"NCCL_NET": "Socket"}, {})
