"""The training quota check before any upload (issue 16, bad input: a missing quota), against botocore's
Stubber: the Service Quotas client is real (request and response shapes are validated by botocore), its
answers are the ones a new account gives."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

boto3 = pytest.importorskip("boto3")
from helpers.launcher_settings import settings  # noqa: E402
from helpers.quotas import stubbed_quotas_client  # noqa: E402

from bincount.sagemaker import quotas  # noqa: E402
from bincount.sagemaker.warm_pool import warm_pool_seconds  # noqa: E402

ARN = "arn:aws:servicequotas:us-east-1:123456789012:sagemaker/L-1"


def quota(name: str, value: float, code: str = "L-6BC08A5E") -> dict:
    return {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": code, "QuotaArn": ARN, "Value": value}


@pytest.fixture(autouse=True)
def fresh():
    quotas._CHECKED.clear()
    yield
    quotas._CHECKED.clear()


def client_with(*responses):
    return stubbed_quotas_client(*responses)


def test_a_zero_quota_is_refused_with_the_request_command():
    client, stub = client_with(("list_service_quotas", {"Quotas": [quota("ml.g5.xlarge for training job usage", 0)]}))
    with pytest.raises(quotas.QuotaError, match=r"the quota 'ml.g5.xlarge for training job usage' is 0 in us-east-1, "
                                                r"and one job needs 1: no job could start.*--quota-code L-6BC08A5E "
                                                r"--desired-value 4"):
        quotas.check_training_quota(client, "us-east-1", "ml.g5.xlarge", 1, 4, spot=False)
    stub.assert_no_pending_responses()


def test_spot_reads_the_spot_quota_and_a_small_one_warns(caplog):
    client, _ = client_with(("list_service_quotas", {"Quotas": [quota("ml.g5.xlarge for training job usage", 0),
                                                               quota("ml.g5.xlarge for spot training job usage", 2)]}))
    with caplog.at_level(logging.WARNING):
        quotas.check_training_quota(client, "us-east-1", "ml.g5.xlarge", 1, 4, spot=True)
    assert "at most 2 of the 4 parallel jobs" in caplog.text


def test_the_default_value_counts_when_no_quota_was_applied():
    client, stub = client_with(("list_service_quotas", {"Quotas": []}),
                               ("list_aws_default_service_quotas",
                                {"Quotas": [quota("ml.p4d.24xlarge for training job usage", 0)]}))
    with pytest.raises(quotas.QuotaError, match="ml.p4d.24xlarge for training job usage' is 0"):
        quotas.check_training_quota(client, "us-east-1", "ml.p4d.24xlarge", 2, 1, spot=False)
    stub.assert_no_pending_responses()


def test_no_permission_warns_once_and_lets_aws_answer(caplog):
    client, stub = client_with(("list_service_quotas", "AccessDeniedException"))
    with caplog.at_level(logging.WARNING):
        quotas.check_training_quota(client, "us-east-1", "ml.g5.xlarge", 1, 1, spot=False)
        quotas.check_training_quota(client, "us-east-1", "ml.g5.xlarge", 1, 1, spot=False)  # asked once
    assert caplog.text.count("could not read the quota 'ml.g5.xlarge for training job usage' "
                             "(AccessDeniedException)") == 1
    stub.assert_no_pending_responses()


def test_enough_quota_passes_quietly(caplog):
    client, _ = client_with(("list_service_quotas", {"Quotas": [quota("ml.g5.xlarge for training job usage", 8)]}))
    with caplog.at_level(logging.WARNING):
        quotas.check_training_quota(client, "us-east-1", "ml.g5.xlarge", 2, 4, spot=False)
    assert caplog.text == ""


P = settings(instance_type="ml.g5.xlarge", instance_count=1, max_parallel_jobs=4, spot=False, keep_alive_s=300)


def test_a_sweeps_warm_pool_states_its_cost_and_a_zero_quota(caplog):
    client, _ = client_with(("list_service_quotas", {"Quotas": [quota("ml.g5.xlarge for training warm pool usage", 0,
                                                                      "L-WARM")]}))
    with caplog.at_level(logging.INFO):
        assert warm_pool_seconds(client, "us-east-1", P) == 300
    assert "stays up to 300 s after it ends" in caplog.text and "at most $0.12 a job (ml.g5.xlarge)" in caplog.text
    assert "no instance is kept warm; ask for 4 (quota code L-WARM)" in caplog.text


def test_spot_and_zero_ask_for_no_warm_pool(caplog):
    client, stub = client_with()
    with caplog.at_level(logging.INFO):
        assert warm_pool_seconds(client, "us-east-1", replace(P, spot=True)) == 0
        assert warm_pool_seconds(client, "us-east-1", replace(P, keep_alive_s=0)) == 0
    assert "none for spot jobs" in caplog.text
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("reason, fix", [
    ("could not start: ClientError: An error occurred (ResourceLimitExceeded) when calling the CreateTrainingJob "
     "operation: The account-level service limit 'ml.g5.xlarge for training job usage' is 0 Instances",
     "request the quota it names"),
    ("could not start: ClientError: An error occurred (ValidationException) when calling the CreateTrainingJob "
     "operation: The instance type ml.p5.48xlarge is not supported in region eu-north-1",
     "this region does not offer the instance type"),
    ("could not start: ClientError: An error occurred (AccessDeniedException) when calling the CreateTrainingJob "
     "operation: User: arn:aws:iam::1:user/a is not authorized to perform: iam:PassRole", "IAM: the minimal policies"),
    ("CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML instance "
     "type.", "retry later (rerun the same command"),
    ("MaxRuntimeExceeded: the job ran past max_runtime_s", "raise hydra.launcher.max_runtime_s"),
])
def test_aws_only_errors_get_one_line_saying_what_to_change(reason, fix):
    from bincount.sagemaker.hints import with_fix

    assert with_fix(reason).startswith(reason + "; fix: ") and fix in with_fix(reason)


def test_other_errors_pass_unchanged():
    from bincount.sagemaker.hints import with_fix

    reason = "ConfigError: optimizer.lr=-1 must be > 0"
    assert with_fix(reason) == reason
