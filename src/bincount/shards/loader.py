"""Per-sample decoding and the train loader's resumable position, for streamed shards.

Split from ``stream`` (which finds, checks and budgets the shards) because these run per sample and per
checkpoint: ``ShardSample`` turns a packed item into the DataModule's batch format with the same
skip/fail policy as local files, and ``TrainLoaderState`` makes mid-epoch resume exact.
"""

from __future__ import annotations

from typing import Callable

from bincount.layout import DataError, image_key
from bincount.samples import DEFAULT_MAX_PIXELS, BadImage, collate_skipping_bad, load_image


class ShardSample:
    """litdata ``transform``: a packed item -> the DataModule's sample dict (decode, transform, skip/fail).

    ``decode="gpu"`` (``data.decode=gpu``): the checked encoded bytes, no transform (the GPU decoder's job).
    """

    def __init__(self, transform: Callable | None, bad_input: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 decode: str = "cpu") -> None:
        self.transform, self.bad_input, self.max_pixels, self.decode = transform, bad_input, max_pixels, decode

    def __call__(self, item: dict) -> dict:
        key = image_key(item["id"])
        try:
            image = load_image(item["image"], self.max_pixels, self.decode)
        except BadImage as e:
            if self.bad_input == "fail":
                raise DataError(f"{key} (packed): {e} (bad_input='fail'; 'skip' skips and reports)") from None
            return {"bad": (item["id"], f"{key}: {e}"), "index": int(item["index"])}
        if self.transform is not None and self.decode == "cpu":
            image = self.transform(image)
        return {"image": image, "label": int(item["label"]), "index": int(item["index"]), "id": item["id"]}


def streaming_loader(dataset, batch_size: int, num_workers: int, pin_memory: bool, drop_last: bool):
    """A ``StreamingDataLoader``: its ``state_dict`` is what Lightning checkpoints for exact mid-epoch resume."""
    from bincount.shards.litdata_check import require_litdata

    require_litdata()
    from litdata import StreamingDataLoader

    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                               collate_fn=collate_skipping_bad, drop_last=drop_last)


class TrainLoaderState:
    """The train loader's position, carried in the DataModule's checkpoint state as well as Lightning's.

    Why: Lightning restores a loader's state only if the loader is built after the checkpoint is read.
    ``trainer.estimated_stepping_batches`` (scheduler=onecycle reads it in ``configure_optimizers``)
    builds it earlier, and the resumed epoch then starts over (Lightning issue 20550; measured: 12 of
    40 samples replayed, 12 skipped). The DataModule's own state is restored before that, so the
    position is applied whenever the loader is built; applying it twice (both paths) is harmless.
    """

    def __init__(self) -> None:
        self.loader = None
        self.pending: dict | None = None

    def attach(self, loader):
        self.loader = loader
        if self.pending:
            loader.load_state_dict(self.pending)
            self.pending = None
        return loader

    def state_dict(self) -> dict:
        return {"train_loader": self.loader.state_dict()} if self.loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.pending = (state or {}).get("train_loader")
        if self.pending and self.loader is not None:
            self.attach(self.loader)
