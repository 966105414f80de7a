"""What a SageMaker job installs (issue 16): the extras its composed config needs, pinned by the project's
constraints minus the image's torch/CUDA stack, and checked by the job before it trains."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")
import boto3  # noqa: E402
from helpers.sagemaker import BUCKET, NEWEST, ROLE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_STACK_LINE = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-[^=]*|cuda-[^=]*)==", re.M)


def composed(*overrides: str):
    """train.py's config composed for a job, with its ``hydra`` node (as the launcher composes it)."""
    from hydra import compose, initialize_config_dir

    from bincount.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("overrides, extras", [
    (["report=false"], []),  # synthetic data, CSV + TensorBoard: the core dependencies only
    ([], ["report"]),  # report=true is train.yaml's default: the charts need matplotlib
    (["data=abid_s3", "data.root=s3://bucket/abid", "logger=wandb", "report=false"], ["s3", "wandb"]),
    (["data=abid_s3", "data.root=s3://bucket/abid", "logger=wandb"], ["report", "s3", "wandb"]),
    (["data=abid_s3", "data.root=s3://bucket/abid", "reader=objects", "report=false"], ["s3"]),
    (["data=abid", "reader=shards", "report=false"], ["s3"]),  # local shards stream through litdata
    (["reader=objects", "report=false"], ["s3"]),
    (["data=abid", "reader=files", "report=false"], []),
    (["data=abid", "+data.reader.shards=s3://bucket/shards", "report=false"], ["s3"]),
    (["logger=all", "report=false"], ["wandb"]),
    (["logger=none", "report=false"], []),
    (["+hydra.job.env_set.BINCOUNT_OPTUNA_TRIAL=3", "report=false"], ["sweep"]),  # a pruned Optuna trial
])
def test_extras_follow_the_composed_config(overrides, extras):
    from bincount.sagemaker.extras import job_extras

    assert job_extras(composed(*overrides)) == extras


def test_extras_of_another_apps_config_are_none():
    from bincount.sagemaker.extras import job_extras

    assert job_extras(OmegaConf.create({"data": [1, 2], "logger": "x", "report": "yes", "hydra": {"job": {}}})) == []


def test_job_constraints_leave_the_image_stack_out():
    from bincount.sagemaker.job.pins import job_constraints, parse_pins

    original = (ROOT / "constraints.txt").read_text()
    assert IMAGE_STACK_LINE.search(original), "the project's constraints pin torch: the filter has work to do"
    text, dropped = job_constraints(original)
    assert not IMAGE_STACK_LINE.search(text), IMAGE_STACK_LINE.findall(text)
    assert {"torch", "torchvision", "triton", "nvidia-cublas", "cuda-toolkit"} <= set(dropped)
    pins, before = parse_pins(text), parse_pins(original)
    assert pins == {k: v for k, v in before.items() if k not in dropped} and "lightning" in pins
    assert "pytorch-lightning" in pins and "torchmetrics" in pins, "only the image's stack, not every torch* name"


@pytest.mark.slow
def test_dry_run_logs_the_extras_and_the_install_command(aws, hydra_sweep_runner, tmp_path, monkeypatch, caplog):
    from bincount.resolvers import register_resolvers

    register_resolvers()
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    overrides = ["hydra/launcher=sagemaker", "hydra.launcher.dry_run=true", "hydra.launcher.region=us-east-1",
                 f"hydra.launcher.source_dir={ROOT}", "hydra.launcher.payload=script", "hydra/sweeper=basic",
                 "data=abid_s3", "data.root=s3://bucket/abid", "logger=wandb", "report=false,true"]
    sweep = hydra_sweep_runner(calling_file=str(ROOT / "train.py"), calling_module=None, task_function=None,
                               config_path="conf", config_name="train", overrides=overrides, temp_dir=tmp_path)
    with caplog.at_level("INFO"), sweep:
        assert len(sweep.returns[0]) == 2
        staged = Path(sweep.returns[0][0].working_dir).parents[0] / ".sagemaker" / "code"
        constraints = (staged / "_sagemaker_jobs" / "constraints.txt").read_text()
        requests = [json.loads((Path(r.working_dir) / "create_training_job.json").read_text()) for r in sweep.returns[0]]
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("[dry run] job") and "CreateTrainingJob" not in r.getMessage()]
    assert "extras [s3,wandb] install pip install -c _sagemaker_jobs/constraints.txt '.[s3,wandb]' " in lines[0]
    assert "extras [report,s3,wandb] install pip install -c _sagemaker_jobs/constraints.txt '.[report,s3,wandb]'" \
        in lines[1]
    pinned = [line for line in constraints.splitlines() if IMAGE_STACK_LINE.match(line)]
    assert pinned == [f"torch=={NEWEST}.*"], "only the image's own torch (framework_version), so pip never replaces it"
    assert "\nlitdata==" in constraints and "\nwandb==" in constraints
    # The SDK built each job's real request, validated by botocore, with nothing sent (moto saw nothing)
    assert len(requests) == 2 and requests[0]["TrainingJobName"] != requests[1]["TrainingJobName"]
    for req in requests:
        assert f"/pytorch-training:{NEWEST}-gpu-py" in req["AlgorithmSpecification"]["TrainingImage"]
        assert req["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 300, "a sweep's warm pool, by default"
        assert req["RetryStrategy"] == {"MaximumRetryAttempts": 2} and not req.get("HyperParameters")
        assert {c["ChannelName"] for c in req["InputDataConfig"]} == {"code", "sm_drivers"}
        assert {"Key": "bincount:job", "Value": str(requests.index(req))} in req["Tags"]
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=BUCKET), "no upload"
    assert re.search(rf"the image's own torch/CUDA stack \(\d+ packages\) is left to it, torch stays the image's {NEWEST}",
                     caplog.text)


@pytest.mark.parametrize("key, value", [("framework_version", "2.6\ntorch==9"), ("framework_version", "latest"),
                                        ("requirements", "../outside.txt"), ("requirements", "req.txt --index-url x"),
                                        ("requirements", "/etc/req.txt")])
def test_what_goes_into_the_job_requirements_is_a_plain_value(key, value):
    from hydra_plugins.bincount_sagemaker_launcher.config import SageMakerLauncherConf

    from bincount.sagemaker.settings import LauncherConfigError, settings_from

    p = {**OmegaConf.to_container(OmegaConf.structured(SageMakerLauncherConf)), "dry_run": True, key: value}
    with pytest.raises(LauncherConfigError, match=f"hydra.launcher.{key}="):
        settings_from(p)
    settings_from({**p, key: {"framework_version": "2.6.0", "requirements": "extra/req-gpu.txt"}[key]})


@pytest.mark.slow
def test_job_requirements_file_and_environment(fake_sagemaker, hydra_sweep_runner, tmp_path, monkeypatch):
    """The request's job installs through its own requirements file, and is told what to check."""
    from bincount.resolvers import register_resolvers

    register_resolvers()
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    overrides = ["hydra/launcher=sagemaker", f"hydra.launcher.role={ROLE}", "hydra.launcher.region=us-east-1",
                 f"hydra.launcher.output_s3_uri=s3://{BUCKET}/out", f"hydra.launcher.source_dir={ROOT}",
                 "hydra.launcher.payload=script", "hydra.launcher.poll_interval_s=0.1", "hydra/sweeper=basic",
                 "data=abid_s3", "data.root=s3://bucket/abid", "logger=wandb", "report=false"]
    sweep = hydra_sweep_runner(calling_file=str(ROOT / "train.py"), calling_module=None, task_function=None,
                               config_path="conf", config_name="train", overrides=overrides, temp_dir=tmp_path)
    with sweep:
        staged = Path(sweep.returns[0][0].working_dir).parents[0] / ".sagemaker" / "code"
        requirements = (staged / "_sagemaker_jobs" / "job0.requirements.txt").read_text().splitlines()
    (request,) = fake_sagemaker.requests
    assert requirements[1:] == ["-c ../_sagemaker_jobs/constraints.txt", ".[s3,wandb]"]
    assert "install_requirements.py _sagemaker_jobs/job0.requirements.txt" in request["_script"]
    env = request["Environment"]
    assert env["BINCOUNT_SM_PINS"] == "_sagemaker_jobs/constraints.txt"
    assert env["BINCOUNT_SM_INSTALLED"] == "bincount[s3,wandb]"


def plant(tmp_path: Path, **versions: str) -> Path:
    path = tmp_path / "constraints.txt"
    path.write_text("# header\n" + "".join(f"{k}=={v}\n" for k, v in versions.items()))
    return path


def test_startup_check_passes_on_the_installed_versions(tmp_path):
    from bincount.sagemaker.job.pins import check_installed

    pins = plant(tmp_path, omegaconf=metadata.version("omegaconf"), packaging=metadata.version("packaging"),
                 torch="0.0.1", boto3="0.0.1")  # torch: the image's, never compared; boto3: only bincount[s3]'s
    assert check_installed(pins, "bincount") == 2


def test_startup_check_names_each_difference(tmp_path):
    from bincount.sagemaker.job.pins import PinMismatch, check_installed

    found = metadata.version("omegaconf")
    pins = plant(tmp_path, omegaconf="0.0.1", packaging=metadata.version("packaging"), litdata="0.0.2")
    with pytest.raises(PinMismatch) as e:
        check_installed(pins, "bincount[s3]")
    assert f"omegaconf: expected 0.0.1, found {found}" in str(e.value)
    assert f"litdata: expected 0.0.2, found {metadata.version('litdata')}" in str(e.value)
    assert "packaging" not in str(e.value).split(": ", 1)[1]
    check_installed(plant(tmp_path, litdata="0.0.2"), "bincount")  # litdata is not bincount's without [s3]
    with pytest.raises(PinMismatch, match="no-such-project is not installed"):
        check_installed(pins, "no-such-project[s3]")


def test_entry_fails_in_seconds_before_training(tmp_path, monkeypatch, capsys):
    from bincount.sagemaker.job import entry
    from bincount.sagemaker.job.contract import Layout

    layout = Layout(tmp_path / "root").make()
    monkeypatch.chdir(tmp_path)
    for k, v in {**layout.env("job"), "BINCOUNT_SM_JOB_DIR": "out/job", "BINCOUNT_SM_INSTALLED": "bincount",
                 "BINCOUNT_SM_PINS": str(plant(tmp_path, omegaconf="0.0.1"))}.items():
        monkeypatch.setenv(k, v)
    started = []
    monkeypatch.setattr(entry, "run_child", lambda cmd, env: started.append(cmd) or (0, []))
    assert entry.main(["--script", "train.py", "--", "model=tiny"]) == 1
    assert not started, "no training process after a version mismatch"
    reason = layout.failure.read_text()
    assert f"omegaconf: expected 0.0.1, found {metadata.version('omegaconf')}" in reason, reason
    monkeypatch.setenv("BINCOUNT_SM_PINS", str(plant(tmp_path, omegaconf=metadata.version("omegaconf"))))
    assert entry.main(["--script", "train.py", "--", "model=tiny"]) == 0 and len(started) == 1
    assert "pinned packages are installed at their pinned versions" in capsys.readouterr().out


def composed_predict(*overrides: str):
    from hydra import compose, initialize_config_dir

    from bincount.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("predict", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("overrides, extras", [
    (["bundle=logs/run", "inputs=[data/abid]"], []),
    (["bundle=s3://b/m/model.tar.gz", "inputs=[data/abid]"], ["s3"]),
    (["bundle=logs/run", "inputs=[data/abid,s3://b/abid/]"], ["s3"]),
    (["bundle=logs/run", "inputs=s3://b/abid/"], ["s3"]),  # one input without the list brackets
    (["bundle=logs/run", "inputs=[data/abid]", "output=s3://b/out/p.csv"], ["s3"]),
])
def test_predict_jobs_install_s3_for_any_s3_location(overrides, extras):
    from bincount.sagemaker.extras import job_extras

    assert job_extras(composed_predict(*overrides)) == extras


def test_launcher_defaults_reach_only_the_apps_that_have_them():
    from bincount.sagemaker.spec import extra_overrides

    defaults = ["trainer=gpu", "resume=true"]
    assert extra_overrides(["model=tiny"], defaults, composed("report=false")) == defaults
    assert extra_overrides(["trainer=cpu"], defaults, composed("report=false")) == ["resume=true"]  # the user's wins
    assert extra_overrides(["bundle=x"], defaults, composed_predict("bundle=x", "inputs=[y]")) == []


@pytest.mark.slow
def test_predict_dry_run_is_a_predict_job_with_s3_installed(aws, hydra_sweep_runner, tmp_path, monkeypatch, caplog):
    from bincount.resolvers import register_resolvers

    register_resolvers()
    monkeypatch.setattr(sys, "argv", [str(ROOT / "predict.py")])
    overrides = ["hydra/launcher=sagemaker", "hydra.launcher.dry_run=true", "hydra.launcher.region=us-east-1",
                 f"hydra.launcher.source_dir={ROOT}", "hydra.launcher.payload=script", "hydra/sweeper=basic",
                 "bundle=s3://bucket/models/model.tar.gz", "inputs=[s3://bucket/abid/]", "output=s3://bucket/out/p.csv"]
    sweep = hydra_sweep_runner(calling_file=str(ROOT / "predict.py"), calling_module=None, task_function=None,
                               config_path="conf", config_name="predict", overrides=overrides, temp_dir=tmp_path)
    with caplog.at_level("INFO"), sweep:
        assert len(sweep.returns[0]) == 1
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[dry run] job"))
    assert "--script predict.py -- bundle=s3\\://bucket/models/model.tar.gz" in line
    assert "extras [s3] install pip install -c _sagemaker_jobs/constraints.txt '.[s3]'" in line
    assert "trainer=" not in line and "resume=" not in line, "train.py's launcher defaults are not predict's"
