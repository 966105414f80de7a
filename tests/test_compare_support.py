"""Real run directories for the ``compare`` and ``runs`` tests, trained once per test session.

Not a test module of its own (it has no tests): both ``test_compare_cli.py`` and ``test_runs_cli.py`` call
:func:`trained_sweep`, and the module-level cache makes the two tiny models train only once per session
even though each module asks for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model=tiny", "data.img_size=32", "data.synthetic.num_images=60", "data.synthetic.size=64",
    "data.synthetic.workers=1", "data.num_workers=0", "data.persistent_workers=false", "trainer.max_epochs=1",
    "trainer=cpu", "logger=none", "callbacks=none", "++report=false",
]
_CACHE: dict[str, Path] = {}


def trained_sweep(tmp_path_factory) -> Path:
    """A real ``python train.py -m head=linear,coral`` sweep (two jobs, 60 synthetic bins); returns the log dir.

    The jobs differ in the head (and so in ``head.name`` and ``head.label_smoothing``) and share the data
    split, so they have the same test set.
    """
    if "logs" not in _CACHE:
        base = tmp_path_factory.mktemp("compare_runs")
        env = {**os.environ, "BINCOUNT_DATA_DIR": str(base / "data"), "BINCOUNT_LOG_DIR": str(base / "logs"),
               "HYDRA_FULL_ERROR": "1"}
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *TINY, "head=linear,coral"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        _CACHE["logs"] = base / "logs"
    return _CACHE["logs"]


def sweep_jobs(logs: Path) -> list[Path]:
    (sweep,) = list((logs / "train" / "multiruns").iterdir())
    return sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
