"""Run reports: a self-contained HTML page and PNG charts for every run directory.

``write_report(run_dir)`` builds it from the run's files; ``after_run`` is the hook ``train()`` calls.
"""

from bincount.report.hook import after_run

__all__ = ["after_run"]
