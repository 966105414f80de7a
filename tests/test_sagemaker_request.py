"""The exact CreateTrainingJob requests the real backend sends, against moto_server on 127.0.0.1.

A 2-job sweep of ``train.py``'s real config goes through the launcher and SDK v3's ModelTrainer;
a botocore hook records each request. moto finishes jobs instantly and keeps no outputs, so the hook
also plays the container: it uploads the ``output.tar.gz`` the job would leave, which the launcher
downloads and turns into the JobReturn.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")
import boto3  # noqa: E402
from helpers.sagemaker import BUCKET, NEWEST, ROLE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def lr_output(req: dict) -> dict[str, str]:
    """The job's result: 1000 x its learning rate, so each JobReturn shows which job it came from."""
    lr = next(a for a in req["_args"] if a.startswith("optimizer.lr="))
    return {"result.json": json.dumps({"status": "COMPLETED", "return_value": float(lr.split("=")[1]) * 1000}),
            "metrics.json": json.dumps({"objective": 0.5}), "train.log": ""}


@pytest.mark.slow
def test_create_training_job_requests(fake_sagemaker, hydra_sweep_runner, tmp_path, monkeypatch):
    from bincount.resolvers import register_resolvers

    register_resolvers()
    fake_sagemaker.output = lr_output
    requests = fake_sagemaker.requests
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    overrides = [
        "hydra/launcher=sagemaker", f"hydra.launcher.role={ROLE}", "hydra.launcher.region=us-east-1",
        f"hydra.launcher.output_s3_uri=s3://{BUCKET}/out", f"hydra.launcher.checkpoint_s3_uri=s3://{BUCKET}/ckpt",
        "hydra.launcher.instance_type=ml.g5.2xlarge", "hydra.launcher.instance_count=2", "hydra.launcher.spot=true",
        "hydra.launcher.max_wait_s=7200", "hydra.launcher.max_runtime_s=3600", "+hydra.launcher.tags.team=vision",
        "+hydra.launcher.environment.FOO=bar", "+hydra.launcher.secrets.WANDB_API_KEY=bincount/wandb",
        f"hydra.launcher.source_dir={ROOT}", "hydra.launcher.payload=script", "hydra.launcher.poll_interval_s=0.1",
        "hydra/sweeper=basic", "model=resnet50", "optimizer.lr=1e-4,3e-4",
    ]
    sweep = hydra_sweep_runner(calling_file=str(ROOT / "train.py"), calling_module=None, task_function=None,
                               config_path="conf", config_name="train", overrides=overrides, temp_dir=tmp_path)
    with sweep:  # the runner deletes its temp dir on exit: check the local job dirs inside
        returns = sweep.returns[0]
        job0 = Path(returns[0].working_dir)
        assert json.loads((job0 / "metrics.json").read_text())["objective"] == 0.5
        assert (job0 / ".hydra" / "config.yaml").is_file()
    assert [r.return_value for r in returns] == pytest.approx([0.1, 0.3])
    assert len(requests) == 2 and len({r["TrainingJobName"] for r in requests}) == 2
    by_lr = {next(a for a in r["_args"] if a.startswith("optimizer.lr=")): r for r in requests}
    assert sorted(by_lr) == ["optimizer.lr=0.0001", "optimizer.lr=0.0003"], "each job gets its own point of the sweep"
    for req in requests:
        assert f"/pytorch-training:{NEWEST}-gpu-py" in req["AlgorithmSpecification"]["TrainingImage"]
        assert req["RoleArn"] == ROLE
        assert req["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
        assert req["ResourceConfig"]["InstanceCount"] == 2
        assert req["EnableManagedSpotTraining"] is True
        assert "KeepAlivePeriodInSeconds" not in req["ResourceConfig"], "SageMaker keeps no warm pool for spot"
        assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
        assert req["RetryStrategy"] == {"MaximumRetryAttempts": 2}  # internal errors, by default
        assert req["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/out"
        assert req["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/ckpt/")
        assert req["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]}
        assert all(uri.startswith(f"s3://{BUCKET}/out/") for uri in channels.values()), channels  # the role's prefix
        assert not req.get("HyperParameters"), "overrides travel in the command, never as hyperparameters"
        args = req["_args"]
        assert args[:3] == ["--script", "train.py", "--"]
        assert "model=resnet50" in args, args
        env = req["Environment"]
        assert env["FOO"] == "bar" and env["BINCOUNT_SM_SECRETS"] == "WANDB_API_KEY=bincount/wandb"
        assert len(env["BINCOUNT_SM_CONFIG_SHA"]) == 64
        assert {"Key": "team", "Value": "vision"} in req["Tags"]
        assert "testing" not in json.dumps({k: v for k, v in req.items() if not k.startswith("_")})


def test_secret_looking_environment_is_refused(hydra_sweep_runner, tmp_path):
    from bincount.secrets import SecretError

    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=tmp_path,
                               overrides=["hydra/launcher=sagemaker_local_base", "+hydra.launcher.environment.WANDB_API_KEY=x"])
    with pytest.raises(SecretError, match="'hydra.launcher.environment.WANDB_API_KEY': the name looks like a credential"
                                          ".*hydra.launcher.secrets.<ENV_NAME>=<secret name>"):
        with sweep:
            pass


@pytest.mark.slow
def test_dry_run_resolves_the_image_offline_and_launches_nothing(aws, hydra_sweep_runner, tmp_path, caplog):
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=tmp_path,
                               overrides=["hydra/launcher=sagemaker_base", "hydra.launcher.dry_run=true",
                                          "hydra.launcher.region=eu-west-1", "hydra.launcher.instance_type=ml.g5.xlarge",
                                          f"hydra.launcher.source_dir={Path(__file__).parent / 'sagemaker_app'}"])
    before = len(boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"])
    with caplog.at_level("INFO"), sweep:
        assert len(sweep.returns[0]) == 1
    assert f"pytorch-training:{NEWEST}-gpu-py" in caplog.text and "eu-west-1" in caplog.text
    assert "the newest PyTorch training image the installed SDK knows" in caplog.text
    assert len(boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == before


def test_hydra_start_up_imports_neither_the_sdk_nor_the_backends():
    """Hydra imports every plugin at start-up; the SDK (seconds to import) comes only with launch(). The
    plugin's config extends the settings schema, so that module (standard library and two small checkers) and
    what it imports are all of bincount.sagemaker that start-up loads."""
    code = ("import sys; from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
            "Plugins.instance().discover(Launcher); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sagemaker' or m.startswith('bincount.sagemaker')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(["bincount.sagemaker", "bincount.sagemaker.job", "bincount.sagemaker.job.network",
                               "bincount.sagemaker.settings"]), out


def test_job_reads_secrets_by_name_inside_the_job(aws, moto_endpoint, monkeypatch):
    from bincount.sagemaker.job.entry import JobSetupError, read_secrets

    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    boto3.client("secretsmanager").create_secret(Name="bincount/wandb", SecretString="s3cr3t-value")
    assert read_secrets("WANDB_API_KEY=bincount/wandb") == {"WANDB_API_KEY": "s3cr3t-value"}
    with pytest.raises(JobSetupError, match="'bincount/missing' for HF_TOKEN: ResourceNotFoundException") as e:
        read_secrets("HF_TOKEN=bincount/missing")
    assert "s3cr3t" not in str(e.value)


def test_a_bucket_in_another_region_is_refused_before_the_upload(fake_sagemaker, hydra_sweep_runner, tmp_path,
                                                                  monkeypatch):
    from bincount.resolvers import register_resolvers

    register_resolvers()
    boto3.client("s3", region_name="eu-west-2").create_bucket(
        Bucket="bincount-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    overrides = ["hydra/launcher=sagemaker", f"hydra.launcher.role={ROLE}", "hydra.launcher.region=us-east-1",
                 "hydra.launcher.output_s3_uri=s3://bincount-eu/out", f"hydra.launcher.source_dir={ROOT}",
                 "hydra.launcher.payload=script", "hydra/sweeper=basic", "model=tiny", "optimizer.lr=1e-4"]
    sweep = hydra_sweep_runner(calling_file=str(ROOT / "train.py"), calling_module=None, task_function=None,
                               config_path="conf", config_name="train", overrides=overrides, temp_dir=tmp_path)
    with pytest.raises(ValueError, match=r"bucket bincount-eu \(hydra.launcher.output_s3_uri\) is in eu-west-2, the "
                                         r"jobs would run in us-east-1.*hydra.launcher.region=eu-west-2"):
        with sweep:
            pass
    assert fake_sagemaker.requests == [], "no job was created"
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="bincount-eu"), "nothing was uploaded"


def test_each_poll_reads_the_secondary_status_the_status_line_shows():
    """What ``job.refresh()`` (DescribeTrainingJob) leaves on sagemaker-core's TrainingJob, poll by poll."""
    from bincount.sagemaker import remote

    steps = [("InProgress", "Starting"), ("InProgress", "Downloading"), ("InProgress", "Training"),
             ("Stopping", "Stopping"), ("InProgress", "Uploading"), ("Completed", "Completed")]

    class Job:
        polls, failure_reason = -1, None

        def refresh(self):
            self.polls += 1
            self.training_job_status, self.secondary_status = steps[self.polls]

    backend, handle = object.__new__(remote.SageMakerBackend), remote.RemoteJob("bincount-0-x", Job())
    seen = [(*backend.poll(handle), backend.progress(handle)) for _ in steps]
    assert seen == [("InProgress", None, "Starting"), ("InProgress", None, "Downloading"),
                    ("InProgress", None, "Training"), ("InProgress", None, "Stopping"),
                    ("InProgress", None, "Uploading"), ("Completed", None, "Completed")]


@pytest.mark.slow
def test_a_relaunch_finds_by_its_tag_a_job_whose_state_was_never_written(fake_sagemaker, hydra_sweep_runner,
                                                                           tmp_path, monkeypatch, caplog):
    """A launcher killed between CreateTrainingJob and writing the job's state: the job exists in SageMaker, the
    sweep dir does not say so. The relaunch searches by the job's trial tag and collects it (moto_server's Search)."""
    from bincount.resolvers import register_resolvers

    register_resolvers()
    fake_sagemaker.output = lr_output
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    overrides = ["hydra/launcher=sagemaker", f"hydra.launcher.role={ROLE}", "hydra.launcher.region=us-east-1",
                 f"hydra.launcher.output_s3_uri=s3://{BUCKET}/out", f"hydra.launcher.source_dir={ROOT}",
                 "hydra.launcher.payload=script", "hydra.launcher.poll_interval_s=0.1", "hydra/sweeper=basic",
                 "model=tiny", "optimizer.lr=1e-4,3e-4"]

    import hydra.test_utils.test_utils as harness

    monkeypatch.setattr(harness, "shutil", SimpleNamespace(rmtree=lambda *a, **k: None))  # keep the sweep dir

    def launch(then):
        sweep = hydra_sweep_runner(calling_file=str(ROOT / "train.py"), calling_module=None, task_function=None,
                                   config_path="conf", config_name="train", overrides=overrides,
                                   temp_dir=tmp_path / "sweep")
        with sweep:
            assert [r.return_value for r in sweep.returns[0]] == pytest.approx([0.1, 0.3])
            jobs = [Path(r.working_dir) for r in sweep.returns[0]]
            names = [json.loads((j / "sagemaker_job.json").read_text())["name"] for j in jobs]
            then(jobs)
        return names

    def forget(jobs):  # as if killed right after CreateTrainingJob, before writing the jobs' state
        for job in jobs:
            (job / "sagemaker_job.json").unlink()

    first = launch(forget)
    with caplog.at_level("INFO"):
        again = launch(lambda jobs: None)
    assert len(fake_sagemaker.requests) == 2, "no job was created again"
    assert caplog.text.count("re-attached (started by an earlier launch of this sweep)") == 2
    assert again == first, "the same two jobs, collected"
    tags = {t["Key"]: t["Value"] for t in fake_sagemaker.requests[0]["Tags"]}
    assert tags["bincount:trial"].startswith(f"{tags['bincount:sweep']}/{tags['bincount:job']}/")
