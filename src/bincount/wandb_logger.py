"""Weights & Biases logging that works without an account, groups sweeps, and leaks no credentials.

Lightning's ``WandbLogger`` does the logging; this subclass adds what a run of this project needs:

* **mode**: ``WANDB_MODE`` from the environment always wins (``disabled`` turns W&B off entirely);
  else the config's ``mode``; else ``online`` when an API key is available (``WANDB_API_KEY``, a
  ``wandb login`` netrc entry, or an identity token file) and ``offline`` otherwise, with a log line
  that says how to upload the run later (``wandb sync DIR``). A training job never blocks on a login
  prompt and never fails for want of an account.
* **names from Hydra**: ``name: auto`` names a run after its overrides; ``group: auto`` puts every job of
  a multirun into one group named after the sweep directory, so a sweep is one comparable group in the
  dashboard. The W&B run id derives from the run directory, so ``resume=true`` continues the same run.
* **results at the end**: :meth:`log_results` adds the test confusion matrix and a per-class table as
  W&B objects and the final numbers to the run summary, then finishes the run (a multirun executes its
  jobs in one process; an unfinished run would swallow the next job's logs).

The API key is never a parameter: it comes from the environment or W&B's own login only, so it never
reaches a config file, Hydra's overrides or the logged hyperparameters.
"""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union
from urllib.parse import urlparse

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled", "shared")
_ALIASES = {"dryrun": "offline", "run": "online"}  # spellings W&B itself accepts for WANDB_MODE


def has_credentials() -> bool:
    """True when W&B can authenticate without asking: env key, identity token file, or a netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(configured: Optional[str]) -> str:
    """The W&B mode for this run (see the module docstring for the order of precedence)."""
    env = os.environ.get("WANDB_MODE")
    for source, value in (("WANDB_MODE", env), ("logger.wandb.mode", configured)):
        if value:
            mode = _ALIASES.get(value.strip().lower(), value.strip().lower())
            if mode not in MODES:
                raise ValueError(f"{source}={value!r} is not a W&B mode; valid: {list(MODES)}")
            return mode
    return "online" if has_credentials() else "offline"


def _hydra_job() -> Optional[Any]:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def auto_group(task_name: str = "train") -> Optional[str]:
    """One group per sweep: ``<task>-<sweep dir name>`` for multirun jobs, none for single runs."""
    from hydra.types import RunMode

    hc = _hydra_job()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return None
    return f"{task_name}-{Path(hc.sweep.dir).name}"


def swept_overrides(task_overrides: Sequence[str], argv: Sequence[str]) -> list[str]:
    """The overrides that make this job differ from its siblings: those not typed verbatim on the
    command line (``head=coral`` from ``head=linear,coral``, or a value Optuna sampled)."""
    given = set(argv)
    varying = [o for o in task_overrides if o not in given]
    return varying or list(task_overrides)


def auto_name(save_dir: str) -> str:
    """What sets the job apart (``0:head=coral``) in a multirun; the overrides (or directory) otherwise."""
    import sys

    from hydra.types import RunMode

    hc = _hydra_job()
    if hc is None:
        return Path(save_dir).name
    if hc.mode == RunMode.MULTIRUN:
        name = f"{hc.job.num}:" + ",".join(swept_overrides(list(hc.overrides.task), sys.argv[1:]))
    else:
        name = ",".join(hc.overrides.task) or Path(hc.runtime.output_dir).name
    return name[:120]  # W&B truncates long names in its tables anyway


def run_id(save_dir: str, project: str) -> str:
    """Stable per run directory, so that ``resume=true`` (same directory) continues the same W&B run."""
    return hashlib.sha1(f"{project}|{Path(save_dir).resolve()}".encode()).hexdigest()[:16]


class BinCountWandbLogger(WandbLogger):
    """``WandbLogger`` with automatic offline mode, sweep groups and end-of-run results (module docstring)."""

    def __init__(self, project: str = "bincount", entity: Optional[str] = None, name: Optional[str] = "auto",
                 group: Optional[str] = "auto", job_type: Optional[str] = "train", tags: Sequence[str] = (),
                 notes: Optional[str] = None, save_dir: str = ".", mode: Optional[str] = None,
                 log_model: Union[bool, str] = False, task_name: str = "train") -> None:
        self.mode = resolve_mode(mode)
        if self.mode == "offline" and not os.environ.get("WANDB_MODE") and not mode:
            log.info("W&B: no API key found (WANDB_API_KEY or `wandb login`), logging offline under %s/wandb; "
                     "upload later with `wandb sync %s/wandb/offline-run-*`", save_dir, save_dir)
        super().__init__(
            name=auto_name(save_dir) if name == "auto" else name, save_dir=save_dir, project=project,
            id=run_id(save_dir, project), log_model=log_model, entity=entity,
            group=auto_group(task_name) if group == "auto" else group, job_type=job_type,
            tags=list(tags or []), notes=notes, mode=self.mode,
        )
        self._wandb_init.pop("anonymous", None)  # Lightning passes None; W&B warns that it is deprecated

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            import wandb

            if wandb.run is not None:  # Lightning would silently reuse it: a previous job's run
                log.warning("W&B: finishing run %s left open by an earlier job in this process", wandb.run.id)
                wandb.run.finish()
            if self.mode == "online":
                try:
                    return super().experiment
                except Exception as err:  # noqa: BLE001 - no network or a rejected key must not end training
                    log.warning("W&B: could not start an online run (%s: %s); logging offline instead, upload "
                                "later with `wandb sync %s/wandb/offline-run-*`", type(err).__name__,
                                str(err).splitlines()[0][:200], self._save_dir)
                    self.mode = self._wandb_init["mode"] = "offline"
                    wandb.teardown()  # the service still holds the failed run's id
                    self._experiment = None
        return super().experiment

    @property
    def disabled(self) -> bool:
        return self.mode == "disabled"

    def log_results(self, metrics: dict) -> None:
        """Final numbers to the summary, the test confusion matrix and per-class table as W&B objects."""
        if self.disabled:
            return
        import wandb

        run = self.experiment
        run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for split in ("test", "val"):
            counts = sorted(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith(f"{split}/support_"))
            matrix = metrics.get(f"{split}/confusion_matrix")
            if not counts:
                continue
            rows = [[c, *(metrics.get(f"{split}/{m}_{c}") for m in ("precision", "recall", "f1", "support"))]
                    for c in counts]
            objects = {f"{split}/per_class": wandb.Table(columns=["count", "precision", "recall", "f1", "support"],
                                                         data=rows)}
            if matrix and len(matrix) == len(counts):
                # wandb.plot.confusion_matrix wants pairs; the matrix holds their counts.
                pairs = [(i, j) for i, row in enumerate(matrix) for j, n in enumerate(row) for _ in range(int(n))]
                objects[f"{split}/confusion_matrix"] = wandb.plot.confusion_matrix(
                    y_true=[p[0] for p in pairs], preds=[p[1] for p in pairs], class_names=[str(c) for c in counts],
                    title=f"{split} confusion matrix (rows: true count)")
            run.log(objects)

    def finish(self) -> None:
        """End the W&B run (uploads finish here online) and say where an offline run waits for ``wandb sync``."""
        if self._experiment is None:
            return
        if self.disabled:  # finishing a disabled run writes nothing; it frees wandb.run for the next job
            self._experiment.finish()
            self._experiment = None
            return
        run_dir = getattr(self._experiment, "dir", None)
        self._experiment.finish()
        self._experiment = None
        if self.mode == "offline" and run_dir:
            log.info("W&B offline run saved; upload it with: wandb sync %s", Path(run_dir).parent)
