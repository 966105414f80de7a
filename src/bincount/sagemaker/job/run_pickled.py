"""Job side of the ``pickle`` payload: run a pickled Hydra task function, as Hydra's Ray launcher does.

Used when the task is not a script's ``@hydra.main`` (tests, notebooks). The pickle ties the job's
Python minor version to the launcher's, which is why scripts go through ``payload=script`` instead.
The return value goes back as JSON in ``result.json``; only a local-backend job, which is given the
sweep's result key, also writes it pickled, signed, so the launcher unpickles nothing it did not key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bincount.sagemaker.job.result_file import is_rank_zero, write_result
from bincount.sagemaker.job.contract import (ENV_JOB_DIR, ENV_RESULT_KEY, PICKLED_RESULT, PICKLED_RESULT_MAC,
                                         RESULT_FILE, result_mac)


def main(argv: list[str]) -> int:
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job
    from omegaconf import open_dict, read_write

    key = os.environ.pop(ENV_RESULT_KEY, None)  # the task and its children never see the sweep's key
    spec = cloudpickle.loads(Path(argv[0]).read_bytes())
    Singleton.set_state(spec["singleton_state"])
    config = spec["config"]
    job_dir = Path(os.environ[ENV_JOB_DIR]).absolute()
    with read_write(config.hydra), open_dict(config.hydra):  # the job's output dir is the container's, not the laptop's
        config.hydra.sweep.dir = str(job_dir.parent)
        config.hydra.sweep.subdir = job_dir.name
    ret = run_job(hydra_context=spec["hydra_context"], task_function=spec["task_function"], config=config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    if not is_rank_zero():
        return 0
    if ret.status == JobStatus.COMPLETED:
        if key:
            blob = cloudpickle.dumps(ret.return_value)
            (job_dir / PICKLED_RESULT).write_bytes(blob)
            (job_dir / PICKLED_RESULT_MAC).write_text(result_mac(bytes.fromhex(key), os.environ[ENV_JOB_DIR], blob))
        write_result(job_dir / RESULT_FILE, "COMPLETED", ret.return_value)
        return 0
    err = ret._return_value
    write_result(job_dir / RESULT_FILE, "FAILED", error=f"{type(err).__name__}: {err}"[:900])
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
