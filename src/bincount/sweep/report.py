"""The sweep report: every trial of a sweep dir as a table, the best trial's config, plots.

Works on any multirun dir, finished or not: an Optuna study (``sweep.json`` names it) gives states,
sampled parameters and durations; every job dir's ``metrics.json`` gives the metrics. A basic-sweeper
grid has no study, so its job dirs alone make the table (the overrides that vary are its parameters).
Writes ``<sweep_dir>/report/``: ``trials.csv``, ``best_config.yaml``, ``objective.png``,
``importances.png``; prints a rich table.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bincount.sweep.study import SWEEP_INFO, StudyConfigError, redact, resolve_direction, safe_url
from bincount.sweep.warmstart import read_info, source_storage

log = logging.getLogger(__name__)
KEY_METRICS = ("val/acc", "val/loss", "val/rmse", "val/mae", "val/f1_macro", "val/within_one", "test/acc", "test/rmse")
RERUN_HEADER = """\
# The best trial of {sweep_dir} (trial {number}, {metric} = {value}).
# Re-run it:  python train.py --config-dir {report_dir} --config-name best_config
# (or with its overrides: python train.py {overrides})
# The defaults list pulls in the project's hydra settings (run dirs); every other value is below.
defaults:
  - hydra: default
  - _self_

"""


class ReportError(RuntimeError):
    """The sweep dir cannot be reported on; the message says why and what to pass."""


@dataclass
class Trial:
    number: int
    status: str
    objective: float | None = None
    params: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    duration_s: float | None = None
    metrics: dict = field(default_factory=dict)
    job_dir: Path | None = None
    reason: str = ""
    job: dict = field(default_factory=dict)  # the SageMaker launcher's sagemaker_job.json: billing, pruning


def job_dirs(sweep_dir: Path) -> dict[int, Path]:
    """Job number -> job dir, for every subdir Hydra wrote (it has ``.hydra/overrides.yaml``)."""
    found = {}
    for p in sweep_dir.iterdir():
        if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file():
            found[int(p.name) if p.name.isdigit() else 10**6 + len(found)] = p
    return dict(sorted(found.items()))


def _metrics(job_dir: Path | None) -> dict:
    path = job_dir / "metrics.json" if job_dir else None
    return json.loads(path.read_text()) if path and path.is_file() else {}


def _job_state(job_dir: Path | None) -> dict:
    path = job_dir / "sagemaker_job.json" if job_dir else None
    try:
        return json.loads(path.read_text()) if path and path.is_file() else {}
    except ValueError:
        return {}


JOB_COLUMNS = ("billable_s", "cost_usd", "spot_saved_usd", "pruned_after_epochs", "saved_s", "saved_usd")


def billing_summary(trials: list[Trial]) -> str | None:
    """One line: what the SageMaker jobs cost, what spot saved, what pruning saved (None without jobs)."""
    jobs = [t.job for t in trials if t.job]
    if not jobs:
        return None

    def total(key: str) -> float:
        return sum(j.get(key) or 0 for j in jobs)

    line = (f"SageMaker: {len(jobs)} jobs, {total('billable_s') / 60:.1f} billable instance-minutes, "
            f"${total('cost_usd'):.2f}")
    if total("spot_saved_usd"):
        line += f" (spot saved ${total('spot_saved_usd'):.2f})"
    pruned = [j for j in jobs if j.get("status") == "Pruned"]
    if pruned:
        line += (f"; pruning stopped {len(pruned)} jobs early, about {total('saved_s') / 60:.1f} instance-minutes "
                 f"(${total('saved_usd'):.2f}) not spent")
    return line


def _overrides(job_dir: Path | None) -> list:
    path = job_dir / ".hydra" / "overrides.yaml" if job_dir else None
    return list(yaml.safe_load(path.read_text()) or []) if path and path.is_file() else []


def from_study(sweep_dir: Path, info: dict, storage: str | None):
    """Trials of the study named in ``sweep.json`` (``storage`` overrides its password-less URL)."""
    import optuna

    try:
        url = source_storage(sweep_dir, info["storage"], given=storage, asked_by=f"bincount sweep-report {sweep_dir}",
                             how_to_pass="--storage URL")
    except StudyConfigError as e:
        raise ReportError(str(e)) from None
    try:
        study = optuna.load_study(study_name=info["study_name"], storage=url)
    except Exception as err:  # a masked password, a server out of reach, a deleted file
        raise ReportError(f"cannot open study {info['study_name']!r} at {safe_url(url)} ({type(err).__name__}: "
                          f"{redact(str(err), url)}); pass its storage URL in $BINCOUNT_OPTUNA_STORAGE "
                          "(or with --storage)") from None
    dirs = job_dirs(sweep_dir)
    trials = []
    for t in study.get_trials(deepcopy=False):
        job = Path(t.user_attrs["job_dir"]) if t.user_attrs.get("job_dir") else dirs.get(t.number)
        metrics = _metrics(job)
        end = t.datetime_complete
        duration = (end - t.datetime_start).total_seconds() if end and t.datetime_start else metrics.get("duration_s")
        trials.append(Trial(t.number, t.state.name, t.value, dict(t.params), list(t.user_attrs.get("overrides", [])),
                            duration, metrics, job, t.user_attrs.get("fail_reason", ""), _job_state(job)))
    return study, trials


def from_job_dirs(sweep_dir: Path) -> list[Trial]:
    """A grid's trials: COMPLETE with ``metrics.json``, INCOMPLETE (failed or still running) without."""
    trials = []
    for number, job in job_dirs(sweep_dir).items():
        metrics, overrides = _metrics(job), _overrides(job)
        status = "COMPLETE" if "objective" in metrics else "INCOMPLETE"
        trials.append(Trial(number, status, metrics.get("objective"), {}, overrides, metrics.get("duration_s"),
                            metrics, job, "" if metrics else "no metrics.json: failed or still running", _job_state(job)))
    varying = _varying(trials)
    for t in trials:
        t.params = {k: v for k, v in (o.split("=", 1) for o in t.overrides if "=" in o) if k in varying}
    return trials


def _varying(trials: list[Trial]) -> set[str]:
    values: dict[str, set] = {}
    for t in trials:
        for o in t.overrides:
            if "=" in o:
                k, v = o.split("=", 1)
                values.setdefault(k, set()).add(v)
    return {k for k, v in values.items() if len(v) > 1 or any(k not in {o.split("=", 1)[0] for o in t.overrides}
                                                              for t in trials)}


def best_trial(trials: list[Trial], direction: str) -> Trial | None:
    done = [t for t in trials if t.status == "COMPLETE" and t.objective is not None]
    if not done:
        return None
    return (max if direction == "maximize" else min)(done, key=lambda t: t.objective)


def write_csv(path: Path, trials: list[Trial]) -> None:
    params = sorted({k for t in trials for k in t.params})
    metrics = [k for k in KEY_METRICS if any(k in t.metrics for t in trials)]
    jobs = [k for k in JOB_COLUMNS if any(t.job.get(k) is not None for t in trials)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "status", "objective", "duration_s", *params, *metrics, *jobs, "overrides", "job_dir",
                    "reason"])
        for t in trials:
            w.writerow([t.number, t.status, t.objective, t.duration_s, *(t.params.get(p) for p in params),
                        *(t.metrics.get(m) for m in metrics), *(t.job.get(k) for k in jobs), " ".join(t.overrides),
                        t.job_dir or "", t.reason or t.job.get("reason") or ""])


def single_run_overrides(trial: Trial) -> list[str]:
    """The trial's overrides as one run: ``hparams_search=X`` would start the sweep again (it sets
    ``hydra.mode: MULTIRUN``), so it is replaced by the experiment it selected."""
    overrides = [o for o in trial.overrides if not o.startswith(("hparams_search=", "+hydra.", "hydra."))]
    hydra_yaml = trial.job_dir / ".hydra" / "hydra.yaml" if trial.job_dir else None
    if len(overrides) < len(trial.overrides) and hydra_yaml and hydra_yaml.is_file():
        choices = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("choices", {})
        experiment = choices.get("experiment")
        if experiment and not any(o.startswith("experiment=") for o in overrides):
            overrides.insert(0, f"experiment={experiment}")
    return overrides


def write_best_config(report_dir: Path, best: Trial, metric: str, sweep_dir: Path) -> Path | None:
    source = best.job_dir / ".hydra" / "config.yaml" if best.job_dir else None
    if not source or not source.is_file():
        log.warning("Best trial %d has no .hydra/config.yaml; no best_config.yaml", best.number)
        return None
    header = RERUN_HEADER.format(sweep_dir=sweep_dir, number=best.number, metric=metric, value=best.objective,
                                 report_dir=report_dir, overrides=" ".join(single_run_overrides(best)))
    out = report_dir / "best_config.yaml"
    out.write_text(header + source.read_text())
    return out


def write_report(sweep_dir: Path, storage: str | None = None, console=None) -> Path:
    """Write ``<sweep_dir>/report/`` and print the table; returns the report dir."""
    from bincount.sweep import plots
    from bincount.sweep.table import print_table

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {sweep_dir} does not exist")
    info, study = None, None
    if (sweep_dir / SWEEP_INFO).is_file():
        try:
            info = read_info(sweep_dir, asked_by=f"bincount sweep-report {sweep_dir}")
        except StudyConfigError as e:
            raise ReportError(str(e)) from None
        if not isinstance(info.get("optimized_metric"), str) or info.get("direction") not in ("minimize", "maximize"):
            raise ReportError(f"bincount sweep-report {sweep_dir}: its {SWEEP_INFO} has no optimized_metric or no "
                              "direction (minimize|maximize); it was not written by a bincount_optuna sweep")
    if info:
        study, trials = from_study(sweep_dir, info, storage)
        metric, direction = info["optimized_metric"], info["direction"]
    else:
        trials = from_job_dirs(sweep_dir)
        metric = next((t.metrics["optimized_metric"] for t in trials if "optimized_metric" in t.metrics), "val/acc")
        try:
            direction = resolve_direction("auto", metric)
        except ValueError:
            direction = "maximize"
    if not trials:
        raise FileNotFoundError(f"{sweep_dir} has no trials: no study (sweep.json) and no job dirs with .hydra/")
    report_dir = sweep_dir / "report"
    report_dir.mkdir(exist_ok=True)
    write_csv(report_dir / "trials.csv", trials)
    best = best_trial(trials, direction)
    if best is not None:
        write_best_config(report_dir, best, metric, sweep_dir)
    plots.objective_plot(report_dir / "objective.png", trials, metric, direction)
    note = plots.importance_plot(report_dir / "importances.png", study, trials, direction)
    print_table(trials, metric, best, report_dir, note, console=console, footer=billing_summary(trials))
    return report_dir
