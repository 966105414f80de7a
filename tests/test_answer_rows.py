"""One answer row per image, the one format serve's JSON, predict's CSV and predictions.csv share."""

from __future__ import annotations

import torch

from bincount.answers import PROB_DECIMALS, answer_rows, fixed, rounded


def test_an_answer_row_holds_the_count_and_rounded_numbers_by_count():
    prediction = {"pred_count": torch.tensor([2, 0]), "expected_count": torch.tensor([1.23456789, 0.5], dtype=torch.float64),
                  "confidence": torch.tensor([0.6999996, 0.5], dtype=torch.float64),
                  "probs": torch.tensor([[0.1, 0.2000004, 0.6999996], [0.5, 0.25, 0.25]], dtype=torch.float64)}
    rows = answer_rows(prediction, counts=[3, 4, 5])
    assert rows[0] == {"count": 2, "expected_count": 1.234568, "confidence": 0.7,
                       "probabilities": {"3": 0.1, "4": 0.2, "5": 0.7}}
    assert rows[1]["count"] == 0 and list(rows[1]["probabilities"]) == ["3", "4", "5"]
    assert type(rows[0]["count"]) is int and all(type(p) is float for p in rows[0]["probabilities"].values())


def test_the_csv_and_the_json_read_the_same():
    assert PROB_DECIMALS == 6
    assert fixed(0.2) == "0.200000" and fixed(1.23456789) == "1.234568"
    for x in (0.1, 0.2000004, 1 / 3, 0.9999996, 2.5e-7):
        assert fixed(rounded(x)) == fixed(x) and float(fixed(x)) == rounded(x)
