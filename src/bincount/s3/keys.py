"""Key safety: a key from a list or a manifest may never reach outside the dataset prefix or target dir.

Why: ``bincount fetch`` turns keys from a user-supplied list (or a listing of someone else's bucket)
into local paths. A key such as ``../../.ssh/authorized_keys`` or ``/etc/passwd`` must be refused
before anything is written, and so must a symlink inside the target that points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from bincount.layout import IMAGE_DIR, METADATA_DIR, DataError, check_id

DATASET_FOLDERS = (IMAGE_DIR, METADATA_DIR)


class UnsafeKeyError(DataError):
    """A key that is absolute, has ``..``/empty parts or backslashes, or lies outside the allowed folders."""


def check_relative_key(key: str, folders: tuple[str, ...] = DATASET_FOLDERS) -> str:
    """Return ``key`` if it is ``<folder>/<id>.<ext>`` with ``folder`` in ``folders``; else UnsafeKeyError."""
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError(f"unsafe key {key!r}: expected a non-empty relative path like {IMAGE_DIR}/00001.jpg")
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts) or PurePosixPath(key).is_absolute():
        raise UnsafeKeyError(f"unsafe key {key!r}: absolute, or has '..', '.', empty parts or backslashes")
    if len(parts) != 2 or parts[0] not in folders:
        raise UnsafeKeyError(f"key {key!r} lies outside the dataset folders {list(folders)} (expected FOLDER/ID.EXT)")
    try:
        check_id(PurePosixPath(parts[1]).stem)
    except DataError as e:
        raise UnsafeKeyError(f"key {key!r}: {e}") from None
    return key


def join_key(prefix: str, key: str) -> str:
    """``prefix/key`` for S3 (no leading slash when the prefix is empty)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


def safe_local_path(target: str | os.PathLike, key: str) -> Path:
    """The local path of ``key`` under ``target``; refuses keys (or symlinks) that would land outside it."""
    check_relative_key(key)
    base = Path(target).resolve()
    path = (base / key).resolve()
    if base != path and base not in path.parents:
        raise UnsafeKeyError(f"key {key!r} resolves to {path}, outside the target directory {base}")
    return path
