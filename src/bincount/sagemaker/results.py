"""A job's result, read back on the launching machine without trusting the job's output.

Why: anyone who can write the output prefix, or any code running in the job, controls what comes back.
Results are read from ``result.json``. A ``result.pkl`` is unpickled only when the user asked for
``hydra.launcher.payload=pickle`` (documented as trusting whoever can write the output prefix) and only with
a valid HMAC, bound to the job's directory, made with this sweep's key. The key lives in the user's state
directory (``$XDG_STATE_HOME/bincount/result-keys/``, mode 0600), never under the sweep directory where
job outputs are extracted, and is given only to local-backend jobs, which run on this machine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
import stat
from pathlib import Path
from typing import Any

from bincount.sagemaker.job.contract import PICKLED_RESULT, PICKLED_RESULT_MAC, RESULT_FILE, result_mac
from bincount.sagemaker.spec import JobSpec, OutputRefused
from bincount.text import plain

log = logging.getLogger(__name__)


def key_path(sweep_dir: Path) -> Path:
    """Where the sweep's HMAC key lives: the user's state directory, never under the sweep directory.

    Job outputs are extracted under the sweep directory; a key there could be replaced by a crafted
    output (issue 24), and a pickle signed with the attacker's key would then run here.
    """
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    path = state / "bincount" / "result-keys" / f"{hashlib.sha256(str(sweep_dir.resolve()).encode()).hexdigest()[:32]}.key"
    if path.resolve().is_relative_to(sweep_dir.resolve()):
        raise OutputRefused(f"the sweep's result key would live under the sweep directory {sweep_dir} "
                            f"(XDG_STATE_HOME={state}), where job outputs are written; point XDG_STATE_HOME elsewhere")
    return path


def result_key(sweep_dir: Path) -> bytes:
    """The sweep's HMAC key: made once (mode 0600 in a 0700 directory), kept for relaunches, given to local jobs only.
    A key file that others could write or read is refused: whoever holds the key can make this machine unpickle."""
    path = key_path(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.getuid():
            raise OutputRefused(f"refusing the result key {path}: it must be a regular file of yours with mode 0600 "
                                f"(it is {oct(st.st_mode & 0o777)}); delete it to make a new one") from None
        return bytes.fromhex(path.read_text().strip())
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return key


def load_signed(spec: JobSpec, key: bytes) -> Any:
    """Unpickle the job's result.pkl only if its HMAC is this sweep's, for this job."""
    data = (spec.local_dir / PICKLED_RESULT).read_bytes()
    mac_file = spec.local_dir / PICKLED_RESULT_MAC
    mac = mac_file.read_bytes().strip() if mac_file.is_file() else b""  # bytes: any content compares safely
    if not hmac.compare_digest(mac, result_mac(key, spec.rel_dir, data).encode()):
        raise OutputRefused(f"refused {PICKLED_RESULT} of job {spec.idx}: "
                            f"{'its HMAC does not match' if mac else f'no {PICKLED_RESULT_MAC} for'} this sweep's key "
                            "(this launcher's job did not write it); not unpickled")
    return pickle.loads(data)


def read_result(spec: JobSpec, key: bytes) -> tuple[str, Any, str | None]:
    """(status, value, error) from what the job left in its output (copied into the local job dir).

    The value comes from ``result.json``; only a pickle-payload job's signed ``result.pkl`` replaces it.
    """
    path = spec.local_dir / RESULT_FILE
    if not path.is_file():
        return "Failed", None, "the job wrote no result.json (it died before Hydra finished)"
    try:
        result = json.loads(path.read_bytes())
        status, value, error = result["status"], result.get("return_value"), result.get("error")
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # the job's file: a bad one fails this job only
        return "Failed", None, f"unreadable {RESULT_FILE} ({type(e).__name__})"
    if (spec.local_dir / PICKLED_RESULT).is_file():
        if not spec.pickled_result:
            log.warning("job %d: ignored %s in its output (results are read from %s unless "
                        "hydra.launcher.payload=pickle)", spec.idx, PICKLED_RESULT, RESULT_FILE)
        else:
            try:
                value = load_signed(spec, key)
            except OutputRefused as e:
                return "Failed", None, str(e)
    # The job's own words reach the terminal through Hydra's log: no escape sequences (bincount.text).
    return ("Completed" if status == "COMPLETED" else "Failed"), value, plain(error) if isinstance(error, str) else None
