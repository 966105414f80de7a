"""Equal batch counts per DDP rank *without dropping samples*: pad each epoch with a few repeats.

litdata forces ``drop_last`` under DDP so that every rank runs the same number of steps (unequal
counts hang the collective ops); the price is that up to ``world_size x batch_size - 1`` samples are
never trained on in an epoch. ``torch.utils.data.DistributedSampler`` makes the other choice: it pads
with repeats. This module makes litdata do that, because the issue asks for every training sample at
least once per epoch (a bounded number of repeats being the documented cost):

* the epoch's chunk order is the one litdata would use (``FullShuffle``: permuted per seed and epoch;
  ``NoShuffle``: as packed), so the chunk-level reshuffle and the in-chunk item shuffle are unchanged;
* ``pad = world_size x batches_per_rank x batch_size - n`` items (< ``world_size x batch_size``) are
  appended as extra intervals that re-read the *first* items of that order, so the repeats differ
  from epoch to epoch; litdata's own assignment then splits exactly ``n + pad`` items, nothing dropped;
* the assignment is a pure function of (seed, epoch, world, workers, batch), which keeps litdata's
  mid-epoch resume (it replays the assignment) exact.

Written here because litdata (0.2.76) has no padding option, only ``drop_last``; the hook is its
private ``_create_shuffler``, tied to the pinned version (constraints.txt). Multi-node
runs use the global assignment every epoch (litdata would keep later epochs inside each node's
chunks to save downloads): the same padding, more chunk downloads after the first epoch; untested
(the tests simulate one node).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from bincount.shards.litdata_check import require_litdata

require_litdata()  # before the private imports below, so an old litdata fails with both versions named

from litdata import StreamingDataset  # noqa: E402
from litdata.streaming.shuffle import FullShuffle, NoShuffle  # noqa: E402
from litdata.utilities.env import _DistributedEnv  # noqa: E402
from litdata.utilities.shuffle import _associate_chunks_and_intervals_to_workers, node_shard_fits_in_cache  # noqa: E402


def padded_order(intervals: list[Any], order: list[int], world_size: int, batch_size: int) -> tuple[list, list]:
    """``(chunk indexes, intervals)`` in ``order`` plus the repeats that make the total divide evenly.

    ``intervals[i]`` is litdata's ``[start, roi_start, roi_end, end]`` for chunk ``i``. The total
    becomes ``world_size x batch_size x ceil(n / (world_size x batch_size))``.
    """
    chunks = [int(i) for i in order]
    spans = [list(intervals[i]) for i in chunks]
    n = sum(s[2] - s[1] for s in spans)
    per_step = world_size * max(1, batch_size)
    pad = -n % per_step if n else 0
    while pad > 0:  # wraps more than once only when the whole split is smaller than one step
        for chunk, (start, lo, hi, end) in zip(list(chunks[: len(order)]), list(spans[: len(order)])):
            take = min(pad, hi - lo)
            if take > 0:
                chunks.append(chunk)
                spans.append([start, lo, lo + take, end])
                pad -= take
            if pad == 0:
                break
    return chunks, spans


class _Padded:
    """Mixin for litdata's shufflers: the per-worker assignment of :func:`padded_order`."""

    def chunk_order(self, count: int, current_epoch: int) -> list[int]:
        raise NotImplementedError

    def keep_chunks(self, distributed_env: _DistributedEnv) -> None:
        """Whether read chunks stay in the cache for the next epoch (litdata's ``node_shard_fits``)."""

    @lru_cache(maxsize=10)
    def get_chunks_and_intervals_per_workers(self, distributed_env: _DistributedEnv, num_workers: int,
                                             batch_size: int, current_epoch: int) -> Any:
        intervals = self.cache.get_chunk_intervals()
        self.keep_chunks(distributed_env)
        chunks, spans = padded_order(intervals, self.chunk_order(len(intervals), current_epoch),
                                     distributed_env.world_size, batch_size)
        # drop_last=True only guards the arithmetic: the padded total divides evenly, so nothing is dropped
        return _associate_chunks_and_intervals_to_workers(distributed_env, chunks, spans, True, num_workers, batch_size)


class PaddedFullShuffle(_Padded, FullShuffle):
    def chunk_order(self, count: int, current_epoch: int) -> list[int]:
        # the permutation litdata's FullShuffle uses for a single-node run (seed, epoch)
        return np.random.RandomState([self.seed, current_epoch]).permutation(count).tolist()

    def keep_chunks(self, distributed_env: _DistributedEnv) -> None:
        # one node: as litdata decides, keep every chunk when the split fits in the cache budget, so later
        # epochs read local disk; several nodes: each node's chunks change per epoch here, so do not pin them
        fits = node_shard_fits_in_cache(sum(self._chunk_byte_sizes()), self._max_cache_size())
        self.node_shard_fits = fits and distributed_env.num_nodes == 1


class PaddedNoShuffle(_Padded, NoShuffle):
    def chunk_order(self, count: int, current_epoch: int) -> list[int]:
        return list(range(count))


class PaddedStreamingDataset(StreamingDataset):
    """A ``StreamingDataset`` that pads with repeats under DDP instead of dropping (see module docstring)."""

    def _create_shuffler(self, cache: Any):
        shuffler = super()._create_shuffler(cache)
        if self.distributed_env.world_size <= 1:
            return shuffler  # one process: the loader's own drop_last decides the last partial batch
        padded = {FullShuffle: PaddedFullShuffle, NoShuffle: PaddedNoShuffle}.get(type(shuffler))
        if padded is None:
            raise TypeError(f"bincount pads {sorted(c.__name__ for c in (FullShuffle, NoShuffle))} shufflers under "
                            f"DDP; litdata chose {type(shuffler).__name__} (posix_fast window shuffle is not used here)")
        new = padded.__new__(padded)
        new.__dict__.update(shuffler.__dict__)
        return new
