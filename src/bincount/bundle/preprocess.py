"""The evaluation preprocessing, read off the real transform at training time and rebuilt from the bundle.

Why read it off the transform instead of copying the config: the eval transform in
:mod:`bincount.data.transforms` decides the size, interpolation, crop and normalisation, and a bundle
must preprocess exactly as the test split was preprocessed when ``predictions.csv`` was written. A
step this module does not know is an error at bundle time, so a change to the eval transform cannot
produce bundles that silently preprocess differently.
"""

from __future__ import annotations

from typing import Any

from bincount.bundle.format import BundleError

KNOWN_STEPS = ("Resize", "CenterCrop", "ToDtype(float32, scale=True)", "Normalize")


def describe_eval_transform(transform: Any, max_pixels: int) -> dict[str, Any]:
    """The bundle's ``preprocess`` entry for a torchvision v2 eval transform on uint8 RGB CHW tensors."""
    import torch
    from torchvision.transforms import v2

    out: dict[str, Any] = {"channels": "RGB", "input": "uint8 CHW, decoded by bincount.samples",
                           "resize": None, "interpolation": None, "antialias": None, "crop": None,
                           "scale": None, "mean": None, "std": None, "max_pixels": int(max_pixels)}
    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, v2.Resize):
            if step.max_size is not None or len(step.size) != 2:
                raise BundleError(f"eval Resize(size={step.size}, max_size={step.max_size}) is not a fixed HxW resize")
            mode = getattr(step.interpolation, "value", step.interpolation)  # an InterpolationMode or its name
            out.update(resize=[int(s) for s in step.size], interpolation=str(mode), antialias=bool(step.antialias))
        elif isinstance(step, v2.CenterCrop):
            out["crop"] = [int(s) for s in step.size]
        elif isinstance(step, v2.ToDtype) and step.dtype == torch.float32 and step.scale:
            out["scale"] = "1/255"
        elif isinstance(step, v2.Normalize):
            out.update(mean=[float(v) for v in step.mean], std=[float(v) for v in step.std])
        else:
            raise BundleError(f"eval transform step {step!r} has no bundle description; known steps: {list(KNOWN_STEPS)}")
    if out["resize"] is None or out["scale"] is None or out["mean"] is None:
        raise BundleError(f"eval transform {transform!r} lacks a Resize, ToDtype(scale=True) or Normalize step")
    h, w = out["crop"] or out["resize"]
    out["input_size"] = [3, h, w]
    return out


def transform_from(preprocess: dict[str, Any]):
    """The v2 transform a bundle's ``preprocess`` entry describes (uint8 CHW in, float32 normalised out)."""
    import torch
    from torchvision.transforms import InterpolationMode, v2

    try:
        interpolation = InterpolationMode(preprocess["interpolation"])
        steps = [v2.Resize(list(preprocess["resize"]), interpolation=interpolation, antialias=preprocess["antialias"])]
        if preprocess.get("crop"):
            steps.append(v2.CenterCrop(list(preprocess["crop"])))
        if preprocess.get("scale") != "1/255":
            raise ValueError(f"scale {preprocess.get('scale')!r} (valid: '1/255')")
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(preprocess["mean"]), list(preprocess["std"]))]
    except (KeyError, TypeError, ValueError) as e:
        valid = [m.value for m in InterpolationMode]
        raise BundleError(f"the bundle's preprocess entry {preprocess!r} is not usable ({e}); "
                          f"interpolation is one of {valid}") from None
    return v2.Compose(steps)
