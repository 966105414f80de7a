"""The batch size the model is fastest at on this machine, measured when the server starts.

Why: a bigger batch is not always faster per image. EfficientNet-Lite0 at 224 px on 2 AMD EPYC cores runs
71 images/s one at a time and 46 in batches of 16 (depthwise convolutions gain nothing from the batch and
lose cache), so under load a server that always filled its batches to 16 served fewer images with 32
clients than with 8 (41 against 63 images/s). On a GPU, or for ResNets on most CPUs, bigger is faster. So
``bincount serve`` times the forward at 1, 2, 4, ... ``--max-batch-size`` images on the batcher's own thread
before it says it is ready, and caps its batches at the smallest size within ``NEAR_BEST`` of the best rate
(smaller batches answer sooner). ``--max-batch-size`` stays the upper bound; ``--no-calibrate`` turns it off.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("bincount.serve")
NEAR_BEST = 0.95  # a smaller batch within 5% of the best rate wins: same throughput, shorter waits
BUDGET_S = 0.1  # seconds of forwards per size and round (at least two forwards): ~1 s in all for a tiny model
ROUNDS = 2


def sizes_up_to(largest: int) -> list[int]:
    """1, 2, 4, ... below ``largest``, then ``largest`` itself."""
    sizes, n = [], 1
    while n < largest:
        sizes.append(n)
        n *= 2
    return [*sizes, largest]


def images_per_second(model: Any, batch: Any, budget_s: float = BUDGET_S) -> float:
    """The forward's rate on ``batch``: at least two runs, and as many as fit in ``budget_s``."""
    runs, start = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - start < budget_s:
        model.predict(batch)
        runs += 1
    return runs * len(batch) / (time.perf_counter() - start)


def best_batch_size(model: Any, example: Any, largest: int, budget_s: float = BUDGET_S) -> tuple[int, dict[int, float]]:
    """(the smallest size within ``NEAR_BEST`` of the best rate, the rate measured at each size).

    Each size is run once before any is timed (the first forwards of a thread and of a shape pay for kernel
    choice and memory), then timed in ``ROUNDS`` rounds, keeping its best: a size timed while the machine was
    busy with something else is not ruled out for it."""
    batches = {size: example.unsqueeze(0).expand(size, *example.shape).contiguous() for size in sizes_up_to(largest)}
    for batch in batches.values():
        model.predict(batch)
    rates = {size: 0.0 for size in batches}
    for _ in range(ROUNDS):
        for size, batch in batches.items():
            rates[size] = max(rates[size], images_per_second(model, batch, budget_s))
    best = max(rates.values())
    chosen = min(size for size, rate in rates.items() if rate >= NEAR_BEST * best)
    log.info("batch sizes timed (images/s): %s; batches capped at %d of --max-batch-size %d",
             ", ".join(f"{size}: {rate:.1f}" for size, rate in rates.items()), chosen, largest)
    return chosen, rates
