"""``bincount render``: the command line over :func:`render_dataset`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bincount.data.synthetic.spec import MIN_SIZE, _check_int, _count_probabilities
from bincount.data.synthetic.writer import RenderDirError, _render_dataset

ERRORS = (RenderDirError,)  # OUT_DIR cannot take this render: exit status 1 (see bincount.cli)

# --------------------------------------------------------------------------------------------------
# `bincount render`
# --------------------------------------------------------------------------------------------------


def parse_counts(text: str) -> dict[int, float]:
    """Parse "0:1,1:5,2:5" (item count : weight) for --counts."""
    counts: dict[int, float] = {}
    try:
        for part in text.split(","):
            key, weight = part.split(":")
            counts[int(key)] = float(weight)
        _count_probabilities(counts)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid --counts {text!r} (expected like '0:1,1:5,2:5'): {error}") from None
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="dataset directory (bin-images/, metadata/)")
    parser.add_argument("--num-images", type=int, default=2000, help="number of bins (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    parser.add_argument("--counts", type=parse_counts, default=None, help="count:weight list, e.g. 0:1,1:5,2:5 (default: capstone distribution)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:  # value checks are usage mistakes (2); the renderer checks them again for library callers
        for name, minimum in (("num_images", 1), ("seed", 0), ("size", MIN_SIZE), ("workers", 1)):
            _check_int(name, getattr(args, name), minimum)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    start = time.perf_counter()
    out, written = _render_dataset(args.out_dir, args.num_images, args.seed, args.size, args.counts, args.workers,
                                   args.progress)
    seconds = time.perf_counter() - start
    if written == 0:
        print(f"{out}: already complete ({args.num_images} images), nothing to render")
    else:
        print(f"{out}: rendered {written} images in {seconds:.1f} s ({written / seconds:.0f} images/s)")
    return 0
