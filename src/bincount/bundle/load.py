"""``bincount.load_model(path)``: a bundle back as a model, from wherever it was put.

Why without Hydra, the network or pickle: a model server or a notebook should need the bundle and
nothing else. The backbone is built by name with ``pretrained=False`` (the bundle's weights replace
any), the weights come from safetensors after their sha256 matched, and the preprocessing is rebuilt
from the bundle's own description rather than from today's code defaults.

Sources: a bundle directory, a run directory (its ``model/``), a ``model.tar.gz`` (SageMaker's artifact),
or an ``s3://`` URI of either (through :mod:`bincount.s3.store`, so any endpoint works).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bincount.bundle.format import BUNDLE_FILE, MAX_METADATA_BYTES, MAX_WEIGHTS_BYTES, WEIGHTS_FILE, BundleError, \
    check_weights, read_metadata
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

    def preprocess(self, image: Any):
        """Bytes, a path, a PIL image or a uint8 3xHxW tensor -> the float tensor the model was tested on."""
        import torch

        from bincount.samples import decode_image_bytes

        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        if isinstance(image, (bytes, bytearray)):
            image = decode_image_bytes(bytes(image), self.max_pixels)
        elif not isinstance(image, torch.Tensor):  # a PIL image
            import numpy as np

            image = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a uint8 3xHxW RGB tensor, got {image.dtype} of shape {tuple(image.shape)}")
        return self.transform(image)

    def predict(self, images: Any) -> dict[str, Any]:
        """Counts for a preprocessed N x 3 x H x W batch, or a list of raw images (see ``preprocess``):
        ``pred_count``, ``expected_count`` (probability-weighted), ``confidence`` (max prob), ``probs``."""
        import torch

        if not isinstance(images, torch.Tensor):
            images = torch.stack([self.preprocess(i) for i in images])
        with torch.inference_mode():
            return self.module.predict_step({"image": images.to(self.device)}, 0)


def build_module(meta: dict[str, Any], weights: bytes, where: str):
    """The :class:`BinCounter` a bundle describes, with its weights (safetensors bytes) loaded strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from bincount.models.module import BinCounter

    m, classes = meta["model"], meta["classes"]
    try:
        module = BinCounter(backbone=m["backbone"], num_classes=int(m["num_classes"]), min_count=int(classes["min_count"]),
                            pretrained=False, weights_file=None, head=dict(m["head"]), drop_rate=float(m.get("drop_rate", 0)),
                            channels_last=bool(m.get("channels_last", False)))
    except (KeyError, TypeError) as e:
        raise BundleError(f"{where}: the 'model'/'classes' entries do not describe a model ({e!r})") from None
    try:
        module.load_state_dict(load(weights))
    except (RuntimeError, SafetensorError) as e:  # missing/unexpected keys or shape mismatches, named by torch
        raise BundleError(f"{WEIGHTS_FILE} does not fit the model described by {where}: {e}") from None
    return module.eval()


def load_bundle_dir(bundle_dir: Path, source: str) -> BinCountModel:
    meta_path = bundle_dir / BUNDLE_FILE
    meta = read_metadata(meta_path)
    weights = check_weights(bundle_dir, meta)
    module = build_module(meta, weights, str(meta_path))
    return BinCountModel(module=module, metadata=meta, source=source, transform=transform_from(meta["preprocess"]))


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
        (scratch / WEIGHTS_FILE).write_bytes(store.read(folder + WEIGHTS_FILE, max_bytes=MAX_WEIGHTS_BYTES))
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
