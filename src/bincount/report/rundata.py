"""Everything a report shows, read from a finished run directory (no model, no Hydra, no network).

The run directory is the contract (docs/architecture.md): ``metrics.json``, ``predictions.csv``,
``csv/metrics.csv`` and the resolved config. Reading only files means a report can be rebuilt at any
time (``bincount report RUN_DIR``), on another machine, long after training.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bincount.compare.rundir import CONFIG_FILES, RunError, read_metrics, read_overrides

# One reader of run directories for the whole package: bincount.compare.rundir (metrics, overrides, errors).
RunDirError = RunError


@dataclass
class RunData:
    run_dir: Path
    metrics: dict
    config_text: str = ""
    config: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    predictions: Optional[dict] = None  # bincount.metrics.read_predictions_csv output
    history: list = field(default_factory=list)  # csv/metrics.csv rows, values as floats (None when empty)

    @property
    def counts(self) -> list[int]:
        """The count of each class, from the per-class test metrics (or the predictions' columns)."""
        found = sorted(int(k.rsplit("_", 1)[1]) for k in self.metrics if k.startswith("test/support_"))
        return found or list((self.predictions or {}).get("counts") or [])

    @property
    def data_root(self) -> Optional[str]:
        return (self.config.get("data") or {}).get("root")

    def scalar(self, key: str) -> Any:
        return self.metrics.get(key)


def _float(value: str) -> Optional[float]:
    try:
        return float(value) if value not in ("", None) else None
    except ValueError:
        return None


def read_history(path: Path) -> list[dict]:
    """The training rows of ``csv/metrics.csv``: up to where the step counter restarts.

    After fitting, ``train()`` evaluates the best checkpoint with a fresh Trainer that logs into the same
    file at step 0, epoch 0; those rows are final numbers, not a point on the learning curve.
    """
    if not path.is_file():
        return []
    rows, last_step = [], -1.0
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            values = {k: _float(v) for k, v in row.items()}
            step = values.get("step")
            if step is not None and step < last_step:
                break
            last_step = step if step is not None else last_step
            rows.append(values)
    return rows


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; raise :class:`RunDirError` naming what is missing."""
    from omegaconf import OmegaConf

    from bincount.metrics import read_predictions_csv

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    data = RunData(run_dir=run_dir, metrics=metrics)
    for name in CONFIG_FILES:
        if (run_dir / name).is_file():
            data.config_text = (run_dir / name).read_text(encoding="utf-8")
            data.config = OmegaConf.to_container(OmegaConf.create(data.config_text), resolve=False) or {}
            break
    data.overrides = read_overrides(run_dir)
    if (run_dir / "predictions.csv").is_file():
        data.predictions = read_predictions_csv(run_dir / "predictions.csv")
    data.history = read_history(run_dir / "csv" / "metrics.csv")
    return data
