"""``resume=true``: find the run to continue, so that resuming is "the same command plus a flag".

Hydra gives every run a new timestamped directory, which is why lightning-hydra-template users must
pass a checkpoint path by hand (its issue 112). The ``bincount_run_dir`` resolver, used by
``hydra.run.dir``, returns the latest earlier run directory whose overrides equal this command's
(ignoring ``resume`` itself), so the resumed run writes to the same place and finds its ``last.ckpt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def _without_resume(overrides) -> list[str]:
    return sorted(str(o) for o in overrides if not str(o).lstrip("+~").startswith("resume="))


def _current_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def find_previous_run(base: Path, overrides) -> Path | None:
    """The newest run directory under ``base`` started with the same overrides (minus ``resume``)."""
    wanted = _without_resume(overrides)
    if not base.is_dir():
        return None
    for run in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        saved = run / ".hydra" / "overrides.yaml"
        if saved.is_file() and _without_resume(yaml.safe_load(saved.read_text()) or []) == wanted:
            return run
    return None


def bincount_run_dir(base: str, stamp: str, resume: bool) -> str:
    """Resolver for ``hydra.run.dir``: a new ``base/stamp`` directory, or the run to resume."""
    if resume:
        previous = find_previous_run(Path(base), _current_overrides())
        if previous is not None:
            return str(previous)
        log.warning("resume=true: no earlier run under %s has these overrides; starting a new run", base)
    return f"{base}/{stamp}"


def last_checkpoint(run_dir: Path) -> Path | None:
    path = Path(run_dir) / LAST_CHECKPOINT
    return path if path.is_file() else None
