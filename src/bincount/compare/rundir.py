"""Reading finished run directories: ``metrics.json``, the config, the overrides and ``predictions.csv``.

A run directory is what ``train.py`` leaves behind (see docs/architecture.md): ``metrics.json`` plus
``.hydra/config.yaml`` and/or ``resolved_config.yaml``. A sweep is the directory holding the jobs of one
multirun (Hydra writes ``multirun.yaml`` there). Damaged files raise :class:`RunError` naming the file, so
that a listing can report one broken run and go on with the rest.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILES = ("resolved_config.yaml", ".hydra/config.yaml")  # resolved values first: real paths, not ${...}
SKIP_DIRS = {"checkpoints", "csv", "tensorboard", "wandb", "lightning_logs", "__pycache__"}
# Keys that differ between any two runs by construction; showing them as "config differences" is noise.
RUN_SPECIFIC_KEYS = {"paths.output_dir", "trainer.default_root_dir"}
# What a path inside the run's own directory is shown as (``<run dir>/checkpoints``): such values differ
# between any two runs by construction, and are the same setting once the directory is factored out.
RUN_DIR = "<run dir>"


class RunError(ValueError):
    """A run directory or one of its files cannot be used; the message names the file."""


@dataclass
class Run:
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]  # flattened, dotted keys
    overrides: list[str] = field(default_factory=list)
    sweep: Path | None = None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists stay values (a list of layers is one setting)."""
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node} if prefix else {}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RunError(f"{path}: unreadable YAML ({type(error).__name__}: {str(error).splitlines()[0]})") from error


def sweep_of(path: Path) -> Path | None:
    """The multirun directory a job belongs to (``multirun.yaml`` beside it, or Hydra's ``multiruns/<time>/<n>``)."""
    parent = path.parent
    if (parent / "multirun.yaml").is_file() or parent.parent.name == "multiruns":
        return parent
    return None


def read_metrics(path: Path) -> dict[str, Any]:
    """A run directory's ``metrics.json``; :class:`RunError` names the missing or malformed file."""
    if not path.is_dir():
        raise RunError(f"{path}: not a directory (it does not exist or is a file)")
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        found = sorted(p.name for p in path.iterdir())[:12]
        raise RunError(f"{metrics_file}: missing; with no metrics.json, {path} is not a finished run directory "
                       f"(it holds {found}; an unfinished or failed run? train.py writes it at the end)")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{metrics_file}: malformed JSON ({error})") from error
    if not isinstance(metrics, dict):
        raise RunError(f"{metrics_file}: expected a JSON object of metrics, got {type(metrics).__name__}")
    return metrics


def read_overrides(path: Path) -> list[str]:
    """The Hydra overrides a run was started with (``.hydra/overrides.yaml``; none for other runs)."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = _read_yaml(overrides_file) if overrides_file.is_file() else []
    if not isinstance(overrides, list):
        raise RunError(f"{overrides_file}: expected a list of overrides, got {type(overrides).__name__}")
    return [str(o) for o in overrides]


def load_run(path: str | Path) -> Run:
    """Read one run directory; :class:`RunError` names the missing or malformed file."""
    path = Path(path)
    metrics = read_metrics(path)
    config_file = next((path / name for name in CONFIG_FILES if (path / name).is_file()), None)
    if config_file is None:
        raise RunError(f"{path}: no config ({' or '.join(CONFIG_FILES)})")
    config = _read_yaml(config_file) or {}
    if not isinstance(config, dict):
        raise RunError(f"{config_file}: expected a mapping, got {type(config).__name__}")
    overrides = read_overrides(path)
    recorded = flatten(config)
    # The run's own directory, as found and as its config recorded it (a copied run keeps the original's).
    own = sorted({str(path), str(path.resolve()), str(recorded.get("paths.output_dir") or path)}, key=len, reverse=True)

    def relative(value: Any) -> Any:
        for d in own if isinstance(value, str) else ():
            if value == d or value.startswith(d + "/"):
                return RUN_DIR + value[len(d):]
        return value

    flat = {k: relative(v) for k, v in recorded.items() if k not in RUN_SPECIFIC_KEYS}
    return Run(path, metrics, flat, overrides, sweep_of(path))


def find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """Directories under ``root`` (``root`` included) with a ``metrics.json``, and those with only Hydra's
    ``.hydra/config.yaml`` (running, killed or failed runs), both sorted by path (= start time)."""
    finished, unfinished = [], []
    for current, dirs, _files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        here = Path(current)
        if (here / "metrics.json").is_file():
            finished.append(here)
        elif (here / ".hydra" / "config.yaml").is_file():
            unfinished.append(here)
    return sorted(finished), sorted(unfinished)


def find_runs(root: str | Path) -> tuple[list[Run], list[str], list[Path]]:
    """Load every run under ``root``. Broken ones become messages (file named) instead of stopping the rest;
    unfinished ones (no ``metrics.json`` yet) are returned by path so that the caller can say so."""
    runs, problems = [], []
    finished, unfinished = find_run_dirs(Path(root))
    for path in finished:
        try:
            runs.append(load_run(path))
        except RunError as error:
            problems.append(str(error))
    return runs, problems, unfinished


def split_overrides(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """The overrides every run shares, and each run's own: a sweep's 12 shared overrides hide its 1 swept one."""
    if not runs:
        return [], []
    common = [o for o in runs[0].overrides if all(o in r.overrides for r in runs[1:])] if len(runs) > 1 else []
    return common, [[o for o in r.overrides if o not in common] for r in runs]


def read_predictions(path: Path) -> dict[str, tuple[int, int]]:
    """``predictions.csv`` as ``{id: (true_count, pred_count)}``.

    Read here with the csv module rather than ``bincount.metrics.read_predictions_csv``, which imports
    torch (seconds) for what is a three-column read; the probability columns are not needed.
    """
    if not path.is_file():
        raise RunError(f"{path}: missing (was the run trained with test=false?); "
                       "pass --no-stats to compare only configs and metrics")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as error:
        raise RunError(f"{path}: unreadable ({error})") from error
    header = rows[0] if rows else None
    if header is None or header[:3] != ["id", "true_count", "pred_count"]:
        raise RunError(f"{path}: not a predictions.csv (header {header!r}; expected id,true_count,pred_count,prob_...)")
    out: dict[str, tuple[int, int]] = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            id_, true, pred = row[0], int(row[1]), int(row[2])
        except (IndexError, ValueError) as error:
            raise RunError(f"{path}:{line}: malformed row {row[:3]!r} (expected id,true_count,pred_count)") from error
        if id_ in out:
            raise RunError(f"{path}:{line}: duplicate id {id_!r}")
        out[id_] = (true, pred)
    return out
