"""What ``train()`` does after the run's results are on disk: W&B end-of-run objects, then the report.

Both are extras: by the time this runs, ``metrics.json`` and ``predictions.csv`` are written, and a
failure here (a W&B hiccup, a missing font, a full disk for PNGs) is logged as a warning with its reason
instead of failing a run whose results are safe.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _wandb_loggers(loggers: list) -> list:
    module = sys.modules.get("bincount.wandb_logger")  # imported only if a W&B logger was configured
    return [lg for lg in loggers if module and isinstance(lg, module.BinCountWandbLogger)]


def after_run(cfg: Any, run_dir: str | Path, metrics: dict, loggers: list) -> None:
    for logger in _wandb_loggers(loggers):
        try:
            logger.log_results(metrics)
        except Exception as err:  # noqa: BLE001 - the run's own files are already written
            log.warning("W&B: could not log the final results (%s: %s); metrics.json has them", type(err).__name__, err)
        finally:
            try:
                logger.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("W&B: could not finish the run (%s: %s)", type(err).__name__, err)
    path = None
    if cfg.get("report", True):
        try:
            from bincount.report.page import write_report

            path = write_report(run_dir)
        except Exception as err:  # noqa: BLE001
            log.warning("Report not written (%s: %s); the run's results are in %s; rebuild it with "
                        "`bincount report %s`", type(err).__name__, err, run_dir, run_dir)
    from bincount.report.summary import summary_lines

    for line in summary_lines(metrics, run_dir, path):
        log.info(line)
