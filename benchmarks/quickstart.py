"""The README's quick start, measured: ``python train.py`` from nothing (no dataset, no cache) in a scratch
directory, wall time and the figures the run prints, as one table.

Why a script and not a test: the README quotes these numbers, and a run is deterministic on one kind of CPU
(seed 42, the same render), so rerunning this after a change that moves them shows by how much, and the
README is updated from its output. Deterministic per CPU family, not across them: the same command gives other
figures on Intel Xeon than on AMD EPYC every time (oneDNN/MKL pick different kernels, and float sums round
differently), so the script says whether a plain run is within the README's figures for this CPU's vendor.
It takes as long as the quick start (about 2-5 minutes on 2 cores).

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
# The README's figures for `python train.py` (no overrides): the machines measured, by CPU vendor
# (/proc/cpuinfo vendor_id). Two AMD EPYC machines gave two rows: the CPU model and its kernels matter.
README_FIGURES = {
    "AuthenticAMD": [("AMD EPYC (2026-12-07)", {"val/acc": 0.403, "test/acc": 0.384, "test/rmse": 1.032,
                                                "test/within_one": 0.859}),
                     ("AMD EPYC (earlier)", {"val/acc": 0.398, "test/acc": 0.343, "test/rmse": 1.06,
                                             "test/within_one": 0.87})],
    "GenuineIntel": [("Intel Xeon", {"val/acc": 0.418, "test/acc": 0.394, "test/rmse": 1.085,
                                     "test/within_one": 0.843})],
}
TOLERANCE = 0.01  # the README rounds to 2-3 digits


def cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def verdict(metrics: dict, vendor: str) -> str:
    """Which README row ``metrics`` are (within TOLERANCE) for this CPU vendor, or how they differ from each."""
    if vendor not in README_FIGURES:
        names = [n for rows in README_FIGURES.values() for n, _ in rows]
        return f"no README figures for CPU vendor {vendor!r} (known: {', '.join(names)})"
    differences = []
    for name, expected in README_FIGURES[vendor]:
        off = [f"{k} {metrics.get(k)} (README {v})" for k, v in expected.items()
               if not isinstance(metrics.get(k), (int, float)) or abs(metrics[k] - v) > TOLERANCE]
        if not off:
            return f"within the README's figures for {name} (+-{TOLERANCE})"
        differences.append(f"{name}: {'; '.join(off)}")
    return "differs from the README's figures for " + " | ".join(differences)


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
    if not overrides:
        print(verdict(metrics, cpu_vendor()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
