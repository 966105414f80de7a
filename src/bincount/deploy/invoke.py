"""``bincount invoke ENDPOINT IMAGE...``: each image's answer from a deployed endpoint, one JSON line each.

The body is the image file as it is (``image/jpeg`` or ``image/png`` by its first bytes), which is what
a client of the endpoint sends; an image the endpoint refuses is reported with the server's own JSON
error, and the others are still sent. Exit status 1 if any image failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from bincount.deploy.endpoint import DeployError, add_region_argument
from bincount.aws.names import AwsNameError, resource_name

ERRORS = (DeployError, AwsNameError, ClientError, BotoCoreError)
MAX_BODY_BYTES = 6_291_456  # SageMaker's real-time request limit
MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", metavar="ENDPOINT", help="the endpoint's name")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="JPEG or PNG files")
    add_region_argument(parser)


def content_type(path: Path, head: bytes) -> str:
    for magic, media_type in MAGIC.items():
        if head.startswith(magic):
            return media_type
    raise DeployError(f"{path} is neither a JPEG nor a PNG (first bytes {head[:8]!r})")


def model_error(e: ClientError) -> str:
    """The server's own ``{"error", "message"}`` when SageMaker passed it on, else AWS's message."""
    message = e.response.get("Error", {}).get("Message", str(e))
    original = e.response.get("OriginalMessage")
    return f"{message}: {original}" if original else message


def read_images(names: list[str]) -> list[tuple[Path, bytes, str]]:
    """Every image read and typed before the first request: a typo fails at once, naming each bad one."""
    images, problems = [], []
    for name in names:
        path = Path(name)
        try:
            size = path.stat().st_size
            if size > MAX_BODY_BYTES:
                raise DeployError(f"{path} is {size:,} bytes, above SageMaker's request limit of {MAX_BODY_BYTES:,}")
            body = path.read_bytes()
            images.append((path, body, content_type(path, body[:8])))
        except (OSError, DeployError) as e:
            problems.append(str(e))
    if problems:
        raise DeployError(f"{len(problems)} of {len(names)} images cannot be sent (nothing was sent): "
                          + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    return images


def run(args: argparse.Namespace) -> int:
    from sagemaker.core.resources import Endpoint

    from bincount.deploy.endpoint import session_for

    resource_name("endpoint name", args.endpoint)
    images = read_images(args.images)
    session, region, _ = session_for(args.region)
    endpoint = Endpoint.get(endpoint_name=args.endpoint, session=session, region=region)
    if endpoint.endpoint_status != "InService":
        raise DeployError(f"endpoint {args.endpoint} is {endpoint.endpoint_status}, not InService")
    failed = 0
    for path, body, media_type in images:
        try:
            answer = endpoint.invoke(body=body, content_type=media_type, accept="application/json")
            print(json.dumps({"image": str(path), **json.loads(answer.body.read())}), flush=True)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ModelError":
                raise  # credentials, throttling, a missing endpoint: every other image would fail the same way
            failed += 1
            print(f"bincount invoke: {path}: {model_error(e)}", file=sys.stderr)
    if failed:
        print(f"bincount invoke: {failed} of {len(images)} images failed", file=sys.stderr)
    return 1 if failed else 0
