"""The job's ``result.json``: its status and return value, written once, atomically, by rank zero.

Job side: standard library only (the container imports it before anything else is known to work).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def write_result(path: Path, status: str, return_value: Any = None, error: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"status": status, "return_value": jsonable(return_value), "error": error}))
    tmp.replace(path)


def is_rank_zero() -> bool:
    """torchrun sets RANK; Lightning's own DDP launch sets LOCAL_RANK/NODE_RANK in the processes it starts."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))
