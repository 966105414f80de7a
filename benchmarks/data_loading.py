"""Data loading vs the decode ceiling: how close bincount's DataLoader gets to JPEG decoding alone.

Three rows, the same images, the same number of workers and batch size, side by side in one run:

- ``decode only``: JPEG bytes already in RAM, ``torchvision.io.decode_jpeg`` + resize, nothing else
  (the ceiling: what the CPU can decode);
- ``decode + transforms``: the same plus the training transforms (crop, flip, normalize);
- ``bincount loader``: the DataModule's train DataLoader as training uses it (file reads, the
  truncation check, decode, transforms, collate with the bad-input bookkeeping).

    python benchmarks/data_loading.py                           # the default run's data (96 px)
    python benchmarks/data_loading.py data=abid_sample data.root=/path/to/sample data.img_size=224
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compose, machine, median, print_table  # noqa: E402


class DecodeOnly:
    """JPEG bytes in RAM -> decoded, resized (and optionally transformed) tensors."""

    def __init__(self, blobs: list[bytes], size: int, transform=None) -> None:
        self.blobs, self.size, self.transform = blobs, size, transform

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int):
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms.v2 import functional as F

        image = decode_jpeg(torch.frombuffer(bytearray(self.blobs[i]), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if self.transform is not None:
            return self.transform(image)
        return F.resize(image, [self.size, self.size], antialias=True)


def images_per_second(loader, limit: int) -> float:
    """Images/s over one pass (at most ``limit`` images), after the first batch (worker start-up)."""
    seen, start = 0, None
    for batch in loader:
        n = batch["label"].shape[0] if isinstance(batch, dict) else batch.shape[0]
        if start is None:
            start = time.perf_counter()
            continue
        seen += n
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Other arguments are Hydra overrides.")
    parser.add_argument("--images", type=int, default=1000, help="images per measurement (default 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    args, overrides = parser.parse_known_args()
    cfg = compose(overrides)

    from torch.utils.data import DataLoader

    from bincount.data.transforms import build_transform
    from bincount.train import build_datamodule, build_model

    dm = build_datamodule(cfg, build_model(cfg).data_config)
    dm.prepare_data()
    dm.setup("fit")
    train = dm.datasets["train"]
    blobs = [(dm.root / row.image).read_bytes() for row in dm.manifest.split("train")]
    size, workers, batch = dm.img_size, dm.num_workers, dm.batch_size
    transform = build_transform(size, train=True, augment=dm.augment, mean=dm.mean, std=dm.std)

    def loaders():
        opts = {"batch_size": batch, "num_workers": workers, "persistent_workers": False}
        yield "decode only (ceiling)", DataLoader(DecodeOnly(blobs, size), shuffle=True, **opts)
        yield "decode + transforms", DataLoader(DecodeOnly(blobs, size, transform), shuffle=True, **opts)
        yield "bincount loader", dm.train_dataloader()

    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # rounds interleave the rows, so noise hits all of them
        for name, loader in loaders():
            results.setdefault(name, []).append(images_per_second(loader, min(args.images, len(train))))
    ceiling = median(results["decode only (ceiling)"])
    rows = [[name, median(v), min(v), max(v), f"{median(v) / ceiling:.2f}"] for name, v in results.items()]
    mean_kb = sum(map(len, blobs)) / len(blobs) / 1024
    title = (f"train images/s, {len(train)} images of {mean_kb:.0f} KB -> {size}px, batch {batch}, "
             f"{workers} workers\n{machine()}")
    print_table(title, ["", "median", "min", "max", "of ceiling"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
