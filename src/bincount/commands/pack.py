"""``bincount pack``: pack an ABID-layout dataset (local or s3://) into shuffled shards for streaming."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bincount.layout import DataError
from bincount.manifest import ClassRange
from bincount.s3.endpoint import S3Error
from bincount.s3.store import S3ReadError
from bincount.samples import DEFAULT_MAX_PIXELS
from bincount.shards.pack import join, pack

ERRORS = (DataError, S3Error, S3ReadError)  # with OSError: failures at run time, exit status 1 (see bincount.cli)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="dataset in the ABID layout: a directory or s3://bucket/prefix")
    parser.add_argument("--out", default=None, help="where the shards go, a directory or s3:// (default: SRC/shards)")
    parser.add_argument("--min-count", type=int, default=1, help="smallest count kept (default: 1)")
    parser.add_argument("--max-count", type=int, default=5, help="largest class (default: 5)")
    parser.add_argument("--overflow", default="clip", help="counts above max: clip|drop|fail (default: clip)")
    parser.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions (default: 0.8,0.1,0.1)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the stratified split (default: 0)")
    parser.add_argument("--shuffle-seed", type=int, default=0, help="seed of the write-time shuffle (default: 0)")
    parser.add_argument("--file-list", default=None, help="capstone file_list.json: pack only the listed ids")
    parser.add_argument("--bad-input", default="skip", help="missing/corrupt images: skip|fail (default: skip)")
    parser.add_argument("--chunk-bytes", default="64MB", help="target shard size (default: 64MB)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images declaring more pixels (default: {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--workers", type=int, default=16, help="parallel reads (default: 16)")
    parser.add_argument("--cache-dir", default=None, help="where the source's manifest is cached")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3 / AWS)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _usage(check: Callable, *args):
    """``check(*args)``, with a ValueError turned into a usage mistake (exit status 2, see bincount.cli)."""
    try:
        return check(*args)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in text.split(","))
    except ValueError:
        raise ValueError(f"--split {text!r} is not train,val,test fractions like 0.8,0.1,0.1") from None


def run(args: argparse.Namespace) -> int:
    fractions = _usage(_fractions, args.split)
    if args.bad_input not in ("skip", "fail"):
        raise argparse.ArgumentTypeError(f"--bad-input={args.bad_input!r}; valid choices: ['skip', 'fail']")
    classes = _usage(ClassRange, args.min_count, args.max_count, args.overflow)
    info = pack(args.src, args.out, classes=classes, fractions=fractions, split_seed=args.split_seed,
                shuffle_seed=args.shuffle_seed, file_list=args.file_list, bad_input=args.bad_input,
                chunk_bytes=args.chunk_bytes, workers=args.workers, cache_dir=args.cache_dir,
                progress=args.progress, max_pixels=args.max_pixels,
                s3={"endpoint_url": args.endpoint_url} if args.endpoint_url else None)
    out = args.out or join(args.src, "shards")
    print(f"{out}: packed {info['splits']} in {info['seconds']} s; "
          f"{info['report']['pack_bad_images_count']} bad images left out")
    return 0
