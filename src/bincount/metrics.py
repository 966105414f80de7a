"""Count metrics and the run's result files (``metrics.json``, ``predictions.csv``).

The numbers come from torchmetrics, not from hand-written accumulators, so that they sync across DDP
ranks, move with the LightningModule to its device, and match the library everybody checks against.
Only ``within_one`` (torchmetrics has no "|pred - target| <= k" metric) and ``support`` (read off the
confusion matrix's rows) are computed here.

Everything works on class indices; a count is ``min_count + index``. Errors in index units are errors in
count units, because the offset cancels, so ``rmse``/``mae`` are reported in counts as-is.

Note on macro averages: torchmetrics leaves a class out of the macro mean when it has neither targets
nor predictions (sklearn would count it as 0). Per-class values of such a class are 0 with support 0.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from bincount.answers import fixed
from bincount.text import csv_cell

FLOAT_DIGITS = 6  # significant digits in metrics.json; more is noise for metrics over a test split


class WithinK(Metric):
    """Fraction of predictions with ``|pred - target| <= k``: "off by at most one item" for counting.

    Hand-written because torchmetrics has no tolerance-accuracy metric for integer targets.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(k) < 0:
            raise ValueError(f"WithinK needs k >= 0, got {k}")
        self.k = int(k)
        self.add_state("hits", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"preds and target must have the same shape, got {tuple(preds.shape)} and {tuple(target.shape)}")
        self.hits += ((preds.long() - target.long()).abs() <= self.k).sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        return self.hits.float() / self.total.clamp_min(1)


def _make_collection(num_classes: int) -> MetricCollection:
    c = num_classes
    return MetricCollection({
        "acc": MulticlassAccuracy(c, average="micro"),
        "f1_macro": MulticlassF1Score(c, average="macro"),
        "f1_weighted": MulticlassF1Score(c, average="weighted"),
        "precision_macro": MulticlassPrecision(c, average="macro"),
        "precision_weighted": MulticlassPrecision(c, average="weighted"),
        "recall_macro": MulticlassRecall(c, average="macro"),
        "recall_weighted": MulticlassRecall(c, average="weighted"),
        "precision_per_class": MulticlassPrecision(c, average="none"),
        "recall_per_class": MulticlassRecall(c, average="none"),
        "f1_per_class": MulticlassF1Score(c, average="none"),
        "confusion_matrix": MulticlassConfusionMatrix(c),
    })


class CountMetrics(nn.Module):
    """Classification and count-error metrics over class indices, for one stage (val or test).

    A module (not a plain object) so that, as a LightningModule attribute, it follows the model to its
    device; every metric inside is a torchmetrics ``Metric`` and syncs its states across DDP ranks in
    ``compute``. ``compute`` returns plain Python values (see :meth:`compute`).
    """

    def __init__(self, num_classes: int, min_count: int = 1) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes, self.min_count = int(num_classes), int(min_count)
        self.classification = _make_collection(self.num_classes)
        # Regression inputs are floats; kept out of the collection so that class-index inputs stay long.
        self.mse = MeanSquaredError()
        self.mae = MeanAbsoluteError()
        self.within_one = WithinK(1)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and true class indices (LongTensors of shape N)."""
        pred, target = pred.detach().reshape(-1).long(), target.detach().reshape(-1).long()
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same number of elements, got {pred.numel()} and {target.numel()}")
        self.classification.update(pred, target)
        self.mse.update(pred.float(), target.float())
        self.mae.update(pred.float(), target.float())
        self.within_one.update(pred, target)

    def compute(self) -> dict[str, Any]:
        """Plain Python values: scalars as floats/ints, per-class values keyed by count, confusion matrix
        as a list of lists (rows true count, columns predicted count)."""
        values = self.classification.compute()
        confmat = values["confusion_matrix"].long()
        support = confmat.sum(dim=1)
        out: dict[str, Any] = {
            "num_samples": int(support.sum()),
            "acc": float(values["acc"]),
            "rmse": math.sqrt(float(self.mse.compute())),
            "mae": float(self.mae.compute()),
            "within_one": float(self.within_one.compute()),
        }
        for key in ("f1_macro", "f1_weighted", "precision_macro", "precision_weighted", "recall_macro", "recall_weighted"):
            out[key] = float(values[key])
        for i in range(self.num_classes):
            count = self.min_count + i
            out[f"precision_{count}"] = float(values["precision_per_class"][i])
            out[f"recall_{count}"] = float(values["recall_per_class"][i])
            out[f"f1_{count}"] = float(values["f1_per_class"][i])
            out[f"support_{count}"] = int(support[i])
        out["confusion_matrix"] = confmat.cpu().tolist()
        return out

    def reset(self) -> None:
        self.classification.reset()
        self.mse.reset()
        self.mae.reset()
        self.within_one.reset()


# -- result files -------------------------------------------------------------------------------
def _atomic_write_text(path: str | Path, text: str) -> Path:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    """Tensors, numpy values and tuples to JSON types; floats to FLOAT_DIGITS significant digits; NaN/inf to None."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().tolist() if value.numel() != 1 or value.dim() else value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.{FLOAT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metrics value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def write_metrics_json(path: str | Path, metrics: dict) -> Path:
    """Write ``metrics`` atomically as JSON with sorted keys; NaN and inf become ``null``."""
    text = json.dumps(_jsonable(metrics), indent=2, sort_keys=True, allow_nan=False)
    return _atomic_write_text(path, text + "\n")


def _as_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise TypeError(f"{name} must be numeric, got {array.dtype}")
    return array


def write_predictions_csv(path: str | Path, ids: Sequence[str], true_counts: Any, pred_counts: Any,
                          probs: Tensor | np.ndarray, min_count: int) -> Path:
    """Write ``id,true_count,pred_count,prob_<count>...`` (one row per sample, counts not class indices)."""
    true_counts = _as_numpy(true_counts, "true_counts").reshape(-1).astype(np.int64)
    pred_counts = _as_numpy(pred_counts, "pred_counts").reshape(-1).astype(np.int64)
    probs = _as_numpy(probs, "probs").astype(np.float64)
    n = len(ids)
    if probs.ndim != 2:
        raise ValueError(f"probs must be N x C, got shape {probs.shape}")
    if not (len(true_counts) == len(pred_counts) == probs.shape[0] == n):
        raise ValueError(f"ids ({n}), true_counts ({len(true_counts)}), pred_counts ({len(pred_counts)}) and "
                         f"probs ({probs.shape[0]} rows) must have the same length")
    counts = [int(min_count) + j for j in range(probs.shape[1])]
    lines: list[list[Any]] = [["id", "true_count", "pred_count", *(f"prob_{c}" for c in counts)]]
    for i in range(n):
        row_probs = (fixed(p) for p in probs[i])
        lines.append([csv_cell(ids[i]), int(true_counts[i]), int(pred_counts[i]), *row_probs])
    return _atomic_write_text(path, _csv_text(lines))


def _csv_text(rows: list[list[Any]]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def read_predictions_csv(path: str | Path) -> dict[str, Any]:
    """Read a ``predictions.csv`` back: ``ids`` (list), ``true_counts``/``pred_counts`` (int arrays),
    ``probs`` (N x C float array), ``counts`` (the count of each probability column) and ``min_count``."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        expected = ["id", "true_count", "pred_count"]
        if header is None or header[:3] != expected or not all(h.startswith("prob_") for h in header[3:]):
            raise ValueError(f"{path}: not a predictions.csv (header {header!r}; expected {expected} + prob_<count>...)")
        rows = list(reader)
    counts = [int(h[len("prob_"):]) for h in header[3:]]
    return {
        "ids": [r[0] for r in rows],
        "true_counts": np.array([int(r[1]) for r in rows], dtype=np.int64),
        "pred_counts": np.array([int(r[2]) for r in rows], dtype=np.int64),
        "probs": np.array([[float(x) for x in r[3:]] for r in rows], dtype=np.float64).reshape(len(rows), len(counts)),
        "counts": counts,
        "min_count": counts[0] if counts else None,
    }


def _weighted(metrics: dict, name: str, counts: list[int], total: int) -> float:
    if f"{name}_weighted" in metrics:
        return float(metrics[f"{name}_weighted"])
    if total == 0:
        return float("nan")
    return sum(metrics[f"{name}_{c}"] * metrics[f"support_{c}"] for c in counts) / total


def classification_report(metrics: dict, min_count: int, num_classes: int) -> str:
    """A text table in the layout of sklearn's ``classification_report``, from :meth:`CountMetrics.compute`."""
    counts = [int(min_count) + i for i in range(int(num_classes))]
    missing = [f"support_{c}" for c in counts if f"support_{c}" not in metrics]
    if missing:
        raise KeyError(f"metrics lack per-class entries {missing}; pass CountMetrics.compute() output "
                       f"with the same min_count and num_classes")
    total = sum(int(metrics[f"support_{c}"]) for c in counts)
    width = max(len("weighted avg"), *(len(str(c)) for c in counts))
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    row = lambda label, p, r, f, s: f"{label:>{width}} {p:>9.2f} {r:>9.2f} {f:>9.2f} {s:>9d}"  # noqa: E731
    lines = [head, ""]
    for c in counts:
        lines.append(row(str(c), metrics[f"precision_{c}"], metrics[f"recall_{c}"], metrics[f"f1_{c}"],
                         int(metrics[f"support_{c}"])))
    lines.append("")
    lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {metrics['acc']:>9.2f} {total:>9d}")
    lines.append(row("macro avg", metrics["precision_macro"], metrics["recall_macro"], metrics["f1_macro"], total))
    lines.append(row("weighted avg", _weighted(metrics, "precision", counts, total),
                     _weighted(metrics, "recall", counts, total), metrics["f1_weighted"], total))
    return "\n".join(lines) + "\n"


__all__ = [
    "CountMetrics", "WithinK", "classification_report", "read_predictions_csv", "write_metrics_json",
    "write_predictions_csv",
]
