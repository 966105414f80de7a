"""Model bundles whose answers are known by hand."""

from __future__ import annotations

from pathlib import Path


def write_constant_bundle(out_dir: Path, count: int = 3, run_dir: Path | None = None) -> Path:
    """timm's tiny ``test_resnet``, counts 1-5, overflow=clip, whose head predicts ``count`` for any image
    (zero weights, a bias of 10 on that count: probabilities 0.000045 and 0.999818); ``run_dir`` names the run
    the metadata says it came from."""
    import torch

    from bincount.bundle import write_bundle
    from bincount.models.module import BinCounter

    torch.manual_seed(0)
    module = BinCounter(backbone="test_resnet", num_classes=5, min_count=1, pretrained=False, head={"name": "linear"})
    linear = module.head.net[-1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.bias[count - 1] = 10.0
    return write_bundle(out_dir, module, img_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        overflow="clip", max_pixels=40_000_000, run_dir=run_dir)
