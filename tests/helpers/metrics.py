"""A run's ``metrics.json`` checked for values that can be wrong: ``val/acc >= 0`` holds for any accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest


def assert_val_metrics_add_up(metrics: dict) -> None:
    """Every validation sample was scored once, and the headline numbers are the confusion matrix's.

    The confusion matrix (rows: true class, columns: predicted) is what the run counted; accuracy, MAE and
    within-one are recomputed from it, and its total must be the val split's size from the manifest.
    """
    confusion = np.array(metrics["val/confusion_matrix"])
    n = metrics["data_quality"]["splits"]["val"]
    assert confusion.sum() == metrics["val/num_samples"] == n > 0, \
        f"scored {confusion.sum()} (num_samples {metrics['val/num_samples']}) of a val split of {n}"
    acc = metrics["val/acc"]
    assert math.isfinite(acc) and 0 <= acc <= 1, f"val/acc {acc} is not a fraction"
    true, pred = np.indices(confusion.shape)
    error = np.abs(true - pred)
    # Helpers get no assertion rewriting: the messages say what differed.
    assert acc == pytest.approx(np.trace(confusion) / n, abs=1e-6), f"val/acc {acc} is not the matrix's {confusion}"
    mae = (confusion * error).sum() / n
    assert metrics["val/mae"] == pytest.approx(mae, abs=1e-5), f"val/mae {metrics['val/mae']} != {mae}"
    within = confusion[error <= 1].sum() / n
    assert metrics["val/within_one"] == pytest.approx(within, abs=1e-6), f"{metrics['val/within_one']} != {within}"
