"""docs/sagemaker.md stays true to the code: its IAM policies, quota table and prices.

What is checked, offline and in about a second:
- the three JSON policy blocks (``<!-- iam-policy: NAME -->`` before a json fence) parse, allow no wildcard
  action, use ``"Resource": "*"`` only for actions that have no resource-level permissions, and pass the role
  to SageMaker only (``iam:PassedToService``);
- every AWS operation the code calls is allowed: the launching user's policy for what runs on the user's
  machine (the launcher, ``deploy``/``invoke``/``undeploy``, the SDK calls they make), the role's policy for what
  runs in a job (``bincount.sagemaker.job.entry``, the data readers) and for what SageMaker does with the role.
  Operations are collected from the source, not listed by hand: boto3 client calls found by a static scan
  and named with botocore's service models, sagemaker-core resource methods (``TrainingJob.create``,
  ``job.refresh()``, ``Endpoint.create`` ...) followed into the installed SDK's ``resources.py`` to the client
  calls they make, and the calls ``ModelTrainer.train`` makes, each proven by a needle in the SDK's source;
- the quota table names every instance type of ``conf/hydra/launcher/*.yaml`` (training and spot) with the
  count the launcher can start at once, and the default endpoint type of ``bincount deploy``;
- the prices the doc quotes are those of ``bincount.aws.prices``.

Limits of the scan: a client method is recognised by its receiver (a name containing ``client``, ``s3``,
``sm``, ...) and only operations with an underscore in their Python name (``search`` and other one-word
operations are not seen).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import tokenize
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sagemaker.md"
SRC = ROOT / "src"
POLICY_BLOCK = re.compile(r"<!--\s*iam-policy:\s*([\w-]+)\s*-->\s*```json\n(.*?)```", re.S)

# Code that runs on the launching user's machine, with the user's credentials.
USER_FILES = sorted({*(SRC / "bincount" / "sagemaker").glob("*.py"), *(SRC / "bincount" / "deploy").glob("*.py"),
                     *(SRC / "bincount" / "aws").glob("*.py"),
                     *(SRC / "hydra_plugins" / "bincount_sagemaker_launcher").glob("*.py")}
                    - {SRC / "bincount" / "sagemaker" / "entry.py"})
# Everything else of the package may run inside a job, with the role's credentials (entry.py, the data readers).
JOB_FILES = sorted(set((SRC / "bincount").rglob("*.py")) - set(USER_FILES))
SERVICES = ("sagemaker", "sagemaker-runtime", "s3", "secretsmanager", "logs", "iam", "sts", "ecr", "cloudwatch",
            "service-quotas")
# A boto3 client call: the receiver names a client (``client``, ``s3_client``, ``self.client``, ``s3``, ``sm``).
CLIENT_CALL = re.compile(r"\b(\w*(?:client|s3|sm|sagemaker|secrets|logs|iam)\w*)\.([a-z][a-z0-9_]*)\(", re.I)
PAGINATOR = re.compile(r"get_paginator\(\s*[\"'](\w+)[\"']")
CHAINED_CALL = re.compile(r"\.client\(\s*[\"'][\w-]+[\"'][^)]*\)\.([a-z][a-z0-9_]*)\(")  # boto.client("x").op(
TRANSFER = {"upload_file": ("s3", "PutObject"), "upload_fileobj": ("s3", "PutObject"),
            "download_file": ("s3", "GetObject"), "download_fileobj": ("s3", "GetObject")}
# S3 operations authorised under another action name (the Service Authorization Reference).
S3_ACTIONS = {"ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
              "HeadObject": "s3:GetObject", "ListBuckets": "s3:ListAllMyBuckets",
              "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
              "CompleteMultipartUpload": "s3:PutObject"}
IAM_PREFIX = {"sagemaker-runtime": "sagemaker", "service-quotas": "servicequotas"}  # the rest: the service name
NO_PERMISSION = {("sts", "GetCallerIdentity")}  # STS answers it for everyone
# Needed only when something else fails, and tolerated when denied (the doc says why).
TOLERATED = {"s3:ListAllMyBuckets": "boto3's Bucket.creation_date swallows AccessDenied; HeadBucket decides",
             "iam:GetRole": "the SDK's role check treats AccessDenied as 'unknown' and goes on"}
# Every create request of this code carries tags and, for jobs and models, the role.
IMPLIED = {"sagemaker:CreateTrainingJob": ("sagemaker:AddTags", "iam:PassRole"),
           "sagemaker:CreateModel": ("sagemaker:AddTags", "iam:PassRole"),
           "sagemaker:CreateEndpointConfig": ("sagemaker:AddTags",), "sagemaker:CreateEndpoint": ("sagemaker:AddTags",)}
# What SageMaker does with the role (CreateTrainingJob's RoleArn: read input from S3, pull the image, write
# artifacts, logs and metrics; the same for a model's container).
SERVICE_SIDE = ("s3:GetObject", "s3:ListBucket", "s3:PutObject", "ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "logs:CreateLogGroup",
                "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams", "cloudwatch:PutMetricData")
# Actions without resource-level permissions: the only ones a statement may grant on "*".
STAR_RESOURCE_OK = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
                    # the Service Authorization Reference lists no resource type for these two: "*" only
                    "servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas", "sagemaker:Search"}
# sagemaker-core resources this code uses, and the variable names its instances have in the code.
RESOURCES = ("TrainingJob", "Endpoint", "EndpointConfig", "Model")
INSTANCE_NAMES = {"job": "TrainingJob", "endpoint": "Endpoint", "model": "Model"}
# What ModelTrainer.train (SDK v3) calls besides TrainingJob.create, and where its source says so.
TRAIN_CALLS = (  # (distribution, file, needle, service, operation)
    ("sagemaker-core", "sagemaker/core/helper/session_helper.py", "head_bucket(", "s3", "HeadBucket"),
    ("sagemaker-core", "sagemaker/core/helper/session_helper.py", "bucket.creation_date", "s3", "ListBuckets"),
    ("boto3", "boto3/s3/inject.py", "list_buckets()", "s3", "ListBuckets"),
    ("sagemaker-core", "sagemaker/core/helper/session_helper.py", ".upload_file(", "s3", "PutObject"),
    ("sagemaker-train", "sagemaker/train/model_trainer.py", "simulate_principal_policy(", "iam",
     "SimulatePrincipalPolicy"),
    ("sagemaker-core", "sagemaker/core/helper/iam_role_resolver.py", "get_role(", "iam", "GetRole"),
    ("sagemaker-core", "sagemaker/core/telemetry/telemetry_logging.py", "get_caller_identity()", "sts",
     "GetCallerIdentity"),
)
TRAIN_CREATES = ("sagemaker-train", "sagemaker/train/model_trainer.py", "TrainingJob.create(")


# ---------------------------------------------------------------- the doc


@lru_cache(maxsize=1)
def doc_text() -> str:
    return DOC.read_text()


def policies() -> dict[str, dict]:
    found = {m.group(1): m.group(2) for m in POLICY_BLOCK.finditer(doc_text())}
    assert set(found) == {"role-trust", "role", "user"}, f"policy blocks in {DOC.name}: {sorted(found)}"
    parsed = {}
    for name, body in found.items():
        try:
            parsed[name] = json.loads(body)
        except json.JSONDecodeError as e:
            pytest.fail(f"the {name!r} policy in {DOC.name} is not JSON: {e}")
    return parsed


def listify(value) -> list:
    return value if isinstance(value, list) else [value]


def allows(policy: dict, action: str) -> bool:
    """Some Allow statement grants ``action`` (IAM action names are case-insensitive; ``*``/``?`` wildcards)."""
    return any(st.get("Effect") == "Allow" and any(fnmatch.fnmatch(action.lower(), a.lower())
                                                  for a in listify(st.get("Action", [])))
               for st in policy["Statement"])


def section(title: str) -> str:
    text = doc_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end > 0 else None]


# ---------------------------------------------------------------- operations the code calls


@lru_cache(maxsize=1)
def operation_index() -> dict[str, list[tuple[str, str]]]:
    """Python method name -> [(service, operation)], from botocore's service models."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    index: dict[str, list[tuple[str, str]]] = {}
    for service in SERVICES:
        for op in session.get_service_model(service).operation_names:
            index.setdefault(xform_name(op), []).append((service, op))
    return index


def code_text(path: Path) -> str:
    """The file without its comments (a comment naming ``EndpointConfig.create`` is not a call)."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    with path.open("rb") as f:
        comments = [tok.start for tok in tokenize.tokenize(f.readline) if tok.type == tokenize.COMMENT]
    for row, col in comments:
        line = lines[row - 1]
        lines[row - 1] = line[:col] + ("\n" if line.endswith("\n") else "")
    return "".join(lines)


def scanned_operations(files) -> dict[tuple[str, str], set[str]]:
    """(service, operation) -> files, for the boto3 client calls in ``files``."""
    index, found = operation_index(), {}
    for path in files:
        text = code_text(path)
        names = {m.group(2) for m in CLIENT_CALL.finditer(text)} | set(PAGINATOR.findall(text))
        chained = set(CHAINED_CALL.findall(text))  # certainly client calls: one-word operations (search) count too
        ops = [op for name in names if "_" in name for op in index.get(name, [])]
        ops += [op for name in chained for op in index.get(name, [])]
        ops += [TRANSFER[name] for name in names if name in TRANSFER]
        for op in ops:
            found.setdefault(op, set()).add(path.relative_to(ROOT).as_posix())
    return found


def sdk_file(dist: str, rel: str) -> Path:
    try:
        path = Path(distribution(dist).locate_file(rel))
    except PackageNotFoundError:
        pytest.skip(f"{dist} is not installed (the sagemaker extra)")
    assert path.is_file(), f"{rel} is not in the installed {dist}: the SDK moved it; re-read what train() calls"
    return path


@lru_cache(maxsize=None)
def resource_methods(cls: str) -> dict[str, str]:
    """Method name -> source text, for one sagemaker-core resource class (read, not imported: it is slow)."""
    text = sdk_file("sagemaker-core", "sagemaker/core/resources.py").read_text()
    start = re.search(rf"^class {cls}\(", text, re.M)
    assert start, f"sagemaker-core has no resource class {cls}"
    end = text.find("\nclass ", start.end())
    body = text[start.end():end if end > 0 else None]
    parts = re.split(r"^(?:    @[^\n]*\n)*    def (\w+)\(", body, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def resource_operations(cls: str, method: str, seen=None) -> set[tuple[str, str]]:
    """The API operations a resource method makes: its ``client.x(...)`` calls, and those of the methods of the
    same class it calls (``cls.get``, ``self.refresh``)."""
    seen = set() if seen is None else seen
    methods = resource_methods(cls)
    if (cls, method) in seen or method not in methods:
        return set()
    seen.add((cls, method))
    body, index, ops = methods[method], operation_index(), set()
    for name in re.findall(r"\bclient\.(\w+)\(", body):
        ops |= {op for op in index.get(name, []) if op[0] in ("sagemaker", "sagemaker-runtime")}
    for name in re.findall(r"\b(?:cls|self)\.(\w+)\(", body):
        ops |= resource_operations(cls, name, seen)
    return ops


def resource_calls(files) -> set[tuple[str, str]]:
    """(class, method) of the sagemaker-core resources the code calls: ``Endpoint.create(``, ``endpoint.invoke(``,
    ``handle.job.refresh()``, ``model.delete`` (passed on as a callable). Only names that are methods count."""
    calls = set()
    for path in files:
        text = code_text(path)
        for cls, name in re.findall(rf"\b({'|'.join(RESOURCES)})\.(\w+)\b", text):
            calls.add((cls, name))
        for var, name in re.findall(rf"\b({'|'.join(INSTANCE_NAMES)})\.(\w+)\b", text):
            calls.add((INSTANCE_NAMES[var], name))
    return {(cls, name) for cls, name in calls if name in resource_methods(cls)}


def train_operations() -> set[tuple[str, str]]:
    """What ``ModelTrainer.train`` calls, each backed by its needle in the installed SDK."""
    ops = set()
    for dist, rel, needle, service, op in TRAIN_CALLS:
        assert needle in sdk_file(dist, rel).read_text(), f"{needle!r} is no longer in {dist}/{rel}: re-read the SDK"
        ops.add((service, op))
    dist, rel, needle = TRAIN_CREATES
    assert needle in sdk_file(dist, rel).read_text()
    return ops | resource_operations("TrainingJob", "create")


def iam_actions(ops) -> dict[str, str]:
    """IAM action -> the operation(s) that need it."""
    actions: dict[str, str] = {}
    for service, op in sorted(ops):
        if (service, op) in NO_PERMISSION:
            continue
        if service == "s3":
            action = S3_ACTIONS.get(op, f"s3:{op}")
        else:
            action = f"{IAM_PREFIX.get(service, service)}:{op}"
        for a in (action, *IMPLIED.get(action, ())):
            actions.setdefault(a, f"{service} {op}")
    return actions


def user_operations() -> set[tuple[str, str]]:
    ops = set(scanned_operations(USER_FILES))
    for cls, method in resource_calls(USER_FILES):
        ops |= resource_operations(cls, method)
    if any("ModelTrainer(" in code_text(p) for p in USER_FILES):
        ops |= train_operations()
    return ops


# ---------------------------------------------------------------- the tests


def test_policy_blocks_parse_and_grant_no_wildcards():
    for name, policy in policies().items():
        assert policy.get("Version") == "2012-10-17", name
        assert policy.get("Statement"), name
        for st in policy["Statement"]:
            assert st.get("Effect") == "Allow", (name, st)
            actions = listify(st["Action"])
            assert not [a for a in actions if "*" in a], f"{name}: wildcard action in {st}"
            if name == "role-trust":
                continue
            resources = listify(st.get("Resource"))
            assert resources and None not in resources, f"{name}: statement without Resource: {st}"
            if "*" in resources:
                assert set(actions) <= STAR_RESOURCE_OK, f"{name}: {actions} granted on '*': scope them to ARNs"


def test_trust_policy_lets_only_sagemaker_assume_the_role():
    (st,) = policies()["role-trust"]["Statement"]
    assert st["Principal"] == {"Service": "sagemaker.amazonaws.com"} and st["Action"] == "sts:AssumeRole"


def test_the_role_is_passed_to_sagemaker_only():
    statements = [st for st in policies()["user"]["Statement"] if "iam:PassRole" in listify(st["Action"])]
    assert statements, "the user policy does not allow iam:PassRole"
    for st in statements:
        assert all(r.startswith("arn:aws:iam::") and ":role/" in r for r in listify(st["Resource"])), st
        assert st.get("Condition") == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}, st


def test_the_scan_sees_the_calls_it_must():
    """Guards the scanner: if these stop being found, the other tests would pass for nothing."""
    ops = user_operations()
    for op in [("sagemaker", "CreateTrainingJob"), ("sagemaker", "DescribeTrainingJob"),
               ("sagemaker", "StopTrainingJob"), ("sagemaker", "CreateModel"), ("sagemaker", "CreateEndpointConfig"),
               ("sagemaker", "CreateEndpoint"), ("sagemaker", "DeleteEndpoint"),
               ("sagemaker-runtime", "InvokeEndpoint"), ("s3", "PutObject"), ("s3", "GetObject"),
               ("iam", "SimulatePrincipalPolicy")]:
        assert op in ops, f"{op} not found in the code any more"
    assert ("secretsmanager", "GetSecretValue") in scanned_operations(JOB_FILES)


def test_every_operation_of_the_launcher_and_deploy_is_allowed_by_the_user_policy():
    user = policies()["user"]
    needed = iam_actions(user_operations())
    missing = {a: why for a, why in needed.items() if a not in TOLERATED and not allows(user, a)}
    assert not missing, (f"docs/sagemaker.md's user policy does not allow what the code calls: {missing}; "
                         "add the actions (and the row of the table under it)")


def test_every_operation_of_a_job_is_allowed_by_the_role_policy():
    role = policies()["role"]
    scanned = scanned_operations(JOB_FILES)
    needed = {**iam_actions(scanned), **{a: "SageMaker, with the role" for a in SERVICE_SIDE}}
    missing = {a: why for a, why in needed.items() if not allows(role, a)}
    where = {a: sorted(f for op, files in scanned.items() if f"{op[0]} {op[1]}" == why for f in files)
             for a, why in missing.items()}
    assert not missing, f"docs/sagemaker.md's role policy does not allow: {missing} (called in {where})"


def test_the_role_reads_the_secrets_the_doc_names():
    role = policies()["role"]
    resources = [r for st in role["Statement"] if "secretsmanager:GetSecretValue" in listify(st["Action"])
                 for r in listify(st["Resource"])]
    names = set(re.findall(r"hydra\.launcher\.secrets\.\w+=([\w/+=.@-]+)", doc_text()))
    assert names, "the doc shows no hydra.launcher.secrets example"
    for name in names:
        arn = f"arn:aws:secretsmanager:<REGION>:<ACCOUNT_ID>:secret:{name}-AbCdEf"  # AWS appends 6 characters
        assert any(fnmatch.fnmatchcase(arn, r) for r in resources), f"the role cannot read secret {name}"


def launcher_presets() -> dict[str, dict]:
    """Each preset of conf/hydra/launcher with its defaults resolved (the *_base nodes are the dataclasses)."""
    from hydra_plugins.bincount_sagemaker_launcher.config import SageMakerLauncherConf, SageMakerLocalLauncherConf

    bases = {"sagemaker_base": dataclasses.asdict(SageMakerLauncherConf()),
             "sagemaker_local_base": dataclasses.asdict(SageMakerLocalLauncherConf())}
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml")}

    def resolve(name: str) -> dict:
        if name in bases:
            return dict(bases[name])
        node, out = dict(files[name]), {}
        for parent in node.pop("defaults", []):
            if isinstance(parent, str) and parent != "_self_":
                out.update(resolve(parent))
        out.update(node)
        return out

    return {name: resolve(name) for name in files}


def quota_rows() -> dict[str, str]:
    rows = {}
    for line in section("Service quotas").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `ml.") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[-1]
    return rows


def test_the_quota_table_has_every_preset_instance_type():
    rows, needed = quota_rows(), {}
    presets = {n: p for n, p in launcher_presets().items() if p["backend"] == "sagemaker"}
    assert {"sagemaker", "sagemaker_multi_gpu", "sagemaker_multi_node"} <= set(presets)
    for p in presets.values():
        n = p["instance_count"] * p["max_parallel_jobs"]
        needed[p["instance_type"]] = max(needed.get(p["instance_type"], 0), n)
    for itype, n in needed.items():
        for usage in ("training job usage", "spot training job usage"):
            quota = f"{itype} for {usage}"
            assert quota in rows, f"the quota table has no row {quota!r}"
            assert rows[quota] == str(n), f"{quota}: the doc asks for {rows[quota]}, the presets can run {n} at once"
    deploy_default = re.search(r'"--instance-type",\s*default="(ml\.[^"]+)"',
                               (SRC / "bincount" / "deploy" / "cli.py").read_text()).group(1)
    assert f"{deploy_default} for endpoint usage" in rows, f"no quota row for deploy's default {deploy_default}"


def test_the_doc_quotes_the_price_table():
    from bincount.aws.prices import HOURLY

    text = doc_text()
    quoted = re.findall(r"(ml\.[a-z0-9]+\.[a-z0-9]+) at \$([0-9.]+)/h", text)
    assert quoted, "no 'ml.TYPE at $P/h' price in the doc"
    for itype, price in quoted:
        assert float(price) == HOURLY[itype], f"{itype}: the doc says ${price}/h, prices.py ${HOURLY[itype]}/h"
    rows = re.findall(r"^\| `(sagemaker\w*)` \| (\d+) x (ml\.[a-z0-9]+\.[a-z0-9]+)[^|]*\| ([0-9.]+) \|", text, re.M)
    assert rows, "the presets table has no priced rows"
    for _, count, itype, price in rows:
        assert float(price) == round(HOURLY[itype] * int(count), 2), (itype, count, price)
