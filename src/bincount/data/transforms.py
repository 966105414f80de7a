"""Train and eval transforms (torchvision.transforms.v2) on uint8 CHW tensors.

Why these choices: the label is a count, so an augmentation that removes an object changes the
label without telling anyone. Crops are therefore mild (RandomResizedCrop keeps at least 70% of the
area, aspect ratio near 1), erasing patches are small, and rotations are small. Bins are roughly
square, so eval resizes straight to ``img_size x img_size`` instead of center-cropping, which could
cut objects at the edges. The one exception is ``capstone_refined``: a faithful copy of the first
capstone report's refined phase, kept to reproduce it, whose default RandomResizedCrop scale
(0.08, 1.0) *can* crop objects away.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
AUGMENT_CHOICES = ("none", "flip", "light", "strong", "capstone_refined")
# What timm's data configs ask for (``pretrained_cfg["interpolation"]``) that torchvision resizes tensors with.
INTERPOLATIONS = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR,
                  "bicubic": v2.InterpolationMode.BICUBIC}
# The data settings a backbone decides unless the config names them (timm's data config keys).
BACKBONE_PREPROCESS_KEYS = ("interpolation", "mean", "std")
LIGHT_CROP_SCALE = (0.7, 1.0)
LIGHT_CROP_RATIO = (3 / 4, 4 / 3)


def with_backbone_defaults(data: dict, data_config: dict) -> dict:
    """``data`` with each of interpolation/mean/std the config leaves null taken from the backbone's data
    config: the one rule training and ``bincount export`` share, so a bundle preprocesses as its run did."""
    return {**data, **{k: data_config[k] for k in BACKBONE_PREPROCESS_KEYS if data.get(k) is None}}


def build_transform(
    img_size: int,
    train: bool,
    augment: str = "light",
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """The transform for one stage; returns float32 3×img_size×img_size normalized tensors.

    ``mean``, ``std`` and ``interpolation`` are the backbone's (timm's resolved data config: bicubic for
    the pretrained ResNets and EfficientNets), unless the config sets them (``data.interpolation`` ...).

    ``augment`` (train only; eval is always resize + normalize):

    - ``none``: same as eval.
    - ``flip``: horizontal flip only (report 2's training transform).
    - ``light``: RandomResizedCrop(scale 0.7-1.0, ratio 3/4-4/3) + horizontal flip.
    - ``strong``: light + ColorJitter(0.2, 0.2, 0.2, 0.02) + rotation ±10° + small RandomErasing
      (p 0.25, 1-4% of the area, so it hides a part of an object rather than a whole one).
    - ``capstone_refined``: report 1's refined phase, verbatim: RandomResizedCrop with torchvision's
      default scale (0.08, 1.0) — *not* count-safe —, horizontal flip, RandomRotation(15),
      ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2).
    """
    if augment not in AUGMENT_CHOICES:
        raise ValueError(f"augment={augment!r} is not a valid choice; valid: {', '.join(AUGMENT_CHOICES)}")
    # 2, not 1: torch's antialiased resize to 1x1 fails with an internal assert (torch 2.x, CPU), not an error.
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 2:
        raise ValueError(f"img_size must be an integer >= 2, got {img_size!r}")
    mean, std = _check_stats(mean, "mean"), _check_stats(std, "std")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not a valid choice; valid: {', '.join(INTERPOLATIONS)}")
    mode = INTERPOLATIONS[interpolation]
    size = (img_size, img_size)
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if not train or augment == "none":
        return v2.Compose([v2.Resize(size, interpolation=mode, antialias=True), *tail])
    if augment == "flip":
        return v2.Compose([v2.Resize(size, interpolation=mode, antialias=True), v2.RandomHorizontalFlip(), *tail])
    if augment == "capstone_refined":
        return v2.Compose([
            v2.RandomResizedCrop(size, interpolation=mode, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(15),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            *tail,
        ])
    light = [
        v2.RandomResizedCrop(size, scale=LIGHT_CROP_SCALE, ratio=LIGHT_CROP_RATIO, interpolation=mode,
                            antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "light":
        return v2.Compose([*light, *tail])
    return v2.Compose([
        *light,
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        v2.RandomRotation(10),
        *tail,
        v2.RandomErasing(p=0.25, scale=(0.01, 0.04), value=0),
    ])


def _check_stats(values: Sequence[float], name: str) -> list[float]:
    values = list(values)
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {values!r}")
    if name == "std" and any(v <= 0 for v in values):
        raise ValueError(f"std must be positive, got {values!r}")
    return [float(v) for v in values]
