"""Synthetic Amazon-Bin-Image-Dataset bins, written in the real ABID layout.

Why: the real dataset is 31 GB behind S3, has noisy labels and cannot be shipped with tests. A
renderer that writes ``<out>/bin-images/<id>.jpg`` and ``<out>/metadata/<id>.json`` exactly like the
bucket (same ids, same metadata schema) lets one reader, the training loop and the smoke tests run
offline and in minutes on a CPU, with labels that are known to be right.

What a bin looks like, after the real photos: a pod seen from the front (back wall, side walls and
ceiling in rough perspective, yellow fabric / cardboard / grey tint with fibre noise); N items grouped
into SKUs (units of one SKU look alike, as in real bins) of varied shape (boxes showing two faces,
rounded packs, ellipses, polygons), colour, texture (flat, stripes, gradients, mottled, printed labels)
and size, with outlines and drop shadows; in front of them 1-3 translucent bands of thin elastic lines,
some with a solid cord, the bin's lip with its white label, sometimes a frame edge or shelf; then a
brightness gradient, vignette, colour cast, exposure, sometimes blur, sensor noise, JPEG quality 90.
Placement rejects spots where any item, the new one included, would keep less than MIN_VISIBLE of its
pixels (cords, lip and frame count as covering; the see-through bands do not), so every item stays
countable while overlap and occlusion still happen.

Determinism: bin ``index`` of dataset ``seed`` depends only on ``SeedSequence([seed, index])`` (and
RENDERER_VERSION, given the same numpy and Pillow), so partial, resumed and parallel renders write
byte-identical files. The count is drawn first and the items use their own sub-stream, so an index's
bin, bands, lighting and noise are the same whatever its count: the background cannot leak the label,
and ``bin_count`` reads a label without rendering.

Speed: 190-210 images/s in one process at size 128 (best of 12 batches of 40 ``render_bin`` calls,
~5 ms/image) on this project's 2-core x86-64 VM (Intel Xeon @ 2.50GHz, shared, no GPU), measured
while the machine was otherwise idle; under load from other processes expect 120-160. End to end,
``bincount render`` writing files did 140 images/s with 1 worker and 200 with 2 (800 images). Python
call overhead dominates at this size, hence drawing with Pillow's C operations rather than per-pixel
numpy, one sprite per SKU rotated per unit, and lighting maps, fibre noise, elastic bands and sensor
noise looked up from small cached banks of deterministic VARIANTS rather than computed per image.

No torch here: this module only needs numpy, Pillow and rich, so rendering workers start fast.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "CAPSTONE_COUNT_DISTRIBUTION",
    "add_arguments",
    "bin_count",
    "image_id",
    "parse_counts",
    "render_bin",
    "render_dataset",
    "run",
]

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
IMAGE_DIR = "bin-images"
METADATA_DIR = "metadata"

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


# --------------------------------------------------------------------------------------------------
# Small drawing helpers
# --------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> Colour:
    rgb = colorsys.hsv_to_rgb(float(h) % 1.0, min(max(float(s), 0.0), 1.0), min(max(float(v), 0.0), 1.0))
    return np.array(rgb, dtype=np.float32) * np.float32(255)


def _fill(colour: Colour, alpha: int | None = None) -> tuple[int, ...]:
    """An ImageDraw fill from a float colour (plain Python: np.clip on 3 values costs more than this)."""
    rgb = tuple(min(255, max(0, int(c))) for c in colour.tolist())
    return rgb if alpha is None else (*rgb, alpha)


def _fabric(rng: np.random.Generator) -> Colour:
    """The yellow fabric of the pods' frames, lips and cords."""
    return _hsv(rng.normal(0.14, 0.01), rng.uniform(0.3, 0.55), rng.uniform(0.72, 0.9))


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: x as a (1, size) row, y as a (size, 1) column, for broadcasting."""
    axis = np.arange(size, dtype=np.float32) + 0.5
    return axis[None, :], axis[:, None]


NOISE_LEVELS = (1.5, 2.5, 3.5, 5.0)  # sensor noise standard deviations, in 8-bit levels
NOISE_MARGIN = 64  # a noise bank is this much larger than the image: 64 x 64 shifted windows
# Per-image fields that cost more to compute than to look up (lighting, fibre, elastic bands) come from
# VARIANTS cached, deterministic versions per image size.
VARIANTS = 32
FIBRE_SEED, LIGHTING_SEED, NOISE_SEED, BAND_SEED = 1, 2, 3, 4


@lru_cache(maxsize=16)
def _noise_bank(size: int, sigma: float) -> Image.Image:
    """Fixed Gaussian noise centred on 128; images add shifted windows of it, which is far cheaper than
    drawing fresh normals per image and just as good as sensor noise."""
    side = size + NOISE_MARGIN
    noise = np.random.default_rng([NOISE_SEED, size]).standard_normal((side, side, 3), dtype=np.float32) * np.float32(sigma) + 128
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int, amplitude: float) -> Image.Image:
    """Low-frequency noise as an 'L' image centred on 128: a coarse random grid upscaled bilinearly."""
    coarse = (128 + rng.uniform(-amplitude, amplitude, (cells, cells))).astype(np.uint8)
    return Image.fromarray(coarse, "L").resize((width, height), Image.BILINEAR)


@lru_cache(maxsize=2 * VARIANTS)
def _fibre(size: int, variant: int) -> Image.Image:
    """Cardboard/fabric fibre: low-frequency RGB noise centred on 128, one of VARIANTS per size."""
    rng = np.random.default_rng([FIBRE_SEED, size, variant])
    noise = _smooth_noise(rng, size, size, int(rng.integers(12, 32)), rng.uniform(6, 16))
    return Image.merge("RGB", (noise,) * 3)


@lru_cache(maxsize=2 * VARIANTS)
def _lighting(size: int, variant: int) -> tuple[Image.Image, float]:
    """A brightness gradient times a vignette times a colour cast, one of VARIANTS per size: an RGB
    multiplier scaled so its peak is 255, and that peak."""
    rng = np.random.default_rng([LIGHTING_SEED, size, variant])
    xs, ys = _grid(size)
    u, v = xs * np.float32(2 / size) - 1, ys * np.float32(2 / size) - 1
    angle, slope, vignette = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.3), rng.uniform(0.1, 0.4)
    gain = (1 + slope * (u * math.cos(angle) + v * math.sin(angle))) * (1 - vignette / 2 * (u * u + v * v))
    cast = 1 + np.clip(rng.normal(0, 0.04, 3), -0.1, 0.1).astype(np.float32)
    gain = cast[:, None, None] * gain  # channels first: contiguous, fast
    peak = float(gain.max())
    channels = [Image.fromarray(c, "L") for c in (gain * np.float32(255 / peak)).astype(np.uint8)]
    return Image.merge("RGB", channels), peak


# --------------------------------------------------------------------------------------------------
# The bin behind the items: walls, back, fibre texture
# --------------------------------------------------------------------------------------------------

Quad = tuple[tuple[float, float], ...]  # top-left, top-right, bottom-right, bottom-left

_BIN_TINTS = (  # (hue, saturation, value) centres: yellow fabric (most pods), cardboard, kraft, grey
    (0.14, 0.40, 0.80),
    (0.14, 0.30, 0.70),
    (0.09, 0.35, 0.70),
    (0.08, 0.45, 0.55),
    (0.60, 0.05, 0.55),
)


def _bin_tint(rng: np.random.Generator) -> Colour:
    h, s, v = _BIN_TINTS[rng.integers(len(_BIN_TINTS))]
    return _hsv(h + rng.normal(0, 0.01), s + rng.normal(0, 0.06), v + rng.normal(0, 0.07))


def _bin_geometry(rng: np.random.Generator, size: int) -> Quad:
    """The back of the bin where the items are, narrower at the top: a rough perspective."""
    top = size * rng.uniform(0.06, 0.18)
    bottom = size * rng.uniform(0.88, 0.98)
    back_inset, front_inset = size * rng.uniform(0.06, 0.18), size * rng.uniform(0.0, 0.06)
    skew, jitter = size * rng.uniform(-0.04, 0.04), rng.normal(0, size * 0.01, 2)
    return (
        (back_inset + skew, top),
        (size - back_inset + skew + jitter[0], top + jitter[1]),
        (size - front_inset, bottom),
        (front_inset, bottom),
    )


def _draw_bin(rng: np.random.Generator, size: int) -> tuple[Image.Image, Quad, Colour]:
    """Ceiling, side walls, lip and back as shaded polygons with darker seams, plus fibre noise."""
    tint = _bin_tint(rng)
    tl, tr, br, bl = back = _bin_geometry(rng, size)
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    seam, width = _fill(tint * 0.45), max(1, size // 96)
    faces = (
        ([(0, 0), (size, 0), tr, tl], rng.uniform(0.45, 0.7)),
        ([(0, 0), tl, bl, (0, size)], rng.uniform(0.6, 0.9)),
        ([(size, 0), (size, size), br, tr], rng.uniform(0.6, 0.9)),
        ([bl, br, (size, size), (0, size)], rng.uniform(0.75, 0.95)),
        (list(back), rng.uniform(0.85, 1.0)),
    )
    for polygon, shade in faces:
        draw.polygon(polygon, fill=_fill(tint * shade), outline=seam, width=width)
    fibre = _fibre(size, int(rng.integers(VARIANTS)))
    return ImageChops.add(image, fibre, scale=1.0, offset=-128), back, tint


# --------------------------------------------------------------------------------------------------
# In front of the items: elastic bands, cords, the bin's lip and label, frame edges
# --------------------------------------------------------------------------------------------------


Curve = tuple[float, float, float]  # (top, slope, sag): y(t) = top + slope*(t - 1/2) + 4*sag*t*(1 - t), t = x/size


def _curve_y(curve: Curve, t: np.ndarray) -> np.ndarray:
    top, slope, sag = curve
    return top + slope * (t - 0.5) + 4 * sag * t * (1 - t)


@lru_cache(maxsize=2 * VARIANTS)
def _band(size: int, variant: int) -> tuple[Image.Image, Curve]:
    """A sagging band of thin parallel elastic lines, one of VARIANTS per size: an 'L' alpha strip as
    wide as the image, and the curve of its top edge within the strip."""
    rng = np.random.default_rng([BAND_SEED, size, variant])
    xs, ys = _grid(size)
    t = xs / np.float32(size)
    height, slope, sag = size * rng.uniform(0.1, 0.28), rng.normal(0, 0.04) * size, rng.uniform(0, 0.05) * size
    curve = (-float(_curve_y((0.0, slope, sag), t).min()), slope, sag)  # the edge's highest point at row 0
    edge = _curve_y(curve, t)
    scale = size / 128
    spacing, width = max(1.6, rng.uniform(1.7, 2.8) * scale), max(0.6, 0.8 * scale)
    rows = np.arange(0, height, 0.25)  # the profile across the lines, at quarter-pixel steps
    profile = np.clip(1 - np.abs(rows - spacing * np.round(rows / spacing)) / width, 0, 1) * rng.uniform(0.4, 0.7)
    profile = np.concatenate([[0], profile, [0]]).astype(np.float32)  # zero outside the band
    index = ((ys[: int(edge.max() + height) + 2] - edge) * 4 + 1).astype(np.intp)
    return Image.fromarray((np.take(profile, index, mode="clip") * 255).astype(np.uint8), "L"), curve


def _mesh_bands(rng: np.random.Generator, size: int, back: Quad) -> tuple[Image.Image, list[Curve]]:
    """1-3 translucent bands of elastic lines across the front (an RGBA layer) and their top curves."""
    alpha = Image.new("L", (size, size))
    curves = []
    for centre in np.sort(rng.uniform(back[0][1] + 0.1 * size, 0.85 * size, int(rng.integers(1, 4)))).tolist():
        strip, (offset, slope, sag) = _band(size, int(rng.integers(VARIANTS)))
        top = int(centre - strip.height / 2)
        box = (0, top, size, top + strip.height)
        alpha.paste(ImageChops.lighter(alpha.crop(box), strip), box)  # overlapping bands: the max
        curves.append((top + offset, slope, sag))
    layer = Image.new("RGB", (size, size), _fill(_hsv(rng.uniform(0, 1), rng.uniform(0, 0.1), rng.uniform(0.8, 0.97))))
    layer.putalpha(alpha)
    return layer, curves


def _draw_cords(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, curves: list[Curve]) -> None:
    """Solid cords along some band tops (fabric-yellow or metal), with a highlight: they hide what is behind."""
    t = np.linspace(-0.05, 1.05, 9)
    for curve in curves:
        if rng.random() < 0.5:
            continue
        points = list(zip((t * size).tolist(), _curve_y(curve, t).tolist()))
        width = max(2, round(size * rng.uniform(0.02, 0.035)))
        colour = _fabric(rng) if rng.random() < 0.6 else _hsv(0, 0, rng.uniform(0.35, 0.6))
        draw.line(points, fill=_fill(colour, 255), width=width, joint="curve")
        draw.line([(x, y - width / 4) for x, y in points], fill=_fill(colour * 1.2 + 25, 255), width=max(1, width // 3))


def _draw_lip(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    """The bin's front lip along the bottom, with the white bin label (text marks and a 2-D code)."""
    h0, h1 = size * rng.uniform(0.04, 0.09, 2)
    draw.polygon([(0, size - h0), (size, size - h1), (size, size), (0, size)], fill=_fill(_fabric(rng), 255))
    lh = max(3, min(h0, h1) * 0.75)
    lw = size * rng.uniform(0.2, 0.32)
    left, top = size * rng.uniform(0.25, 0.75) - lw / 2, size - lh
    draw.rectangle([left, top, left + lw, size], fill=(235, 235, 230, 255))
    ink = (30, 30, 30, 255)
    draw.rectangle([left + lw * 0.08, top + lh * 0.3, left + lw * 0.45, size - lh * 0.25], fill=ink)  # "1A^"
    code = lh * 0.7
    draw.rectangle([left + lw * 0.65, top + lh * 0.15, left + lw * 0.65 + code, top + lh * 0.15 + code], fill=(90, 90, 90, 255))


def _draw_frame(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    """Sometimes a fabric frame edge down one side and a metal shelf edge across the top."""
    if rng.random() < 0.5:
        w = size * rng.uniform(0.03, 0.08)
        x = 0 if rng.random() < 0.5 else size - w
        draw.rectangle([x, 0, x + w, size], fill=_fill(_fabric(rng) * rng.uniform(0.85, 1.0), 255))
    if rng.random() < 0.4:
        draw.rectangle([0, 0, size, size * rng.uniform(0.02, 0.05)], fill=_fill(_hsv(0, 0, rng.uniform(0.4, 0.7)), 255))


def _foreground(rng: np.random.Generator, size: int, back: Quad) -> Image.Image:
    """Everything in front of the items, as one RGBA layer composited after them."""
    layer, curves = _mesh_bands(rng, size, back)
    draw = ImageDraw.Draw(layer)
    _draw_cords(rng, draw, size, curves)
    _draw_lip(rng, draw, size)
    _draw_frame(rng, draw, size)
    return layer


# --------------------------------------------------------------------------------------------------
# Items: one sprite per SKU, pasted once per unit
# --------------------------------------------------------------------------------------------------

_SHAPES = ("box", "box", "pack", "ellipse", "polygon")
_TEXTURES = ("flat", "stripes", "gradient", "mottled", "label", "label")
_HUE_NAMES = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
_NOUNS = {"box": "Boxed", "pack": "Padded Pack", "ellipse": "Round Tin", "polygon": "Blister Pack"}
_ADJECTIVES = ("Deluxe", "Compact", "Classic", "Premium", "Value", "Travel", "Pro", "Mini")
_ASIN_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class _Sku:
    sprite: Image.Image  # RGBA, unrotated, outlined
    shape: str
    texture: str
    colour: Colour
    scale: float  # sprite width as a fraction of the image side


@dataclass(frozen=True)
class _Outline:
    method: str  # the ImageDraw method that draws the silhouette, and its arguments
    args: dict
    sides: tuple = ()  # boxes: the top and side faces as polygons, drawn darker over the texture


def _item_colour(rng: np.random.Generator, avoid: Colour) -> Colour:
    """A packaging colour (saturated print, white/black, cardboard, muted) that stands out from `avoid`."""
    best, best_dist = avoid, -1.0
    for _ in range(4):
        kind = rng.random()
        if kind < 0.4:
            colour = _hsv(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
        elif kind < 0.6:
            colour = _hsv(0, 0, rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.88, 1.0)]))
        elif kind < 0.8:
            colour = _hsv(rng.uniform(0.06, 0.1), rng.uniform(0.3, 0.5), rng.uniform(0.45, 0.75))
        else:
            colour = _hsv(rng.random(), rng.uniform(0.1, 0.35), rng.uniform(0.3, 0.9))
        dist = float(np.abs(colour - avoid).sum())
        if dist > 120:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def _texture(rng: np.random.Generator, kind: str, w: int, h: int, colour: Colour) -> Image.Image:
    """A w x h RGB surface of one texture kind based on `colour`: blends are Image.composite with an L mask."""
    base = Image.new("RGB", (w, h), _fill(colour))
    second = _hsv(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.3, 1))
    if kind in ("stripes", "gradient"):
        angle = rng.uniform(0, np.pi)
        along = np.arange(w, dtype=np.float32)[None, :] * math.cos(angle) + np.arange(h, dtype=np.float32)[:, None] * math.sin(angle)
        if kind == "stripes":
            weight = (np.sin(along * np.float32(2 * np.pi / rng.uniform(3, 8))) > rng.uniform(-0.3, 0.5)) * np.uint8(255)
        else:
            weight = (along - along.min()) * np.float32(255 * rng.uniform(0.5, 1) / max(float(np.ptp(along)), 1.0))
        return Image.composite(Image.new("RGB", (w, h), _fill(second)), base, Image.fromarray(weight.astype(np.uint8), "L"))
    if kind == "mottled":
        shade = Image.new("RGB", (w, h), _fill(colour * rng.uniform(0.6, 1.3)))
        return Image.composite(shade, base, _smooth_noise(rng, w, h, int(rng.integers(3, 7)), 100))
    if kind == "label":
        _print_label(rng, ImageDraw.Draw(base), w, h, second)
    return base


def _print_label(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int, accent: Colour) -> None:
    """A light label with an accent bar and dark text-like rows."""
    lh, lw = max(2, int(h * rng.uniform(0.35, 0.7))), max(2, int(w * rng.uniform(0.4, 0.8)))
    top, left = int(rng.integers(0, h - lh + 1)), int(rng.integers(0, w - lw + 1))
    paper = _hsv(0, 0, rng.uniform(0.85, 1.0))
    bar = max(1, lh // 5)
    draw.rectangle([left, top, left + lw - 1, top + lh - 1], fill=_fill(paper))
    draw.rectangle([left, top, left + lw - 1, top + bar - 1], fill=_fill(accent))
    for row in range(top + bar + 1, top + lh - 1, 3):
        draw.line([(left + 1, row), (left + int(lw * rng.uniform(0.3, 0.9)), row)], fill=_fill(paper * 0.25))


def _outline(rng: np.random.Generator, shape: str, w: int, h: int) -> _Outline:
    """A silhouette filling the w x h sprite: box (front face + two faces in perspective), rounded pack,
    ellipse or irregular convex-ish polygon."""
    r, b = w - 1, h - 1
    if shape == "box":
        d = max(2, int(min(w, h) * rng.uniform(0.12, 0.25)))
        top, side = ((0, d), (d, 0), (r, 0), (r - d, d)), ((r - d, d), (r, 0), (r, b - d), (r - d, b))
        return _Outline("polygon", {"xy": [(0, d), (d, 0), (r, 0), (r, b - d), (r - d, b), (0, b)]}, (top, side))
    if shape == "pack":
        return _Outline("rounded_rectangle", {"xy": [0, 0, r, b], "radius": int(min(w, h) * rng.uniform(0.15, 0.4))})
    if shape == "ellipse":
        return _Outline("ellipse", {"xy": [0, 0, r, b]})
    k = int(rng.integers(5, 9))
    angles, radius = np.sort(rng.uniform(0, 2 * np.pi, k)), rng.uniform(0.7, 1.0, k)
    xs, ys = (1 + radius * np.cos(angles)) * r / 2, (1 + radius * np.sin(angles)) * b / 2
    return _Outline("polygon", {"xy": list(zip(xs.tolist(), ys.tolist()))})


def _make_sku(rng: np.random.Generator, size: int, scale: float, avoid: Colour) -> _Sku:
    """One SKU's unrotated sprite: textured silhouette, darker box faces, dark outline."""
    shape, texture = _SHAPES[rng.integers(len(_SHAPES))], _TEXTURES[rng.integers(len(_TEXTURES))]
    colour = _item_colour(rng, avoid)
    w = max(4, int(size * scale))
    h = max(4, int(w * rng.uniform(0.45, 1.0)))
    outline = _outline(rng, shape, w, h)
    mask = Image.new("L", (w, h))
    getattr(ImageDraw.Draw(mask), outline.method)(**outline.args, fill=255)
    sprite = _texture(rng, texture, w, h, colour)
    sprite.putalpha(mask)
    draw, edge = ImageDraw.Draw(sprite), _fill(colour * 0.5, 255)
    for face, shade in zip(outline.sides, rng.uniform(0.45, 0.75, 2).tolist()):
        draw.polygon(face, fill=_fill(colour * shade, 255), outline=edge)
    getattr(draw, outline.method)(**outline.args, outline=edge)
    return _Sku(sprite=sprite, shape=shape, texture=texture, colour=colour, scale=scale)


def _window(labels: np.ndarray, solid: np.ndarray, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """The label-map window under a solid mask placed at (top, left), and the part of the mask inside it."""
    size = labels.shape[0]
    h, w = solid.shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, size), min(left + w, size)
    return labels[y0:y1, x0:x1], solid[max(0, -top) : max(0, -top) + y1 - y0, max(0, -left) : max(0, -left) + x1 - x0]


def _fits(labels: np.ndarray, visible: list[int], areas: list[int], solid: np.ndarray, top: int, left: int) -> bool:
    """Would every item, the new one included, keep MIN_VISIBLE of its pixels (the foreground hides some)?"""
    window, inside = _window(labels, solid, top, left)
    covered = np.bincount(window[inside], minlength=256)
    area = int(solid.sum())
    if area == 0 or int(inside.sum()) - covered[FOREGROUND] < MIN_VISIBLE * area:
        return False
    return all(vis - covered[item] >= MIN_VISIBLE * total for item, (vis, total) in enumerate(zip(visible, areas), start=1))


def _mark(labels: np.ndarray, visible: list[int], areas: list[int], solid: np.ndarray, top: int, left: int) -> None:
    """Record a new item in the label map (over earlier items, under the foreground) and update visibility."""
    window, inside = _window(labels, solid, top, left)
    inside = inside & (window != FOREGROUND)
    covered = np.bincount(window[inside], minlength=256)
    for item in range(1, len(visible) + 1):
        visible[item - 1] -= int(covered[item])
    window[inside] = len(visible) + 1
    visible.append(int(inside.sum()))
    areas.append(int(solid.sum()))


def _paste(canvas: Image.Image, item: Image.Image, alpha: Image.Image, top: int, left: int) -> None:
    """The drop shadow down-right (the item's alpha, faded to SHADOW), then the item itself."""
    offset = max(1, round(canvas.width * 0.02))
    shadow = Image.blend(Image.new("L", alpha.size), alpha, SHADOW)
    canvas.paste((0, 0, 0), (left + offset, top + offset, left + offset + shadow.width, top + offset + shadow.height), shadow)
    canvas.paste(item, (left, top), item)


def _place_items(rng: np.random.Generator, canvas: Image.Image, labels: np.ndarray, skus: list[_Sku], quantities: list[int], back: Quad) -> None:
    """Paste the units in random order, each where it hides no item below MIN_VISIBLE (the last try if none)."""
    (tlx, tly), (trx, _), (brx, bry), (blx, _) = back
    units = np.repeat(np.arange(len(skus)), quantities)
    rng.shuffle(units)
    visible: list[int] = []
    areas: list[int] = []
    for sku in (skus[i] for i in units):
        for attempt in range(PLACEMENT_TRIES):
            if attempt % 4 == 0:  # rotating costs more than testing a spot: re-rotate now and then
                item = sku.sprite.rotate(rng.uniform(0, 360), Image.BILINEAR, expand=True)
                alpha = item.getchannel("A")
                solid = np.asarray(alpha) > 127
            top = int(rng.uniform(tly, bry) - item.height / 2)
            left = int(rng.uniform(min(tlx, blx), max(trx, brx)) - item.width / 2)
            if _fits(labels, visible, areas, solid, top, left):
                break
        _paste(canvas, item, alpha, top, left)
        _mark(labels, visible, areas, solid, top, left)


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


# --------------------------------------------------------------------------------------------------
# A dataset directory: atomic files, resume, completion marker
# --------------------------------------------------------------------------------------------------


def _parameters(num_images: int, seed: int, size: int, probabilities: Mapping[int, float]) -> dict:
    """What determines the files (not workers/progress), as stored in the markers."""
    return {
        "renderer_version": RENDERER_VERSION,
        "num_images": num_images,
        "seed": seed,
        "size": size,
        "counts": {str(c): p for c, p in probabilities.items()},
    }


def _check_marker(path: Path, parameters: dict) -> bool:
    """True if `path` holds these parameters, False if absent; ValueError naming any differences."""
    if not path.exists():
        return False
    stored = json.loads(path.read_text())
    diffs = [f"{key}: {stored.get(key)!r} there, {value!r} requested" for key, value in parameters.items() if stored.get(key) != value]
    if diffs:
        raise ValueError(f"{path.parent} was rendered with other parameters ({path.name}); use another directory or delete it. " + "; ".join(diffs))
    return True


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a hidden temporary file and os.replace, so a killed render leaves no truncated file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _paths(out: Path, index: int) -> tuple[Path, Path]:
    name = image_id(index)
    return out / IMAGE_DIR / f"{name}.jpg", out / METADATA_DIR / f"{name}.json"


def _render_chunk(job: tuple[str, int, int, dict[int, float], Sequence[int]]) -> int:
    """Render and write the given indices (a Pool task); returns how many images were written."""
    out, seed, size, probabilities, indices = job
    for index in indices:
        image_path, meta_path = _paths(Path(out), index)
        jpeg, metadata = _render(seed, index, size, probabilities)
        _write_atomic(image_path, jpeg)  # image first: an index counts as done once its metadata exists
        _write_atomic(meta_path, json.dumps(metadata, indent=4, sort_keys=True).encode())
    return len(indices)


def _missing(out: Path, num_images: int) -> list[int]:
    return [i for i in range(num_images) if not all(p.exists() for p in _paths(out, i))]


def _chunks(indices: list[int], workers: int) -> Iterator[list[int]]:
    step = max(1, min(64, math.ceil(len(indices) / (workers * 8))))
    for start in range(0, len(indices), step):
        yield indices[start : start + step]


def _progress_bar(enabled: bool) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # only where shown

    return Progress(TextColumn("rendering bins"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not enabled)


def _run_jobs(jobs: list[tuple], workers: int) -> Iterator[int]:
    """Run the chunks here, or in a pool of `workers` processes; yields images written per chunk."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_render_chunk, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:  # spawn: safe if torch is loaded
        yield from pool.imap_unordered(_render_chunk, jobs)


def _check_not_foreign(out: Path) -> None:
    """Refuse to 'resume' into bins this renderer did not start (no partial marker), e.g. real ABID data."""
    if not (out / PARTIAL_MARKER).exists() and any(any((out / sub).glob("*")) for sub in (IMAGE_DIR, METADATA_DIR) if (out / sub).is_dir()):
        raise ValueError(f"{out} already holds {IMAGE_DIR}/ or {METADATA_DIR}/ files but no {PARTIAL_MARKER}: not a synthetic render, refusing to add to it")


def _render_dataset(
    out_dir: str | os.PathLike, num_images: int, seed: int, size: int, counts: Mapping[int, float] | None, workers: int, progress: bool
) -> tuple[Path, int]:
    """render_dataset, also returning how many images this call wrote."""
    num_images = _check_int("num_images", num_images, 1)
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, MIN_SIZE)
    workers = _check_int("workers", workers, 1)
    probabilities = _count_probabilities(counts)
    out = Path(out_dir)
    parameters = _parameters(num_images, seed, size, probabilities)
    if _check_marker(out / COMPLETE_MARKER, parameters):
        return out, 0
    _check_not_foreign(out)
    for sub in (IMAGE_DIR, METADATA_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob(".*.tmp"):  # left by a killed render
            stale.unlink()
    if not _check_marker(out / PARTIAL_MARKER, parameters):
        _write_atomic(out / PARTIAL_MARKER, json.dumps(parameters, indent=2).encode())
    todo = _missing(out, num_images)
    jobs = [(str(out), seed, size, probabilities, chunk) for chunk in _chunks(todo, workers)]
    with _progress_bar(progress) as bar:
        task = bar.add_task("render", total=num_images, completed=num_images - len(todo))
        for done in _run_jobs(jobs, workers):
            bar.advance(task, done)
    _write_atomic(out / COMPLETE_MARKER, json.dumps(parameters, indent=2).encode())
    (out / PARTIAL_MARKER).unlink()
    return out, len(todo)


def render_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    size: int = 128,
    counts: Mapping[int, float] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write `num_images` bins to `out_dir` in the ABID layout and return the directory.

    Idempotent: a finished directory (``.complete.json``) with the same parameters is returned as is,
    one with other parameters raises ValueError naming the differences. An unfinished one is resumed:
    images already written are kept (each file is written atomically), the rest are rendered.
    """
    return _render_dataset(out_dir, num_images, seed, size, counts, workers, progress)[0]


# --------------------------------------------------------------------------------------------------
# `bincount render`
# --------------------------------------------------------------------------------------------------


def parse_counts(text: str) -> dict[int, float]:
    """Parse "0:1,1:5,2:5" (item count : weight) for --counts."""
    counts: dict[int, float] = {}
    try:
        for part in text.split(","):
            key, weight = part.split(":")
            counts[int(key)] = float(weight)
        _count_probabilities(counts)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid --counts {text!r} (expected like '0:1,1:5,2:5'): {error}") from None
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="dataset directory (bin-images/, metadata/)")
    parser.add_argument("--num-images", type=int, default=2000, help="number of bins (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    parser.add_argument("--counts", type=parse_counts, default=None, help="count:weight list, e.g. 0:1,1:5,2:5 (default: capstone distribution)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        out, written = _render_dataset(args.out_dir, args.num_images, args.seed, args.size, args.counts, args.workers, args.progress)
    except ValueError as error:
        print(f"bincount render: error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if written == 0:
        print(f"{out}: already complete ({args.num_images} images), nothing to render")
    else:
        print(f"{out}: rendered {written} images in {seconds:.1f} s ({written / seconds:.0f} images/s)")
    return 0
