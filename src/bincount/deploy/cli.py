"""``bincount deploy MODEL --endpoint-name NAME``: a SageMaker endpoint serving a model bundle.

MODEL is a run directory, a bundle directory, a training job name or an ``s3://.../model.tar.gz``.
The image is bincount's own (``Dockerfile``; docs/serving.md shows the build and the push to ECR),
given by ``--image`` or ``$BINCOUNT_SERVE_IMAGE``. The role and bucket come from the same variables
as the SageMaker launcher (``SAGEMAKER_ROLE_ARN``, ``BINCOUNT_SM_S3``). Everything is checked before
the first request; what was created, what it costs an hour and how to delete it is printed at the end.
"""

from __future__ import annotations

import argparse
import os

from botocore.exceptions import BotoCoreError, ClientError

from bincount.bundle import BundleError
from bincount.deploy.endpoint import SERVERLESS_MEMORY_MB, DeployError, Plan, add_region_argument
from bincount.s3.endpoint import S3Error
from bincount.aws.names import AwsNameError, instance_type, resource_name, role_arn

ERRORS = (DeployError, AwsNameError, BundleError, S3Error, ClientError, BotoCoreError)
MAX_ENDPOINT_NAME = 48  # leaves room for the -YYYYmmddHHMMSS of its model and config (63 at most)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="run dir, bundle dir, training job name or s3://.../model.tar.gz")
    parser.add_argument("--endpoint-name", required=True, help="the endpoint's name (letters, digits, '-')")
    parser.add_argument("--image", default=os.environ.get("BINCOUNT_SERVE_IMAGE"),
                        help="ECR URI of the image built from the Dockerfile (default: $BINCOUNT_SERVE_IMAGE)")
    parser.add_argument("--instance-type", default="ml.m5.large",
                        help="real-time instance: ml.m5.large (CPU, default) or ml.g5.xlarge (GPU image) ...")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--serverless", action="store_true", help="a serverless endpoint instead (CPU, 4 MB requests)")
    parser.add_argument("--memory-mb", type=int, default=4096, choices=SERVERLESS_MEMORY_MB,
                        help="serverless memory (default 4096)")
    parser.add_argument("--max-concurrency", type=int, default=5, help="serverless concurrent requests (default 5)")
    parser.add_argument("--role", default=os.environ.get("SAGEMAKER_ROLE_ARN"),
                        help="execution role ARN (default: $SAGEMAKER_ROLE_ARN)")
    parser.add_argument("--s3", default=os.environ.get("BINCOUNT_SM_S3"),
                        help="s3://bucket/prefix a local bundle is uploaded under (default: $BINCOUNT_SM_S3)")
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="return once the endpoint is Creating")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds to wait for InService (default 1800)")
    add_region_argument(parser)


def check(args: argparse.Namespace) -> None:
    if not 1 <= args.instance_count <= 100 or not 1 <= args.max_concurrency <= 200:
        raise argparse.ArgumentTypeError(f"--instance-count must be 1-100 (got {args.instance_count}) and "
                                         f"--max-concurrency 1-200 (got {args.max_concurrency})")
    resource_name("endpoint name", args.endpoint_name, max_len=MAX_ENDPOINT_NAME)
    role_arn(args.role)
    if not args.serverless:
        instance_type(args.instance_type, use="endpoint")
    if not args.image:
        raise DeployError("no image: build the Dockerfile, push it to ECR and pass --image URI or set "
                          "BINCOUNT_SERVE_IMAGE (docs/serving.md)")


def cost_line(plan: Plan) -> str:
    from bincount.aws.prices import hourly, serverless_per_second

    if plan.serverless_memory_mb:
        per_s = serverless_per_second(plan.serverless_memory_mb)
        return (f"cost: serverless, about ${per_s:.5f} per second of inference at {plan.serverless_memory_mb} MB "
                f"(${per_s * 3600:.2f} per busy hour), nothing while idle")
    price = hourly(plan.instance_type)
    each = f"${price:.3f}" if price is not None else "(price unknown here: see aws.amazon.com/sagemaker/pricing)"
    total = f" = ${price * plan.instance_count:.3f}/h" if price is not None and plan.instance_count > 1 else ""
    return (f"cost: {plan.instance_count} x {plan.instance_type} at about {each}/h{total} (us-east-1 on demand), "
            "billed until you undeploy")


def run(args: argparse.Namespace) -> int:
    from bincount.deploy.endpoint import create, describe, session_for, wait_in_service
    from bincount.deploy.model_data import model_data_url

    check(args)
    session, region, client = session_for(args.region)
    found = describe(args.endpoint_name, client)
    if found is not None:
        raise DeployError(f"endpoint {args.endpoint_name} already exists ({found['EndpointStatus']}): "
                          f"`bincount undeploy {args.endpoint_name}` first, or choose another --endpoint-name")
    plan = Plan(endpoint_name=args.endpoint_name, image=args.image, model_data_url="", role_arn=args.role,
                instance_type=None if args.serverless else args.instance_type, instance_count=args.instance_count,
                serverless_memory_mb=args.memory_mb if args.serverless else None,
                serverless_max_concurrency=args.max_concurrency)
    plan.model_data_url = model_data_url(args.model, s3_prefix=args.s3, key_name=plan.resource_name,
                                         boto_session=session, sagemaker_client=client)
    print(f"model data: {plan.model_data_url}")
    endpoint = create(plan, session, region)
    print(f"created model {plan.resource_name}, endpoint config {plan.resource_name}, endpoint {plan.endpoint_name} "
          f"in {region}")
    print(cost_line(plan))
    if args.wait:
        wait_in_service(endpoint, args.timeout)
        print(f"endpoint {plan.endpoint_name} is InService")
    print(f"invoke:   bincount invoke {plan.endpoint_name} IMAGE.jpg --region {region}")
    print(f"delete:   bincount undeploy {plan.endpoint_name} --region {region}")
    return 0
