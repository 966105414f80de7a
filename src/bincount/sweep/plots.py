"""Sweep report plots: objective per trial and parameter importances (matplotlib, Agg, imported lazily).

Importances come from Optuna's default evaluator on the study, or on an in-memory study built
from a grid's job dirs (categorical parameters). Too few completed trials, or nothing that varies, is a
note in the report instead of a plot: a small study is normal, not an error.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def objective_plot(path: Path, trials: list, metric: str, direction: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [(t.number, t.objective) for t in trials if t.status == "COMPLETE" and t.objective is not None]
    if done:
        xs, ys = zip(*done)
        ax.scatter(xs, ys, label="complete", color="tab:blue")
        pick = max if direction == "maximize" else min
        best = [pick(ys[: i + 1]) for i in range(len(ys))]
        ax.step(xs, best, where="post", color="tab:orange", label=f"best so far ({direction})")
    others = {s: [t.number for t in trials if t.status == s] for s in ("PRUNED", "FAIL", "INCOMPLETE", "RUNNING")}
    for status, numbers in others.items():
        for n in numbers:
            ax.axvline(n, color="tab:red" if status == "FAIL" else "tab:gray", alpha=0.3, lw=1)
    counts = ", ".join(f"{len(v)} {k.lower()}" for k, v in others.items() if v)
    ax.set(xlabel="trial", ylabel=metric, title=f"{metric} per trial" + (f" ({counts}: vertical lines)" if counts else ""))
    if done:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _grid_study(trials: list, direction: str):
    """An in-memory study from a grid's job dirs, so Optuna's importance evaluator can read it."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    done = [t for t in trials if t.status == "COMPLETE" and t.objective is not None and t.params]
    keys = sorted({k for t in done for k in t.params})
    choices = {k: sorted({str(t.params.get(k)) for t in done}) for k in keys}
    study = optuna.create_study(direction=direction)
    for t in done:
        study.add_trial(optuna.trial.create_trial(
            params={k: str(t.params.get(k)) for k in keys},
            distributions={k: CategoricalDistribution(choices[k]) for k in keys}, value=t.objective))
    return study


def importance_plot(path: Path, study, trials: list, direction: str) -> str:
    """Write the importances plot; return a one-line note (what was plotted, or why nothing was)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = study if study is not None else _grid_study(trials, direction)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        path.unlink(missing_ok=True)
        return f"no parameter importances: {len(complete)} completed trial(s), need at least 2"
    try:
        with warnings.catch_warnings():  # "importances will be equal" on tiny studies: the plot shows it
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except Exception as err:  # e.g. no parameter varies among completed trials
        path.unlink(missing_ok=True)
        return f"no parameter importances: {type(err).__name__}: {err}"
    if not importances:
        path.unlink(missing_ok=True)
        return "no parameter importances: no parameter varies among the completed trials"
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set(xlabel="importance (Optuna's default evaluator, normalised)", title=f"parameter importances ({len(complete)} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"parameter importances from {len(complete)} completed trials: {path.name}"
