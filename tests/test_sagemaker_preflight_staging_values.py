"""What is checked with AWS before any upload (``bincount.sagemaker.preflight``) and what a job installs from
its staged code channel (``bincount.sagemaker.staging``), checked by value.

Preflight: the S3 and Service Quotas clients are botocore's own, answering through a ``Stubber`` (request and
response shapes validated against the service models), behind a small stand-in for ``boto3.Session`` that
hands them out by service name and notes which region each was asked for. Staging: a real code channel
staged from a tmp source directory; the constraints file, the pip arguments and the per-job requirements file
are compared whole. The SageMaker SDK is needed only where the default image is resolved (offline).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import EndpointConnectionError  # noqa: E402
from botocore.stub import Stubber  # noqa: E402
from helpers.launcher_settings import settings  # noqa: E402
from helpers.quotas import stubbed_quotas_client  # noqa: E402

from bincount.sagemaker.preflight import NO_REGION, check_bucket_region, job_region, preflight, split_s3  # noqa: E402
from bincount.sagemaker.quotas import QuotaError  # noqa: E402
from bincount.sagemaker.spec import JobSpec  # noqa: E402
from bincount.sagemaker.staging import StagedCode, extras_suffix, newest_pytorch, project_name  # noqa: E402

LOGGERS = ("bincount.sagemaker.preflight", "bincount.sagemaker.quotas", "bincount.sagemaker.warm_pool",
           "bincount.sagemaker.staging")


def messages(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name in LOGGERS]


# 1. Preflight: region, bucket, quota, warm pool ----------------------------------------------------------------

class Session:
    """What preflight reads of a ``boto3.Session``: its region and its clients (here, stubbed ones)."""

    def __init__(self, region_name: str | None, **clients) -> None:
        self.region_name = region_name
        self.clients = {name.replace("_", "-"): client for name, client in clients.items()}
        self.asked: list[tuple[str, str | None]] = []

    def client(self, service_name: str, region_name: str | None = None):
        self.asked.append((service_name, region_name))
        return self.clients[service_name]


def s3_client(bucket: str, location: str | None = None, error: str | None = None):
    """botocore's S3 client answering one GetBucketLocation for ``bucket``: ``location`` (None: the key is
    absent, as for us-east-1), or a 403 with the error code ``error``."""
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(client)
    if error:
        stub.add_client_error("get_bucket_location", service_error_code=error, http_status_code=403,
                              expected_params={"Bucket": bucket})
    else:
        stub.add_response("get_bucket_location", {"LocationConstraint": location} if location else {},
                          {"Bucket": bucket})
    stub.activate()
    return client, stub


def quota(region: str, name: str, value: float, code: str) -> dict:
    return {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": code, "Value": value,
            "QuotaArn": f"arn:aws:servicequotas:{region}:123456789012:sagemaker/{code}"}


@pytest.mark.parametrize("configured, session, expected", [
    ("eu-west-1", "us-east-1", "eu-west-1"),  # the configured region wins
    ("eu-west-1", None, "eu-west-1"),
    (None, "ap-southeast-2", "ap-southeast-2"),  # the environment's otherwise
])
def test_job_region_is_the_configured_one_else_the_sessions(configured, session, expected):
    assert job_region(settings(region=configured), Session(session)) == expected


@pytest.mark.parametrize("session", [None, ""])
def test_no_region_anywhere_is_refused_naming_both_ways_to_set_one(session):
    with pytest.raises(ValueError) as e:
        job_region(settings(region=None), Session(session))
    assert str(e.value) == NO_REGION == ("no AWS region: set hydra.launcher.region=<region> (e.g. us-east-1) or "
                                         "AWS_DEFAULT_REGION")


@pytest.mark.parametrize("uri, expected", [
    ("s3://my-bucket/sweeps/run1/", ("my-bucket", "sweeps/run1")),
    ("s3://my-bucket//a/b//", ("my-bucket", "a/b")),
    ("s3://my-bucket", ("my-bucket", "")),
    ("s3://XBucket/X-data/runX/", ("XBucket", "X-data/runX")),
    ("s3://b/ prefix /", ("b", " prefix ")),
])
def test_split_s3_gives_the_bucket_and_the_prefix_without_slashes(uri, expected):
    assert split_s3(uri) == expected


@pytest.mark.parametrize("uri", ["https://my-bucket/prefix", "s3:///prefix", "my-bucket/prefix", "", "S3//b/p"])
def test_split_s3_refuses_what_is_not_an_s3_uri_and_says_the_form(uri):
    with pytest.raises(ValueError) as e:
        split_s3(uri)
    assert str(e.value) == f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)"


@pytest.mark.parametrize("location, region", [(None, "us-east-1"), ("EU", "eu-west-1"), ("eu-west-1", "eu-west-1"),
                                              ("ap-southeast-2", "ap-southeast-2")])
def test_a_bucket_in_the_jobs_region_passes(location, region, caplog):
    """No LocationConstraint is us-east-1; "EU" is the legacy name of eu-west-1."""
    s3, stub = s3_client("my-bucket", location)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert check_bucket_region(s3, "my-bucket", region) is None
    assert messages(caplog) == []
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("location, where, region", [(None, "us-east-1", "eu-west-1"), ("EU", "eu-west-1", "us-east-1"),
                                                     ("eu-central-1", "eu-central-1", "eu-west-1")])
def test_a_bucket_in_another_region_is_refused_naming_both(location, where, region):
    s3, stub = s3_client("my-bucket", location)
    with pytest.raises(ValueError) as e:
        check_bucket_region(s3, "my-bucket", region)
    assert str(e.value) == (
        f"bucket my-bucket (hydra.launcher.output_s3_uri) is in {where}, the jobs would run in {region}: SageMaker "
        f"needs a job's S3 locations in its region; use a bucket in {region} or hydra.launcher.region={where}")
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("error", ["AccessDenied", "NoSuchBucket", "AllAccessDisabled", "InvalidAccessKeyId"])
def test_a_bucket_location_aws_will_not_tell_is_a_warning_with_its_code_and_the_launch_goes_on(error, caplog):
    """The code comes from AWS's answer: botocore raises a plain ClientError for codes S3 does not model
    (AllAccessDisabled, InvalidAccessKeyId), so its class name would not do."""
    s3, stub = s3_client("my-bucket", error=error)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert check_bucket_region(s3, "my-bucket", "eu-west-1") is None
    assert messages(caplog) == [
        ("WARNING", f"could not check the region of bucket my-bucket ({error}); SageMaker needs it in eu-west-1")]
    stub.assert_no_pending_responses()


def test_an_error_without_an_aws_response_is_named_by_its_type(caplog):
    """No endpoint reachable: botocore's own exception, no ``response``: the warning names its class."""
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")

    def unreachable(request, **_):
        raise EndpointConnectionError(endpoint_url=request.url)

    s3.meta.events.register("before-send.s3.GetBucketLocation", unreachable)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert check_bucket_region(s3, "my-bucket", "us-east-1") is None
    assert messages(caplog) == [("WARNING", "could not check the region of bucket my-bucket "
                                            "(EndpointConnectionError); SageMaker needs it in us-east-1")]


def launch(**changes):
    return settings(**{"region": "eu-west-1", "output_s3_uri": "s3://sweeps-eu/team/run", "instance_type":
                       "ml.p4d.24xlarge", "instance_count": 2, "max_parallel_jobs": 3, "spot": False,
                       "keep_alive_s": 600, **changes})


@pytest.mark.parametrize("configured, session_region", [("eu-west-1", "us-east-1"), (None, "eu-west-1")])
def test_preflight_asks_each_check_in_the_jobs_region_and_returns_the_warm_pool_seconds(
        fresh_quotas, caplog, configured, session_region):
    """Bucket in eu-west-1 (the jobs' region, configured or the session's); a training quota of 4 runs 2 of the
    3 parallel 2-instance jobs; a warm-pool quota of 0 keeps none, and each job still asks for its 600 s
    ($37.688/h x 2 x 600 s = $12.56)."""
    region = "eu-west-1"
    training, warm = "ml.p4d.24xlarge for training job usage", "ml.p4d.24xlarge for training warm pool usage"
    page = {"Quotas": [quota(region, "ml.p4d.24xlarge for spot training job usage", 100, "L-SPOT"),
                       quota(region, training, 4, "L-TRAIN"), quota(region, warm, 0, "L-WARM")]}
    s3, s3_stub = s3_client("sweeps-eu", region)
    quotas, quotas_stub = stubbed_quotas_client(("list_service_quotas", page), ("list_service_quotas", page),
                                                region=region)
    session = Session(session_region, s3=s3, service_quotas=quotas)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert preflight(launch(region=configured), session) == 600
    assert session.asked == [("s3", None), ("service-quotas", region)]
    ask = ("aws service-quotas request-service-quota-increase --region eu-west-1 --service-code sagemaker "
           "--quota-code L-TRAIN --desired-value 6")
    assert messages(caplog) == [
        ("WARNING", f"the quota '{training}' is 4 in eu-west-1: at most 2 of the 3 parallel jobs "
                    "(hydra.launcher.max_parallel_jobs) can run at once; the others fail to start "
                    f"(ResourceLimitExceeded). To run all: {ask}"),
        ("INFO", "Warm pool: each job's instance stays up to 600 s after it ends, so the next trial on it starts in "
                 "seconds instead of minutes; billed while idle, at most $12.56 a job (ml.p4d.24xlarge); "
                 "hydra.launcher.keep_alive_s=0 turns it off"),
        ("WARNING", f"the quota '{warm}' is 0 in eu-west-1: the jobs run, but no instance is kept warm; ask for 6 "
                    "(quota code L-WARM) to make the next trial start in seconds")]
    s3_stub.assert_no_pending_responses()
    quotas_stub.assert_no_pending_responses()


def test_preflight_refuses_a_spot_quota_too_small_for_one_job(fresh_quotas):
    """Spot reads the spot quota (1 < 2 instances: no job could start), not the on-demand one (100)."""
    region = "us-west-2"
    spot = "ml.g5.12xlarge for spot training job usage"
    page = {"Quotas": [quota(region, "ml.g5.12xlarge for training job usage", 100, "L-OD"),
                       quota(region, spot, 1, "L-SPOT")]}
    s3, s3_stub = s3_client("b", region)
    quotas, quotas_stub = stubbed_quotas_client(("list_service_quotas", page), region=region)
    session = Session("eu-west-1", s3=s3, service_quotas=quotas)
    with pytest.raises(QuotaError) as e:
        preflight(launch(region=region, output_s3_uri="s3://b/p", instance_type="ml.g5.12xlarge", spot=True,
                         max_parallel_jobs=5), session)
    assert str(e.value) == (
        f"the quota '{spot}' is 1 in us-west-2, and one job needs 2: no job could start. Ask for more (aws "
        "service-quotas request-service-quota-increase --region us-west-2 --service-code sagemaker --quota-code "
        "L-SPOT --desired-value 10; docs/sagemaker.md, Service quotas), or use a type you have quota for "
        "(hydra.launcher.instance_type=...)")
    assert session.asked == [("s3", None), ("service-quotas", region)]
    s3_stub.assert_no_pending_responses()
    quotas_stub.assert_no_pending_responses()


def test_preflight_with_enough_spot_quota_asks_for_no_warm_pool(fresh_quotas, caplog):
    region = "us-east-1"
    page = {"Quotas": [quota(region, "ml.g5.xlarge for spot training job usage", 8, "L-SPOT")]}
    s3, _ = s3_client("b")  # no LocationConstraint: us-east-1
    quotas, quotas_stub = stubbed_quotas_client(("list_service_quotas", page), region=region)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert preflight(launch(region=None, output_s3_uri="s3://b", instance_type="ml.g5.xlarge", spot=True,
                                instance_count=1, max_parallel_jobs=8),
                         Session(region, s3=s3, service_quotas=quotas)) == 0
    assert messages(caplog) == [
        ("INFO", "Warm pool: none for spot jobs (SageMaker has no warm pools for managed spot training)")]
    quotas_stub.assert_no_pending_responses()


def test_preflight_stops_at_the_bucket_before_asking_for_quotas(fresh_quotas):
    s3, _ = s3_client("sweeps-us")  # us-east-1
    session = Session("us-east-1", s3=s3)
    with pytest.raises(ValueError, match=r"^bucket sweeps-us \(hydra.launcher.output_s3_uri\) is in us-east-1, "
                                         r"the jobs would run in eu-west-1:"):
        preflight(launch(output_s3_uri="s3://sweeps-us/x"), session)
    assert session.asked == [("s3", None)]


def test_preflight_without_a_region_asks_nothing():
    session = Session(None)
    with pytest.raises(ValueError) as e:
        preflight(launch(region=None), session)
    assert str(e.value) == NO_REGION
    assert session.asked == []


# 2. Staging: project name, extras ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('[project]\nname = "bincount"\nversion = "0.1"\n', "bincount"),
    ("[build-system]\nrequires = ['hatchling']\n\n[project]\nversion = '1'\nname='my-app'\n", "my-app"),
    ('[tool.other]\nname = "other"\n\n[project]\ndependencies = [\n  "torch",\n]\nname = "real"\n', "real"),
    ('[tool.poetry]\nname = "poetry-app"\n', None),  # no [project]
    ('[project]\nversion = "1"\n\n[tool.hatch]\nname = "not-the-project"\n', None),  # a name in another table
    ('[project]\nversion = "1"\n', None),
    ("", None),
])
def test_project_name_reads_the_name_of_the_project_table_only(tmp_path, text, expected):
    (tmp_path / "pyproject.toml").write_text(text)
    assert project_name(tmp_path / "pyproject.toml") == expected


@pytest.mark.parametrize("extras, expected", [([], ""), (["s3"], "[s3]"), (["s3", "wandb"], "[s3,wandb]")])
def test_extras_suffix(extras, expected):
    assert extras_suffix(extras) == expected


def test_newest_pytorch_is_the_highest_version_by_number_not_by_text(monkeypatch):
    image_uris = pytest.importorskip("sagemaker.core.image_uris")
    aliases = {"1.13": "1.13.1", "2.9": "2.9.0", "2.10": "2.10.0", "2.2": "2.2.0"}
    monkeypatch.setattr(image_uris, "config_for_framework",
                        lambda framework: {"training": {"version_aliases": dict(aliases)}} if framework == "pytorch"
                        else {})
    assert newest_pytorch() == "2.10"


# 3. Staging: the code channel and its constraints -------------------------------------------------------------

PYPROJECT = '[project]\nname = "bincount"\nversion = "0.1"\n'
CONSTRAINTS = ("# pins of the project\nnumpy==1.26.4\ntorch==2.5.1\nnvidia-cudnn-cu12==9.1.0.70\n"
               "hydra-core==1.3.2\n")
JOB_NOTE = ("# The job's copy (bincount.sagemaker.job.pins): the image's torch/CUDA stack is not pinned here, so pip "
            "keeps the image's build: torch, nvidia-cudnn-cu12\n")
KEPT = "# pins of the project\nnumpy==1.26.4\nhydra-core==1.3.2\n"
TORCH_NOTE = ("# The image's torch (framework_version): pip fails rather than replace it if a package wanted "
              "another\n")


def source(tmp_path: Path, pyproject: bool = True, constraints: bool = True,
           requirements: bool = False) -> tuple[Path, list[str]]:
    src = tmp_path / "project"
    (src / "reqs").mkdir(parents=True)
    (src / "train.py").write_text("print('train')\n")
    files = ["train.py"]
    if pyproject:
        (src / "pyproject.toml").write_text(PYPROJECT)
        files.append("pyproject.toml")
    if constraints:
        (src / "constraints.txt").write_text(CONSTRAINTS)
        files.append("constraints.txt")
    if requirements:
        (src / "reqs" / "extra.txt").write_text("rich\n")
        files.append("reqs/extra.txt")
    return src, files


def staged(tmp_path: Path, pyproject: bool = True, constraints: bool = True, requirements: bool = False,
           **changes) -> StagedCode:
    src, files = source(tmp_path, pyproject, constraints, requirements)
    options = {"framework_version": "2.5", "image": "123.dkr.ecr.eu-west-1.amazonaws.com/mine:1",
               "requirements": "reqs/extra.txt" if requirements else None, **changes}
    return StagedCode(settings(**options), src, tmp_path / "sweep", files, "eu-west-1")


def spec(tmp_path: Path, idx: int = 0, extras: tuple[str, ...] = ()) -> JobSpec:
    return JobSpec(idx, [], OmegaConf.create({}), tmp_path / "jobs" / str(idx), f"multirun/s/{idx}",
                   ["python", "-m", "bincount.sagemaker.job.entry"], {}, "sha", f"bincount-{idx}",
                   extras=list(extras))


def test_a_custom_image_keeps_the_pins_without_the_torch_stack_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bincount"):
        code = staged(tmp_path)
    assert code.code == tmp_path / "sweep" / ".sagemaker" / "code"
    assert sorted(p.relative_to(code.code).as_posix() for p in code.code.rglob("*") if p.is_file()) == [
        "_sagemaker_jobs/constraints.txt", "constraints.txt", "pyproject.toml", "train.py"]
    assert (code.project, code.framework_version, code.image) == (
        "bincount", "2.5", "123.dkr.ecr.eu-west-1.amazonaws.com/mine:1")
    assert code.constraints == "_sagemaker_jobs/constraints.txt"
    assert (code.code / "_sagemaker_jobs" / "constraints.txt").read_text() == JOB_NOTE + KEPT
    assert (code.code / "constraints.txt").read_text() == CONSTRAINTS  # the project's own copy is untouched
    assert messages(caplog) == [("INFO", "Job constraints _sagemaker_jobs/constraints.txt: 2 pins; the image's own "
                                         "torch/CUDA stack (2 packages) is left to it")]


def test_the_sdks_image_pins_its_torch_and_is_resolved_for_the_region_and_type(tmp_path, caplog):
    image_uris = pytest.importorskip("sagemaker.core.image_uris")
    with caplog.at_level(logging.INFO, logger="bincount"):
        code = staged(tmp_path, image=None, framework_version="2.5", instance_type="ml.g5.xlarge")
    assert code.image == image_uris.retrieve(framework="pytorch", region="eu-west-1", version="2.5",
                                             instance_type="ml.g5.xlarge", image_scope="training")
    assert code.image.startswith("763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-gpu-")
    assert (code.code / "_sagemaker_jobs" / "constraints.txt").read_text() == (
        JOB_NOTE + KEPT + TORCH_NOTE + "torch==2.5.*\n")
    assert messages(caplog) == [("INFO", "Job constraints _sagemaker_jobs/constraints.txt: 3 pins; the image's own "
                                         "torch/CUDA stack (2 packages) is left to it, torch stays the image's 2.5")]


def test_without_a_framework_version_the_newest_image_is_used_and_named(tmp_path, caplog):
    image_uris = pytest.importorskip("sagemaker.core.image_uris")
    newest = newest_pytorch()
    with caplog.at_level(logging.INFO, logger="bincount"):
        code = staged(tmp_path, image=None, framework_version=None, instance_type="ml.m5.xlarge")
    image = image_uris.retrieve(framework="pytorch", region="eu-west-1", version=newest,
                                instance_type="ml.m5.xlarge", image_scope="training")
    assert (code.framework_version, code.image) == (newest, image)
    assert (code.code / "_sagemaker_jobs" / "constraints.txt").read_text() == (
        JOB_NOTE + KEPT + TORCH_NOTE + f"torch=={newest}.*\n")
    assert messages(caplog) == [
        ("INFO", "Job constraints _sagemaker_jobs/constraints.txt: 3 pins; the image's own torch/CUDA stack "
                 f"(2 packages) is left to it, torch stays the image's {newest}"),
        ("INFO", f"Training image {image}: the newest PyTorch training image the installed SDK knows (pin one with "
                 "hydra.launcher.framework_version=2.9)")]


def test_no_constraints_file_installs_the_project_unpinned_and_warns(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bincount"):
        code = staged(tmp_path, constraints=False)
    assert (code.project, code.constraints) == ("bincount", None)
    assert not (code.code / "_sagemaker_jobs").exists()
    assert messages(caplog) == [
        ("WARNING", "no constraints.txt in the code channel: the job installs bincount unpinned")]


def test_no_project_and_no_constraints_say_nothing(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bincount"):
        code = staged(tmp_path, pyproject=False, constraints=False)
    assert (code.project, code.constraints) == (None, None)
    assert messages(caplog) == []


# 4. Staging: what each job installs ---------------------------------------------------------------------------

def test_requirement_names_the_project_with_the_jobs_extras(tmp_path):
    code = staged(tmp_path)
    assert code.requirement(spec(tmp_path, extras=("s3", "wandb"))) == "bincount[s3,wandb]"
    assert code.requirement(spec(tmp_path)) == "bincount"


def test_requirement_is_none_without_a_named_project(tmp_path):
    assert staged(tmp_path, pyproject=False).requirement(spec(tmp_path, extras=("s3",))) is None


C = ["-c", "_sagemaker_jobs/constraints.txt"]
R = ["-r", "reqs/extra.txt"]


@pytest.mark.parametrize("pyproject, constraints, requirements, expected", [
    (True, True, True, [*C, ".[s3,wandb]", *R]),
    (True, True, False, [*C, ".[s3,wandb]"]),
    (True, False, True, [".[s3,wandb]", *R]),
    (True, False, False, [".[s3,wandb]"]),
    (False, True, True, [*C, *R]),
    (False, True, False, []),  # constraints alone install nothing
    (False, False, True, R),
    (False, False, False, []),
])
def test_install_args_for_each_combination(tmp_path, pyproject, constraints, requirements, expected):
    code = staged(tmp_path, pyproject, constraints, requirements)
    assert code.install_args(spec(tmp_path, extras=("s3", "wandb"))) == expected


def test_install_args_without_extras_install_the_bare_project(tmp_path):
    assert staged(tmp_path, constraints=False).install_args(spec(tmp_path)) == ["."]


@pytest.mark.parametrize("pyproject, constraints, requirements, expected", [
    (True, True, True, "pip install -c _sagemaker_jobs/constraints.txt '.[s3,wandb]' -r reqs/extra.txt"),
    (True, False, False, "pip install '.[s3,wandb]'"),
    (False, True, True, "pip install -c _sagemaker_jobs/constraints.txt -r reqs/extra.txt"),
    (False, True, False, "(nothing)"),
])
def test_install_command_is_the_shell_line_of_the_args(tmp_path, pyproject, constraints, requirements, expected):
    code = staged(tmp_path, pyproject, constraints, requirements)
    assert code.install_command(spec(tmp_path, extras=("s3", "wandb"))) == expected


def test_the_requirements_file_has_the_command_and_paths_relative_to_itself(tmp_path):
    code = staged(tmp_path, requirements=True)
    assert code.requirements_file(spec(tmp_path, idx=3, extras=("s3", "wandb"))) == (
        "_sagemaker_jobs/job3.requirements.txt")
    assert (code.code / "_sagemaker_jobs" / "job3.requirements.txt").read_text() == (
        "# job 3: pip install -c _sagemaker_jobs/constraints.txt '.[s3,wandb]' -r reqs/extra.txt\n"
        "-c ../_sagemaker_jobs/constraints.txt\n"
        ".[s3,wandb]\n"
        "-r ../reqs/extra.txt\n")


def test_each_job_gets_its_own_requirements_file(tmp_path):
    """No constraints: the first file makes _sagemaker_jobs/, the second finds it there."""
    code = staged(tmp_path, constraints=False)
    assert code.requirements_file(spec(tmp_path, idx=0)) == "_sagemaker_jobs/job0.requirements.txt"
    assert code.requirements_file(spec(tmp_path, idx=1, extras=("wandb",))) == "_sagemaker_jobs/job1.requirements.txt"
    jobs = code.code / "_sagemaker_jobs"
    assert (jobs / "job0.requirements.txt").read_text() == "# job 0: pip install .\n.\n"
    assert (jobs / "job1.requirements.txt").read_text() == "# job 1: pip install '.[wandb]'\n.[wandb]\n"


def test_user_requirements_alone_nest_with_a_relative_path(tmp_path):
    code = staged(tmp_path, pyproject=False, constraints=False, requirements=True)
    assert code.requirements_file(spec(tmp_path, idx=2)) == "_sagemaker_jobs/job2.requirements.txt"
    assert (code.code / "_sagemaker_jobs" / "job2.requirements.txt").read_text() == (
        "# job 2: pip install -r reqs/extra.txt\n-r ../reqs/extra.txt\n")


def test_nothing_to_install_writes_no_requirements_file(tmp_path):
    code = staged(tmp_path, pyproject=False)
    assert code.requirements_file(spec(tmp_path, idx=0, extras=("s3",))) is None
    assert sorted(p.name for p in (code.code / "_sagemaker_jobs").iterdir()) == ["constraints.txt"]
