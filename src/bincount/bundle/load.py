"""``bincount.load_model(path)``: a bundle back as a model, from wherever it was put.

Why without Hydra, the network or pickle: a model server or a notebook should need the bundle and
nothing else. The backbone is built by name with ``pretrained=False`` (the bundle's weights replace
any), the weights come from safetensors after their sha256 matched, and the preprocessing is rebuilt
from the bundle's own description rather than from today's code defaults.

A bundle is data from a bucket, so it does not set its own limits: its pixels, input size and classes
are bounded by the loader's caps (:func:`bincount.bundle.format.check_limits`), and its weights file
must hold exactly the tensors of the model it describes (found on the ``meta`` device, without
allocating) before a byte of it is read (:func:`bincount.bundle.format.check_weights_layout`).

Sources: a bundle directory, a run directory (its ``model/``), a ``model.tar.gz`` (SageMaker's artifact),
or an ``s3://`` URI of either (through :mod:`bincount.s3.store`, so any endpoint works).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bincount.bundle.format import BUNDLE_FILE, MAX_METADATA_BYTES, MAX_WEIGHTS_BYTES, WEIGHTS_FILE, BundleError, \
    check_weights, read_metadata, weights_file_cap
from bincount.bundle.preprocess import transform_from

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
MAX_ARCHIVE_BYTES = MAX_WEIGHTS_BYTES + (64 << 20)


@dataclass
class BinCountModel:
    """A loaded bundle: ``module`` (a :class:`BinCounter` in eval mode), its ``metadata``, and the verbs
    ``preprocess(image)`` and ``predict(images)``, the same for every backbone and head."""

    module: Any
    metadata: dict[str, Any]
    source: str
    transform: Any = field(repr=False)

    @property
    def counts(self) -> list[int]:
        return list(self.metadata["classes"]["counts"])

    @property
    def max_pixels(self) -> int:
        return int(self.metadata["preprocess"]["max_pixels"])

    @property
    def device(self):
        return next(self.module.parameters()).device

    def to(self, device) -> BinCountModel:
        self.module.to(device)
        return self

    def preprocess(self, image: Any, name: str | None = None):
        """Bytes, a path, a binary file object, a PIL image or a uint8 3xHxW tensor -> the float tensor the
        model was tested on. Errors name the input (``name``, else its path or kind), never an object repr."""
        import torch

        from bincount.samples import BadImage, decode_image_bytes

        where = name or describe_input(image)
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        elif hasattr(image, "read"):  # open(..., "rb"), io.BytesIO
            image = image.read()
        if isinstance(image, (bytes, bytearray)):
            try:
                image = decode_image_bytes(bytes(image), self.max_pixels)
            except BadImage as e:
                raise BadImage(f"{where}: {e}") from None
        elif not isinstance(image, torch.Tensor):
            if not hasattr(image, "convert"):
                raise TypeError(f"{where}: expected bytes, a path, a binary file object, a PIL image or a uint8 "
                                f"3xHxW tensor, got {type(image).__name__}")
            import numpy as np

            image = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{where}: expected a uint8 3xHxW RGB tensor, got {image.dtype} of shape "
                             f"{tuple(image.shape)}")
        return self.transform(image)

    def predict(self, images: Any) -> dict[str, Any]:
        """Counts for a preprocessed N x 3 x H x W batch, or a list of raw images (see ``preprocess``):
        ``pred_count``, ``expected_count`` (probability-weighted), ``confidence`` (max prob), ``probs``."""
        import torch

        if not isinstance(images, torch.Tensor):
            images = torch.stack([self.preprocess(image, f"image {i} ({describe_input(image)})")
                                  for i, image in enumerate(images)])
        with torch.inference_mode():
            return self.module.predict_step({"image": images.to(self.device)}, 0)


def describe_input(image: Any) -> str:
    """How an error names an input image: its path or file name, else its kind and size."""
    if isinstance(image, (str, Path)):
        return str(image)
    name = getattr(image, "name", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(image, (bytes, bytearray)):
        return f"{len(image):,} bytes"
    return type(image).__name__ if hasattr(image, "read") else "image"


def _new_module(meta: dict[str, Any], where: str):
    from bincount.models.module import BinCounter

    m, classes = meta["model"], meta["classes"]
    try:
        return BinCounter(backbone=m["backbone"], num_classes=int(m["num_classes"]), min_count=int(classes["min_count"]),
                          pretrained=False, weights_file=None, head=dict(m["head"]), drop_rate=float(m.get("drop_rate", 0)),
                          channels_last=bool(m.get("channels_last", False)))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # ValueError: an unknown backbone or head
        raise BundleError(f"{where}: the 'model'/'classes' entries do not describe a model ({e!r})") from None


def expected_layout(meta: dict[str, Any], where: str) -> dict[str, tuple[int, ...]]:
    """The tensors (name -> shape) of the model ``meta`` describes, built on torch's ``meta`` device: no
    memory is allocated, so a bundle asking for a huge head or backbone is refused before it costs any.
    The real model is built only once the weights file on disk is known to hold exactly these tensors."""
    import torch

    with torch.device("meta"):
        state = _new_module(meta, where).state_dict()
    need = sum(t.numel() * t.element_size() for t in state.values())
    if need > MAX_WEIGHTS_BYTES:
        raise BundleError(f"{where}: the model it describes needs {need:,} bytes of weights, above the limit of "
                          f"{MAX_WEIGHTS_BYTES:,}; refused before building it")
    return {name: tuple(t.shape) for name, t in state.items()}


def build_module(meta: dict[str, Any], weights: bytes, where: str):
    """The :class:`BinCounter` a bundle describes, with its weights (safetensors bytes) loaded strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    module = _new_module(meta, where)
    try:
        module.load_state_dict(load(weights))
    except (RuntimeError, SafetensorError) as e:  # missing/unexpected keys or shape mismatches, named by torch
        raise BundleError(f"{WEIGHTS_FILE} does not fit the model described by {where}: {e}") from None
    return module.eval()


def load_bundle_dir(bundle_dir: Path, source: str) -> BinCountModel:
    meta_path = bundle_dir / BUNDLE_FILE
    meta = read_metadata(meta_path)  # with the loader's caps on pixels, input size and classes
    transform = transform_from(meta["preprocess"])
    weights = check_weights(bundle_dir, meta, expected_layout(meta, str(meta_path)))
    module = build_module(meta, weights, str(meta_path))
    return BinCountModel(module=module, metadata=meta, source=source, transform=transform)


def find_bundle_dir(path: Path) -> Path:
    """A bundle directory, or a run directory's ``model/``; otherwise an error saying what was expected."""
    for candidate in (path, path / "model"):
        if (candidate / BUNDLE_FILE).is_file():
            return candidate
    raise BundleError(f"{path} holds no {BUNDLE_FILE} (nor model/{BUNDLE_FILE}): pass a bundle, a run directory, "
                      "a model.tar.gz or an s3:// URI of one; for a run that predates bundles, run `bincount export RUN`")


def _from_s3(url: str, scratch: Path, s3: Any) -> Path:
    """Download the archive or the two bundle files under ``url`` into ``scratch``; return a local path."""
    from bincount.s3.store import open_store

    base, _, name = url.rstrip("/").rpartition("/")
    if name.endswith(ARCHIVE_SUFFIXES) and base != "s3:/":
        (scratch / name).write_bytes(open_store(base, s3).read(name, max_bytes=MAX_ARCHIVE_BYTES))
        return scratch / name
    store = open_store(url, s3)
    for folder in ("", "model/"):
        try:
            meta = store.read(folder + BUNDLE_FILE, max_bytes=MAX_METADATA_BYTES)
        except FileNotFoundError:
            continue
        (scratch / BUNDLE_FILE).write_bytes(meta)
        # read no more than the model it describes can need (ContentLength is checked before the body)
        cap = weights_file_cap(expected_layout(read_metadata(scratch / BUNDLE_FILE), url))
        (scratch / WEIGHTS_FILE).write_bytes(store.read(folder + WEIGHTS_FILE, max_bytes=min(cap, MAX_WEIGHTS_BYTES)))
        return scratch
    raise BundleError(f"{url} holds no {BUNDLE_FILE} (nor model/{BUNDLE_FILE}) and is not a {'/'.join(ARCHIVE_SUFFIXES)}")


def load_model(path: str | Path, s3: Any = None) -> BinCountModel:
    """Load a bundle from a directory, a run directory, a ``model.tar.gz`` or an ``s3://`` URI.

    ``s3`` is an :class:`bincount.s3.endpoint.S3Config` or a mapping of its fields (endpoint, region...).
    Raises :class:`BundleError` naming the file for a bad hash, an unknown format version or a damaged
    archive, and FileNotFoundError for a path that is not there.
    """
    source = str(path)
    with tempfile.TemporaryDirectory(prefix="bincount-model-") as tmp:
        scratch = Path(tmp)
        local = _from_s3(source, scratch, s3) if source.startswith("s3://") else Path(path).expanduser()
        if not local.exists():
            raise FileNotFoundError(f"model {source} does not exist (a bundle dir, run dir, model.tar.gz or s3:// URI)")
        if local.is_file():
            from bincount.bundle.archive import extract_bundle

            return load_bundle_dir(extract_bundle(local, scratch / "extracted"), source)
        return load_bundle_dir(find_bundle_dir(local), source)
