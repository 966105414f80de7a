"""Training images/s and peak memory by model, precision setting and input path: one table.

    python benchmarks/gpu.py                 # on a GPU: resnet50 @224 (batch 128), efficientnet_b4 @380 (batch 32)
    python benchmarks/gpu.py --quick         # CPU-sized (test_resnet @32, batch 8): what CI runs
    python benchmarks/gpu.py --out table.md  # also write the table as Markdown (the device check keeps it)

Settings, cumulative as in issue 18: fp32; bf16 (autocast); bf16 + channels_last; + torch.compile
(inductor; its warm-up, the first steps, is reported apart from the steady rate). Inputs:
* ``synthetic``: a batch already on the device, the model's ceiling;
* ``jpeg-cpu``: ABID JPEGs (the sample when present, else noise JPEGs at 500x400) decoded and transformed
  by DataLoader workers with the training transform, pinned, copied non-blocking;
* ``jpeg-gpu`` (nvJPEG, ``data.decode=gpu``) and ``shards-s3`` are not built or wired here yet: their rows
  say so rather than report a number.
Each row is the median step rate over ``--steps`` steps after ``--warmup`` steps (forward, the head's
loss, backward, a fused AdamW step where torch has it). Compare rows as ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import bin_jpegs, machine, print_table

FULL = [("resnet50", 224, 128), ("efficientnet_b4", 380, 32)]  # the capstone reports' models and sizes
QUICK = [("test_resnet", 32, 8)]
SETTINGS = ["fp32", "bf16", "bf16+channels_last", "+compile"]


class Jpegs:
    """JPEG files decoded with PIL and the training transform, as BinImageDataset does (labels are random)."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        from bincount.samples import decode_image_bytes

        return self.transform(decode_image_bytes(self.paths[i].read_bytes(), 40_000_000)), torch.tensor(i % 5)


def measure(backbone: str, size: int, batch: int, setting: str, source: str, args, device) -> list:
    import torch

    from bincount.data.transforms import build_transform
    from bincount.models.module import BinCounter

    bf16, channels_last, compiled = setting != "fp32", setting not in ("fp32", "bf16"), setting == "+compile"
    torch.manual_seed(0)
    module = BinCounter(backbone=backbone, num_classes=5, pretrained=False, channels_last=channels_last).to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    module.train()
    step_model = torch.compile(module) if compiled else module
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=fused)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    if source == "synthetic":
        fixed = (torch.randn(batch, 3, size, size, device=device), torch.randint(0, 5, (batch,), device=device))
        batches = iter(lambda: fixed, None)
    else:
        data = Jpegs(bin_jpegs(Path(args.tmp) / "jpegs", batch * (args.steps + args.warmup)),
                     build_transform(size, train=True, interpolation="bicubic"))
        loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=args.workers, drop_last=True,
                                             pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
                                             prefetch_factor=4 if args.workers else None)
        batches = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader)

    def step(images, labels):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.head.loss(step_model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i, (images, labels) in enumerate(batches):
        if i >= args.warmup + args.steps:
            break
        t = time.perf_counter()
        step(images, labels)
        sync()
        times.append(time.perf_counter() - t)
    warmup_s = sum(times[:args.warmup])
    steady = statistics.median(times[args.warmup:]) if len(times) > args.warmup else float("nan")
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "n/a (CPU)"
    return [backbone, size, batch, setting, source, batch / steady, peak, f"{warmup_s:.1f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized models and steps (CI)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--compile-on-cpu", action="store_true", help="also the +compile rows on a CPU (slow)")
    parser.add_argument("--out", type=Path, help="also write the table here as Markdown")
    args = parser.parse_args()
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = QUICK if args.quick or device.type == "cpu" else FULL
    if args.quick:
        args.steps, args.warmup, args.workers = 3, 1, 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="bincount-bench-gpu-") as tmp:
        args.tmp = tmp
        for backbone, size, batch in models:
            for setting in SETTINGS:
                if setting == "+compile" and device.type == "cpu" and not args.compile_on_cpu:
                    rows.append([backbone, size, batch, setting, "synthetic", "skipped on CPU (inductor build: minutes)",
                                 "-", "-"])
                    continue
                for source in ("synthetic", "jpeg-cpu"):
                    rows.append(measure(backbone, size, batch, setting, source, args, device))
            for source in ("jpeg-gpu", "shards-s3"):
                rows.append([backbone, size, batch, "bf16+channels_last", source, "not built yet (issue 18)", "-", "-"])
    header = ["model", "px", "batch", "setting", "input", "images/s", "peak memory", "warm-up s"]
    title = f"Training throughput: {machine()}"
    print_table(title, header, rows)
    for backbone, *_ in models:
        synth = {r[3]: r[5] for r in rows if r[0] == backbone and r[4] == "synthetic" and isinstance(r[5], float)}
        jpeg = {r[3]: r[5] for r in rows if r[0] == backbone and r[4] == "jpeg-cpu" and isinstance(r[5], float)}
        for setting in synth:
            if setting in jpeg:
                print(f"{backbone} {setting}: end to end (jpeg-cpu) = {jpeg[setting] / synth[setting]:.0%} of the "
                      "synthetic ceiling (goal >= 90%)")
        if "fp32" in synth and "bf16+channels_last" in synth:
            print(f"{backbone}: bf16+channels_last / fp32 = {synth['bf16+channels_last'] / synth['fp32']:.2f}x")
    if args.out:
        lines = [f"{title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in r) + " |" for r in rows]
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
