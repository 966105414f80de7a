"""A dataset directory: atomic files, parallel workers, resume, and the completion marker that keeps
renders of other parameters or versions from being mixed in silently."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bincount.data.synthetic.bins import _render, image_id
from bincount.data.synthetic.spec import COMPLETE_MARKER, MIN_SIZE, PARTIAL_MARKER, RENDERER_VERSION, _check_int, _count_probabilities
from bincount.layout import IMAGE_DIR, METADATA_DIR

LOCK_FILE = ".render.lock"  # held while a process renders into the directory

if TYPE_CHECKING:
    from rich.progress import Progress

# --------------------------------------------------------------------------------------------------
# A dataset directory: atomic files, resume, completion marker
# --------------------------------------------------------------------------------------------------


def _parameters(num_images: int, seed: int, size: int, probabilities: Mapping[int, float]) -> dict:
    """What determines the files (not workers/progress), as stored in the markers."""
    return {
        "renderer_version": RENDERER_VERSION,
        "num_images": num_images,
        "seed": seed,
        "size": size,
        "counts": {str(c): p for c, p in probabilities.items()},
    }


class RenderDirError(ValueError):
    """OUT_DIR cannot take this render: rendered with other parameters, or bins this renderer did not write."""


def _check_marker(path: Path, parameters: dict) -> bool:
    """True if `path` holds these parameters, False if absent; ValueError naming any differences."""
    if not path.exists():
        return False
    stored = json.loads(path.read_text())
    diffs = [f"{key}: {stored.get(key)!r} there, {value!r} requested" for key, value in parameters.items() if stored.get(key) != value]
    if diffs:
        raise RenderDirError(f"{path.parent} was rendered with other parameters ({path.name}); use another directory or delete it. " + "; ".join(diffs))
    return True


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a hidden temporary file and os.replace, so a killed render leaves no truncated file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _paths(out: Path, index: int) -> tuple[Path, Path]:
    name = image_id(index)
    return out / IMAGE_DIR / f"{name}.jpg", out / METADATA_DIR / f"{name}.json"


def _render_chunk(job: tuple[str, int, int, dict[int, float], Sequence[int]]) -> int:
    """Render and write the given indices (a Pool task); returns how many images were written."""
    out, seed, size, probabilities, indices = job
    for index in indices:
        image_path, meta_path = _paths(Path(out), index)
        jpeg, metadata = _render(seed, index, size, probabilities)
        _write_atomic(image_path, jpeg)  # image first: an index counts as done once its metadata exists
        _write_atomic(meta_path, json.dumps(metadata, indent=4, sort_keys=True).encode())
    return len(indices)


def _missing(out: Path, num_images: int) -> list[int]:
    return [i for i in range(num_images) if not all(p.exists() for p in _paths(out, i))]


def _chunks(indices: list[int], workers: int) -> Iterator[list[int]]:
    step = max(1, min(64, math.ceil(len(indices) / (workers * 8))))
    for start in range(0, len(indices), step):
        yield indices[start : start + step]


def _progress_bar(enabled: bool) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # only where shown

    return Progress(TextColumn("rendering bins"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not enabled)


def _run_jobs(jobs: list[tuple], workers: int) -> Iterator[int]:
    """Run the chunks here, or in a pool of `workers` processes; yields images written per chunk."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_render_chunk, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:  # spawn: safe if torch is loaded
        yield from pool.imap_unordered(_render_chunk, jobs)


def _check_not_foreign(out: Path) -> None:
    """Refuse to 'resume' into bins this renderer did not start (no partial marker), e.g. real ABID data."""
    if not (out / PARTIAL_MARKER).exists() and any(any((out / sub).glob("*")) for sub in (IMAGE_DIR, METADATA_DIR) if (out / sub).is_dir()):
        raise RenderDirError(f"{out} already holds {IMAGE_DIR}/ or {METADATA_DIR}/ files but no {PARTIAL_MARKER}: not a synthetic render, refusing to add to it")


def _render_dataset(
    out_dir: str | os.PathLike, num_images: int, seed: int, size: int, counts: Mapping[int, float] | None, workers: int, progress: bool
) -> tuple[Path, int]:
    """render_dataset, also returning how many images this call wrote."""
    num_images = _check_int("num_images", num_images, 1)
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, MIN_SIZE)
    workers = _check_int("workers", workers, 1)
    probabilities = _count_probabilities(counts)
    out = Path(out_dir)
    parameters = _parameters(num_images, seed, size, probabilities)
    if _check_marker(out / COMPLETE_MARKER, parameters):
        return out, 0
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out / LOCK_FILE):  # two jobs of a sweep may render the same dataset at once
        if _check_marker(out / COMPLETE_MARKER, parameters):  # the other one finished it meanwhile
            return out, 0
        return out, _render_into(out, parameters, num_images, seed, size, probabilities, workers, progress)


@contextlib.contextmanager
def _exclusive(path: Path):
    """An exclusive lock on ``path`` (``flock``, released when the process dies, so never stale)."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _render_into(out: Path, parameters: dict, num_images: int, seed: int, size: int, probabilities: dict,
                 workers: int, progress: bool) -> int:
    _check_not_foreign(out)
    for sub in (IMAGE_DIR, METADATA_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob(".*.tmp"):  # left by a killed render
            stale.unlink()
    if not _check_marker(out / PARTIAL_MARKER, parameters):
        _write_atomic(out / PARTIAL_MARKER, json.dumps(parameters, indent=2).encode())
    todo = _missing(out, num_images)
    jobs = [(str(out), seed, size, probabilities, chunk) for chunk in _chunks(todo, workers)]
    with _progress_bar(progress) as bar:
        task = bar.add_task("render", total=num_images, completed=num_images - len(todo))
        for done in _run_jobs(jobs, workers):
            bar.advance(task, done)
    _write_atomic(out / COMPLETE_MARKER, json.dumps(parameters, indent=2).encode())
    (out / PARTIAL_MARKER).unlink()
    return len(todo)


def render_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    size: int = 128,
    counts: Mapping[int, float] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write `num_images` bins to `out_dir` in the ABID layout and return the directory.

    Idempotent: a finished directory (``.complete.json``) with the same parameters is returned as is,
    one with other parameters raises RenderDirError (a ValueError) naming the differences. An unfinished one is resumed:
    images already written are kept (each file is written atomically), the rest are rendered.
    """
    return _render_dataset(out_dir, num_images, seed, size, counts, workers, progress)[0]


