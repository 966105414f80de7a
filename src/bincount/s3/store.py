"""A tiny storage interface over a local ABID dir or an ``s3://bucket/prefix``: list, stat, read, write.

Why: the manifest, the per-object dataset and ``bincount fetch`` need the same four verbs whether the
data is on disk or in a bucket. :func:`open_store` picks the implementation from the root, so callers
(and PART B's shard reader) never branch on the scheme. Stores are picklable: an :class:`S3Store` keeps
only its bucket, prefix and :class:`S3Config`; the client and thread pool are created lazily per process.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from bincount.s3.endpoint import S3Config, error_code, get_bytes, get_client, is_s3_url, parse_s3_url, resolve_endpoint
from bincount.layout import TooLarge, check_size, max_bytes_for
from bincount.s3.keys import join_key, safe_local_path


class ObjectInfo(NamedTuple):
    size: int
    etag: str | None  # S3's ETag without quotes; None for local files


class S3ReadError(RuntimeError):
    """An S3 request that failed after retries for a reason other than a missing key (names URL and code)."""


class LocalStore:
    """An ABID-layout directory on disk."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def url(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def exists(self) -> bool:
        return self.root.is_dir()

    def list(self, folder: str) -> dict[str, ObjectInfo]:
        """File name -> info for the files directly in ``root/folder`` (empty when it does not exist)."""
        directory = self.root / folder
        if not directory.is_dir():
            return {}
        with os.scandir(directory) as entries:
            return {e.name: ObjectInfo(e.stat().st_size, None) for e in entries if e.is_file()}

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(safe_local_path(self.root, key).stat().st_size, None)
        except FileNotFoundError:
            return None

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """The file's bytes; TooLarge (nothing read) above ``max_bytes`` (default: the limit of its folder)."""
        with open(safe_local_path(self.root, key), "rb") as f:
            check_size(self.url(key), os.fstat(f.fileno()).st_size, max_bytes or max_bytes_for(key))
            return f.read()

    def write(self, key: str, data: bytes) -> None:
        """Write atomically (temp file + rename), so an interrupted fetch never leaves a partial file."""
        path = safe_local_path(self.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __call__(self, key: str) -> bytes:  # the dataset's ``reader`` protocol
        return self.read(key)


class S3Store:
    """``s3://bucket/prefix`` in the ABID layout; ``read_many`` keeps many GETs in flight per process."""

    def __init__(self, url: str, config: S3Config = S3Config()) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.config = config
        self.max_workers = max(1, int(config.max_pool_connections))  # threads for metadata reads and read_many
        self._pool: tuple[int, ThreadPoolExecutor] | None = None
        self._listings: dict[str, dict[str, ObjectInfo]] = {}  # LISTs are slow; one per folder per object

    def __repr__(self) -> str:
        return f"S3Store({self.url()!r}, endpoint={resolve_endpoint(self.config) or 'AWS'})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None, "_listings": {}}  # thread pools and clients never cross processes

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{join_key(self.prefix, key)}".rstrip("/")

    @property
    def client(self) -> Any:
        return get_client(self.config)

    def exists(self) -> bool:
        """True when anything lies under the prefix (S3 has no directories)."""
        return bool(self._guard("", lambda: self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=join_key(self.prefix, ""), MaxKeys=1).get("KeyCount", 0)))

    def list(self, folder: str) -> dict[str, ObjectInfo]:
        """Object name -> info directly under ``prefix/folder/`` (paginated LIST, 1,000 keys per request).

        Memoized per store object: the manifest lists a folder for its ids and again for its cache key.
        """
        if folder in self._listings:
            return self._listings[folder]
        start = join_key(self.prefix, folder) + "/"
        out: dict[str, ObjectInfo] = {}

        def run() -> None:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(start):]
                    if name and "/" not in name:
                        out[name] = ObjectInfo(int(obj["Size"]), obj.get("ETag", "").strip('"') or None)

        self._guard(folder, run)
        self._listings[folder] = out
        return out

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and ETag, or None when missing. Some servers (moto) refuse anonymous HEADs that AWS allows
        under a public-read policy; a GET of the first byte then gives the same answers."""
        def run() -> ObjectInfo | None:
            from botocore.exceptions import ClientError

            full_key = join_key(self.prefix, key)
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=full_key)
                return ObjectInfo(int(head["ContentLength"]), head.get("ETag", "").strip('"') or None)
            except ClientError as e:
                if error_code(e) in ("404", "NoSuchKey", "NotFound"):
                    return None
                if error_code(e) != "403":
                    raise
            try:
                got = self.client.get_object(Bucket=self.bucket, Key=full_key, Range="bytes=0-0")
            except ClientError as e:
                if error_code(e) in ("404", "NoSuchKey", "NotFound"):
                    return None
                if error_code(e) == "InvalidRange":  # an empty object
                    return ObjectInfo(0, None)
                raise
            got["Body"].close()
            size = int(got.get("ContentRange", "/0").rpartition("/")[2])
            return ObjectInfo(size, got.get("ETag", "").strip('"') or None)

        return self._guard(key, run)

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; FileNotFoundError when missing, TooLarge (body unread) above ``max_bytes``
        (default: the limit of its folder), S3ReadError for other failures."""
        return self._guard(key, lambda: get_bytes(self.client, self.bucket, join_key(self.prefix, key),
                                                  max_bytes=max_bytes or max_bytes_for(key)))

    def write(self, key: str, data: bytes) -> None:
        self._guard(key, lambda: self.client.put_object(Bucket=self.bucket, Key=join_key(self.prefix, key), Body=data))

    def __call__(self, key: str) -> bytes:
        return self.read(key)

    def read_many(self, keys: Sequence[str]) -> list[bytes | BaseException]:
        """Read ``keys`` concurrently (one request per thread); each result is bytes or the exception."""
        def one(key: str) -> bytes | BaseException:
            try:
                return self.read(key)
            except (FileNotFoundError, S3ReadError, TooLarge) as e:
                return e

        return list(self._executor().map(one, keys))

    def _executor(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        if self._pool is None or self._pool[0] != pid:
            with _pool_lock:
                if self._pool is None or self._pool[0] != pid:
                    self._pool = (pid, ThreadPoolExecutor(self.max_workers, thread_name_prefix="s3-read"))
        return self._pool[1]

    def _guard(self, key: str, call: Any) -> Any:
        """Turn botocore failures into errors naming the URL and code (never the request or credentials)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from bincount.s3.endpoint import transient_errors

        try:
            return call()
        except (FileNotFoundError, TooLarge):
            raise
        except ClientError as e:
            raise S3ReadError(f"{self.url(key)}: S3 error {error_code(e) or 'unknown'} "
                              f"({e.response.get('Error', {}).get('Message', '')})") from None
        except (BotoCoreError, *transient_errors()) as e:
            raise S3ReadError(f"{self.url(key)}: {type(e).__name__} talking to "
                              f"{resolve_endpoint(self.config) or 'AWS S3'}") from None


_pool_lock = threading.Lock()
Store = LocalStore | S3Store


def open_store(root: str | os.PathLike, s3: S3Config | Mapping[str, Any] | None = None) -> Store:
    """An :class:`S3Store` for ``s3://`` roots (configured by ``s3``), else a :class:`LocalStore`."""
    if is_s3_url(root):
        config = s3 if isinstance(s3, S3Config) else S3Config.from_mapping(s3)
        return S3Store(str(root), config)
    return LocalStore(root)


def listing_stamp(listing: Mapping[str, ObjectInfo]) -> str:
    """A hash of (name, size, etag) of a listing: changes when any object changes."""
    digest = hashlib.sha256()
    for name, info in sorted(listing.items()):
        digest.update(f"{name}\0{info.size}\0{info.etag}\n".encode())
    return digest.hexdigest()
