"""Values of three checks that run before anything is written or sent, pinned exactly (fast tier):

1. ``bincount.secrets_config``: which leaves a composed config has (path, resolved value, interpolation text),
   which lines ``config_problems`` returns in which order, what ``check_resolved`` refuses in a run and in a
   multirun, and the exit line of the ``leak_check`` callback at the start of a multirun. The
   ``${oc.env:...}`` variable parsing and ``on_run_start`` are pinned in
   test_secrets_config_and_sweeper_plugin.py; here: leaves of ``hydra.launcher.secrets``, the order of the
   lines and ``check_resolved`` itself.
2. ``bincount.sagemaker.quotas``: the quota found (applied, else AWS's default; a missing code is "?"), the
   cache per region and quota name, and each message a user reads, whole. botocore's real Service Quotas
   client answers through its Stubber (request and response shapes validated against the API model).
3. ``bincount.sagemaker.offline.OfflineAWS``: the dry run's answer to each AWS call, made through real boto3
   clients of its session (botocore validates each request; no call leaves the process), its HTTP status, and
   the CreateTrainingJob request it records.

A planted password never appears in what a test asserts on, only in ``not in`` checks.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from omegaconf import DictConfig, OmegaConf

from bincount.secrets import ADVICE, SecretError
from bincount.secrets_config import SecretCheck, check_resolved, config_problems, leaves
from helpers.secrets import AWS_KEY_ID

PASSWORD = "Planted-pw-7731"
DB_URL = f"postgres://bins:{PASSWORD}@db.example/optuna"
OWN_SWEEPER = "hydra_plugins.bincount_optuna_sweeper.optuna_sweeper.BincountOptunaSweeper"
URL_SHAPE = "the value looks like a URL with a password (user:password@)"


def refused(*lines: str) -> str:
    return f"refused: {'; '.join(lines)}. {ADVICE}"


# 1. bincount.secrets_config -----------------------------------------------------------------------------------

def test_leaves_lists_every_leaf_with_its_dotted_path_resolved_value_and_interpolation_text():
    """Lists index with [i]; a resolved interpolation gives its value and its text; one that cannot resolve
    yet (and a ``???``) gives its text as the value, and the leaves after it are still listed."""
    cfg = OmegaConf.create({
        "model": {"name": "tiny", "layers": [4, {"width": 8}]},
        "paths": {"data": "${model.name}/d", "later": "${paths.nowhere}"},
        "must": "???",
        "after": 1,
        "flag": False,
        "none": None,
    })
    assert list(leaves(cfg)) == [
        ("model.name", "tiny", None),
        ("model.layers[0]", 4, None),
        ("model.layers[1].width", 8, None),
        ("paths.data", "tiny/d", "${model.name}/d"),
        ("paths.later", "${paths.nowhere}", "${paths.nowhere}"),
        ("must", "???", None),
        ("after", 1, None),
        ("flag", False, None),
        ("none", None, None),
    ]


def test_leaves_of_a_missing_value_beside_an_unresolvable_one_are_both_their_text():
    """The ``???`` is read without resolving its siblings (one of which cannot resolve)."""
    cfg = OmegaConf.create({"a": {"must": "???", "later": "${nowhere}", "n": [1]}})
    assert list(leaves(cfg)) == [("a.must", "???", None), ("a.later", "${nowhere}", "${nowhere}"), ("a.n[0]", 1, None)]


def test_leaves_of_a_list_at_the_top_and_a_prefix():
    cfg = OmegaConf.create([{"x": 1}, "y"])
    assert list(leaves(cfg)) == [("[0].x", 1, None), ("[1]", "y", None)]
    assert list(leaves(OmegaConf.create({"k": [2]}), "root")) == [("root.k[0]", 2, None)]


def test_config_problems_lists_the_apps_keys_first_in_config_order_then_hydras():
    cfg = OmegaConf.create({
        "hydra": {"job": {"env_set": {"HF_TOKEN": "x"}}, "launcher": {"environment": {"SORT_KEY": "1"}}},
        "wandb": {"api_key": "k"},
        "logger": {"url": DB_URL, "sort_by_key": "cpu_time"},
        "aws": {"id": AWS_KEY_ID},
    })
    found = config_problems(cfg)
    assert found == [
        "config 'wandb.api_key': the name looks like a credential",
        f"config 'logger.url': {URL_SHAPE}",
        "config 'aws.id': the value looks like an AWS access key id",
        "config 'hydra.job.env_set.HF_TOKEN': the name looks like a credential",
        "config 'hydra.launcher.environment.SORT_KEY': the name looks like a credential",
    ]
    assert not any(s in " ".join(found) for s in (PASSWORD, AWS_KEY_ID))


def test_an_unresolved_secrets_manager_reference_is_checked_by_its_text_and_its_variables(monkeypatch):
    """``hydra.launcher.secrets.<ENV>`` names a secret (its name is allowed, its value is not checked by name),
    but an interpolation copying in a variable is: by the variable's secret name, or by what it holds."""
    monkeypatch.setenv("BC_T_SM_URL", DB_URL)
    monkeypatch.setenv("BC_T_SM_NAME", "prod/wandb")
    monkeypatch.delenv("BC_T_SM_TOKEN", raising=False)
    cfg = OmegaConf.create({"hydra": {"launcher": {"secrets": {
        "WANDB_API_KEY": "${paths.nowhere}${oc.env:BC_T_SM_TOKEN}",  # unset: the name in the text is secret
        "DB_URL": "${paths.nowhere}/${oc.env:BC_T_SM_URL}",  # the variable holds a password URL
        "PLAIN": "${paths.nowhere}/${oc.env:BC_T_SM_NAME}",  # the variable holds a secret's name
        "RESOLVED": "${oc.env:BC_T_SM_NAME}",
    }}}})
    found = config_problems(cfg)
    assert found == [
        "config 'hydra.launcher.secrets.WANDB_API_KEY': the value looks like a mapping or ${oc.env:} with a secret "
        "name (BC_T_SM_TOKEN)",
        f"config 'hydra.launcher.secrets.DB_URL': {URL_SHAPE}",
    ]
    assert PASSWORD not in " ".join(found)


def sweep_config(target: str = OWN_SWEEPER, **extra) -> DictConfig:
    return OmegaConf.create({"model": {"name": "tiny"},
                             "hydra": {"sweeper": {"_target_": target, "storage": DB_URL}, **extra}})


STORAGE_LINE = f"config 'hydra.sweeper.storage': {URL_SHAPE}"
ENV_LINE = "config 'hydra.launcher.environment.API_KEY': the name looks like a credential"


def test_check_resolved_refuses_the_own_sweepers_storage_password_in_a_single_run():
    """By default (a single run) no sweeper masks the storage URL, the bincount one included."""
    with pytest.raises(SecretError) as exc:
        check_resolved(sweep_config())
    assert str(exc.value) == refused(STORAGE_LINE)
    assert PASSWORD not in str(exc.value)
    with pytest.raises(SecretError) as exc:
        check_resolved(sweep_config(), multirun=False)
    assert str(exc.value) == refused(STORAGE_LINE)


def test_check_resolved_leaves_only_the_storage_to_the_own_sweeper_in_a_multirun():
    assert check_resolved(sweep_config(), multirun=True) is None
    cfg = sweep_config(launcher={"environment": {"API_KEY": "abc"}})
    with pytest.raises(SecretError) as exc:
        check_resolved(cfg, multirun=True)
    assert str(exc.value) == refused(ENV_LINE)
    with pytest.raises(SecretError) as exc:
        check_resolved(cfg)
    assert str(exc.value) == refused(STORAGE_LINE, ENV_LINE)


@pytest.mark.parametrize("target", ["hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
                                    "my.hydra_plugins.bincount_optuna_sweeper.Sweeper", ""])
def test_check_resolved_refuses_the_storage_of_any_other_sweeper_in_a_multirun(target):
    with pytest.raises(SecretError) as exc:
        check_resolved(sweep_config(target), multirun=True)
    assert str(exc.value) == refused(STORAGE_LINE)


def test_check_resolved_passes_a_clean_config_without_a_sweeper():
    assert check_resolved(OmegaConf.create({"model": {"name": "tiny"}, "paths": {"out": "${paths.nowhere}"}})) is None
    assert check_resolved(OmegaConf.create({"model": {"name": "tiny"}}), multirun=True) is None


def test_the_multirun_callback_exits_with_the_programs_name_and_the_lines_other_than_the_storage(monkeypatch):
    """At the start of a multirun with the bincount sweeper, its storage is left to it; a tag or a variable is
    not. The exit line starts with the program's file name (argv[0], not its first argument)."""
    monkeypatch.setattr("sys.argv", ["/opt/tools/sweep_it.py", "-m", "model=tiny"])
    with pytest.raises(SystemExit) as exc:
        SecretCheck().on_multirun_start(config=sweep_config(launcher={"environment": {"API_KEY": "abc"}}),
                                        config_name="train")
    assert exc.value.code == f"sweep_it.py: {refused(ENV_LINE)}"
    assert PASSWORD not in exc.value.code
    assert SecretCheck().on_multirun_start(config=sweep_config(), config_name="train") is None


# 2. bincount.sagemaker.quotas ---------------------------------------------------------------------------------

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import EndpointConnectionError  # noqa: E402
from helpers.quotas import stubbed_quotas_client  # noqa: E402

G5 = "ml.g5.xlarge for training job usage"
G5_SPOT = "ml.g5.xlarge for spot training job usage"


def quota(name: str, value: float, code: str | None = "L-G5", region: str = "us-east-1") -> dict:
    q = {"ServiceCode": "sagemaker", "QuotaName": name, "Value": value,
         "QuotaArn": f"arn:aws:servicequotas:{region}:123456789012:sagemaker/{code or 'L-X'}"}
    return {**q, "QuotaCode": code} if code else q


@pytest.fixture
def quotas(fresh_quotas):
    return fresh_quotas


def client_with(region: str, *responses):
    return stubbed_quotas_client(*responses, region=region)


def messages(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bincount.sagemaker.quotas"]


def test_find_quota_returns_the_applied_value_and_code_as_a_float(quotas):
    client, stub = client_with("us-east-1", ("list_service_quotas", {"Quotas": [quota(G5_SPOT, 9), quota(G5, 3)]}))
    found = quotas.find_quota(client, G5)
    assert found == (3.0, "L-G5") and type(found[0]) is float
    stub.assert_no_pending_responses()


def test_find_quota_reads_past_a_page_without_quotas_to_the_default_and_a_missing_code_is_a_question_mark(quotas):
    client, stub = client_with("us-east-1", ("list_service_quotas", {}),
                               ("list_aws_default_service_quotas", {"Quotas": [quota(G5, 2, code=None)]}))
    assert quotas.find_quota(client, G5) == (2.0, "?")
    stub.assert_no_pending_responses()
    client, stub = client_with("us-east-1", ("list_service_quotas", {}), ("list_aws_default_service_quotas", {}))
    assert quotas.find_quota(client, G5) is None
    stub.assert_no_pending_responses()


def test_cached_quota_asks_once_per_region_and_quota_name(quotas, caplog):
    east, east_stub = client_with("us-east-1", ("list_service_quotas", {"Quotas": [quota(G5, 4)]}),
                                  ("list_service_quotas", {"Quotas": [quota(G5_SPOT, 6, "L-SPOT")]}))
    west, west_stub = client_with("eu-west-1", ("list_service_quotas", {"Quotas": [quota(G5, 0, "L-W", "eu-west-1")]}))
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert quotas.cached_quota(east, "us-east-1", G5) == (4.0, "L-G5")
        assert quotas.cached_quota(east, "us-east-1", G5_SPOT) == (6.0, "L-SPOT")
        assert quotas.cached_quota(west, "eu-west-1", G5) == (0.0, "L-W")
        assert quotas.cached_quota(east, "us-east-1", G5) == (4.0, "L-G5")  # not asked again
        assert quotas.cached_quota(west, "eu-west-1", G5) == (0.0, "L-W")
    assert messages(caplog) == []  # a quota found says nothing
    east_stub.assert_no_pending_responses()
    west_stub.assert_no_pending_responses()
    assert quotas._CHECKED == {("us-east-1", G5): (4.0, "L-G5"), ("us-east-1", G5_SPOT): (6.0, "L-SPOT"),
                               ("eu-west-1", G5): (0.0, "L-W")}


def test_cached_quota_says_once_that_no_such_quota_exists_in_the_region(quotas, caplog):
    client, stub = client_with("ap-south-1", ("list_service_quotas", {"Quotas": []}),
                               ("list_aws_default_service_quotas", {"Quotas": []}))
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert quotas.cached_quota(client, "ap-south-1", G5) is None
        assert quotas.cached_quota(client, "ap-south-1", G5) is None
    assert messages(caplog) == [("INFO", f"no quota named '{G5}' in ap-south-1's Service Quotas; not checked")]
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["AccessDeniedException", "ExpiredTokenException"])
def test_cached_quota_names_the_aws_error_code_when_it_cannot_read(quotas, caplog, code):
    """The code from AWS's answer: a modeled one (botocore raises a class of that name) and one that is not
    (expired credentials: a plain ClientError, whose class name is not the reason)."""
    client, stub = client_with("us-east-1", ("list_service_quotas", code))
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert quotas.cached_quota(client, "us-east-1", G5) is None
        assert quotas.cached_quota(client, "us-east-1", G5) is None
    assert messages(caplog) == [
        ("WARNING", f"could not read the quota '{G5}' ({code}); if it is too small, CreateTrainingJob will say so")]
    stub.assert_no_pending_responses()


def test_cached_quota_names_the_exception_type_when_aws_never_answered(quotas, caplog):
    """No answer at all (no network, no Service Quotas endpoint): botocore's own error, which has no response."""
    client = boto3.client("service-quotas", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
                          config=boto3.session.Config(retries={"total_max_attempts": 1}))

    def unreachable(request, **_):
        raise EndpointConnectionError(endpoint_url=request.url)

    client.meta.events.register("before-send", unreachable)
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert quotas.cached_quota(client, "us-east-1", G5) is None
    assert messages(caplog) == [
        ("WARNING", f"could not read the quota '{G5}' (EndpointConnectionError); if it is too small, "
                    "CreateTrainingJob will say so")]


def test_check_training_quota_refuses_a_quota_below_one_job_with_the_whole_message(quotas):
    client, _ = client_with("eu-central-1", ("list_service_quotas",
                                             {"Quotas": [quota(G5_SPOT, 1.5, "L-SP", "eu-central-1")]}))
    with pytest.raises(quotas.QuotaError) as exc:
        quotas.check_training_quota(client, "eu-central-1", "ml.g5.xlarge", 2, 3, spot=True)
    assert str(exc.value) == (
        f"the quota '{G5_SPOT}' is 1.5 in eu-central-1, and one job needs 2: no job could start. Ask for more "
        "(aws service-quotas request-service-quota-increase --region eu-central-1 --service-code sagemaker "
        "--quota-code L-SP --desired-value 6; docs/sagemaker.md, Service quotas), or use a type you have quota for "
        "(hydra.launcher.instance_type=...)")


def test_check_training_quota_warns_how_many_parallel_jobs_fit_with_the_whole_message(quotas, caplog):
    """7 instances, jobs of 3, 4 in parallel: 2 jobs fit at once; the request asks for 12."""
    client, _ = client_with("us-east-1", ("list_service_quotas", {"Quotas": [quota(G5, 7)]}))
    with caplog.at_level(logging.INFO, logger="bincount"):
        quotas.check_training_quota(client, "us-east-1", "ml.g5.xlarge", 3, 4, spot=False)
    assert messages(caplog) == [
        ("WARNING", f"the quota '{G5}' is 7 in us-east-1: at most 2 of the 4 parallel jobs "
                    "(hydra.launcher.max_parallel_jobs) can run at once; the others fail to start "
                    "(ResourceLimitExceeded). To run all: aws service-quotas request-service-quota-increase --region "
                    "us-east-1 --service-code sagemaker --quota-code L-G5 --desired-value 12")]


def test_check_training_quota_reads_each_regions_own_quota(quotas, caplog):
    east, _ = client_with("us-east-1", ("list_service_quotas", {"Quotas": [quota(G5, 8)]}))
    west, west_stub = client_with("eu-west-1", ("list_service_quotas", {"Quotas": [quota(G5, 0, "L-W", "eu-west-1")]}))
    with caplog.at_level(logging.WARNING, logger="bincount"):
        assert quotas.check_training_quota(east, "us-east-1", "ml.g5.xlarge", 1, 8, spot=False) is None
        with pytest.raises(quotas.QuotaError) as exc:
            quotas.check_training_quota(west, "eu-west-1", "ml.g5.xlarge", 1, 8, spot=False)
    assert str(exc.value).startswith(f"the quota '{G5}' is 0 in eu-west-1, and one job needs 1: no job could start.")
    assert messages(caplog) == []
    west_stub.assert_no_pending_responses()


# 3. bincount.sagemaker.offline.OfflineAWS ---------------------------------------------------------------------

ARN = "arn:aws:sagemaker:eu-west-1:000000000000:training-job/"


@pytest.fixture
def offline():
    """``(OfflineAWS, [(operation, HTTP status)])``: the status each answer carried, as botocore received it."""
    from bincount.sagemaker.offline import OfflineAWS

    aws = OfflineAWS("eu-west-1", "dry-bucket")
    statuses = []
    aws.session.events.register("after-call", lambda http_response, model, **_: statuses.append(
        (model.name, http_response.status_code)))
    return aws, statuses


def create(client, environment: dict, name: str = "job-1") -> dict:
    return client.create_training_job(
        TrainingJobName=name, RoleArn="arn:aws:iam::111111111111:role/SageMaker",
        AlgorithmSpecification={"TrainingInputMode": "File", "TrainingImage": "img:1"},
        OutputDataConfig={"S3OutputPath": "s3://dry-bucket/out"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600}, Environment=environment,
        Tags=[{"Key": "bincount:job", "Value": "0"}])


def request(name: str = "job-1") -> dict:
    return {"TrainingJobName": name, "RoleArn": "arn:aws:iam::111111111111:role/SageMaker",
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img:1"},
            "OutputDataConfig": {"S3OutputPath": "s3://dry-bucket/out"},
            "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600}, "Environment": {"MODE": "dry"},
            "Tags": [{"Key": "bincount:job", "Value": "0"}]}


def test_iam_calls_are_denied_with_the_dry_runs_reason(offline):
    from botocore.exceptions import ClientError

    aws, statuses = offline
    with pytest.raises(ClientError) as exc:
        aws.session.client("iam").get_role(RoleName="SageMaker")
    assert str(exc.value) == "An error occurred (AccessDenied) when calling the GetRole operation: dry run: no IAM"
    assert exc.value.response == {"Error": {"Code": "AccessDenied", "Message": "dry run: no IAM"}}
    assert statuses == [("GetRole", 403)]


def test_a_created_job_is_recorded_as_sent_and_described_as_starting(offline):
    aws, statuses = offline
    sm = aws.session.client("sagemaker")
    environment = {"MODE": "dry"}
    assert create(sm, environment) == {"TrainingJobArn": ARN + "job-1"}
    environment["MODE"] = "changed after the call"  # the record is a copy of what was sent
    assert aws.requests == [request()]
    before = dt.datetime.now(dt.timezone.utc)
    described = sm.describe_training_job(TrainingJobName="job-1")
    after = dt.datetime.now(dt.timezone.utc)
    created = described.pop("CreationTime")
    assert created.tzinfo is dt.timezone.utc and before <= created <= after
    expected = {k: v for k, v in request().items() if k != "Tags"}
    assert described == {**expected, "TrainingJobArn": ARN + "job-1", "TrainingJobStatus": "InProgress",
                         "SecondaryStatus": "Starting", "ModelArtifacts": {"S3ModelArtifacts": ""}}
    assert statuses == [("CreateTrainingJob", 200), ("DescribeTrainingJob", 200)]


def test_the_latest_created_job_is_the_one_answered(offline):
    aws, _ = offline
    sm = aws.session.client("sagemaker")
    create(sm, {"MODE": "dry"}, "job-1")
    assert create(sm, {"MODE": "dry"}, "job-2") == {"TrainingJobArn": ARN + "job-2"}
    assert aws.requests == [request("job-1"), request("job-2")]
    assert sm.describe_training_job(TrainingJobName="job-2")["TrainingJobArn"] == ARN + "job-2"


@pytest.mark.parametrize("created", [False, True], ids=["before a create", "after a create"])
def test_every_other_call_gets_the_dry_runs_fixed_answer(offline, created):
    aws, statuses = offline
    sm, s3, sts = (aws.session.client(s) for s in ("sagemaker", "s3", "sts"))
    if created:
        create(sm, {"MODE": "dry"})
    else:  # nothing created: nothing to describe
        assert sm.describe_training_job(TrainingJobName="job-1") == {}
    before = dt.datetime.now(dt.timezone.utc)
    buckets = s3.list_buckets()
    [bucket] = buckets.pop("Buckets")
    assert buckets == {}
    made = bucket.pop("CreationDate")
    assert bucket == {"Name": "dry-bucket"}
    assert made.tzinfo is dt.timezone.utc and before <= made <= dt.datetime.now(dt.timezone.utc)
    assert sts.get_caller_identity() == {"Account": "000000000000", "Arn": "arn:aws:iam::000000000000:user/dry-run",
                                         "UserId": "dry-run"}
    assert s3.create_multipart_upload(Bucket="dry-bucket", Key="code.tar.gz") == {"UploadId": "dry-run"}
    assert s3.upload_part(Bucket="dry-bucket", Key="code.tar.gz", UploadId="dry-run", PartNumber=1, Body=b"x") == \
        {"ETag": '"dry-run"'}
    assert s3.get_bucket_location(Bucket="dry-bucket") == {"LocationConstraint": "eu-west-1"}
    assert s3.put_object(Bucket="dry-bucket", Key="code.tar.gz", Body=b"x") == {}
    assert sm.list_training_jobs() == {}
    assert [status for _, status in statuses] == [200] * len(statuses) and len(statuses) == 8


def test_us_east_1_buckets_have_no_location_constraint():
    from bincount.sagemaker.offline import OfflineAWS

    aws = OfflineAWS("us-east-1", "b")
    assert aws.session.client("s3").get_bucket_location(Bucket="b") == {"LocationConstraint": None}
    assert aws.reply("CreateTrainingJobs") == {} and aws.reply("createtrainingjob") == {}
