"""Building a manifest: ids in, checked rows with labels and splits out, cached once per setting.

Bad metadata (missing, malformed, no or bad ``EXPECTED_QUANTITY``) and missing images are skipped and
reported under ``bad_input="skip"`` and raise :class:`DataError` under ``"fail"``: one bad file must not
kill a run, and it must not vanish silently either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from bincount.layout import IMAGE_DIR, METADATA_DIR, SPLITS, DataError, check_bad_input, image_key, metadata_key, read_file_list
from bincount.manifest import metadata
from bincount.manifest.classes import ClassRange
from bincount.manifest.splits import assign_splits, check_fractions
from bincount.manifest.table import Manifest, ManifestRow, cache_key, default_cache_dir, user_cache_dir, write_cache

log = logging.getLogger("bincount.manifest")

MANIFEST_VERSION = 1  # bump when the CSV's content rules change, so old caches are not reused
_EXAMPLES_IN_LOG = 5


def build_manifest(
    root: str | os.PathLike,
    class_range: ClassRange = ClassRange(),
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    file_list: str | os.PathLike | None = None,
    bad_input: str = "skip",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Manifest:
    """Build (or load from cache) the manifest of the ABID-layout dataset at ``root``.

    Ids come from listing ``root/metadata`` or, when given, from a capstone ``file_list``. The class
    range is applied before the image check, so an excluded count never fails for a missing image.

    ``report`` keys: ``source`` (listing|file_list), ``metadata_files``, ``used``,
    ``excluded_below_min``, ``excluded_above_max`` (overflow=drop), ``clipped_above_max``,
    ``bad_metadata`` ([id, reason]) and ``bad_metadata_count``, ``images_missing`` and its ``_count``,
    ``metadata_missing_for_images`` (images with no metadata; listing mode only) and its ``_count``,
    ``file_list_count_mismatches`` ([id, listed, metadata]), ``count_histogram``, ``splits``.
    """
    check_bad_input(bad_input)
    if not isinstance(class_range, ClassRange):
        raise TypeError(f"class_range must be a ClassRange, got {type(class_range).__name__}")
    fractions = check_fractions(split_fractions)
    if metadata.is_store(root):  # S3: the metadata is read once with parallel GETs, the manifest cached locally
        root_path, workers = root, workers or getattr(root, "max_workers", None)
        if cache_dir is None:
            cache_dir = user_cache_dir()
    else:
        root_path = Path(root).expanduser().resolve()
        if not root_path.is_dir():
            raise DataError(f"dataset root {root_path} is not a directory")

    listed = read_file_list(file_list) if file_list is not None else None
    ids = sorted(listed) if listed is not None else metadata.list_ids(root_path)
    image_ids = metadata.list_ids(root_path, IMAGE_DIR)
    key_parts = {
        "version": MANIFEST_VERSION,
        "root": repr(root_path) if metadata.is_store(root_path) else str(root_path),  # repr: URL and endpoint
        "metadata": metadata.listing_stamp(root_path, METADATA_DIR),
        "images": hashlib.sha256("\n".join(image_ids).encode()).hexdigest(),
        "file_list": hashlib.sha256(Path(file_list).read_bytes()).hexdigest() if file_list is not None else None,
        "class_range": asdict(class_range),
        "fractions": fractions,
        "seed": seed,
        "bad_input": bad_input,
    }
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(root_path)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / f"manifest-{cache_key(**key_parts)[:20]}.csv"
    if csv_path.exists() and csv_path.with_suffix(".json").exists():
        log.debug("using cached manifest %s", csv_path)
        return Manifest.load(csv_path)

    source = root_path if metadata.is_store(root_path) else str(root_path)
    results = metadata.read_all(source, ids, progress=progress, workers=workers)
    rows, report = _rows_and_report(ids, results, set(image_ids), listed, class_range, bad_input, root_path)
    assignment = assign_splits(_group_by_label(rows), fractions, seed)
    for row in rows:
        row.split = assignment[row.id]
    report["splits"] = {s: sum(r.split == s for r in rows) for s in SPLITS}
    report = json.loads(json.dumps(report))  # same types as a report read back from the cache
    manifest = Manifest(rows, class_range, report, csv_path)
    write_cache(manifest, csv_path, key_parts)
    return manifest


def _group_by_label(rows: Iterable[ManifestRow]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for row in rows:
        groups.setdefault(row.label, []).append(row.id)
    return groups


def _rows_and_report(
    ids: Sequence[str],
    results: Sequence[metadata.Verdict],
    image_ids: set[str],
    listed: dict[str, int] | None,
    class_range: ClassRange,
    bad_input: str,
    root: Path,
) -> tuple[list[ManifestRow], dict]:
    """Turn read results into rows, applying the bad-input policy and the class range."""
    bad: list[tuple[str, str]] = []
    missing_images: list[str] = []
    mismatches: list[tuple[str, int, int]] = []
    excluded = Counter()
    rows: list[ManifestRow] = []
    for id_, (count, reason) in zip(ids, results):
        if reason is not None:
            _bad(bad_input, f"{metadata.where(root, f'{METADATA_DIR}/{id_}.json')}: {reason}")
            bad.append((id_, reason))
            continue
        if listed is not None and listed[id_] != count:
            mismatches.append((id_, listed[id_], count))
        try:
            label = class_range.label(count)
        except DataError as e:
            raise DataError(f"{metadata.where(root, metadata_key(id_))}: {e}") from None
        if label is None:
            excluded["below_min" if count < class_range.min_count else "above_max"] += 1
            continue
        if id_ not in image_ids:
            _bad(bad_input, f"{metadata.where(root, image_key(id_))}: image missing (metadata {metadata_key(id_)} exists)")
            missing_images.append(id_)
            continue
        excluded["clipped"] += count > class_range.max_count
        rows.append(ManifestRow(id_, image_key(id_), count, label, ""))
    _warn_skipped(bad, missing_images)
    if mismatches:
        log.warning("%d ids have a count in the file list that differs from their metadata (metadata wins), e.g. %s",
                    len(mismatches), mismatches[:_EXAMPLES_IN_LOG])
    report = {
        "source": "file_list" if listed is not None else "listing",
        "metadata_files": len(ids),
        "used": len(rows),
        "excluded_below_min": excluded["below_min"],
        "excluded_above_max": excluded["above_max"],
        "clipped_above_max": excluded["clipped"],
        "bad_metadata_count": len(bad),
        "bad_metadata": bad,
        "images_missing_count": len(missing_images),
        "images_missing": missing_images,
        "metadata_missing_for_images": sorted(image_ids.difference(ids)) if listed is None else [],
        "file_list_count_mismatches": mismatches,
        "count_histogram": {str(c): n for c, n in sorted(Counter(r.count for r in rows).items())},
    }
    report["metadata_missing_for_images_count"] = len(report["metadata_missing_for_images"])
    return rows, report


def _bad(bad_input: str, message: str) -> None:
    if bad_input == "fail":
        raise DataError(f"{message} (bad_input='fail'; use bad_input='skip' to skip and report such files)")


def _warn_skipped(bad: list[tuple[str, str]], missing_images: list[str]) -> None:
    if bad:
        examples = "; ".join(f"{METADATA_DIR}/{i}.json: {r}" for i, r in bad[:_EXAMPLES_IN_LOG])
        log.warning("skipped %d bad metadata files, e.g. %s", len(bad), examples)
    if missing_images:
        examples = ", ".join(image_key(i) for i in missing_images[:_EXAMPLES_IN_LOG])
        log.warning("skipped %d ids whose image is missing, e.g. %s", len(missing_images), examples)
