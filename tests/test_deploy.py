"""``bincount deploy`` / ``invoke`` / ``undeploy`` against a real SageMaker API stand-in on loopback.

``moto_server`` plays both S3 and the SageMaker control and runtime APIs, so the commands run as
they would against AWS: the bundle is packed and uploaded, the three resources exist afterwards and
are gone after ``undeploy``. A botocore hook on each session the commands make records the exact
requests SDK v3 sends (the shapes AWS will validate). moto does not run containers: the answer an
endpoint gives is queued on moto's own results API, and the one error only a container can produce
(``ModelError``) is played by botocore's Stubber on the SDK's cached runtime client.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from conftest import write_tiny_bundle
from s3_server import s3_endpoint  # noqa: F401

from bincount import cli
from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE, load_model

BUCKET = "deploy-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bincount-serve:cpu"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("deploy") / "run" / "model")


@pytest.fixture
def aws(s3_endpoint, monkeypatch):  # noqa: F811
    for service in ("S3", "SAGEMAKER", "SAGEMAKER_RUNTIME"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", s3_endpoint)
    for name in ("AWS_PROFILE", "SAGEMAKER_ROLE_ARN", "BINCOUNT_SM_S3", "BINCOUNT_SERVE_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    s3 = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    yield s3_endpoint
    sm = boto3.client("sagemaker")  # each test starts from an empty account
    for e in sm.list_endpoints()["Endpoints"]:
        sm.delete_endpoint(EndpointName=e["EndpointName"])
    for c in sm.list_endpoint_configs()["EndpointConfigs"]:
        sm.delete_endpoint_config(EndpointConfigName=c["EndpointConfigName"])
    for m in sm.list_models()["Models"]:
        sm.delete_model(ModelName=m["ModelName"])


def drop_empty_structures(parsed, **_):
    """moto answers with empty structures (``VpcConfig: {}``) that AWS never sends and SDK v3's models refuse."""
    for key in [k for k, v in parsed.items() if v == {}]:
        del parsed[key]


class Sent(list):
    """(operation, params) of every SageMaker request, in order; ``hooks`` go on every new session too."""

    hooks: list[tuple[str, object]]


@pytest.fixture
def sent(aws, monkeypatch) -> Sent:
    from bincount.deploy import endpoint

    requests = Sent()
    requests.hooks = []

    def session(region):
        s = boto3.Session(region_name=region)
        for service in ("sagemaker", "sagemaker-runtime"):
            s.events.register(f"before-parameter-build.{service}",
                              lambda params, model, **_: requests.append((model.name, dict(params))))
        s.events.register("after-call.sagemaker", drop_empty_structures)
        for event, hook in requests.hooks:
            s.events.register(event, hook)
        return s

    monkeypatch.setattr(endpoint, "make_boto_session", session)
    return requests


def ops(sent) -> list[str]:
    return [op for op, _ in sent]


def request(sent, op: str) -> dict:
    found = [params for name, params in sent if name == op]
    assert len(found) == 1, (op, ops(sent))
    return found[0]


def deploy(*extra: str) -> list[str]:
    return ["deploy", "--endpoint-name", "bins", "--image", IMAGE, "--role", ROLE, "--timeout", "60", *extra]


@pytest.mark.slow
def test_deploy_a_run_then_undeploy_everything(bundle, sent, capsys, tmp_path):
    run_dir = bundle.parent
    assert cli.main([*deploy(str(run_dir)), "--s3", f"s3://{BUCKET}/bincount"]) == 0
    out = capsys.readouterr().out
    model = request(sent, "CreateModel")
    name = model["ModelName"]
    assert name.startswith("bins-") and len(name) == len("bins-") + 14
    url = f"s3://{BUCKET}/bincount/models/{name}/model.tar.gz"
    assert model["PrimaryContainer"] == {"Image": IMAGE, "ModelDataUrl": url}
    assert model["ExecutionRoleArn"] == ROLE and model["Tags"] == [{"Key": "bincount:endpoint", "Value": "bins"}]
    assert request(sent, "CreateEndpointConfig")["ProductionVariants"] == [
        {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}]
    assert request(sent, "CreateEndpoint")["EndpointConfigName"] == name
    assert "ml.m5.large at about $0.115/h" in out and "bincount undeploy bins --region us-east-1" in out
    assert "endpoint bins is InService" in out and url in out

    # What was uploaded is a servable bundle holding the two bundle files only, with the same weights.
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(boto3.client("s3").get_object(Bucket=BUCKET, Key=url.split("/", 3)[3])["Body"].read())
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted([BUNDLE_FILE, WEIGHTS_FILE])
    assert load_model(archive).metadata == load_model(bundle).metadata  # the weights hash is checked on load

    sm = boto3.client("sagemaker")
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["bins"]
    assert cli.main(["undeploy", "bins"]) == 0
    out = capsys.readouterr().out
    assert f"deleted endpoint config {name}" in out and f"deleted model {name}" in out
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


def test_serverless_from_an_s3_archive(sent, capsys):
    url = f"s3://{BUCKET}/jobs/some-job/output/model.tar.gz"
    assert cli.main([*deploy(url), "--serverless", "--memory-mb", "4096", "--no-wait"]) == 0
    out = capsys.readouterr().out
    model = request(sent, "CreateModel")
    assert model["PrimaryContainer"] == {"Image": IMAGE, "ModelDataUrl": url,
                                         "Environment": {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "4"}}
    assert request(sent, "CreateEndpointConfig")["ProductionVariants"] == [
        {"VariantName": "AllTraffic", "ModelName": model["ModelName"],
         "ServerlessConfig": {"MemorySizeInMB": 4096, "MaxConcurrency": 5}}]
    assert "PutObject" not in ops(sent) and "$0.00008 per second" in out and "nothing while idle" in out


def test_a_training_job_name_deploys_its_artifact(sent):
    sm = boto3.client("sagemaker")
    sm.create_training_job(
        TrainingJobName="bincount-resnet50-1", RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    artifact = sm.describe_training_job(TrainingJobName="bincount-resnet50-1")["ModelArtifacts"]["S3ModelArtifacts"]
    assert cli.main([*deploy("bincount-resnet50-1"), "--no-wait"]) == 0
    assert request(sent, "CreateModel")["PrimaryContainer"]["ModelDataUrl"] == artifact


def test_an_existing_endpoint_is_refused_before_anything_is_made(bundle, sent, capsys):
    assert cli.main([*deploy(f"s3://{BUCKET}/m/model.tar.gz"), "--no-wait"]) == 0
    sent.clear()
    assert cli.main([*deploy(f"s3://{BUCKET}/m/model.tar.gz"), "--no-wait"]) == 1
    assert "endpoint bins already exists" in capsys.readouterr().err
    assert ops(sent) == ["DescribeEndpoint"]


@pytest.mark.slow
def test_a_failed_endpoint_leaves_nothing_behind(sent, capsys):
    from botocore.exceptions import ClientError

    def refuse(**_):
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "account-level service limit "
                                     "'ml.m5.large for endpoint usage' is 0 Instances"}}, "CreateEndpoint")

    sent.hooks.append(("before-call.sagemaker.CreateEndpoint", refuse))
    assert cli.main([*deploy(f"s3://{BUCKET}/m/model.tar.gz")]) == 1
    assert "ml.m5.large for endpoint usage" in capsys.readouterr().err
    sm = boto3.client("sagemaker")
    assert sm.list_models()["Models"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []


@pytest.mark.parametrize("case,extra,needle", [
    ("damaged-bundle", [], "sha256"),
    ("no-s3-prefix", ["--no-s3"], "BINCOUNT_SM_S3"),
    ("no-image", ["--no-image"], "Dockerfile"),
    ("unknown-job", ["--job"], "no-such-job"),
])
def test_refused_before_any_resource(case, extra, needle, bundle, sent, capsys, tmp_path):
    model = str(bundle.parent)
    argv = [*deploy(model), "--s3", f"s3://{BUCKET}/refused-{case}"]
    if case == "damaged-bundle":
        damaged = tmp_path / "model"
        damaged.mkdir()
        (damaged / BUNDLE_FILE).write_bytes((bundle / BUNDLE_FILE).read_bytes())
        (damaged / WEIGHTS_FILE).write_bytes((bundle / WEIGHTS_FILE).read_bytes()[:-8] + b"\0" * 8)
        argv[argv.index(model)] = str(damaged)
    if "--no-s3" in extra:
        argv = argv[:-2]
    if "--no-image" in extra:
        del argv[argv.index("--image"):argv.index("--image") + 2]
    if "--job" in extra:
        argv[argv.index(model)] = "no-such-job"
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not {"CreateModel", "CreateEndpointConfig", "CreateEndpoint"} & set(ops(sent))
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"refused-{case}/")
    assert listed.get("KeyCount", 0) == 0


def images(tmp_path: Path) -> tuple[Path, Path]:
    from PIL import Image

    jpg, png = tmp_path / "a.jpg", tmp_path / "b.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(jpg)
    Image.new("RGB", (40, 30), (10, 200, 10)).save(png)
    return jpg, png


@pytest.fixture
def runtime(sent, monkeypatch):
    """Stubber on the runtime client SDK v3 will use: moto's InvokeEndpoint fails on binary bodies."""
    from sagemaker.core.utils.utils import SageMakerClient

    from bincount.deploy import endpoint

    assert cli.main([*deploy(f"s3://{BUCKET}/m/model.tar.gz"), "--no-wait"]) == 0
    session = endpoint.make_boto_session("us-east-1")
    monkeypatch.setattr(endpoint, "make_boto_session", lambda region: session)
    stub = Stubber(SageMakerClient(session=session, region_name="us-east-1").sagemaker_runtime_client)
    with stub:
        yield stub
    stub.assert_no_pending_responses()


def expect(stub: Stubber, image: Path, media_type: str, answer: dict) -> None:
    stub.add_response("invoke_endpoint", {"Body": json.dumps(answer).encode(), "ContentType": "application/json"},
                      {"EndpointName": "bins", "Body": image.read_bytes(), "ContentType": media_type,
                       "Accept": "application/json"})


def test_invoke_sends_each_image_as_it_is(runtime, capsys, tmp_path):
    jpg, png = images(tmp_path)
    answers = [{"count": 3, "confidence": 0.5}, {"count": 1, "confidence": 0.9}]
    expect(runtime, jpg, "image/jpeg", answers[0])
    expect(runtime, png, "image/png", answers[1])
    capsys.readouterr()
    assert cli.main(["invoke", "bins", str(jpg), str(png)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"image": str(jpg), **answers[0]}, {"image": str(png), **answers[1]}]


@pytest.mark.slow
def test_invoke_reports_the_servers_error_and_goes_on(runtime, capsys, tmp_path):
    jpg, png = images(tmp_path)
    error = '{"error": "bad_image", "message": "cannot decode image: truncated JPEG"}'
    runtime.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424,
                             service_message="Received client error (400) from primary",
                             modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": error})
    expect(runtime, png, "image/png", {"count": 2})
    capsys.readouterr()
    assert cli.main(["invoke", "bins", str(jpg), str(png)]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [{"image": str(png), "count": 2}]
    assert f"{jpg}: Received client error (400) from primary: {error}" in err and "1 of 2 images failed" in err


def test_invoke_refuses_files_it_cannot_send_before_sending_any(sent, capsys, tmp_path):
    jpg, _ = images(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert cli.main(["invoke", "bins", str(jpg), str(text), str(tmp_path / "gone.jpg")]) == 1
    err = capsys.readouterr().err
    assert "notes.txt is neither a JPEG nor a PNG" in err and "gone.jpg" in err and "2 of 3 images" in err
    assert ops(sent) == []


def test_undeploy_of_a_missing_endpoint_names_it(sent, capsys):
    assert cli.main(["undeploy", "nothing-here"]) == 1
    assert "no endpoint 'nothing-here'" in capsys.readouterr().err
