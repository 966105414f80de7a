"""Early stopping, the job's side: the per-epoch metric file a pruned SageMaker trial writes.

A job cannot reach the sweep's Optuna storage, but its checkpoint directory is synced to S3 while it runs.
So the job writes ``{"metric": name, "values": {epoch: value}}`` to ``PROGRESS_FILE`` there after each
validation epoch, and the launcher reads it at each poll and asks the study's pruner (the launcher's side:
``bincount.sagemaker.pruning``). The format is written and read here only. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

# Set (to "1" by the launcher, to the file's path by the entry) in a pruned trial's job only.
ENV_PROGRESS = "BINCOUNT_SM_PROGRESS"
PROGRESS_FILE = "bincount_progress.json"
MAX_PROGRESS_BYTES = 1 << 20  # read no more: the file is the job's, so its size is not trusted


def write_progress(path: Path, metric: str, values: dict[str, float]) -> None:
    """The whole file, written beside and renamed, so a reader (the S3 sync) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"metric": metric, "values": values}))
    tmp.replace(path)


def parse_progress(data: bytes | None) -> dict[int, float]:
    """``{epoch: value}`` from a job's progress file; written by the job, so anything malformed is nothing."""
    if not data or len(data) > MAX_PROGRESS_BYTES:
        return {}
    try:
        values = json.loads(data)["values"]
        return {int(k): float(v) for k, v in values.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
