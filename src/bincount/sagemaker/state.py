"""Each job's state file (``sagemaker_job.json`` in its local dir) and re-attaching to a job from it.

Why its own module: a relaunched sweep reads it to skip completed jobs and to collect running ones instead
of paying for them again, and a launcher that died mid-sweep must leave it readable; the launch loop only
calls :func:`save_state`, :func:`previous_completion` and :func:`reattach`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from bincount.sagemaker.spec import JobSpec

log = logging.getLogger(__name__)
STATE_FILE = "sagemaker_job.json"


def reattach(backend, spec: JobSpec):
    """The job an earlier launch of this sweep started for ``spec`` (same config and code), if it is still
    running or has finished since: a relaunch after the launcher died collects it instead of paying again."""
    saved = saved_state(spec)
    # An earlier launch wrote the job's .hydra/ (just before CreateTrainingJob) but no state: it may have been
    # killed in between, so the job may exist; its tag says (never asked on a first launch)
    unrecorded = not saved and (spec.local_dir / ".hydra").is_dir() and hasattr(backend, "find")
    if not unrecorded and (saved.get("status") != "InProgress" or saved.get("state_sha") != spec.state_sha
                           or not saved.get("name")):
        return None
    what = "a job tagged for it" if unrecorded else saved["name"]
    try:
        handle = backend.find(spec) if unrecorded else backend.attach(spec, saved)
    except Exception as e:  # noqa: BLE001 - cannot tell: a new job is safer than a lost trial
        log.warning("job %d: could not re-attach to %s (%s: %s); launching it", spec.idx, what, type(e).__name__, e)
        return None
    if handle is None:
        if not unrecorded:
            log.info("job %d: %s from an earlier launch is gone; launching it again", spec.idx, what)
        return None
    spec.extra["name"], spec.extra["started"] = handle.name, float(saved.get("started") or time.time())
    log.info("%s: re-attached (started by an earlier launch of this sweep); log %s", handle.name,
             backend.log_location(handle))
    return handle


def saved_state(spec: JobSpec) -> dict:
    """What an earlier launch recorded for this job (``{}``: nothing)."""
    state = spec.local_dir / STATE_FILE
    return json.loads(state.read_text()) if state.is_file() else {}


def previous_completion(spec: JobSpec) -> dict | None:
    saved = saved_state(spec)
    return saved if saved.get("status") == "Completed" and saved.get("state_sha") == spec.state_sha else None


def save_state(spec: JobSpec, **fields: Any) -> None:
    """Written whole or not at all (a temporary file, then a rename): a sweep stopped mid-write, or a reader
    such as a re-attaching launcher, never sees half a state file."""
    spec.local_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"config_sha": spec.sha, "state_sha": spec.state_sha, **fields}, default=str)
    tmp = spec.local_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(text)
    os.replace(tmp, spec.local_dir / STATE_FILE)
