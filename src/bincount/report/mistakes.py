"""The worst test mistakes, with thumbnails embedded as data URIs so the page needs no other file."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

THUMB_PX = 160


@dataclass
class Mistake:
    id: str
    true_count: int
    pred_count: int
    confidence: float  # the probability the model gave its (wrong) prediction
    thumbnail: Optional[str]  # data URI, or None when the image is not readable here
    note: str = ""


def worst_mistakes(predictions: dict, limit: int = 12) -> list[tuple[int, int, float, str]]:
    """Largest absolute error first; among equal errors, the most confident wrong prediction first."""
    true, pred, probs = predictions["true_counts"], predictions["pred_counts"], predictions["probs"]
    counts = list(predictions["counts"])
    wrong = np.flatnonzero(true != pred)
    rows = []
    for i in wrong:
        column = counts.index(int(pred[i])) if int(pred[i]) in counts else None
        confidence = float(probs[i, column]) if column is not None and probs.size else float("nan")
        rows.append((int(true[i]), int(pred[i]), confidence, predictions["ids"][i]))
    rows.sort(key=lambda r: (-abs(r[1] - r[0]), -(r[2] if r[2] == r[2] else 0.0), r[3]))
    return rows[:limit]


def thumbnail(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMB_PX, THUMB_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_path(data_root: Optional[str], id_: str) -> Optional[Path]:
    """The ABID layout's image of ``id_`` when the dataset root is a local directory (not s3://...)."""
    if not data_root or "://" in str(data_root):
        return None
    return Path(data_root) / "bin-images" / f"{id_}.jpg"


def collect(predictions: Optional[dict], data_root: Optional[str], limit: int = 12) -> list[Mistake]:
    if not predictions or not len(predictions["ids"]):
        return []
    mistakes = []
    for true, pred, confidence, id_ in worst_mistakes(predictions, limit):
        path, uri, note = image_path(data_root, id_), None, ""
        if path is None:
            note = f"image not local (dataset root {data_root!r})"
        elif not path.is_file():
            note = f"image not found: {path}"
        else:
            try:
                uri = thumbnail(path)
            except OSError as err:  # a damaged JPEG must not cost the whole report
                note = f"unreadable image {path.name}: {err}"
        mistakes.append(Mistake(id_, true, pred, confidence, uri, note))
    return mistakes
