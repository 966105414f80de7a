"""Deterministic stratified splits: the same ids land in the same split on every machine and run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bincount.layout import SPLITS


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative numbers (train, val, test) summing to 1."""
    values = tuple(fractions)
    if len(values) != 3:
        raise ValueError(f"split_fractions must be 3 numbers (train, val, test), got {values!r}")
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f >= 0 for f in values):
        raise ValueError(f"split_fractions must be non-negative numbers, got {values!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must sum to 1, got {values!r} (sum {sum(values):g})")
    total = sum(values)
    return tuple(float(f) / total for f in values)  # type: ignore[return-value]


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Cut ``n`` items by ``fractions`` with largest-remainder rounding (ties go to the earlier split).

    Tiny classes stay sensible: 1 item goes to train, 5 items at 0.8/0.1/0.1 give 4/1/0, and a split
    with fraction 0 never gets an item.
    """
    shares = [n * f for f in fractions]
    sizes = [int(s) for s in shares]
    order = sorted(range(len(shares)), key=lambda k: (-(shares[k] - sizes[k]), k))
    for k in order[: n - sum(sizes)]:
        sizes[k] += 1
    return sizes


def assign_splits(ids_by_label: dict[int, list[str]], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Stratified split: per label, shuffle with ``default_rng([seed, label])`` and cut by ``fractions``."""
    assignment: dict[str, str] = {}
    for label, ids in sorted(ids_by_label.items()):
        ordered = sorted(ids)
        shuffled = [ordered[k] for k in np.random.default_rng([seed, label]).permutation(len(ids))]
        start = 0
        for split, size in zip(SPLITS, split_sizes(len(ids), fractions)):
            for id_ in shuffled[start : start + size]:
                assignment[id_] = split
            start += size
    return assignment
