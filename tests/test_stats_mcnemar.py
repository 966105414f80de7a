"""McNemar's test and the paired bootstrap in ``bincount.compare.stats``, checked against scipy and known numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from bincount.compare.stats import EXACT_BELOW, mcnemar, mcnemar_from_counts, paired_bootstrap


def test_reproduces_first_report_table():
    """The first report: b=208, c=367 discordant pairs -> chi-square 43.4, p < 0.0001."""
    result = mcnemar_from_counts(208, 367)
    assert result.method.startswith("chi-square")
    assert result.statistic == pytest.approx(158 ** 2 / 575)
    assert round(result.statistic, 1) == 43.4
    assert result.pvalue < 1e-4
    assert result.pvalue == pytest.approx(sps.chi2.sf(43.4156, 1), rel=1e-3)


@pytest.mark.parametrize("b,c", [(0, 5), (3, 9), (7, 7), (12, 2), (1, 0), (20, 4)])
def test_small_counts_use_exact_binomial_matching_scipy(b, c):
    assert b + c < EXACT_BELOW
    result = mcnemar_from_counts(b, c)
    assert result.method == "exact binomial" and result.statistic is None
    assert result.pvalue == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue)


def test_switches_to_chi_square_at_threshold():
    assert mcnemar_from_counts(13, 12).method == "chi-square (continuity corrected)"
    assert mcnemar_from_counts(13, 12).pvalue == pytest.approx(1.0)  # |b - c| - 1 = 0
    assert mcnemar_from_counts(20, 20).pvalue == pytest.approx(1.0)  # the correction is clamped at 0
    assert mcnemar_from_counts(12, 12).method == "exact binomial"


def test_no_discordant_pairs_is_p_one():
    result = mcnemar_from_counts(0, 0, both_right=10)
    assert result.pvalue == 1.0 and result.method == "no discordant pairs"


def test_table_from_predictions():
    true = np.array([1, 2, 3, 4, 5, 1, 2])
    a = np.array([1, 2, 3, 0, 0, 0, 2])  # right on 0,1,2,6
    b = np.array([1, 0, 3, 4, 0, 1, 0])  # right on 0,2,3,5
    result = mcnemar(true, a, b)
    assert result.table == [[2, 2], [2, 1]]
    with pytest.raises(ValueError, match="same length"):
        mcnemar(true, a[:3], b)


def test_negative_counts_refused():
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_from_counts(-1, 3)


def _synthetic(n, acc_a, acc_b, seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(1, 6, size=n)
    a = np.where(rng.random(n) < acc_a, true, true + 1)
    b = np.where(rng.random(n) < acc_b, true, true + 2)
    return true, a, b


def test_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    true, a, b = _synthetic(300, 0.8, 0.7, seed=1)
    first = paired_bootstrap(true, a, b, n_boot=500, seed=7)
    assert first == paired_bootstrap(true, a, b, n_boot=500, seed=7)
    assert first == paired_bootstrap(true, a, b, n_boot=500, seed=7, chunk=33)  # chunking does not change draws
    assert first != paired_bootstrap(true, a, b, n_boot=500, seed=8)


def test_bootstrap_covers_true_difference():
    """Model A is right with p=0.8 (error 1), B with p=0.7 (error 2): acc diff 0.1, RMSE diff sqrt(.2)-sqrt(1.2)."""
    true_acc, true_rmse = 0.1, np.sqrt(0.2) - np.sqrt(0.3 * 4)
    hits_acc = hits_rmse = 0
    for rep in range(40):
        true, a, b = _synthetic(400, 0.8, 0.7, seed=100 + rep)
        ci = paired_bootstrap(true, a, b, n_boot=400, seed=rep)
        assert ci["acc"].low <= ci["acc"].estimate <= ci["acc"].high
        hits_acc += ci["acc"].low <= true_acc <= ci["acc"].high
        hits_rmse += ci["rmse"].low <= true_rmse <= ci["rmse"].high
    assert hits_acc >= 34 and hits_rmse >= 34  # nominal 95% of 40 = 38; binomial slack


def test_bootstrap_matches_scipy_percentile_interval():
    true, a, b = _synthetic(500, 0.75, 0.7, seed=3)
    ours = paired_bootstrap(true, a, b, n_boot=4000, seed=0)["acc"]
    diff = (a == true).astype(float) - (b == true)
    ref = sps.bootstrap((diff,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(1)).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=0.01) and ours.high == pytest.approx(ref.high, abs=0.01)


@pytest.mark.parametrize("kwargs,match", [({"confidence": 1.5}, "confidence"), ({"n_boot": 0}, "n_boot")])
def test_bootstrap_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap([1, 2], [1, 2], [1, 1], **kwargs)


def test_long_bootstrap_with_progress_bar_gives_the_same_interval():
    """compare's progress-bar path (large test set x resamples) must not change the numbers."""
    from bincount.compare.compare import _bootstrap

    true, a, b = _synthetic(2000, 0.8, 0.7, seed=5)
    with_bar = _bootstrap(true, a, b, n_boot=10_000, seed=3, confidence=0.95)
    assert with_bar == paired_bootstrap(true, a, b, n_boot=10_000, seed=3)
