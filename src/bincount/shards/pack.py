"""``bincount pack``: an ABID-layout dataset (local or S3) into litdata shards, shuffled globally.

Why shards: one GET per image is latency-bound (about workers / latency images/s, see docs/s3.md);
64 MB chunks make S3 streaming decode-bound like local disk. Why litdata chunks: it shards correctly by
rank and worker, resumes exactly mid-epoch through its ``StreamingDataLoader`` state, and caches chunks
with a size limit; WebDataset has no resume. Two litdata limits are handled here, at write time:

* its shuffle is chunk-local, so each split is shuffled **globally** before writing (seeded);
* its JPEG serializer re-encodes, so images are stored as the **raw bytes** of the source file.

Output (``OUT`` defaults to ``SRC/shards``)::

    OUT/pack.json              what was packed: source, class range, splits, seed, counts, data quality
    OUT/manifest.csv           the manifest (id,image,count,label,split) in shard order
    OUT/{train,val,test}/      litdata datasets (index.json + chunk-*.bin); items are
                               {"id", "index", "count", "label", "image": raw JPEG bytes}

Images that are missing or truncated follow ``--bad-input``: ``skip`` leaves them out and lists them in
``pack.json``; ``fail`` stops naming the file.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bincount.layout import SPLITS, DataError
from bincount.manifest import ClassRange, Manifest, ManifestRow, build_manifest, write_cache
from bincount.samples import DEFAULT_MAX_PIXELS, BadImage, check_image_header

log = logging.getLogger(__name__)

PACK_FILE = "pack.json"
MANIFEST_FILE = "manifest.csv"
PACK_VERSION = 1
_WINDOW = 256  # images read ahead per writer: bounds memory at ~window x image size


def is_s3(path: str) -> bool:
    return str(path).startswith("s3://")


def join(root: str, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *parts])


# -- source: the manifest and a key -> bytes reader ----------------------------------------------------


def open_source(src: str, manifest_kwargs: dict, s3: dict | None = None) -> tuple[Manifest, Callable[[str], bytes]]:
    """The manifest of ``src`` and a reader of its image keys (local dir or ``s3://``)."""
    if is_s3(src):
        from bincount.shards.s3io import s3_manifest_and_reader  # boto3 only when reading S3

        return s3_manifest_and_reader(src, manifest_kwargs, s3)
    from bincount.s3.store import LocalStore

    root = Path(src).expanduser()
    if not root.is_dir():
        raise DataError(f"pack source {src!r} is not a directory (expected the ABID layout: bin-images/, metadata/)")
    return build_manifest(root, **manifest_kwargs), LocalStore(root)


def _check_bytes(data: bytes, max_pixels: int) -> str | None:
    """None for an image that training can decode, else the reason; from the header only (packing must
    stay I/O bound), so truncated files and image bombs never reach the shards."""
    try:
        check_image_header(data, max_pixels)
    except BadImage as e:
        return str(e)
    return None


def _read_ahead(rows: list[ManifestRow], reader: Callable[[str], bytes], workers: int, max_pixels: int) -> Iterator[tuple[ManifestRow, bytes | None, str | None]]:
    """(row, bytes, None) or (row, None, reason) in ``rows`` order, ``_WINDOW`` reads in flight."""

    def read(row: ManifestRow) -> tuple[bytes | None, str | None]:
        try:
            data = reader(row.image)
        except FileNotFoundError:
            return None, "image missing"
        except OSError as e:
            return None, f"unreadable ({e})"
        reason = _check_bytes(data, max_pixels)
        return (None, reason) if reason else (data, None)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rows), _WINDOW):
            window = rows[start : start + _WINDOW]
            yield from ((row, *res) for row, res in zip(window, pool.map(read, window)))


# -- writing -----------------------------------------------------------------------------------------


def _write_split(rows: list[ManifestRow], reader: Callable[[str], bytes], out: Path, chunk_bytes: str,
                 bad_input: str, workers: int, advance: Callable[[], None],
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[ManifestRow], list]:
    from bincount.shards.litdata_check import require_litdata

    require_litdata()
    from litdata.streaming.writer import BinaryWriter

    out.mkdir(parents=True, exist_ok=True)
    # an image bigger than --chunk-bytes gets a chunk of its own; litdata warns per item, which is noise here
    warnings.filterwarnings("ignore", message="An item was larger than the target chunk size")
    writer = BinaryWriter(str(out), chunk_bytes=chunk_bytes)
    kept: list[ManifestRow] = []
    bad: list[tuple[str, str]] = []
    for row, data, reason in _read_ahead(rows, reader, workers, max_pixels):
        advance()
        if reason is not None:
            if bad_input == "fail":
                raise DataError(f"{row.image}: {reason} (bad_input='fail'; 'skip' leaves it out and reports it)")
            bad.append((row.id, f"{row.image}: {reason}"))
            continue
        writer.add_item(len(kept), {"id": row.id, "index": len(kept), "count": row.count, "label": row.label,
                                    "image": data})
        kept.append(row)
    writer.done()
    writer.merge()
    return kept, bad


def pack(src: str, out: str | None = None, *, classes: ClassRange = ClassRange(), fractions=(0.8, 0.1, 0.1),
         split_seed: int = 0, shuffle_seed: int = 0, file_list: str | None = None, bad_input: str = "skip",
         chunk_bytes: str = "64MB", workers: int = 16, cache_dir: str | None = None, progress: bool = True,
         s3: dict | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Pack ``src`` into shards at ``out`` (local or ``s3://``); returns the ``pack.json`` content."""
    started = time.perf_counter()
    out = out or join(src, "shards")
    manifest, reader = open_source(src, dict(class_range=classes, split_fractions=fractions, seed=split_seed,
                                              file_list=file_list, bad_input=bad_input, cache_dir=cache_dir,
                                              progress=progress), s3)
    staging = Path(tempfile.mkdtemp(prefix="bincount-pack-")) if is_s3(out) else Path(out).expanduser()
    if not is_s3(out) and any((staging / s).exists() for s in SPLITS):
        raise DataError(f"pack output {out} already has shards; remove {[str(staging / s) for s in SPLITS]} first")
    try:
        info = _pack_to(staging, manifest, reader, src, classes, fractions, split_seed, shuffle_seed, bad_input,
                        chunk_bytes, workers, progress, max_pixels)
        info["seconds"] = round(time.perf_counter() - started, 1)
        (staging / PACK_FILE).write_text(json.dumps(info, indent=1))
        if is_s3(out):
            from bincount.shards.s3io import upload_dir

            upload_dir(staging, out, s3)
    finally:
        if is_s3(out):
            shutil.rmtree(staging, ignore_errors=True)
    return info


def _pack_to(staging: Path, manifest: Manifest, reader, src, classes, fractions, split_seed, shuffle_seed,
             bad_input, chunk_bytes, workers, progress, max_pixels) -> dict:
    from rich.progress import Progress

    kept_rows: list[ManifestRow] = []
    bad: list = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"packing {len(manifest)} images", total=len(manifest))
        for split in SPLITS:
            rows = manifest.split(split)
            if not rows:  # an empty split gets no folder (litdata's merge would wait forever for its index)
                continue
            # The global shuffle litdata does not do (its own is chunk-local): one permutation per split.
            order = np.random.default_rng([shuffle_seed, SPLITS.index(split)]).permutation(len(rows))
            shuffled = [rows[k] for k in order]
            kept, skipped = _write_split(shuffled, reader, staging / split, chunk_bytes, bad_input, workers,
                                         lambda: bar.advance(task), max_pixels)
            kept_rows += kept
            bad += skipped
    if bad:
        log.warning("left out %d bad images, e.g. %s", len(bad), bad[:5])
    report = {**manifest.report, "pack_bad_images": bad, "pack_bad_images_count": len(bad)}
    packed = Manifest(kept_rows, classes, report, staging / MANIFEST_FILE)
    write_cache(packed, staging / MANIFEST_FILE, {"packed_from": str(src)})
    (staging / MANIFEST_FILE).with_suffix(".json").unlink()  # pack.json carries the same and more
    return {
        "version": PACK_VERSION, "source": str(src), "class_range": asdict(classes),
        "split_fractions": list(fractions), "split_seed": split_seed, "shuffle_seed": shuffle_seed,
        "chunk_bytes": chunk_bytes, "splits": {s: sum(r.split == s for r in kept_rows) for s in SPLITS},
        "report": report,
    }
