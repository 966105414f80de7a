"""``bincount undeploy ENDPOINT``: delete the endpoint, its endpoint config and its models.

Billing stops with the endpoint; the config and models cost nothing but are left over otherwise, and
a leftover config with the endpoint's name makes the next ``deploy`` of that name fail.
The model.tar.gz in S3 is kept (a training job's output, or the upload ``deploy`` made).
"""

from __future__ import annotations

import argparse

from botocore.exceptions import BotoCoreError, ClientError

from bincount.deploy.endpoint import DeployError, add_region_argument
from bincount.aws.names import AwsNameError, resource_name

ERRORS = (DeployError, AwsNameError, ClientError, BotoCoreError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", metavar="ENDPOINT", help="the endpoint's name")
    add_region_argument(parser)


def run(args: argparse.Namespace) -> int:
    from bincount.deploy.endpoint import remove, session_for

    resource_name("endpoint name", args.endpoint)
    _, region, client = session_for(args.region)
    removed = remove(args.endpoint, client)
    print(f"deleted endpoint {removed.endpoint} in {region}")
    if removed.config:
        print(f"deleted endpoint config {removed.config}")
    for model in removed.models:
        print(f"deleted model {model}")
    return 0
