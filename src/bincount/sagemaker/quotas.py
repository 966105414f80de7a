"""The account's SageMaker training quota for the launch's instance type, checked before any upload.

Why: a new account's quota for GPU training instances is often 0, and AWS says so only when
``CreateTrainingJob`` is called, after the code upload, once per job of the sweep. The Service Quotas API
answers in one call: a quota smaller than one job's ``instance_count`` (nothing could start) is refused
with the command that asks for more; one smaller than ``instance_count x max_parallel_jobs`` is a
warning (some jobs will wait for others, or fail to start). Where the user may not ask
(``servicequotas:ListServiceQuotas``), the check says so once and AWS answers for itself.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
_CHECKED: dict[tuple[str, str], tuple[float, str] | None] = {}  # (region, quota name) -> (value, code), once


class QuotaError(ValueError):
    pass


def quota_name(instance_type: str, spot: bool) -> str:
    """The quota's name as Service Quotas spells it (docs/sagemaker.md, Service quotas)."""
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


def find_quota(client, name: str) -> tuple[float, str] | None:
    """(value, quota code) of the applied quota named ``name``, else AWS's default, else None."""
    applied = client.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker")
    defaults = client.get_paginator("list_aws_default_service_quotas").paginate(ServiceCode="sagemaker")
    for pages in (applied, defaults):  # lazily: the defaults are asked only if no value was applied
        for page in pages:
            for quota in page.get("Quotas", []):
                if quota.get("QuotaName") == name:
                    return float(quota["Value"]), quota.get("QuotaCode", "?")
    return None


def cached_quota(client, region: str, name: str) -> tuple[float, str] | None:
    """``find_quota`` once per process and quota (every launch of an async sweep asks); None if unreadable."""
    key = (region, name)
    if key not in _CHECKED:
        try:
            _CHECKED[key] = find_quota(client, name)
        except Exception as e:  # noqa: BLE001 - no permission, or no Service Quotas here: AWS will answer later
            code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
            log.warning("could not read the quota %r (%s); if it is too small, CreateTrainingJob will say so", name,
                        code)
            _CHECKED[key] = None
        else:
            if _CHECKED[key] is None:
                log.info("no quota named %r in %s's Service Quotas; not checked", name, region)
    return _CHECKED[key]


def check_training_quota(client, region: str, instance_type: str, instance_count: int, parallel: int,
                         spot: bool) -> None:
    name = quota_name(instance_type, spot)
    found = cached_quota(client, region, name)
    if found is None:
        return
    value, code = found
    ask = (f"aws service-quotas request-service-quota-increase --region {region} --service-code sagemaker "
           f"--quota-code {code} --desired-value {instance_count * parallel}")
    if value < instance_count:
        raise QuotaError(f"the quota {name!r} is {value:g} in {region}, and one job needs {instance_count}: no job "
                         f"could start. Ask for more ({ask}; docs/sagemaker.md, Service quotas), or use a type you "
                         "have quota for (hydra.launcher.instance_type=...)")
    if value < instance_count * parallel:
        log.warning("the quota %r is %g in %s: at most %d of the %d parallel jobs (hydra.launcher.max_parallel_jobs) "
                    "can run at once; the others fail to start (ResourceLimitExceeded). To run all: %s", name, value,
                    region, int(value // instance_count), parallel, ask)
