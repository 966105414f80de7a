"""A training log with only what a user can act on (issue 17: quiet logs).

Lightning prints an advert for its hosted logger, the same hardware lines again for the evaluation
Trainer, and warnings that a bincount user cannot act on (a deprecation inside Lightning's own pytree
helper; "fewer batches than log_every_n_steps" on small datasets, where epoch metrics are logged anyway).
Standard ``logging`` filters and ``warnings`` filters do it, scoped to those exact messages, so anything
else Lightning says still shows.
"""

from __future__ import annotations

import logging
import warnings

LIGHTNING_RANK_ZERO = "lightning.pytorch.utilities.rank_zero"
DROPPED = ("💡 Tip:", "Trainer already configured with model summary callbacks")
ONCE = ("GPU available:", "TPU available:", "HPU available:")  # the same for every Trainer of a process
# (message regex, category): torch deprecated LeafSpec, and Lightning's own _pytree still builds one in
# every training and predict step (a FutureWarning printed by `bincount predict` and every run).
IGNORED_WARNINGS = ((r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
                    (r"The number of training batches \(\d+\) is smaller than the logging interval", Warning))


class LightningNoise(logging.Filter):
    """Drops Lightning's advert and repeated hardware lines; lets everything else through."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(DROPPED):
            return False
        if message.startswith(ONCE):
            if message in self.seen:
                return False
            self.seen.add(message)
        return True


def quiet_lightning() -> None:
    """Install the filters once per process (idempotent: a sweep's in-process jobs call it again)."""
    logger = logging.getLogger(LIGHTNING_RANK_ZERO)
    if not any(isinstance(f, LightningNoise) for f in logger.filters):
        logger.addFilter(LightningNoise())
    for message, category in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
