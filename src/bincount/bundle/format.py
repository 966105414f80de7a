"""What a model bundle is: two files, their names, the metadata schema and its checks.

Why a bundle besides the checkpoint: a Lightning checkpoint is a pickle that needs the training code,
its config and its optimizer state; a bundle is what serving needs and nothing else. ``model.safetensors``
holds the weights (loading it never unpickles anything) and ``bincount-model.json`` says how to rebuild
the network (backbone, head), what each class index means as a count, and exactly how images must be
preprocessed — resolved at training time, so a bundle does not change meaning when the code's defaults do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

BUNDLE_FILE = "bincount-model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "bincount-model"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_METADATA_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 8 << 30  # the largest timm backbones bincount trains are well under 1 GB
REQUIRED = ("format", "format_version", "weights", "model", "classes", "preprocess")


class BundleError(ValueError):
    """A bundle that cannot be used as it is: the message names the file and what is wrong."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """The versions that made the bundle: a reader can tell an old bincount's bundle from a damaged one."""
    from importlib.metadata import PackageNotFoundError, version

    import timm
    import torch

    try:
        own = version("bincount")
    except PackageNotFoundError:
        own = "unknown"
    return {"bincount": own, "torch": torch.__version__, "timm": timm.__version__}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Parse and check ``bincount-model.json``; BundleError naming the file and the problem."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise BundleError(f"{path} is {size:,} bytes, above the {MAX_METADATA_BYTES:,} a bundle's metadata may have")
    try:
        meta = json.loads(path.read_bytes())
    except ValueError as e:
        raise BundleError(f"{path} is not valid JSON ({e})") from None
    check_metadata(meta, str(path))
    return meta


def check_metadata(meta: Any, where: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise BundleError(f"{where} is not a bincount model bundle (format {got!r}, expected {FORMAT_NAME!r})")
    version = meta.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise BundleError(f"{where} has format_version {version!r}; this bincount reads {list(SUPPORTED_VERSIONS)} "
                          "(a newer bincount wrote it: upgrade bincount, or re-export the run with `bincount export`)")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{where} lacks {missing}; a format {FORMAT_VERSION} bundle has {list(REQUIRED)}")
    weights = meta["weights"]
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str) or weights.get("file") != WEIGHTS_FILE:
        raise BundleError(f"{where}: 'weights' must be {{'file': {WEIGHTS_FILE!r}, 'sha256': HEX}}, got {weights!r}")


def check_weights(bundle_dir: Path, meta: dict) -> bytes:
    """The weights file's bytes, after their sha256 matched the metadata's: a swapped or damaged file is
    refused. Read once and loaded from memory, so the file cannot change between the check and the load."""
    path = bundle_dir / WEIGHTS_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: a bundle is {BUNDLE_FILE} and {WEIGHTS_FILE} side by side")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise BundleError(f"{path} is {path.stat().st_size:,} bytes, above the limit of {MAX_WEIGHTS_BYTES:,}")
    data = path.read_bytes()
    actual, expected = hashlib.sha256(data).hexdigest(), meta["weights"]["sha256"]
    if actual != expected:
        raise BundleError(f"{path}: sha256 {actual} does not match {expected} recorded in {bundle_dir / BUNDLE_FILE}; "
                          "the weights were changed or damaged after the bundle was written (re-export the run)")
    return data


def class_table(min_count: int, num_classes: int, overflow: str) -> dict[str, Any]:
    """The count each class index stands for; under ``clip`` the last class means "max_count or more"."""
    max_count = min_count + num_classes - 1
    meaning = {str(i): str(min_count + i) for i in range(num_classes)}
    if overflow == "clip":
        meaning[str(num_classes - 1)] = f">={max_count}"
    return {"min_count": min_count, "max_count": max_count, "overflow": overflow,
            "counts": [min_count + i for i in range(num_classes)], "meaning": meaning}
