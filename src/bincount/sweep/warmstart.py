"""``hydra.sweeper.warm_start=DIR``: seed a new study with the finished trials of the sweep in ``DIR``.

Which study to read comes from ``DIR/sweep.json``, a file in a directory that may have been copied from a
colleague, a bucket or an old machine. Opening whatever storage URL it names would let that file make the
sweeper create a database file anywhere, or connect to a server of its choosing. So the URL it records is
opened only when it is that sweep's own SQLite file (inside ``DIR``, and there), or when the user passed
that URL: ``hydra.sweeper.warm_start_storage``, this sweep's own ``hydra.sweeper.storage``, or
``$BINCOUNT_OPTUNA_STORAGE`` (the last two compared in masked form, as ``sweep.json`` records them).
Every refusal is one line naming the masked URL and what to do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from bincount.sweep.study import ENV_STORAGE, SWEEP_INFO, StudyConfigError, redact, safe_url
from bincount.text import plain

log = logging.getLogger(__name__)
KEY = "hydra.sweeper.warm_start"
STORAGE_KEY = "hydra.sweeper.warm_start_storage"


def read_info(sweep_dir: Path, asked_by: str = "") -> dict:
    """``sweep_dir/sweep.json``, with the ``study_name`` and ``storage`` a study needs; one-line errors naming
    ``asked_by`` (the setting or command that read it)."""
    asked_by = asked_by or f"{KEY}={sweep_dir}"
    path = sweep_dir / SWEEP_INFO
    if not path.is_file():
        raise StudyConfigError(f"{asked_by}: no {SWEEP_INFO} there (a bincount_optuna sweep dir has one)")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StudyConfigError(f"{asked_by}: {path} is not readable JSON ({type(e).__name__}: "
                               f"{' '.join(str(e).split())})") from None
    missing = [k for k in ("study_name", "storage") if not (isinstance(info, dict) and isinstance(info.get(k), str)
                                                           and info[k])]
    if missing:
        raise StudyConfigError(f"{asked_by}: {path} has no {' or '.join(missing)} (a non-empty string each); "
                               "it was not written by a bincount_optuna sweep")
    return info


def own_sqlite(sweep_dir: Path, url: str) -> Path | None:
    """The database file when ``url`` is a plain SQLite URL of an existing file inside ``sweep_dir`` (links
    resolved, relative paths from the working directory, as SQLite opens them); otherwise None."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    name = parsed.database or ""
    # a query (``?uri=true`` makes the name a URI, ``?mode=...``) or an in-memory database is not a file here
    if parsed.get_backend_name() != "sqlite" or parsed.query or name in ("", ":memory:") or name.startswith("file:"):
        return None
    path = Path(name).resolve()
    return path if path.is_file() and path.is_relative_to(sweep_dir.resolve()) else None


def source_storage(sweep_dir: Path, recorded: str, given: str | None = None, current: str | None = None,
                   env: Mapping[str, str] = os.environ, asked_by: str = "", how_to_pass: str = "") -> str:
    """The URL that opens the study to read: ``given`` (the user's ``warm_start_storage``, or the report's
    ``--storage``); else this sweep's ``current`` storage or ``$BINCOUNT_OPTUNA_STORAGE`` when ``recorded`` is
    its masked form; else ``recorded`` if it is the sweep's own SQLite file. StudyConfigError for anything
    else, nothing opened. The environment variable keeps a password out of the command line."""
    if given:
        return given
    for candidate in (current, env.get(ENV_STORAGE)):
        if candidate and safe_url(candidate) == recorded:
            return candidate
    if own_sqlite(sweep_dir, recorded) is not None:
        return recorded
    raise StudyConfigError(
        f"{asked_by or f'{KEY}={sweep_dir}'}: its {SWEEP_INFO} names the storage {plain(safe_url(recorded))!r}, which "
        f"is not that sweep's own SQLite file in {sweep_dir}; not opened (whoever wrote {SWEEP_INFO} chose that URL). "
        f"If that study is yours, pass its URL: {how_to_pass or f'{STORAGE_KEY}=URL'} (or {ENV_STORAGE}=URL when it "
        "holds a password)")


def check_given(url: str | None) -> None:
    """``warm_start_storage`` is saved in ``multirun.yaml`` and each job's ``.hydra/``: no password in it."""
    if url and safe_url(url) != url:
        raise StudyConfigError(f"{STORAGE_KEY}={safe_url(url)!r} holds a password, which Hydra would save in "
                               f"multirun.yaml; set {ENV_STORAGE}=URL instead (it is used when the sweep's "
                               f"{SWEEP_INFO} records that URL, masked)")


def warm_start(study, sweep_dir: Path, distributions: dict, given: str | None = None,
               current: str | None = None) -> int:
    """Seed an empty ``study`` with the finished trials of the study in ``sweep_dir`` (its ``sweep.json``).

    Only trials whose parameters all lie in this search space are copied (a trial from another space would
    mislead the sampler); each keeps its value and is marked ``warm_start_from``. Returns how many.
    """
    import optuna
    from optuna.trial import TrialState

    sweep_dir = Path(sweep_dir)
    info = read_info(sweep_dir)
    if study.get_trials(deepcopy=False):
        log.info("Study %s already has trials: warm_start=%s is not applied again", study.study_name, sweep_dir)
        return 0
    storage = source_storage(sweep_dir, info["storage"], given, current)
    old = _load(info["study_name"], storage, sweep_dir)
    copied = skipped = 0
    for t in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not _fits(distributions, t.params):
            skipped += 1
            continue
        study.add_trial(optuna.trial.create_trial(params=t.params, distributions=distributions, value=t.value,
                                                  user_attrs={"warm_start_from": f"{sweep_dir}#{t.number}"}))
        copied += 1
    log.info("Study %s: warm start from %s: %d trial(s) copied, %d outside this search space skipped",
             study.study_name, sweep_dir, copied, skipped)
    return copied


def _fits(distributions: dict, params: dict) -> bool:
    """Whether an earlier trial's params are a point of this search space (the same names, each value inside)."""
    if set(params) != set(distributions):
        return False
    try:
        return all(distributions[k]._contains(distributions[k].to_internal_repr(v)) for k, v in params.items())
    except (ValueError, TypeError):  # a choice this space no longer has, or a value of another kind
        return False


def _load(study_name: str, storage: str, sweep_dir: Path) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except Exception as err:  # KeyError for a missing study; drivers quote the URL in theirs: one line, masked
        reason = " ".join(redact(str(err), storage).split())
        raise StudyConfigError(f"{KEY}={sweep_dir}: cannot load study {plain(study_name)!r} from "
                               f"{safe_url(storage)} ({type(err).__name__}: {reason})") from None
