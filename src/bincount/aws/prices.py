"""Approximate on-demand USD prices in us-east-1, for the cost lines the launcher and ``deploy`` print.

Why a table of our own: AWS's Price List API needs its own permissions and a network call, and a cost
line that is off by a few percent still tells a user what a sweep or an endpoint is about to spend.
Spot is usually 60-70% less. Training and real-time hosting cost about the same per instance-hour for
these types. Check https://aws.amazon.com/sagemaker/pricing/ before budgeting.
"""

from __future__ import annotations

HOURLY = {"ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.c5.large": 0.119, "ml.c5.xlarge": 0.238,
          "ml.g4dn.xlarge": 0.736, "ml.g4dn.12xlarge": 4.89, "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515,
          "ml.g5.4xlarge": 2.03, "ml.g5.12xlarge": 7.09, "ml.g5.48xlarge": 20.36, "ml.g6.xlarge": 1.006,
          "ml.g6.12xlarge": 5.752, "ml.p3.2xlarge": 3.825, "ml.p3.8xlarge": 14.688, "ml.p4d.24xlarge": 37.688,
          "local": 0.0}
# Serverless inference bills compute per second of processing, by memory size: $0.00002 per GB-second.
SERVERLESS_PER_GB_SECOND = 0.00002


def hourly(instance_type: str) -> float | None:
    return HOURLY.get(instance_type)


def cost(instance_type: str, count: int, seconds: float) -> str:
    price = hourly(instance_type)
    return "$?" if price is None else f"${price * count * seconds / 3600:.2f}"


def serverless_per_second(memory_mb: int) -> float:
    return SERVERLESS_PER_GB_SECOND * memory_mb / 1024


def billing_state(training_s: float, billable_s: float, instance_type: str, instance_count: int) -> dict:
    """What a finished job cost at the price table's rate, and what spot saved (the sweep report sums both)."""
    price = hourly(instance_type)
    usd = (lambda s: round(price * instance_count * s / 3600, 4)) if price is not None else (lambda s: None)
    return {"training_s": round(training_s, 1), "billable_s": round(billable_s, 1), "cost_usd": usd(billable_s),
            "spot_saved_usd": usd(training_s - billable_s) if billable_s < training_s else None}
