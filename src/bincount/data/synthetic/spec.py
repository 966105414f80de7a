"""What a synthetic dataset is made of: the constants that fix its files, and checked count weights."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np



# Images per count in the 10,441-image subset both capstone reports train on (file_list.json).
CAPSTONE_COUNT_DISTRIBUTION: dict[int, int] = {1: 1228, 2: 2299, 3: 2666, 4: 2373, 5: 1875}

# Bump when the pixels or metadata for a given (seed, index, size, counts) change: a finished
# directory rendered by another version is then reported instead of being silently mixed.
RENDERER_VERSION = 1
JPEG_QUALITY = 90
MIN_SIZE = 32
MAX_ITEMS = 100  # the label map is uint8 with FOREGROUND reserved; more items are not countable anyway
FOREGROUND = 255  # label-map value of solid things in front of the items (cords, lip, frame)
COMPLETE_MARKER = ".complete.json"
PARTIAL_MARKER = ".partial.json"

# Share of an item's pixels that must stay visible after later items, cords, lip and frame cover it.
MIN_VISIBLE = 0.55
PLACEMENT_TRIES = 16
SHADOW = 0.45  # darkening under an item's drop shadow

Colour = np.ndarray  # float32 RGB, shape (3,), 0-255


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _count_probabilities(counts: Mapping[int, float] | None) -> dict[int, float]:
    """Validate a count -> weight mapping and normalise it to probabilities (sorted by count)."""
    counts = CAPSTONE_COUNT_DISTRIBUTION if counts is None else counts
    if not isinstance(counts, Mapping) or not counts:
        raise ValueError(f"counts must be a non-empty mapping of item count -> weight, got {counts!r}")
    weights: dict[int, float] = {}
    for key, weight in counts.items():
        count = _check_int("counts key (item count)", key, 0)
        if count > MAX_ITEMS:
            raise ValueError(f"counts key (item count) must be <= {MAX_ITEMS}, got {key!r}")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"counts weight for {count} items must be finite and >= 0, got {counts[key]!r}")
        weights[count] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"counts weights must have a positive total, got {dict(counts)!r}")
    return {c: w / total for c, w in sorted(weights.items()) if w > 0}


