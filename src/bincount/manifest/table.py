"""The manifest table: its rows, and the cached CSV (+ JSON sidecar) it lives in between runs.

Why a cache: reading 536k metadata JSONs takes minutes, and training must never read metadata per
sample. The CSV's name is a sha256 of everything that decides its content (:func:`cache_key`), so a
changed dataset or setting builds a new one and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bincount.layout import IMAGE_DIR, SPLITS, DataError, check_id, check_key
from bincount.manifest.classes import ClassRange

log = logging.getLogger("bincount.manifest")

CSV_COLUMNS = ("id", "image", "count", "label", "split")


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
        if name not in SPLITS:
            raise ValueError(f"split {name!r} is not one of {', '.join(SPLITS)}")
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


def user_cache_dir() -> Path:
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
    fallback = user_cache_dir()
    log.info("dataset root %s is not writable; caching manifests in %s", root, fallback)
    return fallback


def cache_key(**parts: Any) -> str:
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


def write_cache(manifest: Manifest, csv_path: Path, key_parts: dict) -> None:
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
