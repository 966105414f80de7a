"""Paired significance tests for two models evaluated on the same test set.

McNemar's test asks whether two classifiers' error rates differ, using only the samples on which they
disagree (``b``: A right and B wrong, ``c``: A wrong and B right). With few discordant pairs the
chi-square approximation is poor, so below ``EXACT_BELOW`` discordant pairs the exact binomial test is
used (the usual rule of thumb, e.g. b + c < 25). The chi-square form uses Edwards' continuity correction,
``(|b - c| - 1)^2 / (b + c)``, which is what reproduces the first report's 43.4 for b=208, c=367.

scipy supplies the distributions and is imported inside the functions, so that listing or diffing runs
never needs it (it is the ``analysis`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

EXACT_BELOW = 25  # b + c below this: exact binomial test instead of chi-square
SCIPY_HINT = "McNemar's test needs scipy: pip install -c constraints.txt scipy (or pass --no-stats)"


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(SCIPY_HINT) from error
    return stats


@dataclass(frozen=True)
class McNemarResult:
    """The 2x2 table (rows: A right/wrong, columns: B right/wrong) and the test's outcome."""

    both_right: int
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    both_wrong: int
    statistic: float | None  # chi-square statistic; None for the exact test
    pvalue: float
    method: str  # "exact binomial" | "chi-square (continuity corrected)" | "no discordant pairs"

    @property
    def table(self) -> list[list[int]]:
        return [[self.both_right, self.b], [self.c, self.both_wrong]]


def mcnemar_from_counts(b: int, c: int, both_right: int = 0, both_wrong: int = 0,
                        exact_below: int = EXACT_BELOW) -> McNemarResult:
    """McNemar's test from the discordant counts ``b`` and ``c`` (the concordant cells do not enter it)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:  # the models never disagree: no evidence of any difference
        return McNemarResult(both_right, b, c, both_wrong, None, 1.0, "no discordant pairs")
    stats = _scipy_stats()
    if n < exact_below:
        p = float(stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue)
        return McNemarResult(both_right, b, c, both_wrong, None, min(p, 1.0), "exact binomial")
    statistic = max(abs(b - c) - 1, 0) ** 2 / n  # clamped: the correction must not turn b == c into evidence
    p = float(stats.chi2.sf(statistic, df=1))
    return McNemarResult(both_right, b, c, both_wrong, float(statistic), p, "chi-square (continuity corrected)")


def mcnemar(true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, exact_below: int = EXACT_BELOW) -> McNemarResult:
    """McNemar's test on paired predictions of two models for the same samples (aligned arrays)."""
    true, pred_a, pred_b = (np.asarray(x).reshape(-1) for x in (true, pred_a, pred_b))
    if not (len(true) == len(pred_a) == len(pred_b)):
        raise ValueError(f"true ({len(true)}), pred_a ({len(pred_a)}) and pred_b ({len(pred_b)}) must have the same length")
    a_ok, b_ok = pred_a == true, pred_b == true
    return mcnemar_from_counts(
        b=int(np.sum(a_ok & ~b_ok)), c=int(np.sum(~a_ok & b_ok)),
        both_right=int(np.sum(a_ok & b_ok)), both_wrong=int(np.sum(~a_ok & ~b_ok)), exact_below=exact_below,
    )


@dataclass(frozen=True)
class Interval:
    """A difference ``A - B`` with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float


def paired_bootstrap(true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_boot: int = 10_000,
                     seed: int = 0, confidence: float = 0.95, chunk: int | None = None,
                     progress: Callable[[int], None] | None = None) -> dict[str, Interval]:
    """Percentile bootstrap intervals for ``acc(A) - acc(B)`` and ``rmse(A) - rmse(B)``.

    Hand-written (rather than ``scipy.stats.bootstrap``) so that one resample of test samples serves both
    differences at once, memory stays bounded on large test sets (resamples are drawn in chunks) and a
    progress callback can report on long runs. Resampling whole samples keeps the pairing: each drawn
    sample brings both models' predictions. Seeded, so the same inputs give the same interval.
    """
    true, pred_a, pred_b = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (true, pred_a, pred_b))
    n = len(true)
    if not (n == len(pred_a) == len(pred_b)):
        raise ValueError(f"true ({n}), pred_a ({len(pred_a)}) and pred_b ({len(pred_b)}) must have the same length")
    if n == 0:
        raise ValueError("the bootstrap needs at least one sample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n_boot = int(n_boot)
    ok_diff = (pred_a == true).astype(np.float64) - (pred_b == true)
    sq_a, sq_b = (pred_a - true) ** 2, (pred_b - true) ** 2
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(n_boot, 4_000_000 // n))  # about 32 MB of indices per chunk
    acc = np.empty(n_boot)
    rmse = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        acc[start:stop] = ok_diff[idx].mean(axis=1)
        rmse[start:stop] = np.sqrt(sq_a[idx].mean(axis=1)) - np.sqrt(sq_b[idx].mean(axis=1))
        if progress is not None:
            progress(stop - start)
    tail = (1 - confidence) / 2 * 100
    estimates = {"acc": float(ok_diff.mean()), "rmse": float(np.sqrt(sq_a.mean()) - np.sqrt(sq_b.mean()))}
    return {name: Interval(estimates[name], *map(float, np.percentile(draws, [tail, 100 - tail])), confidence)
            for name, draws in (("acc", acc), ("rmse", rmse))}
