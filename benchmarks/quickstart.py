"""The README's quick start, measured: ``python train.py`` from nothing (no dataset, no cache) in a scratch
directory, wall time and the figures the run prints, as one table.

Why a script and not a test: the README quotes these numbers, and a run is deterministic on one machine
(seed 42, the same render), so rerunning this after a change that moves them shows by how much, and the
README is updated from its output. It takes as long as the quick start (about 5 minutes on 2 cores).

    python benchmarks/quickstart.py [extra overrides ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

REPO = Path(__file__).resolve().parents[1]
SHOWN = ("val/acc", "test/acc", "test/rmse", "test/mae", "test/within_one", "test/num_samples", "epochs_trained")


def main(overrides: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="bincount-quickstart-") as tmp:
        env = {**os.environ, "BINCOUNT_LOG_DIR": f"{tmp}/logs", "BINCOUNT_DATA_DIR": f"{tmp}/data"}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "train.py"), *overrides], env=env, cwd=tmp,
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            return proc.returncode
        (run,) = Path(tmp, "logs", "train", "runs").iterdir()
        metrics = json.loads((run / "metrics.json").read_text())
    print(f"python train.py {' '.join(overrides)}".rstrip())
    print(f"machine: {machine()}")
    print(f"{'wall time (from nothing)':<28}{wall:>10.0f} s")
    print(f"{'training + test (duration_s)':<28}{metrics['duration_s']:>10.0f} s")
    for key in SHOWN:
        value = metrics.get(key)
        print(f"{key:<28}{value:>10.4f}" if isinstance(value, float) else f"{key:<28}{value!s:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
