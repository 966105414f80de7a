"""The few S3 operations shards need (read a small object, upload a directory), on :mod:`bincount.s3`'s client.

Kept apart from ``pack``/``stream`` so that boto3 is imported only when a path is ``s3://``. The
client (endpoint, retries, per-process creation) is :func:`bincount.s3.get_client`'s, so shards
follow the same endpoint rules as every other S3 user in the project.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def _client(s3: Any = None):
    from bincount.s3.endpoint import S3Config, get_client

    return get_client(s3 if isinstance(s3, S3Config) else S3Config.from_mapping(s3))


def read_bytes(url: str, s3: Any = None, max_bytes: int | None = None) -> bytes:
    """The bytes of ``s3://bucket/key``; FileNotFoundError when it does not exist, TooLarge above ``max_bytes``."""
    from bincount.s3.endpoint import get_bytes, parse_s3_url

    bucket, key = parse_s3_url(url)
    return get_bytes(_client(s3), bucket, key, max_bytes=max_bytes)


def upload_dir(local: Path, url: str, s3: Any = None, workers: int = 16) -> int:
    """Upload every file under ``local`` to ``url/<relative path>``; the index files last.

    ``index.json`` and ``pack.json`` go last so a reader never sees an index naming missing chunks.
    """
    from bincount.s3.endpoint import parse_s3_url

    bucket, prefix = parse_s3_url(url)
    client = _client(s3)
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    last = [p for p in files if p.name in ("index.json", "pack.json")]
    first = [p for p in files if p not in last]

    def put(path: Path) -> None:
        key = "/".join(x for x in (prefix, path.relative_to(local).as_posix()) if x)
        client.upload_file(str(path), bucket, key)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, first))
        list(pool.map(put, sorted(last, key=lambda p: p.name == "pack.json")))
    return len(files)


def s3_manifest_and_reader(src: str, manifest_kwargs: dict, s3: Any = None) -> tuple[Any, Callable[[str], bytes]]:
    """The manifest of an ``s3://`` dataset and its key reader, both through :mod:`bincount.s3.store`."""
    from bincount.manifest import build_manifest
    from bincount.s3.store import open_store

    store = open_store(src, s3)
    return build_manifest(store, **manifest_kwargs), store
