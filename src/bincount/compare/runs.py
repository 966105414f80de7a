"""``bincount runs [DIR]``: every run and sweep under the output root with its key metrics, sortable.

For a terminal user who wants the best run without opening a dashboard: ``bincount runs --sort test/acc
--desc``. Columns are the run's key numbers from ``metrics.json``; ``--sort`` also accepts any other
scalar key of ``metrics.json`` (it is then added as a column). Broken run directories are reported by
file name on stderr and the listing goes on with the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from bincount.compare.render import Section, console, fmt, to_csv, to_markdown, to_rich
from bincount.compare.rundir import Run, find_runs, split_overrides
from bincount.text import plain

FORMATS = ("table", "csv", "markdown", "json")
LOWER_IS_BETTER = ("loss", "rmse", "mae", "error")  # metric names where smaller wins (for a sweep's "best")


def default_root() -> Path:
    """Where train.py writes (conf/paths/default.yaml): $BINCOUNT_LOG_DIR, else $PROJECT_ROOT/logs."""
    return Path(os.environ.get("BINCOUNT_LOG_DIR") or Path(os.environ.get("PROJECT_ROOT", ".")) / "logs")


def _metric(key: str) -> Callable[[Run], Any]:
    return lambda run: run.metrics.get(key)


def columns(root: Path) -> dict[str, Callable[[Run], Any]]:
    def rel(path: Path | None) -> str | None:
        return None if path is None else (str(path.relative_to(root)) if path.is_relative_to(root) else str(path))

    return {
        "run": lambda r: rel(r.path),
        "sweep": lambda r: None if r.sweep is None else r.sweep.name,  # its path is the run's prefix
        "objective": _metric("objective"),
        "val/acc": _metric("val/acc"),
        "test/acc": _metric("test/acc"),
        "test/rmse": _metric("test/rmse"),
        "epochs": _metric("epochs_trained"),
        "duration_s": _metric("duration_s"),
        "overrides": lambda r: " ".join(r.overrides),
    }


def _scalar_keys(runs: list[Run]) -> set[str]:
    return {k for r in runs for k, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def sort_runs(runs: list[Run], key: str, getter: Callable[[Run], Any], desc: bool) -> list[Run]:
    """Sort by one column; runs without the value go last in either direction."""
    present = [r for r in runs if getter(r) is not None]
    missing = [r for r in runs if getter(r) is None]
    try:
        present.sort(key=getter, reverse=desc)
    except TypeError:  # mixed types (a metric written as text in one run): compare as text
        present.sort(key=lambda r: str(getter(r)), reverse=desc)
    return present + missing


def lower_is_better(metric: str | None) -> bool:
    return bool(metric) and any(word in metric.split("/")[-1] for word in LOWER_IS_BETTER)


def sweeps_section(runs: list[Run], root: Path) -> Section | None:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.sweep is not None:
            groups.setdefault(str(run.sweep.relative_to(root)) if run.sweep.is_relative_to(root) else str(run.sweep),
                              []).append(run)
    if not groups:
        return None
    rows = []
    for name, members in sorted(groups.items()):
        scored = [r for r in members if isinstance(r.metrics.get("objective"), (int, float))]
        metric = next((r.metrics.get("optimized_metric") for r in members if r.metrics.get("optimized_metric")), None)
        best = (min if lower_is_better(metric) else max)(scored, key=lambda r: r.metrics["objective"]) if scored else None
        rows.append([name, str(len(members)), metric or "—", fmt(best and best.metrics["objective"]),
                     best.path.name if best else "—"])
    return Section("Sweeps", ["sweep", "runs", "optimized metric", "best objective", "best job"], rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="DIR", nargs="?", type=Path, default=None,
                        help="output root to search (default: $BINCOUNT_LOG_DIR or ./logs)")
    parser.add_argument("--sort", default="run", metavar="COLUMN",
                        help="column or metrics.json key to sort by, e.g. test/acc (default: run, i.e. start time)")
    parser.add_argument("--desc", action="store_true", help="sort descending (best accuracy first)")
    parser.add_argument("--sweep", default=None, help="only runs of sweeps whose path contains this text")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")


def run(args: argparse.Namespace) -> int:
    err = console(stderr=True)
    root = (args.root or default_root()).expanduser()
    if not root.is_dir():  # an OSError: a failure at run time for bincount.cli (status 1)
        raise NotADirectoryError(f"{root} is not a directory (pass DIR or set BINCOUNT_LOG_DIR)")
    runs, problems, unfinished = find_runs(root)
    for problem in problems:
        err.print(plain(f"bincount runs: skipped a broken run: {problem}"), markup=False)
    if unfinished:
        dirs = "directory" if len(unfinished) == 1 else "directories"
        err.print(plain(f"bincount runs: {len(unfinished)} run {dirs} without metrics.json (still running, killed or "
                        f"failed) not listed, e.g. {unfinished[-1]}"), markup=False)
    root = root.resolve()
    runs = [Run(r.path.resolve(), r.metrics, r.config, r.overrides, r.sweep and r.sweep.resolve()) for r in runs]
    cols = columns(root)
    if args.sweep is not None:
        runs = [r for r in runs if r.sweep is not None and args.sweep in str(r.sweep.relative_to(root))]
    if args.sort not in cols:
        valid = _scalar_keys(runs)
        if args.sort not in valid:
            per_class = {k for k in valid if k.rsplit("_", 1)[-1].isdigit()}  # test/f1_3 ...: named by example
            shown = sorted(valid - per_class) + ([f"per-class keys such as {min(per_class)}"] if per_class else [])
            raise argparse.ArgumentTypeError(f"--sort {args.sort!r} is neither a column nor a metric of these runs; "
                                             f"columns: {list(cols)}; metrics: {shown}")
        cols[args.sort] = _metric(args.sort)
    runs = sort_runs(runs, args.sort, cols[args.sort], args.desc)
    if args.format in ("table", "markdown"):  # a job's path already names its sweep; the Sweeps table follows
        del cols["sweep"]
    table = Section(f"Runs under {root}" + (f" (sweep ~ {args.sweep!r})" if args.sweep else ""), list(cols),
                    [[fmt(get(r), 1 if name == "duration_s" else 4) for name, get in cols.items()] for r in runs])
    if args.format in ("table", "markdown"):  # for reading: each run's own overrides, the shared ones once below
        common, own = split_overrides(runs)
        i = list(cols).index("overrides")
        for row, mine in zip(table.rows, own):
            row[i] = " ".join(mine) or "—"
        if common:
            table.notes.append("overrides of every run listed: " + " ".join(common))
    if not runs:
        table.notes.append(f"no runs found under {root}" + (f" in sweeps matching {args.sweep!r}" if args.sweep else ""))
    sections = [s for s in (table, sweeps_section(runs, root)) if s is not None]
    if args.format == "json":
        print(json.dumps([{name: get(r) for name, get in cols.items()} for r in runs], indent=2))
    elif args.format == "csv":
        sys.stdout.write(to_csv(table))
    elif args.format == "markdown":
        print(to_markdown(sections, "bincount runs"))
    else:
        to_rich(sections, console())
    return 1 if problems and not runs else 0
