"""Map-style dataset over manifest rows, decoding bin JPEGs with a skip/fail policy for bad images.

Why the policy lives here: in the full bucket some images are missing or damaged, and one bad file
must not kill a multi-hour run (``bad_input="skip"``) — yet it must not vanish silently either. A
skipped sample is returned as ``{"bad": (id, reason)}`` (see :mod:`bincount.samples` for the decode
rules and the collate function that carries it); ``bad_input="fail"`` raises :class:`DataError`
naming the file instead. With ``decode="gpu"`` (``data.decode=gpu``) a sample's ``image`` is the checked
encoded bytes and the transform runs after the batch is decoded on the device (:mod:`bincount.data.gpu_decode`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from bincount.layout import DataError, check_bad_input
from bincount.manifest import ManifestRow
from bincount.s3.store import LocalStore
from bincount.samples import DECODE_CHOICES, DEFAULT_MAX_PIXELS, BadImage, load_image

Reader = Callable[[str], bytes]


class BinImageDataset(Dataset):
    """Samples ``{"image", "label", "index", "id"}`` from manifest rows; bad images per ``bad_input``.

    ``transform`` receives a uint8 3×H×W tensor (torchvision v2 style). ``reader(key) -> bytes`` reads
    an image key such as ``bin-images/00001.jpg``; the default reads ``root/key`` from disk. ``decode="gpu"``
    returns the encoded bytes instead of pixels, so it takes no transform (the GPU decoder applies it).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        rows: Sequence[ManifestRow],
        transform: Callable[[torch.Tensor], Any] | None = None,
        bad_input: str = "skip",
        reader: Reader | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        decode: str = "cpu",
    ) -> None:
        self.bad_input = check_bad_input(bad_input)
        if decode not in DECODE_CHOICES:
            raise ValueError(f"decode={decode!r} is not a valid choice; valid: {', '.join(DECODE_CHOICES)}")
        if decode == "gpu" and transform is not None:
            raise ValueError("decode='gpu' returns encoded bytes: the transform belongs to the GPU decoder, not here")
        self.decode = decode
        self.max_pixels = max_pixels
        self.root = Path(root)
        self.rows = list(rows)
        self.transform = transform
        self.reader = reader if reader is not None else LocalStore(root)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._sample(i, self.reader)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch at once: a reader with ``read_many`` (S3) keeps the batch's GETs in flight together,
        so per-object reads are bound by requests in flight / latency, not by one GET after another."""
        read_many = getattr(self.reader, "read_many", None)
        if read_many is None:
            return [self[i] for i in indices]
        results = read_many([self.rows[i].image for i in indices])
        return [self._sample(i, lambda _key, r=r: _reraise(r)) for i, r in zip(indices, results)]

    def _sample(self, i: int, reader: Reader) -> dict[str, Any]:
        row = self.rows[i]
        try:
            image = load_image(self._read(row.image, reader), self.max_pixels, self.decode)
        except BadImage as e:
            if self.bad_input == "fail":
                where = self.reader.url(row.image) if hasattr(self.reader, "url") else self.root / row.image
                raise DataError(f"{where}: {e} (bad_input='fail'; 'skip' skips and reports)") from None
            return {"bad": (row.id, f"{row.image}: {e}"), "index": i}
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": row.label, "index": i, "id": row.id}

    def _read(self, key: str, reader: Reader | None = None) -> bytes:
        try:
            return (reader or self.reader)(key)
        except FileNotFoundError:
            raise BadImage("image missing") from None
        except OSError as e:
            raise BadImage(f"unreadable ({e})") from None


def _reraise(result: bytes | BaseException) -> bytes:
    if isinstance(result, BaseException):
        raise result
    return result
