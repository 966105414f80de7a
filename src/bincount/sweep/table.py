"""The sweep report's terminal table (rich): one row per trial, the best one highlighted.

Parameter names and values, metric names, failure reasons and paths come from the sweep directory and
the study (anyone who could write them), so each goes through ``bincount.text.terminal``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bincount.text import terminal

SHOWN_METRICS = ("val/loss", "val/rmse", "test/acc")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return terminal(value)


def print_table(trials: list, metric: str, best, report_dir: Path, note: str, console=None,
                footer: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # Logs and CI are not terminals: rich would squeeze the table into 80 columns there.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    params = sorted({k for t in trials for k in t.params})
    metrics = [m for m in SHOWN_METRICS if m != metric and any(m in t.metrics for t in trials)]
    table = Table(title=f"Sweep: {len(trials)} trials, objective {terminal(metric)}", header_style="bold")
    for col in ("#", "status", metric, *params, *metrics, "time (s)"):
        table.add_column(terminal(col), justify="left" if col in params or col == "status" else "right")
    styles = {"COMPLETE": "", "PRUNED": "yellow", "FAIL": "red", "INCOMPLETE": "dim", "RUNNING": "cyan"}
    for t in trials:
        style = "bold green" if best is not None and t is best else styles.get(t.status, "")
        duration = f"{t.duration_s:.0f}" if t.duration_s is not None else "-"
        table.add_row(str(t.number), terminal(t.status), _fmt(t.objective), *(_fmt(t.params.get(p)) for p in params),
                      *(_fmt(t.metrics.get(m)) for m in metrics), duration, style=style)
    console.print(table)
    for t in trials:
        if t.status == "FAIL" and t.reason:
            reason = terminal(t.reason.splitlines()[0][:200])
            console.print(f"[red]trial {t.number} failed:[/red] {reason}", highlight=False)
    if best is not None:
        console.print(f"Best: trial {best.number}, {terminal(metric)} = {_fmt(best.objective)}; "
                      f"re-run: python train.py --config-dir {terminal(report_dir)} --config-name best_config",
                      highlight=False)
    if footer:
        console.print(terminal(footer), highlight=False)
    files = ", ".join(sorted(p.name for p in report_dir.iterdir() if p.is_file()))
    console.print(f"{terminal(note)}\nReport: {terminal(report_dir)} ({terminal(files)})", highlight=False)
