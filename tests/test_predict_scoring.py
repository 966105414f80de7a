"""``bincount predict``'s scores on an ABID root, against numbers worked out by hand (issue 25).

Why a model that always says 3: with random weights the predictions, and so the expected scores, would
come out of the code under test. A bundle whose head ignores the image (zero weights, one large bias) makes
every prediction 3, so the true counts alone decide each error: off by 0, 1, 2, and the policy's cases
(below ``min_count``: unscored; above ``max_count`` under ``clip``: scored against the last class).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.bundles import write_constant_bundle
import torch
from helpers.train import read_csv

from bincount import cli
from bincount.metrics import CountMetrics, WithinK

PREDICTED = 3
# true count -> the error a model predicting 3 makes against it (classes 1..5, overflow=clip), or None: unscored
TRUE_COUNTS = {3: 0, 2: 1, 4: -1, 1: 2, 5: -2, 6: -2, 0: None}  # 6 is clipped to the last class, 5
# By hand over the six scored bins: errors 0, 1, -1, 2, -2, -2.
N, CORRECT, WITHIN_ONE, ABS_SUM, SQ_SUM = 6, 1, 3, 8, 14


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_constant_bundle(tmp_path_factory.mktemp("constant") / "model")


def test_predict_scores_an_abid_root_within_one_as_off_by_at_most_one(bundle, make_abid, tmp_path, capsys):
    root = make_abid(list(TRUE_COUNTS))
    out = tmp_path / "p.csv"
    status = cli.main(["predict", str(bundle), str(root), "-o", str(out), "--num-workers", "0", "--no-progress"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    rows = read_csv(out)
    assert [(r["id"], int(r["true_count"]), int(r["pred_count"])) for r in rows] == \
        [(f"{i:05d}", true, PREDICTED) for i, true in enumerate(TRUE_COUNTS, start=1)]

    want = {"n": N, "unscored": 1, "acc": CORRECT / N, "rmse": math.sqrt(SQ_SUM / N), "mae": ABS_SUM / N,
            "within_one": WITHIN_ONE / N}
    summary = json.loads(out.with_name("p.summary.json").read_text())
    assert summary["metrics"] == pytest.approx(want)
    assert summary["metrics"]["within_one"] == 0.5  # 3 of 6: the two off by one count, the three off by two do not
    assert ("scored 6 with true counts (1 outside the model's classes): acc 0.1667, rmse 1.5275, mae 1.3333, "
            "within one 0.5000") in printed.splitlines()


def test_the_training_metrics_score_within_one_the_same_way():
    """CountMetrics (the runs' ``metrics.json``) on the same six scored bins, in class indices."""
    scored = [(PREDICTED, PREDICTED - err) for err in TRUE_COUNTS.values() if err is not None]
    metrics = CountMetrics(num_classes=5, min_count=1)
    metrics.update(torch.tensor([p - 1 for p, _ in scored]), torch.tensor([t - 1 for _, t in scored]))
    out = metrics.compute()
    assert out["within_one"] == pytest.approx(WITHIN_ONE / N)
    assert (out["acc"], out["mae"], out["rmse"]) == pytest.approx((CORRECT / N, ABS_SUM / N, math.sqrt(SQ_SUM / N)))


@pytest.mark.parametrize("preds,target,share", [
    ([4, 2, 6, 0], [3, 3, 5, 1], 1.0),  # every prediction off by exactly one, both ways
    ([5, 1, 7, 3], [3, 3, 5, 1], 0.0),  # every prediction off by exactly two
    ([3, 4, 5, 6], [3, 3, 3, 3], 0.5),  # off by 0, 1, 2, 3
])
def test_within_k_counts_an_error_of_exactly_k_and_not_k_plus_one(preds, target, share):
    metric = WithinK(1)
    metric.update(torch.tensor(preds), torch.tensor(target))
    assert float(metric.compute()) == share
