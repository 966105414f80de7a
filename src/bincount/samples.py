"""One sample's image bytes: the decode rules, and how bad samples travel through a batch.

Why here, at the bottom: the DataModule's datasets, the shard reader, ``bincount pack`` and the model
server all decode untrusted bytes and must refuse the same things the same way.

- Decoding uses ``torchvision.io.decode_jpeg`` (libjpeg-turbo, no PIL round trip) and falls back to
  PIL for anything else. libjpeg only *warns* on a truncated JPEG and fills the rest with grey, so
  completeness is checked first: the end-of-image marker must follow the first scan.
- Image bombs are refused from the header, before any pixel is allocated: a 4.7 MB JPEG can declare
  enough pixels for a 1.2 GB tensor, and PIL's own guard only warns below 179 megapixels.
- A skipped sample is ``{"bad": (id, reason)}``; :func:`collate_skipping_bad` moves it into the
  batch's ``bad`` list, so the count survives DataLoader worker processes and reaches the logs.
- ``data.decode=gpu`` leaves the pixels to the GPU (:mod:`bincount.data.gpu_decode`): the workers keep
  the checks that need no pixel (:func:`encoded_image`) and pass the bytes on.

torch and torchvision are imported where a tensor is made: ``bincount pack --help`` and the header
checks need neither, and importing torch costs seconds.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# data.decode: where bytes become pixels. cpu: in the loader workers (decode_image_bytes); gpu: the workers only
# read and check headers, and the batch is decoded on the training device (bincount.data.gpu_decode).
DECODE_CHOICES = ("cpu", "gpu")
DEFAULT_MAX_PIXELS = 40_000_000  # ABID photos are well under 1 megapixel; a phone photo is ~12
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_SOS = 0xDA
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field
_SOF_MARKERS = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start-of-frame: height and width live here
# PIL names the file object it read in its errors ("cannot identify image file <_io.BytesIO object at 0x7f...>"):
# a heap address, not the input. The caller names the input (a file, "instance 3"); the reason says what failed.
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(e: BaseException) -> str:
    """``Type: message`` of a decoder's exception, without object reprs."""
    return f"{type(e).__name__}: {_OBJECT_REPR.sub('the image bytes', str(e))}"


class BadImage(Exception):
    """An image that cannot be read or decoded; the message is the reason."""


def _jpeg_segments(data: bytes):
    """Yield (marker, offset) of each segment header up to the first scan; BadImage if they run off the end."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise BadImage(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield marker, pos
        if marker == _SOS:
            return
        pos += 2 if marker in _STANDALONE_MARKERS else 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise BadImage("corrupt or truncated JPEG: its segment headers run past the end of the file")


def _first_scan_offset(data: bytes) -> int:
    for marker, pos in _jpeg_segments(data):
        if marker == _SOS:
            return pos
    raise AssertionError("unreachable: _jpeg_segments ends at a scan or raises")


def check_jpeg_complete(data: bytes) -> None:
    """Raise BadImage unless an end-of-image marker follows the first scan.

    Entropy-coded data cannot contain ``FF D9`` (0xFF is byte-stuffed), so an EOI after the first
    SOS is the real end of the image; an EOI before it (an EXIF thumbnail's) does not count.
    """
    if data.rfind(_JPEG_EOI) <= _first_scan_offset(data):
        raise BadImage("truncated JPEG: no end-of-image marker after the image data")


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame header, without decoding anything."""
    for marker, pos in _jpeg_segments(data):
        if marker in _SOF_MARKERS and pos + 9 <= len(data):
            return int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(data[pos + 5 : pos + 7], "big")
    raise BadImage("corrupt JPEG: no frame header (width and height) before the image data")


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """BadImage naming the size when ``width x height`` is above ``max_pixels`` (``data.max_pixels``)."""
    if width * height > max_pixels:
        raise BadImage(f"image too large: {width}x{height} = {width * height:,} pixels declared, "
                       f"above the limit of {max_pixels:,} (data.max_pixels)")


def check_image_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse what cannot be an image, and images declaring more than ``max_pixels``, from the header only.

    ``bincount pack`` runs this on bytes it never decodes, so a bomb cannot reach the shards either.
    """
    if not data:
        raise BadImage("empty file")
    if data.startswith(_JPEG_SOI):
        check_jpeg_complete(data)
        check_pixels(*jpeg_size(data), max_pixels)
        return
    try:
        _open_pil(data, max_pixels).close()
    except BadImage:
        raise
    except Exception as e:
        raise BadImage(f"not an image ({_reason(e)})") from e


def _open_pil(data: bytes, max_pixels: int):
    """PIL's lazy open (the header only), with ``max_pixels`` checked before any pixel is read.

    PIL refuses above twice its global ``MAX_IMAGE_PIXELS`` at open; that refusal gets the same message.
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise BadImage(f"image too large: {e} (data.max_pixels is {max_pixels:,})") from None
    try:
        check_pixels(*img.size, max_pixels)
    except BadImage:
        img.close()
        raise
    return img


def _decode_pil(data: bytes, max_pixels: int) -> torch.Tensor:
    with _open_pil(data, max_pixels) as img:
        img.load()  # raises on truncation (ImageFile.LOAD_TRUNCATED_IMAGES is False by default)
        rgb = np.asarray(img.convert("RGB"))
    import torch

    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode image bytes to a uint8 3×H×W RGB tensor; BadImage with the reason on any failure."""
    if not data:
        raise BadImage("empty file")
    jpeg_error = None
    if data.startswith(_JPEG_SOI):
        check_jpeg_complete(data)
        check_pixels(*jpeg_size(data), max_pixels)
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError as e:  # e.g. a JPEG flavour libjpeg-turbo refuses; PIL may still read it
            jpeg_error = e
    try:
        return _decode_pil(data, max_pixels)
    except BadImage:
        raise
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        prefix = f"corrupt JPEG ({jpeg_error}); " if jpeg_error else ""
        raise BadImage(f"{prefix}cannot decode ({_reason(e)})") from e


def encoded_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """``data.decode=gpu``: the bytes as a 1-D uint8 tensor, once the header checks pass (BadImage if not).

    The worker still refuses what it can without decoding a pixel (empty, truncated, an image bomb, not an
    image), so those follow ``data.bad_input`` exactly as with ``data.decode=cpu``; only a JPEG whose
    entropy-coded data is damaged is found later, by the decoder.
    """
    check_image_header(data, max_pixels)
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def load_image(data: bytes, max_pixels: int, decode: str) -> torch.Tensor:
    """Pixels (``decode="cpu"``, uint8 3xHxW) or checked encoded bytes (``"gpu"``, uint8 1-D); BadImage on bad input."""
    if decode not in DECODE_CHOICES:
        raise ValueError(f"data.decode={decode!r} is not a valid choice; valid: {', '.join(DECODE_CHOICES)}")
    return decode_image_bytes(data, max_pixels) if decode == "cpu" else encoded_image(data, max_pixels)


def collate_skipping_bad(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples; list the bad ones as ``bad: [(id, reason), ...]``.

    An all-bad batch has ``image`` of shape (0, 3, 1, 1) and empty ``label``/``index``, so consumers
    can check ``len(batch["label"]) == 0`` and still log ``batch["bad"]``. Encoded images (1-D, from
    ``data.decode=gpu``) stay a list: their lengths differ, and the GPU decoder takes a list.
    """
    import torch

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
    images = [s["image"] for s in good]
    return {
        "image": images if images[0].dim() == 1 else torch.stack(images),
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "index": torch.tensor([s["index"] for s in good], dtype=torch.long),
        "id": [s["id"] for s in good],
        "bad": bad,
    }
