"""A CSV logger that can continue an existing ``metrics.csv``.

Lightning's CSV writer starts with no known columns; when it writes into a file that already exists
(a resumed run, or the evaluation after a DDP fit whose rank 0 ran in another process) with other
columns than the file has, it rewrites the file with its own smaller header and crashes
(``dict contains fields not in fieldnames``). Adopting the file's header before each save fixes
that; nothing else changes.
"""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    def save(self) -> None:
        # Adopt columns another writer (an earlier run, another process) put in the file.
        if self.metrics and os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            if set(header) - set(self.metrics_keys):
                self.metrics_keys = sorted(set(self.metrics_keys) | set(header))
        super().save()


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives resuming and re-opening (see module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
