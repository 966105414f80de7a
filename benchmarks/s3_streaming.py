"""Streaming throughput and scaling: local files, per-object S3, shards (cold and cached), decode alone.

    python benchmarks/s3_streaming.py                      # 1,000 images, 2 workers, scaling 2k..10k
    python benchmarks/s3_streaming.py --images 2000 --workers 4 --latency-ms 20 --scale 2000,20000,100000
    python benchmarks/s3_streaming.py --skip-throughput --scale "" --bound-ms 50   # per-object vs latency bound

Everything runs in one process tree on one machine, same workers and image size, so the ratios are
comparable. S3 is a local ``moto_server`` (loopback): ``--latency-ms`` adds a per-request delay through
the fault proxy to stand in for S3's first-byte latency. Images are the real ABID sample
(``BINCOUNT_ABID_SAMPLE``) replicated to ``--images`` ids, else synthetic bins at 448 px. The scaling
section uses tiny JPEGs, because it measures per-image bookkeeping (manifest, memory, time to first
batch), not decoding. Prints tables; figures go in docs/s3.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the moto_server and fault-proxy helpers the tests use
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, print_table  # noqa: E402


def make_dataset(root: Path, n: int, sample: Path | None, tiny: bool = False) -> Path:
    """``n`` bins in the ABID layout: real sample images (bytes copied) cycled, or synthetic ones."""
    from PIL import Image

    (root / "bin-images").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    if tiny or sample is None:
        import io

        size = (32, 24) if tiny else (448, 448)
        buf = io.BytesIO()
        Image.effect_noise(size, 64).convert("RGB").save(buf, "JPEG", quality=90)
        sources = [(buf.getvalue(), i) for i in range(6)]
    else:
        ids = sorted(p.stem for p in (sample / "bin-images").glob("*.jpg"))
        sources = [((sample / "bin-images" / f"{i}.jpg").read_bytes(),
                    json.loads((sample / "metadata" / f"{i}.json").read_text())["EXPECTED_QUANTITY"]) for i in ids]
    for k in range(n):
        data, count = sources[k % len(sources)]
        (root / "bin-images" / f"{k:07d}.jpg").write_bytes(data)
        (root / "metadata" / f"{k:07d}.json").write_text(json.dumps({"EXPECTED_QUANTITY": count % 6}))
    return root


def rate(loader, limit: int | None = None) -> tuple[float, float, int]:
    """(images/s, seconds to first batch, images) over one pass of ``loader``."""
    start, first, n = time.perf_counter(), None, 0
    for batch in loader:
        first = first or time.perf_counter() - start
        n += len(batch["label"])
        if limit and n >= limit:
            break
    seconds = time.perf_counter() - start
    return n / seconds, first or seconds, n


def datamodule(root: str, args, **kw):
    from bincount.data.datamodule import BinCountDataModule

    dm = BinCountDataModule(root, classes={"min_count": 0, "max_count": 5}, split={"train": 1.0, "val": 0.0, "test": 0.0},
                            img_size=args.img_size, batch_size=32, num_workers=args.workers, augment="none",
                            persistent_workers=False, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class DecodeOnly:
    """The train split's bytes held in memory: decode + resize with no I/O at all (the ceiling)."""

    def __init__(self, blobs: list[bytes], transform) -> None:
        self.blobs, self.transform = blobs, transform

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int) -> dict:
        from bincount.samples import decode_image_bytes

        return {"image": self.transform(decode_image_bytes(self.blobs[i])), "label": 0, "index": i, "id": str(i)}


def throughput(args, work: Path) -> list[list]:
    """Every reader for ``--rounds`` interleaved rounds; each round's figures are divided by that round's
    decode-only figure, and the table gives medians (one pass is a few seconds: single passes swing)."""
    from torch.utils.data import DataLoader

    from bincount.samples import collate_skipping_bad
    from bincount.data.transforms import build_transform
    from bincount.shards.pack import pack
    from fault_proxy import FaultProxy
    from s3_server import FAKE_KEY_ID, FAKE_SECRET, s3_client, start_moto, stop_process, upload_abid

    sample = Path(os.environ["BINCOUNT_ABID_SAMPLE"]) if os.environ.get("BINCOUNT_ABID_SAMPLE") else None
    local = make_dataset(work / "abid", args.images, sample)
    dm = datamodule(str(local), args, cache_dir=str(work / "m"))
    train = dm.manifest.split("train")
    blobs = [(local / r.image).read_bytes() for r in train]
    decode = DataLoader(DecodeOnly(blobs, build_transform(args.img_size, train=False, augment="none")), batch_size=32,
                        num_workers=args.workers, collate_fn=collate_skipping_bad)
    names = ["JPEG decode + resize alone (bytes in memory)", "local files (map-style)",
             "S3 per-object GETs (reader=objects)", "S3 shards, cold (first epoch)",
             "S3 shards, from the cache (second epoch)"]
    rounds: list[list[float]] = []

    os.environ.update(AWS_ACCESS_KEY_ID=FAKE_KEY_ID, AWS_SECRET_ACCESS_KEY=FAKE_SECRET, AWS_DEFAULT_REGION="us-east-1")
    proc, endpoint = start_moto()
    try:
        s3_client(endpoint).create_bucket(Bucket="bench")
        upload_abid(endpoint, "bench", local, prefix="abid")
        pack(str(local), "s3://bench/abid/shards", classes=dm.class_range, fractions=(1.0, 0.0, 0.0),
             cache_dir=str(work / "m"), progress=False, s3={"endpoint_url": endpoint}, chunk_bytes=args.chunk_bytes)
        with FaultProxy(endpoint, delay=1.0 if args.latency_ms else 0.0, delay_s=args.latency_ms / 1000) as proxy:
            s3 = {"endpoint_url": proxy.url}
            objects = datamodule("s3://bench/abid", args, reader={"mode": "objects"}, s3=s3, cache_dir=str(work / "m3"))
            for r in range(args.rounds):
                shards = datamodule("s3://bench/abid", args, s3=s3,  # a fresh cache each round: cold is cold
                                    reader={"mode": "shards", "cache_dir": str(work / f"cache{r}")})
                loader = shards.train_dataloader()
                rounds.append([rate(decode)[0], rate(dm.train_dataloader())[0], rate(objects.train_dataloader())[0],
                               rate(loader)[0], rate(loader)[0]])
                shutil.rmtree(work / f"cache{r}", ignore_errors=True)
    finally:
        stop_process(proc)
    return [[name, median([r[i] for r in rounds]), median([r[i] / r[0] for r in rounds]),
             min(r[i] / r[0] for r in rounds), max(r[i] / r[0] for r in rounds)] for i, name in enumerate(names)]


def latency_bound(args, work: Path) -> list[list]:
    """Per-object GETs (bytes only, ``S3Store.read_many``) against requests in flight / latency.

    Decoding is left out so that the CPU of this small machine is not the limit; the proxy adds
    ``--bound-ms`` to every GET, as S3's first-byte latency would. The round trip is that plus one
    request's own time on the local server (measured with one in flight and nothing added), and the
    local server's own maximum (measured with nothing added) caps what any client can reach.
    """
    from bincount.s3.store import open_store
    from fault_proxy import FaultProxy
    from s3_server import FAKE_KEY_ID, FAKE_SECRET, s3_client, start_moto, stop_process, upload_abid

    sample = Path(os.environ["BINCOUNT_ABID_SAMPLE"]) if os.environ.get("BINCOUNT_ABID_SAMPLE") else None
    local = make_dataset(work / "bound", 300, sample)
    keys = sorted(f"bin-images/{p.name}" for p in (local / "bin-images").glob("*.jpg"))
    os.environ.update(AWS_ACCESS_KEY_ID=FAKE_KEY_ID, AWS_SECRET_ACCESS_KEY=FAKE_SECRET, AWS_DEFAULT_REGION="us-east-1")
    proc, endpoint = start_moto()
    rows = []
    try:
        s3_client(endpoint).create_bucket(Bucket="bound")
        upload_abid(endpoint, "bound", local, prefix="abid")
        latency = args.bound_ms / 1000

        def measure(url: str, threads: int) -> float:
            store = open_store("s3://bound/abid", {"endpoint_url": url, "max_pool_connections": threads})
            store.read_many(keys[:threads])  # connections and the client, outside the timing
            n = min(len(keys), max(100, 10 * threads))
            start = time.perf_counter()
            got = store.read_many(keys[:n])
            seconds = time.perf_counter() - start
            if any(isinstance(g, BaseException) for g in got):
                raise RuntimeError(f"read_many failed: {next(g for g in got if isinstance(g, BaseException))}")
            return n / seconds

        # what the local server (moto + this proxy, Python on this machine's cores) serves with no added latency
        with FaultProxy(endpoint) as proxy:
            server = {threads: measure(proxy.url, threads) for threads in args.in_flight}
        with FaultProxy(endpoint, delay=1.0, delay_s=latency) as proxy:
            round_trip = latency + 1 / server[min(server)]  # added latency + one request's own service time
            for threads in args.in_flight:
                got, bound = measure(proxy.url, threads), threads / round_trip
                rows.append([threads, got, round_trip * 1000, bound, server[threads], got / min(bound, server[threads])])
    finally:
        stop_process(proc)
    return rows


def scaling(args, work: Path) -> list[list]:
    from bincount.shards.pack import pack

    rows = []
    datamodule(str(make_dataset(work / "warmup", 60, None, tiny=True)), args, cache_dir=str(work / "warm"))  # imports
    for n in args.scale:
        root = make_dataset(work / f"scale{n}", n, None, tiny=True)
        tracemalloc.start()
        start = time.perf_counter()
        dm = datamodule(str(root), args, cache_dir=str(work / f"sm{n}"))
        manifest_s = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        files_first = rate(dm.train_dataloader(), limit=1)[1]
        start = time.perf_counter()
        pack(str(root), str(work / f"scale{n}-shards"), classes=dm.class_range, fractions=(1.0, 0.0, 0.0),
             cache_dir=str(work / f"sm{n}"), progress=False, chunk_bytes=args.chunk_bytes)
        pack_s = time.perf_counter() - start
        start = time.perf_counter()
        shards = datamodule(str(root), args, reader={"mode": "shards", "shards": str(work / f"scale{n}-shards")})
        setup_s = time.perf_counter() - start
        shard_first = rate(shards.train_dataloader(), limit=1)[1]
        rows.append([f"{n:,}", manifest_s, peak, files_first, pack_s, setup_s, shard_first])
        shutil.rmtree(root)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="images in the throughput runs (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for every reader (default 2)")
    parser.add_argument("--img-size", type=int, default=224, help="decode and resize to this side (default 224)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added per S3 request (default 0)")
    parser.add_argument("--chunk-bytes", default="8MB", help="shard size for pack (default 8MB)")
    parser.add_argument("--scale", type=lambda s: [int(x) for x in s.split(",") if x], default=[2000, 10000],
                        help="dataset sizes for the scaling table (default 2000,10000; up to 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every reader (default 3)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--bound-ms", type=float, default=50.0,
                        help="latency added per GET in the latency-bound table (default 50; 0 skips the table)")
    parser.add_argument("--in-flight", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 4, 16],
                        help="requests in flight for the latency-bound table (default 1,4,16)")
    args = parser.parse_args()
    print(f"machine: {machine()}; DataLoader workers {args.workers}, {args.images} images at {args.img_size}px, "
          f"S3 latency added {args.latency_ms:g} ms")
    with tempfile.TemporaryDirectory(prefix="bincount-bench-") as tmp:
        if not args.skip_throughput:
            print_table(f"images/s, median of {args.rounds} interleaved rounds",
                        ["reader", "images/s", "x decode ceiling (median)", "min", "max"],
                        throughput(args, Path(tmp)), digits=2)
        if args.bound_ms > 0 and args.in_flight:
            print_table(f"per-object GETs, bytes only, {args.bound_ms:g} ms added per request",
                        ["in flight", "images/s", "round trip ms", "bound: in flight / round trip",
                         "server max (0 ms added)", "x min(bound, server max)"], latency_bound(args, Path(tmp)), digits=2)
        if args.scale:
            print_table("cost vs dataset size (tiny JPEGs)", ["images", "manifest s", "manifest peak MB",
                        "files: 1st batch s", "pack s", "shards setup s", "shards: 1st batch s"],
                        scaling(args, Path(tmp)), digits=2)


if __name__ == "__main__":
    main()
