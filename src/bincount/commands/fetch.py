"""``bincount fetch``: copy ABID (or part of it) from ``s3://aft-vbi-pds`` to a local dir or your own bucket
(what it does and why: ``bincount.s3.fetch``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bincount.layout import IMAGE_DIR, METADATA_DIR, DataError, image_key, read_file_list
from bincount.s3.endpoint import S3Config, S3Error
from bincount.s3.fetch import (PUBLIC_SOURCE, REPORT_NAME, Fetcher, print_report, write_report, keys_for_ids,
                               listing_keys, select_by_count)
from bincount.s3.store import LocalStore, S3ReadError, open_store

ERRORS = (DataError, S3Error, S3ReadError)  # with OSError: failures at run time, exit status 1 (see bincount.cli)


def parse_counts(text: str) -> tuple[int, int]:
    """``"0-5"`` -> (0, 5); a single number ``"3"`` -> (3, 3). argparse's ``type``: a bad range is a usage mistake."""
    low, _, high = text.partition("-")
    try:
        a, b = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--counts {text!r} is not a range like 0-5") from None
    if not 0 <= a <= b:
        raise argparse.ArgumentTypeError(f"--counts {text!r}: need 0 <= A <= B")
    return a, b


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", help="local directory or s3://BUCKET/PREFIX to fetch into (ABID layout)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--file-list", metavar="JSON", help="capstone file_list.json ({count: [data/metadata/ID.json, ...]})")
    which.add_argument("--counts", metavar="A-B", type=parse_counts, help="all bins with A..B items (reads all metadata first)")
    which.add_argument("--all", action="store_true", help="the whole dataset")
    p.add_argument("--source", default=PUBLIC_SOURCE, help=f"source bucket/prefix (default {PUBLIC_SOURCE})")
    p.add_argument("--source-endpoint-url", help="S3-compatible endpoint of the source "
                   "(default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--source-signed", action="store_true", help="sign source requests (default: anonymous, public bucket)")
    p.add_argument("--dest-endpoint-url", help="endpoint of an s3:// destination (default: AWS_ENDPOINT_URL_S3/AWS)")
    p.add_argument("--region", default="us-east-1", help="source region (default us-east-1, where ABID lives)")
    p.add_argument("--workers", type=int, default=32, help="parallel requests (default 32)")
    p.add_argument("--max-attempts", type=int, default=8, help="tries per request: 503 SlowDown, resets, timeouts (default 8)")
    p.add_argument("--report", metavar="JSON", help="where to write the report (default: DEST/.bincount/"
                   f"{REPORT_NAME} for a local DEST, ./{REPORT_NAME} for an s3:// DEST)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    source = open_store(args.source, S3Config(endpoint_url=args.source_endpoint_url, region=args.region,
                                              unsigned=not args.source_signed, max_pool_connections=args.workers,
                                              max_attempts=args.max_attempts))
    dest = open_store(args.dest, S3Config(endpoint_url=args.dest_endpoint_url, max_pool_connections=args.workers,
                                          max_attempts=args.max_attempts))
    if isinstance(source, LocalStore) and not source.exists():
        raise DataError(f"--source {args.source}: no such directory (a local source is a directory in ABID's "
                        f"layout; an S3 one starts with s3://)")
    fetcher = Fetcher(source, dest, args.workers, progress=not args.no_progress)
    refused: list[str] = []
    bad_metadata: list[str] = []
    if args.file_list:
        ids = sorted(read_file_list(args.file_list))  # refuses unsafe paths before anything is fetched
        fetcher.copy(keys_for_ids(ids), what=f"{len(ids)} bins")
    elif args.all:
        known = listing_keys(source, (METADATA_DIR, IMAGE_DIR), refused)
        fetcher.copy(sorted(known), known, what="the whole dataset")
    else:
        low, high = args.counts
        known = listing_keys(source, (METADATA_DIR,), refused)
        present = fetcher.copy(sorted(known), known, what="metadata")
        ids = sorted(Path(k).stem for k in present)
        chosen = select_by_count(fetcher, ids, low, high, bad_metadata)
        fetcher.copy([image_key(i) for i in chosen], what=f"images of {len(chosen)} bins with {low}-{high} items")
    report = {"source": source.url(), "dest": dest.url(), **dict(fetcher.tally),
              "missing_upstream": sorted(fetcher.missing), "failures": sorted(fetcher.failed),
              "refused_keys": sorted(refused), "bad_metadata": sorted(bad_metadata)}
    write_report(dest, report, args.report)
    print_report(report)
    return 1 if fetcher.failed else 0
