"""One bin: the count is drawn first from its own stream, then the scene, items, camera and metadata,
so the background cannot leak the label and ``bin_count`` reads a label without rendering."""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from bincount.data.synthetic.spec import Colour, FOREGROUND, JPEG_QUALITY, MIN_SIZE, _check_int, _count_probabilities
from bincount.data.synthetic.scene import NOISE_LEVELS, NOISE_MARGIN, VARIANTS, _draw_bin, _foreground, _lighting, _noise_bank
from bincount.data.synthetic.items import _ADJECTIVES, _ASIN_CHARS, _HUE_NAMES, _NOUNS, _Sku, _make_sku, _place_items

# --------------------------------------------------------------------------------------------------
# Camera: lighting, blur, noise, JPEG
# --------------------------------------------------------------------------------------------------


def _camera(rng: np.random.Generator, image: Image.Image) -> bytes:
    """Sometimes blur; lighting (gradient, vignette, colour cast), exposure and sensor noise; JPEG."""
    size = image.width
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.8) * size / 128))
    lighting, peak = _lighting(size, int(rng.integers(VARIANTS)))
    gain = peak * rng.uniform(0.75, 1.15)
    image = ImageChops.multiply(image, lighting)  # image * lighting / peak
    dy, dx = rng.integers(0, NOISE_MARGIN, 2).tolist()
    noise = _noise_bank(size, NOISE_LEVELS[rng.integers(len(NOISE_LEVELS))]).crop((dx, dy, dx + size, dy + size))
    buffer = io.BytesIO()  # (x + noise) * gain - 128 * gain: image * lighting * exposure plus noise, clipped
    ImageChops.add(image, noise, scale=1 / gain, offset=-round(128 * gain)).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Metadata in the bucket's schema
# --------------------------------------------------------------------------------------------------


def _colour_name(colour: Colour) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(colour / 255))
    if s < 0.2:
        return "Black" if v < 0.3 else "White" if v > 0.8 else "Grey"
    return _HUE_NAMES[int(h * len(_HUE_NAMES)) % len(_HUE_NAMES)].title()


def _asin(rng: np.random.Generator) -> str:
    return "B0" + "".join(_ASIN_CHARS[i] for i in rng.integers(0, len(_ASIN_CHARS), 8))


def _sku_record(rng: np.random.Generator, sku: _Sku, quantity: int) -> dict:
    """One BIN_FCSKU_DATA entry with the real keys: ASIN, names, quantity, dimensions (IN), weight (pounds)."""
    length = sku.scale * 24.0  # a bin is roughly two feet across
    width = length * sku.sprite.height / sku.sprite.width
    height = rng.uniform(0.3, 4.0)
    name = f"{_ADJECTIVES[rng.integers(len(_ADJECTIVES))]} {_colour_name(sku.colour)} {sku.texture.title()} {_NOUNS[sku.shape]} Item"
    record = {key: {"unit": "IN", "value": float(value)} for key, value in (("height", height), ("length", length), ("width", width))}
    weight = length * width * height * rng.uniform(0.005, 0.03)
    record.update(name=name, normalizedName=name, quantity=int(quantity), weight={"unit": "pounds", "value": float(weight)})
    return record


def _metadata(rng: np.random.Generator, skus: list[_Sku], quantities: list[int]) -> dict:
    """The bucket's schema: items keyed by ASIN, EXPECTED_QUANTITY = sum of quantities."""
    items: dict[str, dict] = {}
    for sku, quantity in zip(skus, quantities):
        asin = _asin(rng)
        while asin in items:  # astronomically rare, but a clash would lose units from the label
            asin = _asin(rng)
        items[asin] = {"asin": asin, **_sku_record(rng, sku, quantity)}
    return {"BIN_FCSKU_DATA": items, "EXPECTED_QUANTITY": int(sum(quantities))}


def _split_into_skus(rng: np.random.Generator, n: int) -> list[int]:
    """Quantities per SKU summing to n: about half as many SKUs as units, as in real bins."""
    if n == 0:
        return []
    k = 1 + int(rng.binomial(n - 1, 0.5))
    owners = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    return np.bincount(owners, minlength=k).tolist()


# --------------------------------------------------------------------------------------------------
# One bin
# --------------------------------------------------------------------------------------------------


def image_id(index: int) -> str:
    """Zero-padded id of image `index` (0-based): "00001", "00002", ..., longer above 99999."""
    return f"{index + 1:05d}"


def _draw_count(rng: np.random.Generator, probabilities: Mapping[int, float]) -> int:
    cumulative = np.cumsum(list(probabilities.values()))
    position = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return list(probabilities)[min(position, len(probabilities) - 1)]


def render_bin(seed: int, index: int, size: int = 128, counts: Mapping[int, float] | None = None) -> tuple[bytes, dict]:
    """Render bin `index` of dataset `seed`: (JPEG bytes of a size x size image, ABID metadata dict)."""
    _check_int("seed", seed, 0)
    _check_int("index", index, 0)
    return _render(seed, index, _check_int("size", size, MIN_SIZE), _count_probabilities(counts))


def bin_count(seed: int, index: int, counts: Mapping[int, float] | None = None) -> int:
    """The item count (EXPECTED_QUANTITY) of bin `index` of dataset `seed`, without rendering it."""
    _check_int("seed", seed, 0)
    _check_int("index", index, 0)
    return _streams(seed, index, _count_probabilities(counts))[0]


def _streams(seed: int, index: int, probabilities: Mapping[int, float]) -> tuple[int, np.random.Generator, np.random.Generator]:
    """(count, scene stream, item stream): the count is drawn first and the items get their own stream,
    so the bin, bands, lighting and noise of an index are the same whatever its count."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    n = _draw_count(rng, probabilities)
    return n, rng, np.random.default_rng(rng.integers(2**63))


def _render(seed: int, index: int, size: int, probabilities: Mapping[int, float]) -> tuple[bytes, dict]:
    n, rng, item_rng = _streams(seed, index, probabilities)
    canvas, back, tint = _draw_bin(rng, size)
    foreground = _foreground(rng, size, back)
    labels = np.where(np.asarray(foreground.getchannel("A")) >= 200, FOREGROUND, 0).astype(np.uint8)
    quantities = _split_into_skus(item_rng, n)
    crowd = min(1.0, math.sqrt(4 / max(n, 1)))
    skus = [_make_sku(item_rng, size, item_rng.uniform(0.2, 0.36) * crowd, tint) for _ in quantities]
    _place_items(item_rng, canvas, labels, skus, quantities, back)
    canvas.paste(foreground, (0, 0), foreground)
    return _camera(rng, canvas), _metadata(item_rng, skus, quantities)


