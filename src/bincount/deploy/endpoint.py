"""The three resources of an endpoint (Model, EndpointConfig, Endpoint), made and removed as one.

Made in that order; if a later one fails, the earlier ones are deleted again, so a failed deploy
leaves nothing billing or in the way of the next try. ``remove`` follows the endpoint to its config
and the config to its models, so it also cleans up endpoints this tool did not create.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from bincount.aws.session import make_boto_session
from bincount.deploy.model_data import DeployError

log = logging.getLogger(__name__)
TAG = "bincount:endpoint"
VARIANT = "AllTraffic"
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_PAYLOAD_MB = 4  # serverless endpoints take 4 MB requests (real-time: 6 MB, the server's default)


@dataclass
class Plan:
    """What ``deploy`` will create; every field is checked before the first request."""

    endpoint_name: str
    image: str
    model_data_url: str
    role_arn: str
    instance_type: str | None = "ml.m5.large"
    instance_count: int = 1
    serverless_memory_mb: int | None = None
    serverless_max_concurrency: int = 5
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S", time.gmtime()))

    @property
    def resource_name(self) -> str:  # the model's and the config's (an endpoint name is at most 48 here)
        return f"{self.endpoint_name}-{self.stamp}"


def describe(endpoint_name: str, client: Any) -> dict | None:
    """DescribeEndpoint's answer, or None when there is no such endpoint."""
    from botocore.exceptions import ClientError

    try:
        return client.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ValidationException" and "Could not find" in e.response["Error"]["Message"]:
            return None
        raise


def _variant(plan: Plan) -> dict[str, Any]:
    variant: dict[str, Any] = {"VariantName": VARIANT, "ModelName": plan.resource_name}
    if plan.serverless_memory_mb:
        variant["ServerlessConfig"] = {"MemorySizeInMB": plan.serverless_memory_mb,
                                       "MaxConcurrency": plan.serverless_max_concurrency}
    else:
        variant.update(InstanceType=plan.instance_type, InitialInstanceCount=plan.instance_count)
    return variant


def create(plan: Plan, session: Any, region: str):
    """Create the model, its endpoint config and the endpoint; return the (still Creating) Endpoint."""
    from sagemaker.core.resources import Endpoint, Model
    from sagemaker.core.shapes import ContainerDefinition, Tag

    tags = [Tag(key=TAG, value=plan.endpoint_name)]
    # The container's body limit follows the endpoint's (bincount.serve.container reads this variable).
    environment = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(SERVERLESS_PAYLOAD_MB)} if plan.serverless_memory_mb else None
    made: list[tuple[str, Any]] = []  # (kind, delete) of what exists so far
    try:
        model = Model.create(model_name=plan.resource_name, execution_role_arn=plan.role_arn, tags=tags,
                             primary_container=ContainerDefinition(image=plan.image, model_data_url=plan.model_data_url,
                                                                   environment=environment),
                             session=session, region=region)
        made.append(("Model", model.delete))
        # The config goes through the SDK's own client, not EndpointConfig.create: sagemaker-core 2.27
        # serializes ProductionVariantServerlessConfig.memory_size_in_mb as "MemorySizeInMb", which the
        # API refuses (tests/test_deploy.py::test_serverless_from_an_s3_archive shows it).
        client = Endpoint.get_sagemaker_client(session=session, region_name=region)
        client.create_endpoint_config(EndpointConfigName=plan.resource_name, ProductionVariants=[_variant(plan)],
                                      Tags=[{"Key": TAG, "Value": plan.endpoint_name}])
        made.append(("EndpointConfig", lambda: client.delete_endpoint_config(EndpointConfigName=plan.resource_name)))
        return Endpoint.create(endpoint_name=plan.endpoint_name, endpoint_config_name=plan.resource_name, tags=tags,
                               session=session, region=region)
    except BaseException:
        for kind, delete in reversed(made):  # nothing half-made stays behind
            try:
                delete()
                log.warning("deleted %s %s again after the failure", kind, plan.resource_name)
            except Exception as e:  # noqa: BLE001 - the original failure is the one to raise
                log.warning("could not delete %s %s: %s", kind, plan.resource_name, e)
        raise


def wait_in_service(endpoint: Any, timeout_s: int) -> None:
    from sagemaker.core.utils.exceptions import FailedStatusError, TimeoutExceededError

    try:
        endpoint.wait_for_status("InService", poll=15, timeout=timeout_s)
    except FailedStatusError as e:
        raise DeployError(f"endpoint {endpoint.endpoint_name} failed: {endpoint.failure_reason or e}. It still "
                          f"exists: `bincount undeploy {endpoint.endpoint_name}` deletes it") from None
    except TimeoutExceededError:
        raise DeployError(f"endpoint {endpoint.endpoint_name} is not InService after {timeout_s} s; it goes on "
                          f"starting (status: `aws sagemaker describe-endpoint --endpoint-name {endpoint.endpoint_name}`"
                          f"), or `bincount undeploy {endpoint.endpoint_name}` deletes it") from None


@dataclass
class Removed:
    endpoint: str
    config: str | None
    models: list[str]


def remove(endpoint_name: str, client: Any) -> Removed:
    """Delete the endpoint, its config and the config's models (each once, each named)."""
    from botocore.exceptions import ClientError

    found = describe(endpoint_name, client)
    if found is None:
        raise DeployError(f"there is no endpoint {endpoint_name!r} in this region (list them: "
                          "aws sagemaker list-endpoints)")
    config_name = found["EndpointConfigName"]
    try:
        variants = client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    except ClientError:  # a config deleted by hand: the endpoint still goes
        config_name, variants = None, []
    models = list(dict.fromkeys(v["ModelName"] for v in variants if v.get("ModelName")))
    client.delete_endpoint(EndpointName=endpoint_name)
    if config_name:
        client.delete_endpoint_config(EndpointConfigName=config_name)
    for model in models:
        client.delete_model(ModelName=model)
    return Removed(endpoint_name, config_name, models)


def session_for(region: str | None):
    """A boto3 session, its region (named or refused), and SDK v3's cached SageMaker client for both."""
    import os

    from sagemaker.core.utils.utils import SageMakerClient

    session = make_boto_session(region or os.environ.get("AWS_DEFAULT_REGION") or None)
    if not session.region_name:
        raise DeployError("no AWS region: pass --region (e.g. us-east-1) or set AWS_DEFAULT_REGION")
    return session, session.region_name, SageMakerClient(session=session, region_name=session.region_name).sagemaker_client


def add_region_argument(parser) -> None:
    parser.add_argument("--region", default=None, help="AWS region (default: $AWS_DEFAULT_REGION or your AWS config)")
