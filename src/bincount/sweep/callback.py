"""Hydra callback: write the sweep report at the end of every multirun (Optuna or basic sweeper).

Registered in ``conf/hydra/default.yaml``. Hydra instantiates callbacks for every run, so this module
imports nothing heavy; the report (optuna, matplotlib) is imported only when a multirun ends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            from bincount.sweep.report import write_report

            write_report(Path(config.hydra.sweep.dir))
        except Exception as err:  # the jobs' results are on disk; a report problem must not hide that
            log.warning("No sweep report (%s: %s); retry with: bincount sweep-report %s", type(err).__name__, err,
                        config.hydra.sweep.dir)
