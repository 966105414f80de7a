"""One answer per image, the same numbers everywhere: ``bincount serve``'s JSON, ``bincount predict``'s CSV
and a run's ``predictions.csv``.

Why one place: the three formatted them separately, and a change of rounding in one would make a served
answer differ from the CSV of the same image. Probabilities and expected counts are rounded to
``PROB_DECIMALS``; the CSVs write them with exactly that many decimals (:func:`fixed`), the JSON as the
rounded float.
"""

from __future__ import annotations

from typing import Any

PROB_DECIMALS = 6  # decimals of probabilities and expected counts in answers and CSVs


def fixed(x: float) -> str:
    """``x`` as the CSVs write it: ``PROB_DECIMALS`` decimals."""
    return f"{x:.{PROB_DECIMALS}f}"


def rounded(x: float) -> float:
    """``x`` as the JSON answers carry it: the float of :func:`fixed`, so both read the same."""
    return float(fixed(x))


def answer_rows(prediction: dict[str, Any], counts: list[int]) -> list[dict[str, Any]]:
    """``predict_step``'s output (``pred_count``, ``expected_count``, ``confidence``, ``probs``) as one
    answer per image: ``count``, ``expected_count``, ``confidence`` and ``probabilities`` by count."""
    pred, expected = prediction["pred_count"].tolist(), prediction["expected_count"].tolist()
    confidence, probs = prediction["confidence"].tolist(), prediction["probs"].tolist()
    return [{"count": int(pred[j]), "expected_count": rounded(expected[j]), "confidence": rounded(confidence[j]),
             "probabilities": {str(c): rounded(p) for c, p in zip(counts, probs[j])}} for j in range(len(pred))]
