"""The report's charts as PNG bytes, drawn with matplotlib's Agg backend (no display, no network).

matplotlib is imported inside :func:`pyplot` only, so training and ``--help`` never pay for it; a
machine without it still gets the report, minus the charts (the page says so).
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np

LOSS_KEYS = ("train/loss_epoch", "val/loss")
SCORE_KEYS = ("train/acc", "val/acc", "val/within_one", "val/f1_macro")


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a GUI backend on a training machine
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(epoch, value) for rows that hold ``key``; the last value per epoch (a re-validation wins)."""
    by_epoch: dict[float, float] = {}
    for row in history:
        if row.get(key) is not None and row.get("epoch") is not None:
            by_epoch[row["epoch"]] = row[key]
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def learning_curves(history: list[dict]) -> Optional[bytes]:
    panels = [[k for k in keys if _series(history, k)[0]] for keys in (LOSS_KEYS, SCORE_KEYS)]
    if not any(panels):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, keys, title in zip(axes, panels, ("loss", "scores")):
        for key in keys:
            x, y = _series(history, key)
            ax.plot(x, y, marker="o", label=key)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=8)
    return _png(fig)


def confusion_matrix(matrix: list[list[int]], counts: list[int]) -> bytes:
    plt = pyplot()
    m = np.asarray(matrix)
    size = max(3.5, 0.45 * len(counts) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set(xticks=range(len(counts)), yticks=range(len(counts)), xticklabels=counts, yticklabels=counts,
           xlabel="predicted count", ylabel="true count", title="test confusion matrix")
    if len(counts) <= 25:  # numbers stay legible up to about 25 classes
        for (i, j), n in np.ndenumerate(m):
            ax.text(j, i, int(n), ha="center", va="center", fontsize=7,
                    color="white" if n > m.max() / 2 else "black")
    return _png(fig)


def per_class(counts: list[int], precision: list[float], recall: list[float], f1: list[float]) -> bytes:
    plt = pyplot()
    x = np.arange(len(counts))
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(counts) + 2), 3.4))
    for offset, values, label in ((-0.27, precision, "precision"), (0, recall, "recall"), (0.27, f1, "F1")):
        ax.bar(x + offset, values, width=0.27, label=label)
    ax.set(xticks=x, xticklabels=counts, xlabel="count", ylim=(0, 1.05), title="per-class scores (test)")
    ax.legend(fontsize=8)
    return _png(fig)


def error_distribution(true: np.ndarray, pred: np.ndarray) -> bytes:
    plt = pyplot()
    error = pred - true
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    values, freq = np.unique(error, return_counts=True)
    left.bar(values, freq, color=["#2a9d8f" if v == 0 else "#e76f51" for v in values])
    left.set(title="predicted − true count", xlabel="error (items)", ylabel="test images")
    counts = np.unique(true)
    means = [pred[true == c].mean() for c in counts]
    spread = [pred[true == c].std() for c in counts]
    right.errorbar(counts, means, yerr=spread, fmt="o", capsize=3, label="mean ± std predicted")
    lo, hi = min(true.min(), pred.min()), max(true.max(), pred.max())
    right.plot([lo, hi], [lo, hi], "--", color="grey", label="perfect")
    right.set(title="predicted vs true count", xlabel="true count", ylabel="predicted count")
    right.legend(fontsize=8)
    return _png(fig)
