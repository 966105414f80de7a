"""AWS names checked before any request: a role ARN, an instance type, resource and job names.

Why by hand: AWS answers a malformed name with a ValidationException only after credentials, a
region and (for deploy) an upload of the model; these patterns are the ones its API reference
gives, checked first so the error names the value and the expected form at once.
"""

from __future__ import annotations

import re

ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
INSTANCE_TYPE = re.compile(r"ml\.[a-z0-9]+\.[a-z0-9]+")
RESOURCE_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # endpoints, configs, models, training jobs


class AwsNameError(ValueError):
    """A name or ARN AWS would refuse."""


def check(kind: str, value: str | None, pattern: re.Pattern, example: str, max_len: int = 63) -> str:
    if not value or len(value) > max_len or not pattern.fullmatch(value):
        shown = "(not set)" if not value else repr(value[:80])
        raise AwsNameError(f"{kind} {shown} is not valid: expected something like {example}")
    return value


def role_arn(value: str | None) -> str:
    return check("IAM role ARN", value, ROLE_ARN, "arn:aws:iam::123456789012:role/SageMakerRole (or set "
                 "SAGEMAKER_ROLE_ARN)", max_len=2048)


# botocore's SageMaker API model lists every instance type each API accepts (the enum AWS validates against).
SHAPES = {"training": "TrainingInstanceType", "endpoint": "ProductionVariantInstanceType"}


def instance_type(value: str, use: str = "training") -> str:
    """A well-formed name that the SageMaker API accepts for ``use`` (a typo such as ml.g5.xlarg is refused
    with the close matches); where botocore is not installed, the form only."""
    check("instance type", value, INSTANCE_TYPE, "ml.m5.large or ml.g5.xlarge")
    try:
        import botocore.session
    except ImportError:
        return value
    known = botocore.session.get_session().get_service_model("sagemaker").shape_for(SHAPES[use]).enum
    if value not in known:
        import difflib

        close = difflib.get_close_matches(value, known, n=3, cutoff=0.8)
        raise AwsNameError(f"instance type {value!r} is not a SageMaker {use} instance type"
                           f"{'; did you mean ' + ', '.join(close) + '?' if close else ''} (all {len(known)} "
                           f"{use} types: botocore's SageMaker model, shape {SHAPES[use]})")
    return value


def resource_name(kind: str, value: str, max_len: int = 63) -> str:
    return check(kind, value, RESOURCE_NAME, "bin-counter-1 (letters, digits and '-', at most "
                 f"{max_len} characters)", max_len=max_len)
