"""Tiny real trainings: ``python train.py`` subprocesses (what users type) and in-process composes of ``conf/``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

# A tiny, fast run: 120 synthetic bins at 64 px, timm's test_resnet, 32 px inputs.
TINY = [
    "model=tiny", "data.synthetic.num_images=120", "data.synthetic.size=64", "data.synthetic.workers=1",
    "data.img_size=32", "data.batch_size=16", "data.num_workers=0", "data.persistent_workers=false",
    "trainer.max_epochs=2", "callbacks.progress_bar=null", "callbacks.model_summary=null",
    "report=false",  # the HTML report has its own tests (test_report_html.py)
]


def run_train(args: list[str], data_dir: Path, log_dir: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "BINCOUNT_DATA_DIR": str(data_dir), "BINCOUNT_LOG_DIR": str(log_dir), "HYDRA_FULL_ERROR": "1"}
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *flags, *TINY, *overrides], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def single_run_dir(log_dir: Path) -> Path:
    runs = sorted((log_dir / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compose_cfg(overrides: list[str], tmp_path: Path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


# The report's tiny run: one epoch of 60 bins at 48 px, with the report (which TINY turns off).
REPORT_TINY = [
    "model=tiny", "data.synthetic.num_images=60", "data.synthetic.size=48", "data.synthetic.workers=1",
    "data.img_size=32", "data.batch_size=16", "data.num_workers=0", "data.persistent_workers=false",
    "trainer.max_epochs=1", "callbacks.progress_bar=null", "callbacks.model_summary=null",
]


def train_tiny(tmp: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "BINCOUNT_DATA_DIR": str(tmp / "data"), "BINCOUNT_LOG_DIR": str(tmp / "logs"),
           "HYDRA_FULL_ERROR": "1", **(env or {})}
    flags = [o for o in overrides if o.startswith("-")]
    args = [sys.executable, str(ROOT / "train.py"), *flags, *REPORT_TINY, *(o for o in overrides if not o.startswith("-"))]
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


# The compare/runs sweep's tiny jobs: one epoch of 60 bins, no logger, callbacks or report.
SWEEP_TINY = [
    "model=tiny", "data.img_size=32", "data.synthetic.num_images=60", "data.synthetic.size=64",
    "data.synthetic.workers=1", "data.num_workers=0", "data.persistent_workers=false", "trainer.max_epochs=1",
    "trainer=cpu", "logger=none", "callbacks=none", "++report=false",
]
_SWEEP_CACHE: dict[str, Path] = {}


def trained_sweep(tmp_path_factory) -> Path:
    """A real ``python train.py -m head=linear,coral`` sweep (two jobs, 60 synthetic bins); returns the log dir.

    The jobs differ in the head (and so in ``head.name`` and ``head.label_smoothing``) and share the data
    split, so they have the same test set. The module-level cache trains the two tiny models once per
    session (per xdist worker) though ``compare``, ``runs`` and the untrusted-text tests all ask for them.
    """
    if "logs" not in _SWEEP_CACHE:
        base = tmp_path_factory.mktemp("compare_runs")
        env = {**os.environ, "BINCOUNT_DATA_DIR": str(base / "data"), "BINCOUNT_LOG_DIR": str(base / "logs"),
               "HYDRA_FULL_ERROR": "1"}
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *SWEEP_TINY, "head=linear,coral"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        _SWEEP_CACHE["logs"] = base / "logs"
    return _SWEEP_CACHE["logs"]


def sweep_jobs(logs: Path) -> list[Path]:
    (sweep,) = list((logs / "train" / "multiruns").iterdir())
    return sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
