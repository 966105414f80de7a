"""The study: where it is stored, which direction it optimises, and how a rerun continues it.

The default storage is ``sqlite:///<hydra.sweep.dir>/optuna.db``; a named study's sweep dir is stable
(``hparams_search`` configs derive it from the study name), so rerunning the same command finds the
same file and continues. ``sweep.json`` next to it tells ``bincount sweep-report`` where the study is.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from bincount.secrets import mask_query, query_secrets

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize", "auto")
# The last part of a metric name (val/acc -> acc) decides the direction of ``direction: auto``.
MAXIMIZE = ("acc", "f1", "within_one", "precision", "recall", "auroc", "r2", "kappa")
MINIMIZE = ("loss", "rmse", "mae", "mse", "error", "nll")
SWEEP_INFO = "sweep.json"
# The storage URL, password included, for the sweep's jobs and report: set in the sweeper's environment.
ENV_STORAGE = "BINCOUNT_OPTUNA_STORAGE"


class StudyConfigError(ValueError):
    """A sweeper setting that cannot work; the message names the value and the valid choices."""


def resolve_direction(direction: str, metric: str) -> str:
    """``direction`` checked against ``optimized_metric``: auto picks it; a contradiction is an error."""
    if direction not in DIRECTIONS:
        raise StudyConfigError(f"hydra.sweeper.direction={direction!r} is not valid; valid: {list(DIRECTIONS)}")
    leaf = metric.rsplit("/", 1)[-1]
    known = "maximize" if leaf.startswith(MAXIMIZE) else "minimize" if leaf.startswith(MINIMIZE) else None
    if direction == "auto":
        if known is None:
            raise StudyConfigError(f"cannot tell whether optimized_metric={metric!r} should be maximized or minimized "
                                   f"(known: {list(MAXIMIZE)} up, {list(MINIMIZE)} down); set "
                                   "hydra.sweeper.direction=maximize or minimize")
        return known
    if known is not None and known != direction:
        raise StudyConfigError(f"hydra.sweeper.direction={direction!r} contradicts optimized_metric={metric!r}, "
                               f"which should be {known}d; use direction=auto or {known}")
    return direction


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"


def safe_url(url: str) -> str:
    """The storage URL without its password, for logs, ``sweep.json`` and every saved config: the one after
    ``user:`` and any query parameter that carries one (``?password=``, ``&token=``; drivers read both)."""
    try:
        from sqlalchemy.engine import make_url

        return mask_query(make_url(url).render_as_string(hide_password=True))
    except Exception:  # not a URL SQLAlchemy reads: keep only its scheme when it may hold a password
        if "@" not in url and not query_secrets(url):
            return url
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def redact(text: str, url: str) -> str:
    """``text`` (an error message) with ``url`` masked and its passwords, as written or decoded, hidden:
    database drivers quote the URL or the password in their errors."""
    if not url or safe_url(url) == url:
        return text
    raw = re.search(r"://[^/@:]*:([^/@]*)@", url)
    secrets = {raw.group(1) if raw else ""}
    for _, value in query_secrets(url):
        secrets |= {value, unquote_plus(value)}
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        secrets.add(parsed.password or "")
        for key, value in parsed.query.items():  # decoded; a repeated parameter is a tuple
            if query_secrets(f"?{key}=x"):
                secrets.update([value] if isinstance(value, str) else value)
    except Exception:  # not a URL SQLAlchemy reads: the raw form is all there is
        pass
    text = text.replace(url, safe_url(url))
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def report_storage(recorded: str, given: str | None = None, env=os.environ) -> str:
    """The URL that opens a sweep's study: ``given`` (``--storage``), else ``$BINCOUNT_OPTUNA_STORAGE``
    when it is this study's (``sweep.json`` records it masked), else the recorded one. The variable
    lets the password stay out of the command line, which ``ps`` and shell histories show."""
    if given:
        return given
    from_env = env.get(ENV_STORAGE)
    return from_env if from_env and safe_url(from_env) == recorded else recorded


def open_study(storage: str, study_name: str, direction: str, sampler: Any, pruner: Any, fixed: list[str],
               space: list[str]):
    """Create or load the study; a rerun with other fixed overrides or another direction is refused,
    because mixing trials of different questions in one study silently corrupts its ranking."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    except Exception as err:  # drivers quote the URL in their errors: show it masked
        raise StudyConfigError(f"cannot open study {study_name!r} at {safe_url(storage)} ({type(err).__name__}: "
                               f"{redact(str(err), storage)})") from None
    if study.direction.name.lower() != direction:
        raise StudyConfigError(f"study {study_name!r} in {safe_url(storage)} optimises {study.direction.name.lower()}, "
                               f"this command asks for {direction}; use another hydra.sweeper.study_name")
    attrs = study.user_attrs
    if "fixed_overrides" not in attrs:
        study.set_user_attr("fixed_overrides", sorted(fixed))
        study.set_user_attr("search_space", sorted(space))
    elif sorted(attrs["fixed_overrides"]) != sorted(fixed):
        old, new = set(attrs["fixed_overrides"]), set(fixed)
        raise StudyConfigError(
            f"study {study_name!r} was started with other fixed overrides (only then: {sorted(old - new)}; "
            f"only now: {sorted(new - old)}). Rerun with the same overrides to continue it, or start a new "
            "study with hydra.sweeper.study_name=NAME")
    return study


def recover_interrupted(study) -> int:
    """Trials left RUNNING by a killed driver become FAIL (marked ``interrupted``) and are enqueued again,
    so the rerun retries them first. Assumes one driver per study (docs/sweeps.md)."""
    import optuna
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for frozen in stale:
        trial = optuna.trial.Trial(study, frozen._trial_id)
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("fail_reason", "interrupted: the sweep driver stopped before the trial ended")
        study.tell(frozen.number, state=TrialState.FAIL)
        if frozen.params:
            study.enqueue_trial(frozen.params, skip_if_exists=False)
    if stale:
        log.warning("Study %s: %d interrupted trial(s) marked FAIL and queued again", study.study_name, len(stale))
    return len(stale)


def counted_trials(study) -> int:
    """Finished trials that count towards ``n_trials`` (interrupted ones are retried, so they do not)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get("interrupted"))


def write_sweep_info(sweep_dir: Path, storage: str, study_name: str, direction: str, metric: str) -> None:
    info = {"storage": safe_url(storage), "study_name": study_name, "direction": direction, "optimized_metric": metric}
    (sweep_dir / SWEEP_INFO).write_text(json.dumps(info, indent=2) + "\n")


def read_sweep_info(sweep_dir: Path) -> dict | None:
    path = sweep_dir / SWEEP_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def running_trials(study) -> list:
    """Trials a killed driver left RUNNING, as Trial objects to launch again under the same numbers: a launcher
    that re-attaches (``reattaches = True``) finds their jobs still running, or finished, and collects them."""
    import optuna
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if stale:
        log.info("Study %s: %d trial(s) left running by an earlier driver (%s): re-attaching", study.study_name,
                 len(stale), ", ".join(str(t.number) for t in stale))
    return [optuna.trial.Trial(study, t._trial_id) for t in stale]
