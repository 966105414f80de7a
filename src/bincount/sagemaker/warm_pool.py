"""Warm pools, the launcher's side (the job has none): how long each job's instance is kept after it ends.

A sweep's next trial on a kept instance starts in seconds instead of minutes; the instance is billed while
idle. ``hydra.launcher.keep_alive_s`` asks for it, spot jobs get none (SageMaker keeps no spot instances),
the cost and the account's warm-pool quota are said once at launch; the seconds go into each job's
``Compute(keep_alive_period_in_seconds=...)`` (``bincount.sagemaker.remote``).
"""

from __future__ import annotations

import logging

from bincount.sagemaker.quotas import cached_quota
from bincount.sagemaker.settings import LauncherSettings

log = logging.getLogger(__name__)


def requested_seconds(settings: LauncherSettings) -> int:
    """What each job asks for, before any check with AWS (the dry run's answer): none for spot."""
    return 0 if settings.spot else int(settings.keep_alive_s or 0)


def warm_pool_seconds(client, region: str, settings: LauncherSettings) -> int:
    """The warm pool each job asks for, said once with its cost: none for spot (SageMaker keeps no spot
    instances), and a note when the account's warm-pool quota is 0 (the jobs still run; nothing is kept)."""
    from bincount.aws.prices import hourly

    seconds = requested_seconds(settings)
    if settings.keep_alive_s and settings.spot:
        log.info("Warm pool: none for spot jobs (SageMaker has no warm pools for managed spot training)")
    if not seconds:
        return 0
    price = hourly(settings.instance_type)
    most = f"${price * settings.instance_count * seconds / 3600:.2f}" if price is not None else "the idle time"
    log.info("Warm pool: each job's instance stays up to %d s after it ends, so the next trial on it starts in "
             "seconds instead of minutes; billed while idle, at most %s a job (%s); hydra.launcher.keep_alive_s=0 "
             "turns it off", seconds, most, settings.instance_type)
    name = f"{settings.instance_type} for training warm pool usage"
    found = cached_quota(client, region, name)  # unknown: SageMaker keeps the instance if the quota allows
    if found is not None and found[0] < settings.instance_count:
        log.warning("the quota %r is %g in %s: the jobs run, but no instance is kept warm; ask for %d (quota code "
                    "%s) to make the next trial start in seconds", name, found[0], region,
                    settings.instance_count * settings.max_parallel_jobs, found[1])
    return seconds
