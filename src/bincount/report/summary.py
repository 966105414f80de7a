"""The lines that end every run: how it did, at a glance, and where its files are.

Why: the metrics are in ``metrics.json`` and the report, but a user watching the terminal should not have
to open either to learn the test accuracy; the same lines go to ``train.log`` through the logger.
"""

from __future__ import annotations

import re
from pathlib import Path

ROWS = (("accuracy", "acc"), ("RMSE", "rmse"), ("MAE", "mae"), ("within one", "within_one"), ("F1 (macro)", "f1_macro"))


def best_epoch(checkpoint: str | None) -> int | None:
    """The (0-based, as Lightning counts) epoch in a checkpoint name: ``epoch003.ckpt``, ``epoch=3-step=120.ckpt``."""
    match = re.search(r"epoch=?(\d+)", Path(checkpoint or "").name)
    return int(match.group(1)) if match else None


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def summary_lines(metrics: dict, run_dir: str | Path, report: str | Path | None = None) -> list[str]:
    """A small table (val and test accuracy, RMSE, MAE, within-one, macro F1), then epochs, duration, paths."""
    rows = [(label, metrics.get(f"val/{key}"), metrics.get(f"test/{key}")) for label, key in ROWS]
    rows = [r for r in rows if r[1] is not None or r[2] is not None]
    lines = [f"{'':<12}{'val':>9}{'test':>9}"] + [f"{label:<12}{_cell(v):>9}{_cell(t):>9}" for label, v, t in rows]
    epoch = best_epoch(metrics.get("best_checkpoint"))
    samples = metrics.get("test/num_samples")
    lines.append(f"{metrics.get('epochs_trained', '?')} epochs"
                 + (f", best epoch {epoch}" if epoch is not None else "")
                 + (f", {samples} test bins" if samples is not None else "")
                 + f", {metrics.get('duration_s', 0):.0f} s")
    if report:
        lines.append(f"report:        {report}")
    lines.append(f"run directory: {run_dir}")
    return lines
