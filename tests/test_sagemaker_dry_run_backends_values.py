"""The dry run, the choice of backend, the per-epoch progress file and the launcher settings' last corners,
checked by value.

1. ``bincount.sagemaker.offline``: the offline boto3 session (its region, bucket and credentials) and
   ``DryRunBackend``: for the local backend it logs each job and starts nothing; for SageMaker it also writes the
   CreateTrainingJob request the SDK built (``<job dir>/create_training_job.json``, indented JSON).
2. ``bincount.sagemaker.backends.make_backend``: the dry run, the local backend (with the sweep's key) or the
   SageMaker backend on the preflight's session, with the warm-pool seconds the preflight answered.
3. ``bincount.sagemaker.job.progress``: ``write_progress`` / ``parse_progress``.
4. ``bincount.sagemaker.settings``: the error a malformed launcher node gets, an empty instance type, the
   framework version shown without its control characters.

Every backend is real (LocalBackend, SageMakerBackend on the dry run's offline session); nothing leaves the
machine and no job process starts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers.launcher_settings import settings
from omegaconf import OmegaConf

from bincount.sagemaker.spec import JobSpec, sweep_key

KEY = b"k" * 32
ROLE = "arn:aws:iam::123456789012:role/SageMakerBincount"
ARGV = ["python", "-m", "bincount.sagemaker.job.entry", "trainer.max_epochs=2"]


def job_spec(local_dir: Path, idx: int = 0, make_dir: bool = True) -> JobSpec:
    """A launcher's job as ``build_spec`` leaves it (its directory made unless ``make_dir`` is False)."""
    if make_dir:
        local_dir.mkdir(parents=True, exist_ok=True)
    return JobSpec(idx, [], OmegaConf.create({}), local_dir, str(idx), list(ARGV), {"B_VAR": "2", "A_VAR": "1"},
                   "sha", f"bincount-{idx}", state_sha="state")


def source(tmp_path: Path) -> Path:
    """A launch directory with one file in the code channel."""
    src = tmp_path / "src_dir"
    src.mkdir()
    (src / "app.py").write_text("print('job')\n")
    return src


def messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def no_region_anywhere(monkeypatch, tmp_path: Path) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


# 1. bincount.sagemaker.offline -----------------------------------------------------------------------------------

def test_the_offline_session_has_the_dry_runs_own_credentials(monkeypatch, tmp_path):
    from bincount.sagemaker.offline import OfflineAWS

    no_region_anywhere(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id-from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-the-environment")
    aws = OfflineAWS("eu-west-1", "b")
    credentials = aws.session.get_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("dry-run", "dry-run", None)
    assert (aws.session.region_name, aws.region, aws.bucket, aws.requests) == ("eu-west-1", "eu-west-1", "b", [])
    assert aws.session.bincount_offline is aws


@pytest.mark.parametrize("output, bucket", [(None, "dry-run-bucket"), ("s3://my-bucket/runs/a", "my-bucket")])
def test_the_offline_sessions_bucket_is_the_output_uris_or_a_placeholder(monkeypatch, tmp_path, output, bucket):
    from bincount.sagemaker.offline import offline_session

    no_region_anywhere(monkeypatch, tmp_path)
    session = offline_session(settings(region="ap-south-1", output_s3_uri=output, dry_run=True))
    assert session.bincount_offline.bucket == bucket
    assert session.bincount_offline.region == "ap-south-1" and session.region_name == "ap-south-1"
    [listed] = session.client("s3").list_buckets()["Buckets"]
    assert listed["Name"] == bucket


def test_the_offline_sessions_region_is_the_configured_one_else_the_environments(monkeypatch, tmp_path):
    from bincount.sagemaker.offline import offline_session

    no_region_anywhere(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert offline_session(settings(region="us-west-2", dry_run=True)).region_name == "us-west-2"
    session = offline_session(settings(region=None, dry_run=True))
    assert session.region_name == "eu-central-1" and session.bincount_offline.region == "eu-central-1"
    assert session.client("s3").get_bucket_location(Bucket="dry-run-bucket") == {"LocationConstraint": "eu-central-1"}


def test_the_offline_session_without_any_region_is_refused_naming_both_ways(monkeypatch, tmp_path):
    from bincount.sagemaker.offline import offline_session
    from bincount.sagemaker.preflight import NO_REGION

    no_region_anywhere(monkeypatch, tmp_path)
    with pytest.raises(ValueError) as exc:
        offline_session(settings(region=None, dry_run=True))
    assert str(exc.value) == NO_REGION == \
        "no AWS region: set hydra.launcher.region=<region> (e.g. us-east-1) or AWS_DEFAULT_REGION"


def test_a_local_dry_run_describes_each_job_and_starts_nothing(tmp_path, caplog):
    """The local backend is built as for a launch (the sweep's key included) and each job is described; no
    job tree, no process, no request file."""
    from bincount.sagemaker.local import LocalBackend
    from bincount.sagemaker.offline import DryRunBackend

    src, sweep = source(tmp_path), tmp_path / "multirun" / "sweep-1"
    s = settings(backend="local", dry_run=True, local={"python": "/opt/py/bin/python3"})
    files = ["app.py", "conf"]
    dry = DryRunBackend(s, sweep, src, files, KEY)
    assert type(dry.backend) is LocalBackend and dry.offline is None and dry.files == files
    assert vars(dry.backend) == vars(LocalBackend(s, sweep, src, files, KEY))
    assert dry.backend.root == sweep / ".sagemaker_local" / sweep_key(sweep)
    specs = [job_spec(sweep / "0", 0), job_spec(sweep / "1", 1)]
    with caplog.at_level(logging.INFO, logger="bincount"):
        dry.run(specs)
    line = ("[dry run] job {}: python -m bincount.sagemaker.job.entry trainer.max_epochs=2 (cwd "
            "/opt/ml/input/data/code, env ['A_VAR', 'B_VAR']; extras [], installs nothing: it runs /opt/py/bin/python3)")
    assert messages(caplog, "bincount.sagemaker.offline") == [
        "[dry run] code channel files: app.py, conf", line.format(0), line.format(1)]
    assert not (sweep / ".sagemaker_local").exists()
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1"]
    assert [list(spec.local_dir.iterdir()) for spec in specs] == [[], []]


@pytest.fixture
def sdk():
    pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")


@pytest.mark.parametrize("spot, keep_alive_s, resource_extra", [
    (True, 300, {}),  # spot: no warm pool, whatever keep_alive_s says
    (False, 300, {"KeepAlivePeriodInSeconds": 300}),
], ids=["spot", "on-demand"])
def test_a_sagemaker_dry_run_writes_the_request_the_sdk_built(sdk, tmp_path, caplog, monkeypatch, spot, keep_alive_s,
                                                              resource_extra):
    """Each job's CreateTrainingJob request, as the SDK built it on the offline session, is written beside the
    job as indented JSON (a job dir that exists, and one whose parents do not yet); nothing is sent."""
    from bincount.sagemaker.offline import DryRunBackend
    from bincount.sagemaker.remote import DRY_RUN_ROLE, SageMakerBackend

    no_region_anywhere(monkeypatch, tmp_path)
    src, sweep = source(tmp_path), tmp_path / "multirun" / "sweep-2"
    s = settings(dry_run=True, region="eu-west-1", framework_version="2.5", spot=spot, keep_alive_s=keep_alive_s,
                 instance_type="ml.g5.2xlarge", instance_count=2, max_retry_attempts=0,
                 output_s3_uri="s3://dry-bucket/runs")
    dry = DryRunBackend(s, sweep, src, ["app.py"], KEY)
    assert type(dry.backend) is SageMakerBackend and dry.offline is dry.backend.boto.bincount_offline
    assert dry.backend.keep_alive_s == (0 if spot else 300)
    specs = [job_spec(sweep / "0", 0), job_spec(sweep / "deep" / "er" / "1", 1, make_dir=False)]
    with caplog.at_level(logging.INFO, logger="bincount"):
        dry.run(specs)
    said = messages(caplog, "bincount.sagemaker.offline")
    assert said == ["[dry run] code channel files: app.py",
                    f"[dry run] {dry.backend.describe(specs[0])}",
                    f"[dry run] job 0: the CreateTrainingJob request the SDK built (not sent): "
                    f"{sweep / '0' / 'create_training_job.json'}",
                    f"[dry run] {dry.backend.describe(specs[1])}",
                    f"[dry run] job 1: the CreateTrainingJob request the SDK built (not sent): "
                    f"{sweep / 'deep' / 'er' / '1' / 'create_training_job.json'}"]
    assert said[1].endswith(f"warm pool {0 if spot else 300} s")
    assert len(dry.offline.requests) == 2
    for spec, sent in zip(specs, dry.offline.requests):
        text = (spec.local_dir / "create_training_job.json").read_text()
        request = json.loads(text)
        assert text == json.dumps(request, indent=2) + "\n" and text.startswith('{\n  "TrainingJobName": "bincount-')
        assert request == sent
        assert request["TrainingJobName"].startswith(f"bincount-{spec.idx}-")
        assert request["RoleArn"] == DRY_RUN_ROLE == "arn:aws:iam::000000000000:role/no-role-set"
        assert request["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50,
                                             **resource_extra}
        assert request["EnableManagedSpotTraining"] is spot
        assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400,
                                                **({"MaxWaitTimeInSeconds": 28800} if spot else {})}
        assert request["OutputDataConfig"]["S3OutputPath"] == "s3://dry-bucket/runs"
        assert request["Environment"] == {"B_VAR": "2", "A_VAR": "1"}
        assert request["AlgorithmSpecification"]["TrainingImage"] == \
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-gpu-py311"


# 2. bincount.sagemaker.backends.make_backend ---------------------------------------------------------------------

def test_a_dry_run_is_the_dry_run_backend_with_the_sweeps_key(tmp_path):
    from bincount.sagemaker.backends import make_backend
    from bincount.sagemaker.local import LocalBackend
    from bincount.sagemaker.offline import DryRunBackend

    src, sweep = source(tmp_path), tmp_path / "sweep"
    s = settings(backend="local", dry_run=True)
    made = make_backend(s, sweep, src, ["app.py"], KEY)
    assert type(made) is DryRunBackend and made.offline is None and made.files == ["app.py"]
    assert type(made.backend) is LocalBackend
    assert vars(made.backend) == vars(LocalBackend(s, sweep, src, ["app.py"], KEY)) and made.backend.key == KEY


def test_the_local_backend_gets_the_sweeps_key(tmp_path):
    from bincount.sagemaker.backends import make_backend
    from bincount.sagemaker.local import LocalBackend

    src, sweep = source(tmp_path), tmp_path / "sweep"
    s = settings(backend="local", local={"root": str(tmp_path / "scratch")})
    made = make_backend(s, sweep, src, ["app.py"], KEY)
    assert type(made) is LocalBackend
    assert vars(made) == vars(LocalBackend(s, sweep, src, ["app.py"], KEY)) and made.key == KEY
    assert made.root == tmp_path / "scratch" / sweep_key(sweep)


def test_the_sagemaker_backend_runs_on_the_preflights_session_with_its_warm_pool(sdk, tmp_path, monkeypatch):
    """The session is made for the configured region, the preflight is asked on it, and the backend gets both
    (the preflight's answer is the warm pool each job asks for)."""
    from bincount.sagemaker import preflight
    from bincount.sagemaker.backends import make_backend
    from bincount.sagemaker.offline import OfflineAWS
    from bincount.sagemaker.remote import SageMakerBackend

    no_region_anywhere(monkeypatch, tmp_path)
    calls = []
    boto = OfflineAWS("eu-west-1", "real-bucket").session  # stands in for the user's session: answers in-process

    def make_boto_session(region):
        calls.append(("make_boto_session", region))
        return boto

    def fake_preflight(settings_, boto_):
        calls.append(("preflight", settings_, boto_))
        return 123

    monkeypatch.setattr(preflight, "make_boto_session", make_boto_session)
    monkeypatch.setattr(preflight, "preflight", fake_preflight)
    src, sweep = source(tmp_path), tmp_path / "multirun" / "sweep-3"
    s = settings(region="eu-west-1", role=ROLE, output_s3_uri="s3://real-bucket/runs", framework_version="2.5")
    made = make_backend(s, sweep, src, ["app.py"], KEY)
    assert calls == [("make_boto_session", "eu-west-1"), ("preflight", s, boto)]
    assert type(made) is SageMakerBackend
    assert made.settings is s and made.boto is boto and made.keep_alive_s == 123
    assert made.sweep == sweep_key(sweep)
    assert made.staged.code == sweep / ".sagemaker" / "code"
    assert (made.staged.code / "app.py").read_text() == "print('job')\n"
    assert made.describe(job_spec(sweep / "0")).endswith("warm pool 123 s")


# 3. bincount.sagemaker.job.progress --------------------------------------------------------------------------

def test_write_progress_makes_the_directories_and_leaves_only_the_file(tmp_path):
    from bincount.sagemaker.job.progress import PROGRESS_FILE, parse_progress, write_progress

    path = tmp_path / "out" / "checkpoints" / PROGRESS_FILE
    write_progress(path, "val/mae", {"0": 1.5, "1": 0.25})
    assert json.loads(path.read_text()) == {"metric": "val/mae", "values": {"0": 1.5, "1": 0.25}}
    assert parse_progress(path.read_bytes()) == {0: 1.5, 1: 0.25}
    assert sorted(p.name for p in path.parent.iterdir()) == ["bincount_progress.json"]


def test_write_progress_replaces_a_half_written_file_a_killed_job_left(tmp_path):
    """A job killed mid-write leaves ``bincount_progress.tmp``; the next write goes through the same scratch
    name, so nothing stale stays in the synced checkpoint dir."""
    from bincount.sagemaker.job.progress import parse_progress, write_progress

    path = tmp_path / "bincount_progress.json"
    (tmp_path / "bincount_progress.tmp").write_text('{"metric": "val/mae", "val')
    write_progress(path, "val/mae", {"3": 2.0})
    write_progress(path, "val/mae", {"3": 2.0, "4": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bincount_progress.json"]
    assert parse_progress(path.read_bytes()) == {3: 2.0, 4: 1.0}


@pytest.mark.parametrize("data, parsed", [
    (None, {}), (b"", {}), (b"{}", {}), (b'{"values": {}}', {}), (b'{"values": []}', {}),
    (b'{"values": {"x": 1}}', {}), (b'{"values": {"1": "nan?"}}', {}), (b'{"values": {"1": null}}', {}),
    (b'[1]', {}), (b'"values"', {}), (b'{"values": {"2": "0.5", "10": 3}}', {2: 0.5, 10: 3.0}),
])
def test_parse_progress_keeps_only_a_whole_well_formed_file(data, parsed):
    from bincount.sagemaker.job.progress import parse_progress

    assert parse_progress(data) == parsed


def test_parse_progress_reads_up_to_the_cap_and_nothing_longer():
    from bincount.sagemaker.job.progress import MAX_PROGRESS_BYTES, parse_progress

    body = b'{"values": {"1": 0.5}}'
    at_cap = body + b" " * (MAX_PROGRESS_BYTES - len(body))
    assert MAX_PROGRESS_BYTES == 1048576
    assert parse_progress(at_cap) == {1: 0.5}
    assert parse_progress(at_cap + b" ") == {}


# 4. bincount.sagemaker.settings ------------------------------------------------------------------------------

TOP_KEYS = ("backend, role, region, instance_type, instance_count, network, volume_size_gb, max_runtime_s, spot, "
            "max_wait_s, keep_alive_s, max_retry_attempts, output_s3_uri, checkpoint_s3_uri, image, framework_version, "
            "environment, secrets, tags, source_dir, include, ignore_patterns, upload_patterns, max_upload_file_mb, "
            "max_upload_mb, requirements, job_overrides, checkpoint_subdir, payload, base_job_name, max_parallel_jobs, "
            "skip_completed, poll_interval_s, max_output_mb, dry_run, local")


def test_an_error_at_the_nodes_root_is_named_with_a_question_mark_and_the_top_level_keys():
    """``local: 3`` fails the merge with no key of its own (OmegaConf's full_key is empty)."""
    from bincount.sagemaker.settings import LauncherConfigError, settings_from

    with pytest.raises(LauncherConfigError) as exc:
        settings_from({"_target_": "x", "local": 3, "dry_run": True})
    assert str(exc.value) == ("hydra.launcher.?: Merge error: int is not a subclass of LocalSettings. value: 3; "
                              f"valid keys there: {TOP_KEYS}")


def test_keys_beside_an_unknown_parent_are_the_top_level_keys():
    from bincount.sagemaker.settings import _keys_beside

    assert ", ".join(_keys_beside("nope.deeper")) == TOP_KEYS
    assert _keys_beside("local.nope") == ["root", "copy_code", "python", "num_gpus"]


def test_an_empty_instance_type_is_refused_before_aws_sees_it():
    from bincount.sagemaker.settings import LauncherConfigError, validate

    with pytest.raises(LauncherConfigError) as exc:
        validate(settings(instance_type="", role=ROLE, output_s3_uri="s3://b/p"))
    assert str(exc.value) == ("hydra.launcher.instance_type: instance type (not set) is not valid: expected something "
                              "like ml.m5.large or ml.g5.xlarge")


def test_a_framework_version_is_shown_with_its_control_characters_as_question_marks():
    from bincount.sagemaker.settings import LauncherConfigError, validate

    with pytest.raises(LauncherConfigError) as exc:
        validate(settings(framework_version="2.9\n\x1b[0m", dry_run=True))
    assert str(exc.value) == ("hydra.launcher.framework_version='2.9??[0m': a PyTorch version such as 2.9 or 2.9.0, or "
                              "null for the newest image the SDK knows")
