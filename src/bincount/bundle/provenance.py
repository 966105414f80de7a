"""What a model was trained on (the bundle's ``trained_on``), and one warning when its inputs are of another kind.

Why (issue 27): the quick start's model, trained on synthetic bins with counts 1-5, answered 1, 1, 3 and 2
for real ABID bins holding 12, 17, 16 and 5 items, without a word. The bundle now records the kind of data
(``synthetic`` or ``abid``; ``other`` is reserved for whatever else a writer may name), the counts its
classes span and the size of the images it saw, so that ``bincount predict`` and ``bincount serve`` can say
so once when the inputs look different. Advice, never a refusal: a model may well be meant for new data.

A bundle is data from a bucket: :func:`record` keeps only the fields it understands, with the types it
expects, and a bundle without the record (written before it existed) reads as unknown, and nothing is said.
"""

from __future__ import annotations

import logging
import statistics
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bincount.layout import IMAGE_DIR, METADATA_DIR

TRAINED_ON = "trained_on"
KINDS = ("synthetic", "abid", "other")
KIND_NAMES = {"synthetic": "synthetic bins", "abid": "ABID photos", "other": "other images"}
SIZE_SAMPLE = 5  # images whose header is read for a real dataset's typical size
SIZE_FACTOR = 4  # an image whose longer side is this many times the training images' (or 1/x) is "another kind"


def root_kind(root: str | Path) -> str | None:
    """``synthetic`` for a local root the renderer wrote (its completion or partial marker), ``abid`` for
    another ABID-layout root, None for anything else (a plain folder, a file, an ``s3://`` prefix)."""
    from bincount.data.synthetic.spec import COMPLETE_MARKER, PARTIAL_MARKER

    if str(root).startswith("s3://"):
        return None
    path = Path(root).expanduser()
    if (path / COMPLETE_MARKER).is_file() or (path / PARTIAL_MARKER).is_file():
        return "synthetic"
    if (path / IMAGE_DIR).is_dir() and (path / METADATA_DIR).is_dir():
        return "abid"
    return None


def _image_size(paths: Iterable[Path]) -> list[int] | None:
    """The median [width, height] of these images, from their headers alone (Pillow reads no pixels)."""
    from PIL import Image

    sizes = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except (OSError, ValueError):  # a bad file is the data-quality report's business, not this one's
            continue
    if not sizes:
        return None
    return [int(statistics.median(s[0] for s in sizes)), int(statistics.median(s[1] for s in sizes))]


def trained_on(kind: str, min_count: int, max_count: int, input_size: int, image_size: Sequence[int] | None) -> dict:
    """The record: data kind, the counts the classes span, the source images' [width, height], the input side."""
    return {"data": kind, "counts": [int(min_count), int(max_count)], "input_size": int(input_size),
            "image_size": [int(s) for s in image_size] if image_size else None}


def from_datamodule(dm: Any) -> dict:
    """The record of a finished run's DataModule: synthetic when it rendered its bins (or its root is a
    render), else ABID; for real data the median size of a few training images read from a local root."""
    synthetic = getattr(dm, "synthetic", None)
    local = getattr(dm, "store", None) is None and getattr(dm, "shards", None) is None
    kind = "synthetic" if synthetic or (local and root_kind(dm.root) == "synthetic") else "abid"
    size = [int(synthetic["size"])] * 2 if synthetic and synthetic.get("size") else None
    if size is None and local and getattr(dm, "manifest", None) is not None:
        size = _image_size(Path(dm.root) / r.image for r in dm.manifest.split("train")[:SIZE_SAMPLE])
    classes = dm.class_range
    return trained_on(kind, classes.min_count, classes.max_count, dm.img_size, size)


def from_config(cfg: dict, setting: Callable[[dict, str, Any], Any]) -> dict:
    """The record of an older run, from its resolved config (``bincount export``): ``setting(cfg, key, default)``."""
    size = setting(cfg, "data.synthetic.size", None)
    kind = "synthetic" if setting(cfg, "data.synthetic", None) else "abid"
    low = int(setting(cfg, "data.classes.min_count", 0))
    return trained_on(kind, low, int(setting(cfg, "data.classes.max_count", low)),
                      int(setting(cfg, "data.img_size", 128)), [int(size)] * 2 if kind == "synthetic" and size else None)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1_000_000


def record(meta: dict) -> dict | None:
    """The bundle's ``trained_on``, checked field by field; None when it is absent or not understood."""
    raw = meta.get(TRAINED_ON) if isinstance(meta, dict) else None
    if not isinstance(raw, dict) or raw.get("data") not in KINDS:
        return None
    counts, size = raw.get("counts"), raw.get("image_size")
    return {"data": raw["data"],
            "counts": counts if isinstance(counts, list) and len(counts) == 2 and all(map(_int, counts)) else None,
            "image_size": size if isinstance(size, list) and len(size) == 2 and all(map(_int, size)) else None}


def describe(rec: dict) -> str:
    """``synthetic bins, counts 1-5, 128x128 px images``: what a warning and the server's start-up log say."""
    parts = [KIND_NAMES[rec["data"]]]
    if rec.get("counts"):
        parts.append("counts {}-{}".format(*rec["counts"]))
    if rec.get("image_size"):
        parts.append("{}x{} px images".format(*rec["image_size"]))
    return ", ".join(parts)


def input_mismatch(meta: dict, inputs: Sequence[str], true_counts: Sequence[int | None]) -> str | None:
    """One sentence when ``bincount predict``'s inputs look unlike the training data, else None: an input
    root of the other kind (an ABID root for a synthetic-trained model, a synthetic render for an
    ABID-trained one), and true counts outside the counts the model's classes span (how many, and which)."""
    rec = record(meta)
    if rec is None:
        return None
    reasons = []
    for value in inputs:
        kind = root_kind(value)
        if kind is not None and kind != rec["data"]:
            reasons.append(f"{value} holds {KIND_NAMES[kind]}")
    if rec["counts"]:
        low, high = rec["counts"]
        known = [c for c in true_counts if c is not None]
        outside = sorted(c for c in known if not low <= c <= high)
        if outside:
            shown = f"{outside[0]}" if outside[0] == outside[-1] else f"{outside[0]} to {outside[-1]}"
            reasons.append(f"{len(outside)} of {len(known)} true counts are outside {low}-{high} ({shown})")
    if not reasons:
        return None
    return (f"this model was trained on {describe(rec)}, but {'; '.join(reasons)}: "
            "its counts for these images may mean little")


class SizeWatch:
    """A transform wrapper for ``bincount serve``: logs one warning, the first time an image's longer side is
    ``SIZE_FACTOR`` times (or a ``SIZE_FACTOR``-th of) the training images', e.g. a 500x400 ABID photo sent to a
    model trained on 64 px synthetic bins. A request carries no metadata, so the size is all a server can see."""

    def __init__(self, transform: Callable, rec: dict | None, log: logging.Logger) -> None:
        self.transform, self.log, self._lock, self.warned = transform, log, threading.Lock(), False
        self.rec = rec if rec and rec.get("image_size") else None

    def __call__(self, image: Any) -> Any:
        if self.rec is not None and not self.warned and getattr(image, "ndim", 0) == 3:
            self._check(int(image.shape[-1]), int(image.shape[-2]))
        return self.transform(image)

    def _check(self, width: int, height: int) -> None:
        side, trained = max(width, height), max(self.rec["image_size"])
        if trained <= 0 or 1 / SIZE_FACTOR < side / trained < SIZE_FACTOR:
            return
        with self._lock:
            if self.warned:
                return
            self.warned = True
        self.log.warning("an image of %dx%d px, while this model was trained on %s: its counts for such images "
                         "may mean little (said once)", width, height, describe(self.rec))


def watch_model(model: Any, log: logging.Logger) -> None:
    """For a server: log what ``model`` (a loaded bundle) was trained on, once, and wrap its transform in a
    :class:`SizeWatch`, so that an image of a wildly other size is named once in the log."""
    rec = record(model.metadata)
    log.info("model trained on %s", describe(rec) if rec else "data its bundle does not record (an older bundle)")
    model.transform = SizeWatch(model.transform, rec, log)
