"""``data.decode=gpu``: a batch of encoded JPEGs becomes the normalized image batch on the training device.

Why: decoding and resizing cost about one CPU core per 1,000 images/s (docs/performance.md), and a
g5.xlarge has 4 vCPUs for one A10G, so the loader workers cannot keep a GPU busy. With ``data.decode=gpu``
the workers only read bytes and check headers (:func:`bincount.samples.encoded_image`); here
``torchvision.io.decode_jpeg(list, device=...)`` decodes the whole batch in one call (nvJPEG on CUDA;
libjpeg-turbo on the CPU, the same call, which is how the tests run this code), then the very transform
the CPU path uses (:func:`bincount.data.transforms.build_transform`: the backbone's interpolation, size,
mean and std, and the training augmentation) runs on the device tensors. Geometry and colour run per
image (sizes differ, and each image draws its own crop and flip); the tail that is the same for every
image (``ToDtype`` + ``Normalize``) runs once on the stacked batch. ``model.channels_last`` is applied by
the model's ``forward``, as for CPU-decoded batches.

Bad input: torchvision returns no partial result when one JPEG of a batch fails, so the batch is then
decoded image by image on the device; an image that still fails is decoded on the CPU by
:func:`bincount.samples.decode_image_bytes` (libjpeg-turbo, then PIL: what ``data.decode=cpu`` would
have done). One that fails there too is bad input: a :class:`DataError` naming its id and both errors
under ``data.bad_input=fail``, or moved to the batch's ``bad`` list (logged and counted in metrics.json)
under ``skip``. Images that are not JPEGs (a PNG in a custom dataset; ABID is all JPEG) go straight to
``decode_image_bytes`` on the CPU, one by one, and are then moved: nvJPEG reads JPEG only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

from bincount.layout import DataError, check_bad_input, image_key
from bincount.samples import DECODE_CHOICES, DEFAULT_MAX_PIXELS, BadImage, decode_image_bytes

_JPEG_SOI = (0xFF, 0xD8, 0xFF)
_SAME_FOR_EVERY_IMAGE = (v2.ToDtype, v2.Normalize)  # steps applied once to the stacked batch


def check_decode(decode: str, decode_device: str | None) -> torch.device | None:
    """The device ``data.decode=gpu`` decodes on (None: the trainer's), or a ValueError naming what is wrong."""
    if decode not in DECODE_CHOICES:
        raise ValueError(f"data.decode={decode!r} is not a valid choice; valid: {', '.join(DECODE_CHOICES)}")
    if decode == "cpu":
        if decode_device is not None:
            raise ValueError(f"data.decode_device={decode_device!r} applies to data.decode=gpu only; with "
                             "data.decode=cpu the loader workers decode: remove data.decode_device")
        return None
    try:
        device = torch.device(decode_device) if decode_device is not None else None
    except (RuntimeError, TypeError):
        device = torch.device("meta")  # not a device name: refused just below with the valid ones
    if device is not None and device.type not in ("cpu", "cuda"):
        raise ValueError(f"data.decode_device={decode_device!r} is not a valid choice; valid: null (the trainer's "
                         "device), cuda, cuda:N, cpu (the same decode code on the CPU, for tests and benchmarks)")
    if (device is None or device.type == "cuda") and not torch.cuda.is_available():
        raise ValueError("data.decode=gpu needs a CUDA device (nvJPEG); this machine has none "
                         "(torch.cuda.is_available() is False). Valid choices: data.decode=cpu|gpu; use "
                         "data.decode=cpu here (data.decode_device=cpu runs the GPU decode path on the CPU, for tests)")
    return device


def split_transform(transform: Callable) -> tuple[Callable, Callable | None]:
    """(per-image part, batch part): the tail of ToDtype/Normalize steps runs once on the stacked batch.

    A tail with anything else in it (``augment=strong``'s RandomErasing draws per image) stays per image.
    """
    steps = list(getattr(transform, "transforms", [transform]))
    first = next((i for i, t in enumerate(steps) if isinstance(t, v2.ToDtype)), len(steps))
    tail = steps[first:]
    if not tail or not all(isinstance(t, _SAME_FOR_EVERY_IMAGE) for t in tail):
        return transform, None
    return v2.Compose(steps[:first]), v2.Compose(tail)


class BatchDecoder:
    """Decodes a collated batch's encoded ``image`` list on ``device`` (None: where its labels are) and
    applies the train or eval transform; ``bad_input`` and ``max_pixels`` as for ``data.decode=cpu``.
    ``locate(key)`` names where an image key lives (a path, an ``s3://`` URL) in bad-input messages."""

    def __init__(self, train: Callable, eval: Callable, bad_input: str = "skip",
                 max_pixels: int = DEFAULT_MAX_PIXELS, device: torch.device | str | None = None,
                 locate: Callable[[str], str] = str) -> None:
        self.transforms = {True: split_transform(train), False: split_transform(eval)}
        self.bad_input, self.max_pixels = check_bad_input(bad_input), max_pixels
        self.device = torch.device(device) if device is not None else None
        self.locate = locate

    def __call__(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        encoded = batch["image"]
        if not isinstance(encoded, list):  # an all-bad batch (an empty tensor), or already decoded
            return batch
        target = batch["label"].device
        device = self.device or target
        images = self.decode(encoded, list(batch["id"]), device)
        bad = [i for i, image in enumerate(images) if isinstance(image, str)]
        if bad:
            batch = self._drop(batch, bad, images)
            images = [image for image in images if not isinstance(image, str)]
            if not images:
                return {**batch, "image": torch.empty((0, 3, 1, 1), device=target)}
        per_image, batched = self.transforms[train]
        out = [per_image(image) for image in images]
        stacked = torch.stack(out)
        if batched is not None:
            stacked = batched(stacked)
        return {**batch, "image": stacked.to(target, non_blocking=True)}

    def decode(self, encoded: list[torch.Tensor], ids: list[str], device: torch.device) -> list[torch.Tensor | str]:
        """uint8 3xHxW tensors on ``device``, in order; a bad image's entry is its reason (``bad_input=skip``)."""
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = [e.cpu() for e in encoded]  # nvJPEG reads host memory (torchvision: inputs "must be on CPU")
        jpegs = [i for i, e in enumerate(encoded) if len(e) >= 3 and tuple(e[:3].tolist()) == _JPEG_SOI]
        out: list[torch.Tensor | str | None] = [None] * len(encoded)
        try:
            for i, image in zip(jpegs, decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
                                if jpegs else []):
                out[i] = image
        except RuntimeError:  # one bad JPEG fails the whole call: find it image by image
            for i in jpegs:
                try:
                    out[i] = decode_jpeg(encoded[i], mode=ImageReadMode.RGB, device=device)
                except RuntimeError as e:
                    out[i] = self._on_cpu(encoded[i], ids[i], device, gpu_error=e)
        for i, image in enumerate(out):
            if image is None:  # not a JPEG
                out[i] = self._on_cpu(encoded[i], ids[i], device)
        return out

    def _on_cpu(self, data: torch.Tensor, sample_id: str, device: torch.device,
                gpu_error: Exception | None = None) -> torch.Tensor | str:
        """The CPU decoder's verdict (libjpeg-turbo, then PIL); a DataError or the reason when it fails too."""
        try:
            return decode_image_bytes(data.numpy().tobytes(), self.max_pixels).to(device)
        except BadImage as e:
            first = f"decoding on {device} failed ({gpu_error}), and on the CPU: " if gpu_error is not None else ""
            reason = f"{self.locate(image_key(sample_id))}: {first}{e}"
            if self.bad_input == "fail":
                raise DataError(f"bin {sample_id} ({reason}) (bad_input='fail'; 'skip' skips and reports)") from None
            return reason

    @staticmethod
    def _drop(batch: dict[str, Any], bad: list[int], images: list) -> dict[str, Any]:
        keep = [i for i in range(len(images)) if i not in set(bad)]
        ids = list(batch["id"])
        index = torch.as_tensor(keep, dtype=torch.long, device=batch["label"].device)
        return {**batch, "label": batch["label"][index], "index": batch["index"][index], "id": [ids[i] for i in keep],
                "bad": [*batch.get("bad", []), *((ids[i], images[i]) for i in bad)]}
