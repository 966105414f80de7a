"""End to end through the local backend: ``python train.py -m hydra/launcher=sagemaker_local ...``.

Each job is a real subprocess in a scratch /opt/ml tree running the container command, so these
tests cover the whole contract: overrides through the command, the config hash check, results and
``.hydra/`` back in the sweep dir, FailureReason, Ctrl-C stopping jobs, relaunch skipping completed
jobs and resuming an interrupted one from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data.synthetic.num_images=60", "data.synthetic.size=64", "data.synthetic.workers=1",
        "data.img_size=32", "data.batch_size=16", "data.num_workers=0", "data.persistent_workers=false",
        "trainer.max_epochs=1", "callbacks.progress_bar=null", "callbacks.model_summary=null", "logger=csv",
        "hydra/sweeper=basic", "hydra.launcher.poll_interval_s=0.2", "report=false"]


def command(sweep_dir: Path, *args: str) -> list[str]:
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    return [sys.executable, str(ROOT / "train.py"), *flags, *TINY, f"hydra.sweep.dir={sweep_dir}", *rest]


def environment(data_dir: Path, log_dir: Path) -> dict:
    return {**os.environ, "BINCOUNT_DATA_DIR": str(data_dir), "BINCOUNT_LOG_DIR": str(log_dir), "HYDRA_FULL_ERROR": "1"}


def run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def state(job_dir: Path) -> dict:
    return json.loads((job_dir / "sagemaker_job.json").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def sweep(data_dir, tmp_path_factory):
    """A 2-job sweep of tiny models, run once for the tests below."""
    logs = tmp_path_factory.mktemp("logs")
    sweep_dir = logs / "sweep"
    # One job at a time: two first uses of a synthetic dataset would render it concurrently.
    proc = run(command(sweep_dir, "-m", "hydra/launcher=sagemaker_local", "optimizer.lr=0.001,0.003",
                       "hydra.launcher.max_parallel_jobs=1"),
               environment(data_dir, logs))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return sweep_dir, logs, proc


@pytest.mark.slow
def test_two_job_sweep_returns_objectives_and_brings_outputs_back(sweep):
    sweep_dir, _, proc = sweep
    for num, lr in [(0, "0.001"), (1, "0.003")]:
        job = sweep_dir / str(num)
        metrics = json.loads((job / "metrics.json").read_text())
        saved = state(job)
        assert saved["status"] == "Completed"
        assert saved["return_value"] == pytest.approx(metrics["objective"], abs=1e-5)  # what Hydra got back
        assert f"optimizer.lr={lr}" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        # composed inside the job from the command line, not copied from the launcher
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == float(lr)
        assert "Config hash" in (job / "sagemaker_job.log").read_text()
    assert "Completed" in proc.stdout + proc.stderr and "~$0.00" in proc.stdout + proc.stderr
    assert saved["name"] != state(sweep_dir / "0")["name"], "job names are unique"


@pytest.mark.slow
def test_relaunch_skips_completed_and_failed_job_carries_its_reason(sweep, data_dir):
    sweep_dir, logs, _ = sweep
    first_name = state(sweep_dir / "0")["name"]
    proc = run(command(sweep_dir, "-m", "hydra/launcher=sagemaker_local", "optimizer.lr=0.001,-1"),
               environment(data_dir, logs))
    out = proc.stdout + proc.stderr
    assert "already completed in an earlier launch: skipped" in out
    assert state(sweep_dir / "0")["name"] == first_name, "the completed job was not launched again"
    failed = state(sweep_dir / "1")
    assert failed["status"] == "Failed" and "-1" in failed["reason"], failed
    assert proc.returncode != 0 and failed["reason"][:60] in out  # the basic sweeper raises after its batch
    failure_files = list(sweep_dir.glob(".sagemaker_local/*/job1/opt/ml/output/failure"))
    assert failure_files and failure_files[0].read_text() == failed["reason"][:1000]


@pytest.mark.slow
def test_ctrl_c_stops_the_job_and_relaunch_resumes_from_its_checkpoint(data_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["+launch=sagemaker_local", "trainer.max_epochs=3", "data.synthetic.num_images=200",
            "callbacks.early_stopping=null", "test=false"]
    env = environment(data_dir, tmp_path)
    output = tmp_path / "launcher.log"
    with open(output, "w") as out:
        # A shell's background job (`.ci/run &`, nohup) inherits SIGINT *ignored*, and Python then keeps
        # it ignored: the launcher would never see this Ctrl-C. Give it the default disposition first.
        interruptible = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                         "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"]
        launcher = subprocess.Popen(interruptible + command(sweep_dir, *args)[1:], env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300

    def tails() -> str:
        jobs = list(sweep_dir.glob(".sagemaker_local/*/job0/opt/ml/job.log"))
        return f"launcher:\n{output.read_text()[-3000:]}\njob:\n{jobs[0].read_text()[-3000:] if jobs else '(none)'}"

    try:
        while not list(sweep_dir.glob(".sagemaker_local/*/job0/opt/ml/checkpoints/last.ckpt")):
            assert launcher.poll() is None, "the sweep ended before the job's first checkpoint\n" + tails()
            assert time.time() < deadline, tails()
            time.sleep(0.1)
        time.sleep(0.5)
        launcher.send_signal(signal.SIGINT)  # Ctrl-C
        sent = time.time()
        try:
            launcher.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the launcher ignored Ctrl-C for 120 s\n{tails()}") from None
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert state(sweep_dir / "0")["status"] == "Stopped", f"{time.time() - sent:.1f} s after Ctrl-C\n{tails()}"
    assert not (sweep_dir / "0" / "metrics.json").exists()
    assert launcher.returncode == 130 and "Traceback" not in output.read_text(), tails()  # a clean exit

    proc = run(command(sweep_dir, *args), env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    log = (sweep_dir / "0" / "sagemaker_job.log").read_text()
    assert "checkpoints from an earlier attempt" in log and "Restoring states from the checkpoint" in log
    assert json.loads((sweep_dir / "0" / "metrics.json").read_text())["epochs_trained"] == 3


def test_config_hash_mismatch_fails_loudly(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    from bincount.sagemaker.job.callback import ConfigMismatchError, JobCallback, config_sha

    cfg = OmegaConf.create({"a": 1, "b": "${oc.env:HOME}", "hydra": {"run": {"dir": "x"}}})
    monkeypatch.setenv("BINCOUNT_SM_CONFIG_SHA", config_sha(cfg))
    JobCallback().on_job_start(config=cfg)
    cfg.hydra.run.dir = "elsewhere"  # Hydra's own node may differ between laptop and container
    JobCallback().on_job_start(config=cfg)
    cfg.a = 2
    with pytest.raises(ConfigMismatchError, match="config hash mismatch"):
        JobCallback().on_job_start(config=cfg)


def test_cluster_from_sagemaker_variables():
    from bincount.sagemaker.job.contract import Cluster, lightning_cluster_args

    # What a v3 ModelTrainer job exports (container_drivers/scripts/environment.py); the host list is the truth.
    env = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "SM_HOST_COUNT": "2",
           "SM_CURRENT_HOST_RANK": "1", "SM_NUM_GPUS": "4", "SM_MASTER_ADDR": "algo-1", "SM_MASTER_PORT": "7777",
           "TRAINING_JOB_NAME": "j"}
    assert lightning_cluster_args(env) == {"num_nodes": 2, "devices": 4}
    assert lightning_cluster_args({}) == {}, "local runs are unchanged"
    assert Cluster.from_env(env).torchrun() == ["python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4", "--node_rank=1",
                                               "--master_addr=algo-1", "--master_port=7777"]


def test_a_job_that_cannot_start_is_failed_with_its_reason(hydra_sweep_runner, tmp_path):
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=tmp_path,
                               overrides=["hydra/launcher=sagemaker_local_base", "hydra.launcher.local.python=/no/python",
                                          f"hydra.launcher.source_dir={Path(__file__).parent / 'sagemaker_app'}"])
    with pytest.raises(RuntimeError, match="could not start: FileNotFoundError"):
        with sweep:
            pass
    assert state(tmp_path / "0")["status"] == "Failed"
