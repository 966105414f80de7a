"""What runs inside the training container imports only the standard library (and itself).

The container's Python has what pip installed for the job and nothing of the launcher's machine; an
import that fails there fails a job that has already been paid for. The closure is computed by importing,
in a fresh interpreter, every module the job's command reaches: the entry (``python -m
bincount.sagemaker.job.entry``), the callback the entry adds by override, and the pickled-task runner.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

from hydra.experimental.callback import Callback

from bincount.sagemaker.job.callback import JobCallback

JOB_MODULES = ["bincount.sagemaker.job.entry", "bincount.sagemaker.job.callback", "bincount.sagemaker.job.run_pickled",
               "bincount.sagemaker.job.result_file", "bincount.sagemaker.job.contract", "bincount.sagemaker.job.network",
               "bincount.sagemaker.job.pins"]
PROBE = """
import json, sys
before = set(sys.modules)
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_job_sides_import_closure_is_the_standard_library():
    out = subprocess.run([sys.executable, "-c", PROBE, *JOB_MODULES], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert set(JOB_MODULES) <= set(loaded)
    foreign = [m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "bincount"]
    assert foreign == [], f"the job side imports {foreign}"
    ours = [m for m in loaded if m.split(".")[0] == "bincount"]
    assert all(m in ("bincount", "bincount.sagemaker") or m.startswith("bincount.sagemaker.") for m in ours), ours


def test_the_job_callback_has_every_hook_hydra_calls():
    """Hydra calls each hook by name and turns an AttributeError into a warning: a missing hook is silent."""
    hooks = {name for name, _ in inspect.getmembers(Callback, inspect.isfunction) if name.startswith("on_")}
    assert hooks and hooks <= set(dir(JobCallback)), hooks - set(dir(JobCallback))
    assert not issubclass(JobCallback, Callback), "no Hydra import on the job side"
