"""Streaming train/val/test data from packed shards (``bincount pack``), for ``reader.mode=shards``.

The DataModule delegates here when it reads shards; everything else (the manifest, transforms, the
skip/fail policy, batch format) stays the same as for local files. litdata (imported lazily) does
the streaming; this module adds what it does not do, each for a measured reason (docs/s3.md):

* **cache budget checked up front**: litdata hangs (then ``ChunkWaitTimeoutError``) when its cache
  cannot hold workers x (pre-downloads + 1) chunks; here that is a config error before training starts;
* **plain-http endpoints**: litdata's obstore client refuses ``http://`` unless ``allow_http`` is set;
* **datasets are built in ``setup()``**, after the process group exists, so rank sharding is right;
* **the class range and splits are the pack's**: training with a different ``data.classes`` is refused.

* **no sample dropped under DDP**: litdata forces ``drop_last`` there (equal batch counts per rank);
  ``bincount.shards.padding`` pads each epoch with fewer than ``world_size x batch_size`` repeats
  instead, so every sample is seen at least once per epoch (as ``DistributedSampler`` does).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from bincount.layout import SPLITS, DataError, check_size
from bincount.manifest import ClassRange, Manifest
from bincount.samples import DEFAULT_MAX_PIXELS
from bincount.shards.loader import ShardSample, TrainLoaderState, streaming_loader  # noqa: F401 (re-exported)
from bincount.shards.pack import MANIFEST_FILE, PACK_FILE, is_s3, join

log = logging.getLogger(__name__)

READ_MODES = ("auto", "files", "objects", "shards")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclass(frozen=True)
class ReaderConfig:
    """The ``data.reader`` node: how images are read (see conf/reader/)."""

    mode: str = "auto"  # auto: files for local roots, shards for s3:// roots
    shards: str | None = None  # the packed shards; None: <data.root>/shards
    cache_dir: str | None = None  # where streamed chunks are cached; None: litdata's default
    cache_limit: str = "20GB"  # the cache's size limit, all splits together
    max_pre_download: int = 2  # chunks each worker downloads ahead

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ReaderConfig:
        values = dict(values or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise DataError(f"unknown data.reader setting(s) {unknown}; valid: {valid}")
        config = cls(**values)
        if config.mode not in READ_MODES:
            raise DataError(f"data.reader.mode={config.mode!r}; valid choices: {list(READ_MODES)}")
        parse_size(config.cache_limit)
        return config


def resolve_mode(root: str, mode: str) -> str:
    """``auto`` -> ``shards`` for ``s3://`` roots, ``files`` otherwise; ``files`` on S3 is refused."""
    if mode not in READ_MODES:
        raise DataError(f"data.reader.mode={mode!r}; valid choices: {list(READ_MODES)}")
    if mode == "auto":
        return "shards" if is_s3(root) else "files"
    if mode == "files" and is_s3(root):
        raise DataError(f"data.reader.mode='files' reads local directories, but data.root={root!r}; "
                        "use reader=shards (packed, fast) or reader=objects (one GET per image)")
    return mode


def parse_size(value: Any) -> int:
    """``"20GB"``, ``"512MiB"`` or a number of bytes -> bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).upper() not in _UNITS or float(match.group(1)) <= 0:
        raise DataError(f"data.reader.cache_limit={value!r} is not a size; use e.g. '20GB', '512MiB' or bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


# What `bincount pack` writes, exactly. litdata picks each field's deserializer by the names in
# index.json, and some (``pickle``, ``file``, ``video``...) run code or touch the disk: a shard set from a
# shared bucket is untrusted input, so anything else is refused before litdata reads a chunk.
PACKED_FORMAT = {
    "data_format": ["str", "int", "int", "int", "bytes"],
    "item_loader": "PyTreeLoader",
    "compression": None,
    "encryption": None,
}
PACKED_FIELDS = ["id", "index", "count", "label", "image"]
# The chunk names litdata's BinaryWriter gives an uncompressed set (``chunk-<rank>-<n>.bin``). litdata joins
# each name to its cache dir and the bucket prefix, so an absolute name or ``..`` would download to, read
# and lock (``.cnt``) a file of the attacker's choosing outside the cache: only plain names are accepted.
CHUNK_NAME = re.compile(r"chunk-[0-9]+-[0-9]+\.bin")


def check_shard_format(index: Any, where: str) -> None:
    """DataError naming the unexpected setting unless ``index`` (an index.json) is what ``pack`` writes."""
    config = index.get("config") if isinstance(index, dict) else None
    if not isinstance(config, dict) or not isinstance(index.get("chunks"), list):
        raise DataError(f"{where} is not a litdata index written by `bincount pack` (no config or chunks)")
    for key, expected in PACKED_FORMAT.items():
        if config.get(key) != expected:
            raise DataError(f"{where}: {key}={config.get(key)!r}, but `bincount pack` writes {expected!r}; refusing "
                            "these shards (a serializer other than str/int/bytes can run code when read)")
    try:
        spec = json.loads(config["data_spec"])
        fields_ = json.loads(spec[1]["context"])
    except (KeyError, IndexError, TypeError, ValueError):
        fields_ = None
    if fields_ != PACKED_FIELDS:
        raise DataError(f"{where}: items have fields {fields_!r}, but `bincount pack` writes {PACKED_FIELDS}")
    check_chunk_names(index["chunks"], where)


def check_chunk_names(chunks: list, where: str) -> None:
    """DataError naming the first chunk whose file name is not one ``pack`` writes, or is used twice."""
    seen: set[str] = set()
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or "filename" not in chunk:
            raise DataError(f"{where}: chunk {i} is not a record with a filename; refusing these shards")
        name = chunk["filename"]
        if not isinstance(name, str) or not CHUNK_NAME.fullmatch(name):
            shown = repr(name[:200] if isinstance(name, str) else name)
            raise DataError(f"{where}: chunk {i} is named {shown}; `bincount pack` writes plain names "
                            "chunk-<rank>-<n>.bin inside the shard set, so these shards are refused (a path "
                            "would make litdata read or write a file outside the set and its cache)")
        if name in seen:
            raise DataError(f"{where}: chunk {i} is named {name!r} again; refusing these shards")
        seen.add(name)


# Size limits of a shard set's own files, checked before the body is read: a bucket anyone can write
# must not make a training job hold gigabytes for a JSON file. Generous: ABID's 536k images give a
# manifest.csv of ~55 MB, an index.json of a few hundred KB, a pack.json of a few MB (its bad-image list).
MAX_SHARD_FILE_BYTES = {PACK_FILE: 64 << 20, MANIFEST_FILE: 512 << 20, "index.json": 64 << 20}


def _read(url: str, s3: Any) -> bytes:
    limit = MAX_SHARD_FILE_BYTES[url.rsplit("/", 1)[-1]]
    if is_s3(url):
        from bincount.shards.s3io import read_bytes

        return read_bytes(url, s3, max_bytes=limit)
    with open(url, "rb") as f:
        check_size(url, os.fstat(f.fileno()).st_size, limit)
        return f.read()


def cache_budgets(limit: int, chunk_sizes: dict[str, list[int]], workers: int, max_pre_download: int,
                  processes: int) -> dict[str, int]:
    """Split ``limit`` over the splits by their size; each needs processes x workers x (pre + 1) chunks.

    Raises DataError when the limit cannot hold what the loaders keep on disk at once (litdata would hang).
    """
    need = {s: processes * max(1, workers) * (max_pre_download + 1) * max(sizes) for s, sizes in chunk_sizes.items()}
    if sum(need.values()) > limit:
        detail = ", ".join(f"{s}: {n / 1e6:.1f} MB" for s, n in need.items())
        raise DataError(
            f"data.reader.cache_limit={limit / 1e6:.1f} MB is too small: the loaders hold processes ({processes}) x "
            f"workers ({max(1, workers)}) x (max_pre_download ({max_pre_download}) + 1) chunks per split at once "
            f"({detail}; {sum(need.values()) / 1e6:.1f} MB in all). Raise data.reader.cache_limit, or lower "
            "data.num_workers / data.reader.max_pre_download, or pack with a smaller --chunk-bytes."
        )
    total = sum(sum(sizes) for sizes in chunk_sizes.values()) or 1
    spare = limit - sum(need.values())
    return {s: need[s] + spare * sum(chunk_sizes[s]) // total for s in chunk_sizes}


class ShardStreams:
    """The packed dataset at ``url``: its manifest, and litdata datasets/loaders per split."""

    def __init__(self, url: str, reader: ReaderConfig, class_range: ClassRange, s3: Any = None) -> None:
        self.url, self.reader, self.class_range, self.s3 = url.rstrip("/"), reader, class_range, s3
        self._info: dict | None = None
        self._chunks: dict[str, list[int]] = {}
        self.train_state = TrainLoaderState()

    def info(self) -> dict:
        """``pack.json``, checked against the run's class range."""
        if self._info is None:
            try:
                info = json.loads(_read(join(self.url, PACK_FILE), self.s3))
            except FileNotFoundError:
                raise DataError(f"no packed shards at {self.url} ({PACK_FILE} missing): run `bincount pack DATA_ROOT` "
                                "first, or point data.reader.shards at the pack output") from None
            packed = ClassRange(**info["class_range"])
            if packed != self.class_range:
                raise DataError(f"the shards at {self.url} were packed with classes {packed}, but data.classes is "
                                f"{self.class_range}: set data.classes to match, or pack again with the new range")
            self._info = info
        return self._info

    def manifest(self) -> Manifest:
        """The packed manifest (the DataModule's class counts and checks read it like a local one)."""
        import tempfile

        info = self.info()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / MANIFEST_FILE
            path.write_bytes(_read(join(self.url, MANIFEST_FILE), self.s3))
            path.with_suffix(".json").write_text(json.dumps({"class_range": info["class_range"], "report": info["report"]}))
            manifest = Manifest.load(path)
        manifest.path = None
        return manifest

    def chunk_sizes(self, split: str) -> list[int]:
        if split not in self._chunks:
            where = join(self.url, split, "index.json")
            index = json.loads(_read(where, self.s3))
            check_shard_format(index, where)
            self._chunks[split] = [int(c["chunk_bytes"]) for c in index["chunks"]] or [0]
        return self._chunks[split]

    def budgets(self, workers: int, processes: int) -> dict[str, int]:
        splits = [s for s in SPLITS if self.info()["splits"].get(s)]
        return cache_budgets(parse_size(self.reader.cache_limit), {s: self.chunk_sizes(s) for s in splits},
                             workers, self.reader.max_pre_download, processes)

    def setup(self, transforms: dict[str, Callable | None], bad_input: str, workers: int, processes: int, seed: int,
              max_pixels: int = DEFAULT_MAX_PIXELS, decode: str = "cpu"):
        """(manifest, {split: StreamingDataset}); the cache budget is checked before any chunk is read.

        ``decode="gpu"``: samples carry the encoded bytes; the transforms are applied after the GPU decode."""
        manifest = self.manifest()
        budgets = self.budgets(workers, processes)
        datasets = {s: self.dataset(s, ShardSample(transforms[s], bad_input, max_pixels, decode), shuffle=s == "train",
                                    seed=seed, budget=budgets[s]) for s in budgets}
        return manifest, datasets

    def dataset(self, split: str, sample: Callable[[dict], dict], shuffle: bool, seed: int, budget: int):
        from bincount.shards.padding import PaddedStreamingDataset

        _quiet_cache_size_advice()
        return PaddedStreamingDataset(
            join(self.url, split), cache_dir=_split_cache(self.reader.cache_dir, split), shuffle=shuffle, seed=seed,
            max_cache_size=budget, max_pre_download=self.reader.max_pre_download, transform=sample,
            storage_options=storage_options(self.s3) if is_s3(self.url) else None,
        )


def _quiet_cache_size_advice() -> None:
    """litdata warns about any cache under 25 GB; the budget here is checked against the real chunk sizes."""
    name = "litdata.streaming.dataset"
    if not any(getattr(f, "bincount", False) for f in logging.getLogger(name).filters):
        def drop(record: logging.LogRecord) -> bool:
            return "max_cache_size` is less than 25GB" not in record.getMessage()

        drop.bincount = True  # type: ignore[attr-defined]
        logging.getLogger(name).addFilter(drop)


def _split_cache(cache_dir: str | None, split: str) -> str | None:
    return str(Path(cache_dir).expanduser() / split) if cache_dir else None


def storage_options(s3: Any) -> dict:
    """boto3 client options for litdata from ``data.s3`` (endpoint, retries, timeouts; never credentials)."""
    from botocore import UNSIGNED
    from botocore.config import Config

    from bincount.s3.endpoint import S3Config, _resolve_region, resolve_endpoint

    config = s3 if isinstance(s3, S3Config) else S3Config.from_mapping(s3)
    endpoint = resolve_endpoint(config)
    options: dict[str, Any] = dict(region_name=_resolve_region(config), connect_timeout=config.connect_timeout,
                                   read_timeout=config.read_timeout,
                                   retries={"mode": "standard", "max_attempts": int(config.max_attempts)})
    if endpoint:
        options["s3"] = {"addressing_style": "path"}
        if endpoint.startswith("http://"):
            allow_http_chunks()
    if config.unsigned:
        options["signature_version"] = UNSIGNED
    return {"config": Config(**options), **({"endpoint_url": endpoint} if endpoint else {})}


def allow_http_chunks() -> None:
    """litdata fetches chunks with obstore, which refuses plain http unless ``allow_http`` is set.

    A module constant of litdata read when a store is built (litdata has no option for it); set in the
    process that builds datasets, and inherited by its forked DataLoader workers.
    """
    from litdata.streaming import downloader

    downloader._OBSTORE_CLIENT_OPTIONS = {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
