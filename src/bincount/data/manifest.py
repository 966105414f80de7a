"""The manifest: one cached table of (id, image key, count, label, split) per dataset and settings.

Why a manifest: reading 536k metadata JSONs takes minutes, and training must never read metadata per
sample. So the metadata is read once, checked (bad files are skipped and reported, or fail loudly),
mapped to class labels by a :class:`ClassRange`, split deterministically and stratified by label, and
written as a CSV under a cache directory. The CSV's name is a sha256 of everything that decides its
content, so a changed dataset or setting builds a new one and an unchanged one is never rebuilt.

File-system access goes through three small module functions taking a root (:func:`list_ids`,
:func:`read_metadata`, :func:`listing_stamp`) so that an S3 backend can replace them later.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
OVERFLOW_CHOICES = ("clip", "drop", "fail")
BAD_INPUT_CHOICES = ("skip", "fail")
METADATA_DIR = "metadata"
IMAGE_DIR = "bin-images"
CSV_COLUMNS = ("id", "image", "count", "label", "split")
MANIFEST_VERSION = 1  # bump when the CSV's content rules change, so old caches are not reused
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_EXAMPLES_IN_LOG = 5


class DataError(ValueError):
    """Bad data, or a configuration that does not fit the data."""


# --------------------------------------------------------------------------------------------------
# Class range
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassRange:
    """Which counts become classes: ``min_count..max_count``, label = ``count - min_count``.

    Counts below ``min_count`` are always excluded (and counted in the report); counts above
    ``max_count`` follow ``overflow``: ``clip`` maps them to the last class, ``drop`` excludes them,
    ``fail`` raises :class:`DataError`.
    """

    min_count: int = 1
    max_count: int = 5
    overflow: str = "clip"

    def __post_init__(self) -> None:
        for name in ("min_count", "max_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 0 <= self.min_count < self.max_count:
            raise ValueError(
                f"class range needs 0 <= min_count < max_count, got min_count={self.min_count}, "
                f"max_count={self.max_count}"
            )
        if self.overflow not in OVERFLOW_CHOICES:
            raise ValueError(f"overflow={self.overflow!r} is not one of {', '.join(OVERFLOW_CHOICES)}")

    @property
    def num_classes(self) -> int:
        return self.max_count - self.min_count + 1

    def label(self, count: int) -> int | None:
        """The class index of ``count``, or None when the count is excluded."""
        if count < self.min_count:
            return None
        if count > self.max_count:
            if self.overflow == "fail":
                raise DataError(
                    f"count {count} is above max_count={self.max_count} and overflow='fail' "
                    f"(choices: {', '.join(OVERFLOW_CHOICES)})"
                )
            return self.num_classes - 1 if self.overflow == "clip" else None
        return count - self.min_count

    def count(self, label: int) -> int:
        """The count that class ``label`` stands for (the last class means ``>= max_count`` under clip)."""
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} is outside 0..{self.num_classes - 1}")
        return self.min_count + label


# --------------------------------------------------------------------------------------------------
# Rows and the manifest
# --------------------------------------------------------------------------------------------------


@dataclass
class ManifestRow:
    id: str
    image: str
    count: int
    label: int
    split: str


class Manifest:
    """The rows of one dataset under one setting, with its data-quality report and cached CSV path."""

    def __init__(self, rows: list[ManifestRow], class_range: ClassRange, report: dict, path: Path | None) -> None:
        self.rows = rows
        self.class_range = class_range
        self.report = report
        self.path = path

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        sizes = {s: len(self.split(s)) for s in SPLITS}
        return f"Manifest({len(self.rows)} rows, {sizes}, {self.class_range}, path={self.path})"

    def split(self, name: str) -> list[ManifestRow]:
        _check_split_name(name)
        return [r for r in self.rows if r.split == name]

    def class_counts(self, split: str) -> list[int]:
        """Images per class in ``split``, a list of length ``num_classes``."""
        counts = [0] * self.class_range.num_classes
        for row in self.split(split):
            counts[row.label] += 1
        return counts

    @classmethod
    def load(cls, csv_path: str | os.PathLike) -> Manifest:
        """Read a cached manifest CSV and its JSON sidecar."""
        csv_path = Path(csv_path)
        meta = json.loads(csv_path.with_suffix(".json").read_text())
        class_range = ClassRange(**meta["class_range"])
        return cls(_read_csv(csv_path, class_range), class_range, meta["report"], csv_path)


def _check_split_name(name: str) -> None:
    if name not in SPLITS:
        raise ValueError(f"split {name!r} is not one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------------------------------
# Safety of ids and keys
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# The file-system seams (an S3 backend replaces these three)
# --------------------------------------------------------------------------------------------------


def list_ids(root: str | os.PathLike, folder: str = METADATA_DIR) -> list[str]:
    """Sorted ids of the files in ``root/folder`` (``metadata`` → ``.json``, ``bin-images`` → ``.jpg``)."""
    suffix = {METADATA_DIR: ".json", IMAGE_DIR: ".jpg"}[folder]
    if _is_store(root):  # an S3 (or other) store from bincount.s3.store
        return sorted(n[: -len(suffix)] for n in root.list(folder) if n.endswith(suffix) and len(n) > len(suffix))
    directory = Path(root) / folder
    if not directory.is_dir():
        return []
    with os.scandir(directory) as entries:
        return sorted(e.name[: -len(suffix)] for e in entries if e.name.endswith(suffix) and len(e.name) > len(suffix))


def read_metadata(root: str | os.PathLike, id_: str) -> dict:
    """Parse ``root/metadata/<id>.json``; raises FileNotFoundError or ValueError (bad JSON)."""
    if _is_store(root):
        return json.loads(root.read(metadata_key(id_)))
    with open(Path(root) / metadata_key(id_), "rb") as f:
        return json.loads(f.read())


def listing_stamp(root: str | os.PathLike, folder: str = METADATA_DIR) -> str:
    """A hash of (name, size, mtime) of every file in ``root/folder``: changes when any file changes."""
    if _is_store(root):
        from bincount.s3.store import listing_stamp as store_stamp

        return store_stamp(root.list(folder))
    digest = hashlib.sha256()
    directory = Path(root) / folder
    if directory.is_dir():
        with os.scandir(directory) as entries:
            stamps = sorted((e.name, e.stat()) for e in entries)
        for name, st in stamps:
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _is_store(root: Any) -> bool:
    """A store object (``bincount.s3.store``) rather than a local path: S3 roots come in this way."""
    return hasattr(root, "list") and hasattr(root, "read") and not isinstance(root, (str, os.PathLike))


def _where(root: Any, key: str) -> str:
    """Where ``key`` lives, for messages: a local path or an ``s3://`` URL (never credentials)."""
    return root.url(key) if _is_store(root) else str(Path(root) / key)


# --------------------------------------------------------------------------------------------------
# file_list.json (the capstone subset)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Reading and checking metadata
# --------------------------------------------------------------------------------------------------


def _read_one(root: str, id_: str, reader: Callable[[str, str], dict]) -> tuple[int | None, str | None]:
    """(count, None) for good metadata, (None, reason) for bad."""
    try:
        check_id(id_)
    except DataError:
        return None, "unsafe or invalid id in the file name"
    try:
        meta = reader(root, id_)
    except FileNotFoundError:
        return None, "metadata file missing"
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"malformed JSON ({e})"
    except OSError as e:
        return None, f"unreadable ({e})"
    return _count_of(meta)


def _count_of(meta: Any) -> tuple[int | None, str | None]:
    if not isinstance(meta, dict):
        return None, f"metadata is a JSON {type(meta).__name__}, not an object"
    if "EXPECTED_QUANTITY" not in meta:
        return None, "no EXPECTED_QUANTITY"
    count = meta["EXPECTED_QUANTITY"]
    if isinstance(count, bool) or not isinstance(count, int):
        return None, f"EXPECTED_QUANTITY {count!r} is not an integer"
    if count < 0:
        return None, f"EXPECTED_QUANTITY {count} is negative"
    return count, None


def _read_all(root: str, ids: Sequence[str], progress: bool, workers: int | None) -> list[tuple[int | None, str | None]]:
    """Read every id's metadata with a thread pool (the work is I/O bound), in ``ids`` order.

    Ids go to the pool in batches of 256: one future per id cost more than reading a local file
    (lock traffic; 20k local ids took 6.4 s one future each, 4.4 s in batches). ``Executor.map`` ignores ``chunksize`` for threads.
    """
    reader = read_metadata  # looked up at call time so tests and backends can replace the seam
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    batches = [ids[i:i + 256] for i in range(0, len(ids), 256)]

    def read_batch(batch: Sequence[str]) -> list[tuple[int | None, str | None]]:
        return [_read_one(root, i, reader) for i in batch]

    out: list[tuple[int | None, str | None]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(read_batch, batches)
        if not progress:
            return [r for batch in results for r in batch]
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"reading {len(ids)} metadata files", total=len(ids))
            for batch in results:
                out.extend(batch)
                bar.advance(task, len(batch))
    return out


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative numbers (train, val, test) summing to 1."""
    values = tuple(fractions)
    if len(values) != 3:
        raise ValueError(f"split_fractions must be 3 numbers (train, val, test), got {values!r}")
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f >= 0 for f in values):
        raise ValueError(f"split_fractions must be non-negative numbers, got {values!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must sum to 1, got {values!r} (sum {sum(values):g})")
    total = sum(values)
    return tuple(float(f) / total for f in values)  # type: ignore[return-value]


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Cut ``n`` items by ``fractions`` with largest-remainder rounding (ties go to the earlier split).

    Tiny classes stay sensible: 1 item goes to train, 5 items at 0.8/0.1/0.1 give 4/1/0, and a split
    with fraction 0 never gets an item.
    """
    shares = [n * f for f in fractions]
    sizes = [int(s) for s in shares]
    order = sorted(range(len(shares)), key=lambda k: (-(shares[k] - sizes[k]), k))
    for k in order[: n - sum(sizes)]:
        sizes[k] += 1
    return sizes


def assign_splits(ids_by_label: dict[int, list[str]], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Stratified split: per label, shuffle with ``default_rng([seed, label])`` and cut by ``fractions``."""
    assignment: dict[str, str] = {}
    for label, ids in sorted(ids_by_label.items()):
        ordered = sorted(ids)
        shuffled = [ordered[k] for k in np.random.default_rng([seed, label]).permutation(len(ids))]
        start = 0
        for split, size in zip(SPLITS, split_sizes(len(ids), fractions)):
            for id_ in shuffled[start : start + size]:
                assignment[id_] = split
            start += size
    return assignment


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bincount" / "manifests"


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
        return True
    except OSError:
        return False


def default_cache_dir(root: str | os.PathLike) -> Path:
    """``<root>/.bincount/manifests``, or the user cache dir when the root is read-only."""
    preferred = Path(root) / ".bincount" / "manifests"
    if _writable(preferred):
        return preferred
    fallback = _user_cache_dir()
    log.info("dataset root %s is not writable; caching manifests in %s", root, fallback)
    return fallback


def _cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache should be readable by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_cache(manifest: Manifest, csv_path: Path, key_parts: dict) -> None:
    def write_csv(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows((r.id, r.image, r.count, r.label, r.split) for r in manifest.rows)

    meta = {"class_range": asdict(manifest.class_range), "report": manifest.report, "key": key_parts}
    _atomic_write(csv_path.with_suffix(".json"), lambda f: json.dump(meta, f, indent=1))
    _atomic_write(csv_path, write_csv)  # written last: its presence means the pair is complete


def _read_csv(csv_path: Path, class_range: ClassRange) -> list[ManifestRow]:
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != CSV_COLUMNS:
            raise DataError(f"manifest {csv_path} has columns {header}, expected {CSV_COLUMNS}")
        rows = []
        for line, (id_, image, count, label, split) in enumerate(reader, start=2):
            row = ManifestRow(check_id(id_), check_key(image, IMAGE_DIR), int(count), int(label), split)
            if split not in SPLITS or not 0 <= row.label < class_range.num_classes:
                raise DataError(f"manifest {csv_path} line {line}: bad split {split!r} or label {label}")
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


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

    Ids come from listing ``root/metadata`` or, when given, from a capstone ``file_list``. Bad
    metadata (missing, malformed, no or bad ``EXPECTED_QUANTITY``) and missing images are skipped and
    reported under ``bad_input="skip"`` and raise :class:`DataError` under ``"fail"``. The class
    range is applied before the image check, so an excluded count never fails for a missing image.

    ``report`` keys: ``source`` (listing|file_list), ``metadata_files``, ``used``,
    ``excluded_below_min``, ``excluded_above_max`` (overflow=drop), ``clipped_above_max``,
    ``bad_metadata`` ([id, reason]) and ``bad_metadata_count``, ``images_missing`` and its ``_count``,
    ``metadata_missing_for_images`` (images with no metadata; listing mode only) and its ``_count``,
    ``file_list_count_mismatches`` ([id, listed, metadata]), ``count_histogram``, ``splits``.
    """
    if bad_input not in BAD_INPUT_CHOICES:
        raise ValueError(f"bad_input={bad_input!r} is not one of {', '.join(BAD_INPUT_CHOICES)}")
    if not isinstance(class_range, ClassRange):
        raise TypeError(f"class_range must be a ClassRange, got {type(class_range).__name__}")
    fractions = check_fractions(split_fractions)
    if _is_store(root):  # S3: the metadata is read once with parallel GETs, the manifest cached locally
        root_path, workers = root, workers or getattr(root, "max_workers", None)
        if cache_dir is None:
            cache_dir = _user_cache_dir()
    else:
        root_path = Path(root).expanduser().resolve()
        if not root_path.is_dir():
            raise DataError(f"dataset root {root_path} is not a directory")

    listed = read_file_list(file_list) if file_list is not None else None
    ids = sorted(listed) if listed is not None else list_ids(root_path)
    image_ids = list_ids(root_path, IMAGE_DIR)
    key_parts = {
        "version": MANIFEST_VERSION,
        "root": repr(root_path) if _is_store(root_path) else str(root_path),  # repr: URL and endpoint
        "metadata": listing_stamp(root_path, METADATA_DIR),
        "images": hashlib.sha256("\n".join(image_ids).encode()).hexdigest(),
        "file_list": hashlib.sha256(Path(file_list).read_bytes()).hexdigest() if file_list is not None else None,
        "class_range": asdict(class_range),
        "fractions": fractions,
        "seed": seed,
        "bad_input": bad_input,
    }
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(root_path)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / f"manifest-{_cache_key(**key_parts)[:20]}.csv"
    if csv_path.exists() and csv_path.with_suffix(".json").exists():
        log.debug("using cached manifest %s", csv_path)
        return Manifest.load(csv_path)

    results = _read_all(root_path if _is_store(root_path) else str(root_path), ids, progress=progress, workers=workers)
    rows, report = _rows_and_report(ids, results, set(image_ids), listed, class_range, bad_input, root_path)
    assignment = assign_splits(_group_by_label(rows), fractions, seed)
    for row in rows:
        row.split = assignment[row.id]
    report["splits"] = {s: sum(r.split == s for r in rows) for s in SPLITS}
    report = json.loads(json.dumps(report))  # same types as a report read back from the cache
    manifest = Manifest(rows, class_range, report, csv_path)
    _write_cache(manifest, csv_path, key_parts)
    return manifest


def _group_by_label(rows: Iterable[ManifestRow]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for row in rows:
        groups.setdefault(row.label, []).append(row.id)
    return groups


def _rows_and_report(
    ids: Sequence[str],
    results: Sequence[tuple[int | None, str | None]],
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
            _bad(bad_input, f"{_where(root, f'{METADATA_DIR}/{id_}.json')}: {reason}")
            bad.append((id_, reason))
            continue
        if listed is not None and listed[id_] != count:
            mismatches.append((id_, listed[id_], count))
        try:
            label = class_range.label(count)
        except DataError as e:
            raise DataError(f"{_where(root, metadata_key(id_))}: {e}") from None
        if label is None:
            excluded["below_min" if count < class_range.min_count else "above_max"] += 1
            continue
        if id_ not in image_ids:
            _bad(bad_input, f"{_where(root, image_key(id_))}: image missing (metadata {metadata_key(id_)} exists)")
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
