"""Map-style dataset over manifest rows, decoding bin JPEGs with a skip/fail policy for bad images.

Why the policy lives here: in the full bucket some images are missing or damaged, and one bad file
must not kill a multi-hour run (``bad_input="skip"``) — yet it must not vanish silently either. A
skipped sample is returned as ``{"bad": (id, reason)}`` and :func:`collate_skipping_bad` moves it
into the batch's ``bad`` list, so the count survives DataLoader worker processes and reaches the
logs. ``bad_input="fail"`` raises :class:`DataError` naming the file instead.

Decoding uses ``torchvision.io.decode_jpeg`` (libjpeg-turbo, no PIL round trip) and falls back to
PIL for anything else. libjpeg only *warns* on a truncated JPEG and fills the rest with grey, so
completeness is checked first: the end-of-image marker must follow the first scan.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from bincount.data.manifest import BAD_INPUT_CHOICES, DataError, ManifestRow, check_key

Reader = Callable[[str], bytes]
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_SOS = 0xDA
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field


class BadImage(Exception):
    """An image that cannot be read or decoded; the message is the reason."""


class FileReader:
    """The default ``reader``: bytes of ``root/key`` on the local disk (picklable for workers)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __call__(self, key: str) -> bytes:
        return (self.root / check_key(key)).read_bytes()

    def __repr__(self) -> str:
        return f"FileReader({str(self.root)!r})"


def _first_scan_offset(data: bytes) -> int:
    """Offset of the first SOS marker, walking the segment headers; BadImage if they run off the end."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise BadImage(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == _SOS:
            return pos
        elif marker in _STANDALONE_MARKERS:
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise BadImage("corrupt or truncated JPEG: its segment headers run past the end of the file")


def check_jpeg_complete(data: bytes) -> None:
    """Raise BadImage unless an end-of-image marker follows the first scan.

    Entropy-coded data cannot contain ``FF D9`` (0xFF is byte-stuffed), so an EOI after the first
    SOS is the real end of the image; an EOI before it (an EXIF thumbnail's) does not count.
    """
    if data.rfind(_JPEG_EOI) <= _first_scan_offset(data):
        raise BadImage("truncated JPEG: no end-of-image marker after the image data")


def _decode_pil(data: bytes) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()  # raises on truncation (ImageFile.LOAD_TRUNCATED_IMAGES is False by default)
        rgb = np.asarray(img.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def decode_image_bytes(data: bytes) -> torch.Tensor:
    """Decode image bytes to a uint8 3×H×W RGB tensor; BadImage with the reason on any failure."""
    if not data:
        raise BadImage("empty file")
    jpeg_error = None
    if data.startswith(_JPEG_SOI):
        check_jpeg_complete(data)
        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError as e:  # e.g. a JPEG flavour libjpeg-turbo refuses; PIL may still read it
            jpeg_error = e
    try:
        return _decode_pil(data)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        prefix = f"corrupt JPEG ({jpeg_error}); " if jpeg_error else ""
        raise BadImage(f"{prefix}cannot decode ({type(e).__name__}: {e})") from e


class BinImageDataset(Dataset):
    """Samples ``{"image", "label", "index", "id"}`` from manifest rows; bad images per ``bad_input``.

    ``transform`` receives a uint8 3×H×W tensor (torchvision v2 style). ``reader(key) -> bytes`` reads
    an image key such as ``bin-images/00001.jpg``; the default reads ``root/key`` from disk.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        rows: Sequence[ManifestRow],
        transform: Callable[[torch.Tensor], Any] | None = None,
        bad_input: str = "skip",
        reader: Reader | None = None,
    ) -> None:
        if bad_input not in BAD_INPUT_CHOICES:
            raise ValueError(f"bad_input={bad_input!r} is not one of {', '.join(BAD_INPUT_CHOICES)}")
        self.root = Path(root)
        self.rows = list(rows)
        self.transform = transform
        self.bad_input = bad_input
        self.reader = reader if reader is not None else FileReader(root)

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
            image = decode_image_bytes(self._read(row.image, reader))
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


def collate_skipping_bad(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples; list the bad ones as ``bad: [(id, reason), ...]``.

    An all-bad batch has ``image`` of shape (0, 3, 1, 1) and empty ``label``/``index``, so consumers
    can check ``len(batch["label"]) == 0`` and still log ``batch["bad"]``.
    """
    good = [s for s in samples if "bad" not in s]
    bad = [tuple(s["bad"]) for s in samples if "bad" in s]
    if not good:
        return {
            "image": torch.empty((0, 3, 1, 1)),
            "label": torch.empty(0, dtype=torch.long),
            "index": torch.empty(0, dtype=torch.long),
            "id": [],
            "bad": bad,
        }
    return {
        "image": torch.stack([s["image"] for s in good]),
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "index": torch.tensor([s["index"] for s in good], dtype=torch.long),
        "id": [s["id"] for s in good],
        "bad": bad,
    }
