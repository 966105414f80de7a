"""What ``bincount predict`` reads: image files, folders, ABID-layout roots and ``s3://`` prefixes, as items.

Why one list of items up front: the DataLoader needs a length and an order, and the CSV's first
column is fixed before the first batch (``id`` when every input is an ABID root, ``path`` otherwise).
Only names, keys and true counts are held; image bytes are read batch by batch.

An ABID root (``bin-images/`` + ``metadata/``, local or in a bucket) gives ids with the true count
from each metadata file, so the predictions can be scored. Other folders are walked recursively for
image suffixes; an explicitly named file is taken whatever its suffix (and refused if it is no image).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bincount.layout import IMAGE_DIR, MAX_IMAGE_BYTES, METADATA_DIR, DataError, check_size, image_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class FileReader:
    """Reads a local file by path, refusing it above ``MAX_IMAGE_BYTES`` before reading (picklable)."""

    def __call__(self, key: str) -> bytes:
        with open(key, "rb") as f:
            check_size(key, os.fstat(f.fileno()).st_size, MAX_IMAGE_BYTES)
            return f.read()


@dataclass(frozen=True)
class Item:
    name: str  # the CSV's id (ABID) or path / URL
    key: str  # what ``reader`` reads
    reader: Any  # FileReader, LocalStore or S3Store: ``reader(key) -> bytes``
    true_count: int | None = None
    abid: bool = False


def _abid_items(store: Any, ids: set[str] | None) -> list[Item]:
    from bincount.manifest.metadata import list_ids, read_all

    found = list_ids(store, IMAGE_DIR)
    found = [i for i in found if ids is None or i in ids]
    verdicts = read_all(store, found, progress=False, workers=None) if store.list(METADATA_DIR) else [(None, None)] * len(found)
    return [Item(i, image_key(i), store, count, abid=True) for i, (count, _) in zip(found, verdicts)]


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _local_items(value: str, ids: set[str] | None) -> list[Item]:
    from bincount.s3.store import LocalStore

    path = Path(value).expanduser()
    if path.is_file():
        return [Item(str(path), str(path), FileReader())]
    if not path.is_dir():
        raise FileNotFoundError(f"input {value} does not exist (an image, a folder, an ABID root or an s3:// prefix)")
    if (path / IMAGE_DIR).is_dir() and (path / METADATA_DIR).is_dir():
        return _abid_items(LocalStore(path), ids)
    files = sorted(Path(d) / f for d, _, names in os.walk(path) for f in names if _is_image_name(f))
    return [Item(str(f), str(f), FileReader()) for f in files]


def _s3_items(url: str, ids: set[str] | None, s3: Any) -> list[Item]:
    from bincount.s3.store import open_store

    base, _, name = url.rstrip("/").rpartition("/")
    if _is_image_name(name) and base != "s3:/":  # one object
        return [Item(url, name, open_store(base, s3))]
    store = open_store(url, s3)
    if store.list(IMAGE_DIR):
        return _abid_items(store, ids)
    if base == "s3:/":
        raise DataError(f"input {url}: a bucket root must be in the ABID layout ({IMAGE_DIR}/ and {METADATA_DIR}/)")
    parent = open_store(base, s3)  # images directly under the prefix, listed as a folder of its parent
    names = sorted(n for n in parent.list(name) if _is_image_name(n))
    return [Item(parent.url(f"{name}/{n}"), f"{name}/{n}", parent) for n in names]


def read_ids(path: str) -> set[str]:
    """Ids from a text file (one a line) or a CSV with an ``id`` column (a run's ``predictions.csv``)."""
    with open(path, newline="") as f:
        first = f.readline()
        f.seek(0)
        if "," in first:
            reader = csv.DictReader(f)
            if "id" not in (reader.fieldnames or []):
                raise DataError(f"--ids {path}: a CSV needs an 'id' column, got {reader.fieldnames}")
            return {row["id"] for row in reader}
        return {line.strip() for line in f if line.strip()}


def collect(inputs: list[str], ids: set[str] | None = None, s3: Any = None) -> list[Item]:
    """Every input expanded to items, in the order given; DataError when nothing is left to predict."""
    items: list[Item] = []
    for value in inputs:
        items += _s3_items(value, ids, s3) if value.startswith("s3://") else _local_items(value, ids)
    if not items:
        where = " (after --ids)" if ids is not None else ""
        raise DataError(f"no images found in {inputs}{where}; image suffixes: {list(IMAGE_SUFFIXES)}")
    return items
