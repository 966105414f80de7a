"""One line saying what to do, after an error only AWS could give (a job that could not start, a FailureReason).

Why: the launcher refuses what it can check itself before anything starts (names, bucket region, quota);
what remains reaches the user as AWS's own words, which say what is wrong but seldom what to change in
this project's terms. Matched on AWS's error codes and stable phrases; unmatched errors pass unchanged.
"""

from __future__ import annotations

import re

HINTS = [
    (r"ResourceLimitExceeded|service limit|quota", "request the quota it names (docs/sagemaker.md, Service quotas), "
     "or lower hydra.launcher.max_parallel_jobs until it is raised"),
    (r"(?i)(instance type|InstanceType).{0,80}(not supported|not available|is not offered|unsupported)|"
     r"not supported in (this|the) region",
     "this region does not offer the instance type: hydra.launcher.instance_type=<another> or "
     "hydra.launcher.region=<one that has it> (with a bucket there)"),
    (r"AccessDenied|not authorized to perform", "the policy of the user or role named lacks the action named "
     "(docs/sagemaker.md, IAM: the minimal policies)"),
    (r"CapacityError|InsufficientCapacity|Unable to provision", "retry later (rerun the same command: completed jobs "
     "are skipped), another type or region, or spot (hydra.launcher.spot=true hydra.launcher.max_wait_s=28800)"),
    (r"ThrottlingException|Rate exceeded", "too many requests at once: lower hydra.launcher.max_parallel_jobs, or rerun"),
    (r"MaxRuntimeExceeded", "raise hydra.launcher.max_runtime_s, or train fewer epochs"),
]


def with_fix(reason: str) -> str:
    """``reason``, plus ``; fix: ...`` for the first hint that matches it."""
    for pattern, fix in HINTS:
        if re.search(pattern, reason or ""):
            return f"{reason}; fix: {fix}"
    return reason
