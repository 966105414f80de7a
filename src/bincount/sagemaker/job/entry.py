"""The job's command: ``python -m bincount.sagemaker.job.entry (--script S | --pickle P) -- OVERRIDES``.

It runs in the container (or the local backend's scratch tree) around the real training process:
reads secrets by name from AWS Secrets Manager, links the job's checkpoint directory to
``/opt/ml/checkpoints`` (synced to S3, so a restarted spot job finds its last checkpoint), starts
``python SCRIPT OVERRIDES`` (``torchrun`` across hosts when there are several, with the rendezvous and the
NCCL/EFA environment of ``bincount.sagemaker.job.network``), copies the
run directory to ``/opt/ml/output/data`` and, on failure, writes a short reason to
``/opt/ml/output/failure``, which SageMaker shows as the job's FailureReason. Before any of that it checks
that pip installed the versions the launcher pinned for the job (``bincount.sagemaker.job.pins``).
Standard library only (boto3 lazily, for secrets): the container's Python is not the user's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from bincount.sagemaker.job.contract import (ENV_CKPT_SUBDIR, ENV_INSTALLED, ENV_JOB_DIR, ENV_PINS, ENV_RESULT_KEY,
                                         ENV_SECRETS, RESULT_FILE, job_layout)
from bincount.sagemaker.job.progress import ENV_PROGRESS, PROGRESS_FILE
from bincount.sagemaker.job.network import ENV_NETWORK, RESOURCE_CONFIG, Cluster, ClusterError, network_env
from bincount.sagemaker.job.pins import PinMismatch, check_installed

CALLBACK = "+hydra.callbacks.bincount_sagemaker._target_=bincount.sagemaker.job.callback.JobCallback"


class JobSetupError(RuntimeError):
    pass


def read_secrets(spec: str) -> dict[str, str]:
    """``ENV=secret-name,...`` -> ``{ENV: value}``, read inside the job so no value ever leaves AWS."""
    pairs = [p.split("=", 1) for p in spec.split(",") if p]
    if not pairs:
        return {}
    import boto3  # lazily: only jobs that ask for secrets need it

    client = boto3.client("secretsmanager")
    values = {}
    for env_name, secret_name in pairs:
        try:
            values[env_name] = client.get_secret_value(SecretId=secret_name)["SecretString"]
        except Exception as e:  # noqa: BLE001 - any failure here must become a readable reason
            code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
            raise JobSetupError(f"cannot read secret {secret_name!r} for {env_name}: {code}") from None
    return values


def check_pins(env=os.environ) -> None:
    """The installed versions are the job's pins (a job the real backend started; the local one installs nothing)."""
    constraints, requirement = env.get(ENV_PINS), env.get(ENV_INSTALLED)
    if not constraints or not requirement:
        return
    try:
        n = check_installed(Path(constraints), requirement)
    except (OSError, ImportError, PinMismatch) as e:
        raise JobSetupError(str(e)) from None
    print(f"[bincount.sagemaker] {requirement}: the {n} pinned packages are installed at their pinned versions",
          flush=True)


def link_checkpoints(job_dir: Path, subdir: str | None, target: Path) -> None:
    if not subdir:
        return
    link = job_dir / subdir
    found = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if found:
        print(f"[bincount.sagemaker] checkpoints from an earlier attempt: {found}", flush=True)
    if not link.exists() and not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.absolute(), target_is_directory=True)


def find_cluster(layout) -> Cluster:
    try:
        return Cluster.from_env(os.environ, layout.config / RESOURCE_CONFIG)
    except ClusterError as e:
        raise JobSetupError(str(e)) from None


def cluster_env(cluster: Cluster, env: dict[str, str]) -> dict[str, str]:
    """What torchrun's processes need on several hosts: the NCCL/EFA variables the job does not set itself."""
    if not cluster.distributed:
        return {}
    try:
        kind, added, kept = network_env(cluster, env.get(ENV_NETWORK, "auto"), env)
    except ClusterError as e:
        raise JobSetupError(str(e)) from None

    def pairs(d: dict[str, str]) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(d.items()))

    print(f"[bincount.sagemaker] host {cluster.current} (rank {cluster.rank} of {','.join(cluster.names)}), "
          f"rendezvous {cluster.master_addr}:{cluster.master_port}; network {kind} on {cluster.instance_type}: "
          f"{pairs(added) or 'nothing to add'}{'; kept from the job environment: ' + pairs(kept) if kept else ''}",
          flush=True)
    return added


def child_command(args: argparse.Namespace, cluster: Cluster, job_dir: Path) -> list[str]:
    if args.pickle:
        if cluster.distributed:
            raise JobSetupError("payload=pickle runs one process; use payload=script for several hosts")
        return [sys.executable, "-m", "bincount.sagemaker.job.run_pickled", args.pickle]
    quoted = str(job_dir).replace("\\", "\\\\").replace("'", "\\'")  # ',' and '=' are override syntax
    # hydra.mode=RUN: an override like +launch=sagemaker (MULTIRUN preset) must not launch again from the job.
    overrides = [*args.overrides, f"hydra.run.dir='{quoted}'", "hydra.mode=RUN", CALLBACK]
    if cluster.distributed:
        return [*cluster.torchrun(sys.executable), args.script, *overrides]
    return [sys.executable, args.script, *overrides]


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run the training process, echo its output, keep the tail for the failure reason."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)

    def forward(signum, _frame):  # SageMaker's StopTrainingJob (and the local backend) send SIGTERM
        os.killpg(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line.rstrip())
    return proc.wait(), list(tail)


def failure_reason(job_dir: Path, rc: int, tail: list[str]) -> str:
    result = job_dir / RESULT_FILE
    if result.is_file():
        error = json.loads(result.read_text()).get("error")
        if error:
            return error
    tail = [line for line in tail if not line.startswith("Set the environment variable HYDRA_FULL_ERROR")]
    errors = [line for line in tail if "Error" in line or "Exception" in line]
    last = (errors or [line for line in tail if line.strip()] or [""])[-1].strip()
    return f"exit code {rc}: {last}" if last else f"exit code {rc} (no output)"


def collect_outputs(job_dir: Path, subdir: str | None, layout) -> None:
    """Run directory -> /opt/ml/output/data (uploaded as output.tar.gz); best checkpoint -> /opt/ml/model."""
    if not job_dir.is_dir():
        return
    skip = {subdir} if subdir else set()
    shutil.copytree(job_dir, layout.output_data, dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == job_dir and n in skip])
    metrics = job_dir / "metrics.json"
    best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
    if best and (job_dir / best).is_file():
        layout.model.mkdir(parents=True, exist_ok=True)
        shutil.copy2(job_dir / best, layout.model / "model.ckpt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bincount.sagemaker.job.entry")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--script", help="the @hydra.main script, relative to the code channel")
    mode.add_argument("--pickle", help="a pickled task (payload=pickle)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    layout, cluster = job_layout(), None
    job_dir = Path(os.environ.get(ENV_JOB_DIR, "outputs/job"))
    subdir = os.environ.get(ENV_CKPT_SUBDIR) or None
    rc, tail = 1, []
    try:
        check_pins()  # seconds, before anything is linked, read or started
        cluster = find_cluster(layout)
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / RESULT_FILE).unlink(missing_ok=True)  # a result of an earlier attempt is not this one's
        link_checkpoints(job_dir, subdir, layout.checkpoints)
        env = {**os.environ, **read_secrets(os.environ.get(ENV_SECRETS, ""))}
        env.update(cluster_env(cluster, env))
        if env.get(ENV_PROGRESS):  # synced to S3 with the checkpoints while the job runs
            env[ENV_PROGRESS] = str(layout.checkpoints / PROGRESS_FILE)
        if not args.pickle:  # only the pickle payload signs a result with the sweep's key
            env.pop(ENV_RESULT_KEY, None)
        rc, tail = run_child(child_command(args, cluster, job_dir), env)
    except JobSetupError as e:
        tail = [f"JobSetupError: {e}"]
    if cluster is None or cluster.rank == 0:
        collect_outputs(job_dir, subdir, layout)
    if rc != 0:
        reason = failure_reason(job_dir, rc, tail)
        layout.output.mkdir(parents=True, exist_ok=True)
        layout.failure.write_text(reason[:1000])
        print(f"[bincount.sagemaker] job failed: {reason}", file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
