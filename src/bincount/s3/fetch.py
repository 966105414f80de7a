"""``bincount fetch``: copy ABID (or part of it) from ``s3://aft-vbi-pds`` to a local dir or your own bucket.

Why a command of its own: the old reports fetched one image after another and started over after every
interruption. This one fetches in parallel (threads; the work is waiting on the network), skips what the
destination already has *and* matches the source (size, and ETag between buckets), writes files
atomically so a killed run never leaves a half file under its final name, and ends with a report of
what was missing upstream (ABID has metadata without images and vice versa).

Selections: ``--file-list`` (the capstone ``file_list.json``; its paths look like ``data/metadata/ID.json``),
``--counts A-B`` (all bins with A..B items: the metadata is fetched first, then the matching images), or
``--all``. Every key is checked before anything is written: a list naming keys outside ``bin-images/`` and
``metadata/``, absolute paths or ``..`` is refused as a whole.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bincount.layout import image_key, metadata_key
from bincount.s3.keys import UnsafeKeyError, check_relative_key
from bincount.s3.store import ObjectInfo, S3ReadError, Store
from bincount.text import plain

log = logging.getLogger(__name__)
PUBLIC_SOURCE = "s3://aft-vbi-pds"
REPORT_NAME = "fetch-report.json"
_SHOWN = 10


def keys_for_ids(ids: list[str]) -> list[str]:
    """metadata/ID.json and bin-images/ID.jpg for each id (ids are checked by the key functions)."""
    return [k for i in ids for k in (metadata_key(i), image_key(i))]


def listing_keys(store: Store, folders: tuple[str, ...], refused: list[str]) -> dict[str, ObjectInfo]:
    """key -> info for every object in ``folders``; unsafe names in someone else's bucket are refused."""
    out = {}
    for folder in folders:
        for name, info in store.list(folder).items():
            try:
                out[check_relative_key(f"{folder}/{name}")] = info
            except UnsafeKeyError:
                refused.append(f"{folder}/{name}")
    return out


class Fetcher:
    """Copies keys from ``source`` to ``dest`` in parallel, skipping verified copies; tallies everything."""

    def __init__(self, source: Store, dest: Store, workers: int, progress: bool) -> None:
        self.source, self.dest, self.workers, self.progress = source, dest, max(1, workers), progress
        self.tally: Counter = Counter()
        self.missing: list[str] = []
        self.failed: list[str] = []

    def copy(self, keys: list[str], known: dict[str, ObjectInfo] | None = None, what: str = "objects") -> list[str]:
        """Fetch ``keys``; returns those now present at the destination."""
        for key in keys:
            check_relative_key(key)  # all keys checked before the first write
        known = known or {}
        present: list[str] = []

        def one(key: str) -> None:
            state = self._one(key, known.get(key))
            self.tally[state] += 1
            if state in ("fetched", "skipped", "replaced"):
                present.append(key)

        with ThreadPoolExecutor(self.workers) as pool:
            if not self.progress:
                list(pool.map(one, keys))
                return present
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task(f"fetching {what}", total=len(keys))
                for _ in pool.map(one, keys):
                    bar.advance(task)
        return present

    def _one(self, key: str, source_info: ObjectInfo | None) -> str:
        try:
            have = self.dest.stat(key)
            if have is not None:
                source_info = source_info or self.source.stat(key)
                if source_info is None:
                    self.missing.append(key)
                    return "missing"
                if _same(have, source_info):
                    return "skipped"
            data = self.source.read(key)
            if source_info is not None and len(data) != source_info.size:
                raise S3ReadError(f"{self.source.url(key)}: got {len(data)} bytes, expected {source_info.size}")
            self.dest.write(key, data)
            return "replaced" if have is not None else "fetched"
        except FileNotFoundError:
            self.missing.append(key)
            return "missing"
        except (S3ReadError, OSError) as e:
            self.failed.append(f"{key}: {e}")
            return "failed"


def _same(have: ObjectInfo, want: ObjectInfo) -> bool:
    """Equal sizes, and equal ETags when both are plain MD5s (multipart ETags contain '-')."""
    if have.size != want.size:
        return False
    if have.etag and want.etag and "-" not in have.etag + want.etag:
        return have.etag == want.etag
    return True


def select_by_count(fetcher: Fetcher, ids: list[str], low: int, high: int, bad: list[str]) -> list[str]:
    """Ids whose fetched metadata has ``low <= EXPECTED_QUANTITY <= high``; unreadable metadata goes to ``bad``."""
    chosen = []
    for id_ in ids:
        try:
            count = json.loads(fetcher.dest.read(metadata_key(id_))).get("EXPECTED_QUANTITY")
        except (OSError, ValueError, AttributeError) as e:
            bad.append(f"{metadata_key(id_)}: {e}")
            continue
        if isinstance(count, int) and not isinstance(count, bool) and low <= count <= high:
            chosen.append(id_)
    return chosen


def write_report(dest: Store, report: dict, where: str | None) -> None:
    """The report goes to ``where``, else next to the data (local) or to the working directory (s3 destination)."""
    text = json.dumps(report, indent=1)
    local = not dest.url().startswith("s3://")
    path = Path(where) if where else Path(dest.url()) / ".bincount" / REPORT_NAME if local else Path(REPORT_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    report["report_file"] = str(path)


def print_report(report: dict) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    counts = ", ".join(f"{k} {report.get(k, 0)}" for k in ("fetched", "skipped", "replaced", "missing", "failed"))

    def say(text: str) -> None:  # keys and messages come from someone else's bucket: shown as they are, inert
        console.print(plain(text), markup=False)

    say(f"fetch {report['source']} -> {report['dest']}: {counts}")
    for name in ("missing_upstream", "failures", "refused_keys", "bad_metadata"):
        items = report[name]
        if items:
            more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            say(f"{name.replace('_', ' ')}: {len(items)}: {', '.join(items[:_SHOWN])}{more}")
    say(f"report: {report['report_file']}")
