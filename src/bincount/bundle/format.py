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
import math
import struct
from pathlib import Path
from typing import Any

from bincount.samples import DEFAULT_MAX_PIXELS

BUNDLE_FILE = "bincount-model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "bincount-model"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_METADATA_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 8 << 30  # the largest timm backbones bincount trains are well under 1 GB
REQUIRED = ("format", "format_version", "weights", "model", "classes", "preprocess")
# The loader's own caps on what a bundle may ask of the process that loads it: a bundle is data from a
# bucket, and each of these numbers sizes an allocation (decoded pixels, the model's input, the head and
# the num_classes^2 confusion matrix of CountMetrics), so none is taken from the bundle unbounded.
MAX_PIXELS = DEFAULT_MAX_PIXELS  # data.max_pixels' default; ABID photos are under 1 megapixel
MAX_INPUT_SIDE = 1024  # resize/crop, each side: timm's largest eval sizes are under 1000 px, ABID's 128-512
MAX_CLASSES = 1000  # ABID counts are 0..~200
# safetensors: an 8-byte little-endian header length, a JSON header, then the tensors' bytes.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
HEADER_BYTES_PER_TENSOR = 512  # a name, a dtype, a shape and two offsets in JSON; timm's names are < 120


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
    if type(version) is not int or version not in SUPPORTED_VERSIONS:  # True == 1 and 1.0 == 1: not versions
        raise BundleError(f"{where} has format_version {version!r}; this bincount reads {list(SUPPORTED_VERSIONS)} "
                          "(a newer bincount wrote it: upgrade bincount, or re-export the run with `bincount export`)")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{where} lacks {missing}; a format {FORMAT_VERSION} bundle has {list(REQUIRED)}")
    weights = meta["weights"]
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str) or weights.get("file") != WEIGHTS_FILE:
        raise BundleError(f"{where}: 'weights' must be {{'file': {WEIGHTS_FILE!r}, 'sha256': HEX}}, got {weights!r}")
    check_limits(meta, where)


def _int_in(value: Any, key: str, low: int, cap: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"{where}: {key}={value!r} is not an integer (valid: {low} to {cap:,})")
    if not low <= value <= cap:
        raise BundleError(f"{where}: {key}={value:,} is outside {low} to {cap:,}, the loader's cap; refused")
    return value


def check_limits(meta: dict, where: str) -> None:
    """The loader's caps on the numbers that size an allocation, each refused by its key, value and cap."""
    model, classes, pre = meta["model"], meta["classes"], meta["preprocess"]
    if not all(isinstance(x, dict) for x in (model, classes, pre)):
        raise BundleError(f"{where}: 'model', 'classes' and 'preprocess' must be objects")
    n = _int_in(model.get("num_classes"), "model.num_classes", 2, MAX_CLASSES, where)
    counts = classes.get("counts")
    if not isinstance(counts, list) or len(counts) != n:
        shown = f"{len(counts)} entries" if isinstance(counts, list) else repr(counts)
        raise BundleError(f"{where}: classes.counts has {shown}; model.num_classes={n} needs {n}")
    _int_in(pre.get("max_pixels"), "preprocess.max_pixels", 1, MAX_PIXELS, where)
    for key in ("resize", "crop"):
        size = pre.get(key)
        if size is None and key == "crop":
            continue
        if not isinstance(size, list) or len(size) != 2:
            raise BundleError(f"{where}: preprocess.{key}={size!r} is not [height, width]")
        for side in size:
            _int_in(side, f"preprocess.{key}", 1, MAX_INPUT_SIDE, where)


def _header_cap(expected: dict[str, tuple[int, ...]]) -> int:
    return 4096 + HEADER_BYTES_PER_TENSOR * len(expected)


def weights_file_cap(expected: dict[str, tuple[int, ...]]) -> int:
    """The most bytes a weights file for a model with these tensors (name -> shape) can have: the header
    and every tensor in the widest dtype. Anything larger is refused before it is read."""
    return 8 + _header_cap(expected) + sum(8 * math.prod(shape) for shape in expected.values())


def check_weights_layout(path: Path, expected: dict[str, tuple[int, ...]], where: str) -> None:
    """Refuse a weights file, from its size and header alone, unless it holds exactly the tensors the model
    ``where`` describes (``expected``: name -> shape), in a dtype it can load, and nothing besides.

    Why before reading it: the weights are read whole (to hash them), so a 1 GiB file for a 1 MB model
    would be in memory before any other check. Parsed by hand (the format is 8 bytes and JSON): the
    header is read with a cap, and the file is never mapped or read past it."""
    size, header_cap, most = path.stat().st_size, _header_cap(expected), weights_file_cap(expected)
    if size > most:
        raise BundleError(f"{path} is {size:,} bytes; the model described by {where} has {len(expected)} tensors "
                          f"and its weights file can be at most {most:,} bytes; refused unread")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BundleError(f"{path} is {size:,} bytes, shorter than a safetensors length field (8 bytes); "
                              "not a safetensors file for this model")
        length = struct.unpack("<Q", head)[0]
        if not 2 <= length <= min(header_cap, size - 8):
            raise BundleError(f"{path}: header length {length:,} is outside 2 to {min(header_cap, size - 8):,}; "
                              "not a safetensors file for this model")
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise BundleError(f"{path}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise BundleError(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise BundleError(f"{path} does not fit the model described by {where}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]} ({len(missing)} and {len(unexpected)} in all)")
    total = 0
    for name, shape in expected.items():
        info = header[name] if isinstance(header[name], dict) else {}
        dtype, offsets = info.get("dtype"), info.get("data_offsets")
        if info.get("shape") != list(shape) or dtype not in DTYPE_BYTES:
            raise BundleError(f"{path}: tensor {name!r} is {dtype} {info.get('shape')}; the model described by "
                              f"{where} needs shape {list(shape)} in one of {list(DTYPE_BYTES)}")
        span = math.prod(shape) * DTYPE_BYTES[dtype]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and offsets[1] - offsets[0] == span):
            raise BundleError(f"{path}: tensor {name!r} has data_offsets {offsets!r}, not {span:,} bytes")
        total += span
    if size != 8 + length + total:
        raise BundleError(f"{path} is {size:,} bytes; its header and {total:,} bytes of tensors make "
                          f"{8 + length + total:,}; refused unread")



def check_weights(bundle_dir: Path, meta: dict, layout: dict[str, tuple[int, ...]] | None = None) -> bytes:
    """The weights file's bytes, after their sha256 matched the metadata's: a swapped or damaged file is
    refused. Read once and loaded from memory, so the file cannot change between the check and the load.
    With ``layout`` (the model's tensors: name -> shape), a file that does not hold exactly those is
    refused from its size and header first, unread (:func:`check_weights_layout`)."""
    path = bundle_dir / WEIGHTS_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: a bundle is {BUNDLE_FILE} and {WEIGHTS_FILE} side by side")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise BundleError(f"{path} is {path.stat().st_size:,} bytes, above the limit of {MAX_WEIGHTS_BYTES:,}")
    if layout is not None:
        check_weights_layout(path, layout, str(bundle_dir / BUNDLE_FILE))
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
