"""The ABID layout contract: folder names, safe ids and keys, the data error type, the capstone file list.

Why a module of its own at the bottom of the package: storage (``bincount.s3``), the manifest, the
shards and the DataModule all speak this contract, and each of them sits above it. Keeping it here,
with nothing but the standard library, means no layer has to import upward to learn what an image
key looks like. The layout is the bucket's: ``<root>/bin-images/<id>.jpg`` and
``<root>/metadata/<id>.json``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

SPLITS = ("train", "val", "test")
BAD_INPUT_CHOICES = ("skip", "fail")
METADATA_DIR = "metadata"
IMAGE_DIR = "bin-images"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# Reads are refused above these sizes before a byte of the body is read: every file or object comes
# from a dataset or bucket someone else may write, and up to 32 reads run at once. ABID metadata is
# 1-5 KB and its photos 20-200 KB, so the limits leave room for any real dataset.
MAX_METADATA_BYTES = 1 << 20
MAX_IMAGE_BYTES = 32 << 20


class DataError(ValueError):
    """Bad data, or a configuration that does not fit the data."""


class TooLarge(OSError):
    """A file or object above the size limit for its kind; nothing of it was read."""


def max_bytes_for(key: str) -> int:
    """The size limit of ``key`` by its folder: metadata JSON or image."""
    return MAX_METADATA_BYTES if key.startswith(f"{METADATA_DIR}/") else MAX_IMAGE_BYTES


def check_size(where: str, size: int, limit: int) -> None:
    if size > limit:
        raise TooLarge(f"{where} is {size:,} bytes, above the limit of {limit:,} bytes for such a file")


def check_id(id_: str) -> str:
    """Refuse ids that could escape the dataset root (``..``, separators, absolute paths)."""
    if not isinstance(id_, str) or not _ID_RE.match(id_) or ".." in id_:
        raise DataError(f"unsafe or invalid image id {id_!r}: ids are letters, digits, '_', '-', '.' (no '..')")
    return id_


def check_key(key: str, prefix: str | None = None) -> str:
    """Refuse keys that are absolute, contain ``..`` or backslashes, or lie outside ``prefix``."""
    path = PurePosixPath(key)
    bad = not key or "\\" in key or path.is_absolute() or ".." in path.parts
    if bad or (prefix is not None and (len(path.parts) != 2 or path.parts[0] != prefix)):
        where = f" under {prefix}/" if prefix else ""
        raise DataError(f"unsafe key {key!r}: expected a relative path{where} without '..'")
    return key


def image_key(id_: str) -> str:
    return f"{IMAGE_DIR}/{check_id(id_)}.jpg"


def metadata_key(id_: str) -> str:
    return f"{METADATA_DIR}/{check_id(id_)}.json"


def check_bad_input(bad_input: str) -> str:
    """``skip`` or ``fail``: the one policy every reader applies to a bad file."""
    if bad_input not in BAD_INPUT_CHOICES:
        raise ValueError(f"bad_input={bad_input!r} is not one of {', '.join(BAD_INPUT_CHOICES)}")
    return bad_input


def read_file_list(path: str | os.PathLike) -> dict[str, int]:
    """Map id -> listed count from a capstone ``file_list.json`` (``{"1": ["data/metadata/00710.json", ...]}``)."""
    path = Path(path)
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read file list {path}: {e}") from e
    if not isinstance(content, dict):
        raise DataError(f"file list {path} must map counts to lists of metadata paths, got {type(content).__name__}")
    ids: dict[str, int] = {}
    for key, paths in content.items():
        try:
            listed = int(key)
        except ValueError:
            raise DataError(f"file list {path}: key {key!r} is not an integer count") from None
        if not isinstance(paths, list):
            raise DataError(f"file list {path}: value of {key!r} must be a list of metadata paths")
        for p in paths:
            ids[_id_from_metadata_path(p, path)] = listed
    return ids


def _id_from_metadata_path(p: Any, source: Path) -> str:
    """``[prefix/]metadata/<id>.json`` → id; the prefix (``data/`` in the capstone list) is ignored."""
    if not isinstance(p, str):
        raise DataError(f"file list {source}: entry {p!r} is not a string")
    path = PurePosixPath(p)
    if "\\" in p or path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
        raise DataError(f"file list {source}: unsafe path {p!r} (expected [prefix/]metadata/<id>.json)")
    if path.parts[-2] != METADATA_DIR or path.suffix != ".json":
        raise DataError(f"file list {source}: path {p!r} is not of the form [prefix/]metadata/<id>.json")
    try:
        return check_id(path.stem)
    except DataError as e:
        raise DataError(f"file list {source}: {e}") from None
