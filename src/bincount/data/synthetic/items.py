"""The items: SKUs of varied shape, colour and texture, placed so that every unit stays countable
(each keeps at least MIN_VISIBLE of its pixels after everything in front of it is drawn)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from bincount.data.synthetic.spec import Colour, FOREGROUND, MIN_VISIBLE, PLACEMENT_TRIES, SHADOW
from bincount.data.synthetic.scene import Quad, _fill, _hsv, _smooth_noise

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


