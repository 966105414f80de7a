"""Training images/s and peak memory by model, precision setting and input path: one table.

    python benchmarks/gpu.py                 # on a GPU: resnet50 @224 (batch 128), efficientnet_b4 @380 (batch 32)
    python benchmarks/gpu.py --quick         # CPU-sized (test_resnet @32, batch 8): what CI runs
    python benchmarks/gpu.py --out table.md  # also write the table as Markdown (the device check keeps it)

Settings, cumulative as in issue 18: fp32; bf16 (autocast); bf16 + channels_last; + torch.compile
(inductor; its warm-up, the first steps, is reported apart from the steady rate). Inputs, all but the first
read by ``BinCountDataModule``'s train loader (workers, pinned memory, prefetch 4) from the same ``--images``
ABID bins (the real sample cycled when present, else noise JPEGs), with the training transform:
* ``synthetic``: a batch already on the device, the model's ceiling;
* ``jpeg-cpu``: local files decoded and transformed by the loader workers (``data.decode=cpu``);
* ``jpeg-gpu``: local files; the workers only read bytes, the batch is decoded with nvJPEG, transformed
  and normalized on the GPU (``data.decode=gpu``; on a CPU-only machine the same code runs on the CPU);
* ``shards-s3``: ``bincount pack`` shards on a local S3 server (``moto_server`` on loopback, no added
  latency), streamed through litdata's cache (the first epoch cold, then cached), decoded by the workers;
  ``shards-s3 + gpu decode`` the same with ``data.decode=gpu``.
Each row times ``--steps`` steps after ``--warmup`` steps, each from asking for the batch (loader wait,
host-to-device copy, the GPU decode) to the end of the optimizer step (forward, the head's loss, backward,
a fused AdamW step where torch has it), and gives images / seconds over them. Compare rows as ratios within
one run. Last, how far the device decode's tensors are from the CPU decode's for the same JPEGs. The
+compile rows come last in each model's block (inductor's build is the slowest part), and ``--out`` is
rewritten after every row, so a run cut short by its time limit keeps what it measured. Without moto or
litdata (``pip install -e ".[s3]" "moto[server]"``) the shards rows say so and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, print_table, sample_dir

REPO = Path(__file__).resolve().parents[1]
FULL = [("resnet50", 224, 128), ("efficientnet_b4", 380, 32)]  # the capstone reports' models and sizes
QUICK = [("test_resnet", 32, 8)]
SETTINGS = ["fp32", "bf16", "bf16+channels_last", "+compile"]
CLASSES = {"min_count": 0, "max_count": 5}  # s3_streaming.make_dataset writes counts 0-5
DATA_ROWS = {"jpeg-gpu": ("files", "gpu"), "shards-s3": ("shards", "cpu"), "shards-s3 + gpu decode": ("shards", "gpu")}


def datamodule(root: str, size: int, batch: int, decode: str, module, args, device, **kw):
    """The train split of ``root`` as training reads it, with the model's own preprocessing."""
    from bincount.data.datamodule import BinCountDataModule

    pre = module.data_config
    dm = BinCountDataModule(root, classes=CLASSES, split={"train": 1.0, "val": 0.0, "test": 0.0}, img_size=size,
                            batch_size=batch, num_workers=args.workers, augment="light", interpolation=pre["interpolation"],
                            mean=pre["mean"], std=pre["std"], pin_memory=device.type == "cuda",
                            persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None,
                            cache_dir=str(Path(args.tmp) / "manifests"), decode=decode,
                            decode_device="cpu" if device.type == "cpu" and decode == "gpu" else None, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def loader_batches(dm, device):
    """Endless (images, labels) on ``device``: the DataModule's own transfer and decode hooks, epoch after epoch."""
    loader = dm.train_dataloader()
    while True:
        for batch in loader:
            batch = dm.transfer_batch_to_device(batch, device, 0)
            if dm.decoder is not None:
                batch = dm.decoder(batch, train=True)
            yield batch["image"], batch["label"]


def batches_for(source: str, size: int, batch: int, module, args, device):
    import torch

    if source == "synthetic":
        fixed = (torch.randn(batch, 3, size, size, device=device), torch.randint(0, 6, (batch,), device=device))
        return iter(lambda: fixed, None)
    mode, decode = DATA_ROWS.get(source, ("files", "cpu"))
    if mode == "files":
        return loader_batches(datamodule(str(args.abid), size, batch, decode, module, args, device), device)
    s3 = {"endpoint_url": args.s3_endpoint}
    reader = {"mode": "shards", "shards": args.shards, "cache_dir": str(Path(args.tmp) / f"cache-{source}-{size}")}
    return loader_batches(datamodule("s3://bench/abid", size, batch, decode, module, args, device, reader=reader, s3=s3),
                          device)


def measure(backbone: str, size: int, batch: int, setting: str, source: str, args, device) -> list:
    import torch

    from bincount.models.module import BinCounter

    bf16, channels_last, compiled = setting != "fp32", setting not in ("fp32", "bf16"), setting == "+compile"
    torch.manual_seed(0)
    module = BinCounter(backbone=backbone, num_classes=6, pretrained=False, channels_last=channels_last).to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    module.train()
    step_model = torch.compile(module) if compiled else module
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batches = batches_for(source, size, batch, module, args, device)

    def step():
        images, labels = next(batches)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.head.loss(step_model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for _ in range(args.warmup + args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    if hasattr(batches, "close"):
        batches.close()  # the loader's workers stop now, not at exit
    warmup_s, steady_s = sum(times[:args.warmup]), sum(times[args.warmup:])
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "n/a (CPU)"
    return [backbone, size, batch, setting, source, batch * args.steps / steady_s, peak, f"{warmup_s:.1f}"]


@contextlib.contextmanager
def local_s3(root: Path, work: Path):
    """``root`` packed into ``s3://bench/abid/shards`` on a fresh ``moto_server`` (the tests' helpers); yields
    the endpoint. The server is stopped by its own PID at the end."""
    sys.path.insert(0, str(REPO / "tests"))
    from s3_server import FAKE_KEY_ID, FAKE_SECRET, s3_client, start_moto, stop_process

    from bincount.manifest import ClassRange
    from bincount.shards.pack import pack

    os.environ.update(AWS_ACCESS_KEY_ID=FAKE_KEY_ID, AWS_SECRET_ACCESS_KEY=FAKE_SECRET, AWS_DEFAULT_REGION="us-east-1")
    proc, endpoint = start_moto()
    try:
        s3_client(endpoint).create_bucket(Bucket="bench")
        pack(str(root), "s3://bench/abid/shards", classes=ClassRange(**CLASSES), fractions=(1.0, 0.0, 0.0),
             cache_dir=str(work / "pack-manifest"), progress=False, s3={"endpoint_url": endpoint}, chunk_bytes="8MB")
        yield endpoint
    finally:
        stop_process(proc)


def decode_gap(args, device, size: int) -> str:
    """The device decode against the CPU decode, same JPEGs: decoded pixels (0-255) and the eval transform's output."""
    import torch

    from bincount.data.gpu_decode import BatchDecoder
    from bincount.data.transforms import build_transform
    from bincount.samples import encoded_image

    blobs = [encoded_image(p.read_bytes()) for p in sorted((args.abid / "bin-images").glob("*.jpg"))[:32]]
    ids = [str(i) for i in range(len(blobs))]
    eval_ = build_transform(size, train=False, interpolation="bicubic")
    gaps = []
    for step in ("decode", "transform"):
        got = {}
        for where in (device, torch.device("cpu")):
            decoder = BatchDecoder(eval_, eval_, "fail", device=where)
            if step == "decode":
                got[where.type] = [image.float().cpu() for image in decoder.decode(blobs, ids, where)]
            else:
                batch = {"image": blobs, "label": torch.zeros(len(blobs), dtype=torch.long), "index": torch.arange(len(blobs)),
                         "id": ids}
                got[where.type] = list(decoder(batch, train=False)["image"].cpu())
        diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(got[device.type], got["cpu"])])
        gaps.append(f"{step}: mean {diffs.mean():.4f}, max {diffs.max():.4f}")
    unit = "decode in 0-255 levels, transform in normalized units"
    same = " (the same code and device: 0 expected)" if device.type == "cpu" else ""
    return f"data.decode=gpu on {device.type} vs the CPU decode, {len(blobs)} JPEGs at {size} px ({unit}){same}: " + "; ".join(gaps)


def write_markdown(path: Path | None, title: str, header: list[str], rows: list[list], notes: list[str]) -> None:
    """The table so far (rewritten after every row: a run cut short by its time limit still leaves its rows)."""
    if path is None:
        return
    lines = [f"{title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in r) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes))


def ratios(rows: list[list], models: list, workers: int) -> list[str]:
    notes = []
    for backbone, *_ in models:
        rate = {(r[3], r[4]): r[5] for r in rows if r[0] == backbone and isinstance(r[5], float)}
        for (setting, source), value in rate.items():
            if source != "synthetic" and (setting, "synthetic") in rate:
                notes.append(f"{backbone} {setting}: end to end ({source}) = {value / rate[setting, 'synthetic']:.0%} of "
                             "the synthetic ceiling (goal >= 90%)")
        cl = "bf16+channels_last"
        if ("fp32", "synthetic") in rate and (cl, "synthetic") in rate:
            notes.append(f"{backbone}: {cl} / fp32 = {rate[cl, 'synthetic'] / rate['fp32', 'synthetic']:.2f}x")
        if (cl, "jpeg-cpu") in rate and (cl, "jpeg-gpu") in rate:
            notes.append(f"{backbone}: jpeg-gpu / jpeg-cpu = {rate[cl, 'jpeg-gpu'] / rate[cl, 'jpeg-cpu']:.2f}x with "
                         f"{workers} loader workers")
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized models and steps (CI)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--images", type=int, default=2048, help="ABID bins the loaders read, cycled (default 2048)")
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--compile-on-cpu", action="store_true", help="also the +compile rows on a CPU (slow)")
    parser.add_argument("--out", type=Path, help="also write the table as Markdown")
    args = parser.parse_args()
    import torch

    from s3_streaming import make_dataset  # the ABID bins its streaming table reads

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = QUICK if args.quick or device.type == "cpu" else FULL
    if args.quick:
        args.steps, args.warmup, args.workers, args.images = 3, 1, 1, 64
    header = ["model", "px", "batch", "setting", "input", "images/s", "peak memory", "warm-up s"]
    title = f"Training throughput: {machine()}"
    rows: list[list] = []

    def add(row: list) -> None:
        rows.append(row)
        write_markdown(args.out, title, header, rows, [])

    with tempfile.TemporaryDirectory(prefix="bincount-bench-gpu-") as tmp, contextlib.ExitStack() as stack:
        args.tmp = tmp
        args.abid = make_dataset(Path(tmp) / "abid", args.images, sample_dir())
        try:
            args.s3_endpoint, args.shards = stack.enter_context(local_s3(args.abid, Path(tmp))), "s3://bench/abid/shards"
        except Exception as e:  # moto or litdata not installed (bincount[s3], moto[server]): the other rows still run
            args.s3_endpoint = f"no local S3 ({type(e).__name__}: {e})"
        for backbone, size, batch in models:
            for setting in SETTINGS[:-1]:
                for source in ("synthetic", "jpeg-cpu"):
                    add(measure(backbone, size, batch, setting, source, args, device))
            for source, (mode, _) in DATA_ROWS.items():
                if mode == "shards" and args.s3_endpoint.startswith("no local S3"):
                    add([backbone, size, batch, "bf16+channels_last", source, args.s3_endpoint, "-", "-"])
                else:
                    add(measure(backbone, size, batch, "bf16+channels_last", source, args, device))
            if device.type == "cpu" and not args.compile_on_cpu:  # last: inductor's build is the slowest part
                add([backbone, size, batch, "+compile", "synthetic", "skipped on CPU (inductor build: minutes)", "-", "-"])
            else:
                for source in ("synthetic", "jpeg-cpu"):
                    add(measure(backbone, size, batch, "+compile", source, args, device))
        notes = [decode_gap(args, device, models[0][1]), *ratios(rows, models, args.workers)]
    print_table(title, header, rows)
    print("\n".join(notes))
    write_markdown(args.out, title, header, rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
