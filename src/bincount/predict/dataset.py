"""The images of ``bincount predict`` as a map-style dataset: decoded by :mod:`bincount.samples`, bad ones carried.

Why the training decode path: a prediction must see the same pixels the test split saw, and a file
the training data would refuse (not an image, truncated, an image bomb) is refused here for the same
reason with the same words. A bad file becomes ``{"bad": (name, reason)}`` and travels in the batch's
``bad`` list (:func:`bincount.samples.collate_skipping_bad`), so the writer in the main process lists
it — or stops at it under ``--bad-input fail`` — whatever worker read it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset

from bincount.layout import TooLarge
from bincount.predict.inputs import Item
from bincount.samples import BadImage, collate_skipping_bad, decode_image_bytes


class PredictDataset(Dataset):
    def __init__(self, items: Sequence[Item], transform: Callable, max_pixels: int) -> None:
        self.items, self.transform, self.max_pixels = list(items), transform, int(max_pixels)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        try:
            data = item.reader(item.key)
        except FileNotFoundError:
            return {"bad": (item.name, "image missing"), "index": i}
        except (TooLarge, OSError, RuntimeError) as e:  # RuntimeError: S3ReadError after retries
            return {"bad": (item.name, f"unreadable ({e})"), "index": i}
        return self._decode(i, item, data)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch from one S3 store is fetched with ``read_many`` (its GETs in flight together)."""
        readers = {id(self.items[i].reader) for i in indices}
        read_many = getattr(self.items[indices[0]].reader, "read_many", None) if len(readers) == 1 else None
        if read_many is None:
            return [self[i] for i in indices]
        out = []
        for i, data in zip(indices, read_many([self.items[i].key for i in indices])):
            if isinstance(data, BaseException):
                reason = "image missing" if isinstance(data, FileNotFoundError) else f"unreadable ({data})"
                out.append({"bad": (self.items[i].name, reason), "index": i})
            else:
                out.append(self._decode(i, self.items[i], data))
        return out

    def _decode(self, i: int, item: Item, data: bytes) -> dict[str, Any]:
        try:
            image = decode_image_bytes(data, self.max_pixels)
        except BadImage as e:
            return {"bad": (item.name, str(e)), "index": i}
        return {"image": self.transform(image), "label": 0, "index": i, "id": item.name}


def predict_loader(dataset: PredictDataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_skipping_bad, persistent_workers=False)
