"""The bin around the items: pod walls, fabric and lighting, the elastic bands, lip and frame in front.

Slow parts (noise, fibre, lighting, bands) come from small cached banks of deterministic variants,
which is what keeps rendering at ~200 images/s on one core."""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from bincount.data.synthetic.spec import Colour

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


