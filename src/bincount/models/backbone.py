"""timm backbones by name: creation and pretrained weights (hub, local cache or local file).

Every backbone is created through timm's one factory with ``num_classes=0`` so that it returns pooled
features; the counting head lives in :mod:`bincount.models.heads`, freezing in :mod:`bincount.models.freeze`.

Offline (``HF_HUB_OFFLINE=1``, or the hub does not answer a short probe) the weights come from the local
caches only, found through their public lookup functions; nothing mutates ``huggingface_hub``'s settings,
and a miss fails within seconds with what to do instead.

A local ``model.weights_file`` must match the model by name, unless ``model.weights_remap`` says to map it by
order: a state dict saved by another implementation of the same architecture (``efficientnet_pytorch``'s
``_conv_stem.weight`` for timm's ``conv_stem.weight``) then loads through timm's own ``remap_state_dict``,
after shape checks that name the first tensor that does not fit.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_REMAP = ("false", "true", "auto")  # model.weights_remap: by name, by order, by name else by order
HUB_HOST = ("huggingface.co", 443)


class PretrainedWeightsUnavailable(RuntimeError):
    """Raised when pretrained weights were asked for but cannot be had; the message says what to do."""


def check_backbone_name(name: str) -> None:
    """Fail early, with close matches, on a backbone that timm does not know."""
    import difflib

    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}: timm has no such model.{hint} "
        "Any name from timm.list_models() works (e.g. resnet50, efficientnet_b4, resnet18, test_resnet)."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A bounded connectivity probe: without it, an offline hub download spends ~45 s in retries.

    DNS lookups can block beyond socket timeouts, so the probe runs in a daemon thread that we stop
    waiting for after ``timeout`` seconds.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(HUB_HOST, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _weights_help(name: str) -> str:
    return (
        f"Either download the weights on a machine with internet (e.g. "
        f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` fills the Hugging Face "
        f"cache, or save a state dict as .safetensors) and set model.weights_file=/path/to/weights, "
        f"or train from scratch with model.pretrained=false."
    )


def weights_remap_mode(value: object) -> str:
    """``model.weights_remap`` as one of :data:`WEIGHTS_REMAP`.

    Why not a bool field: ``auto`` is a third state, and a Hydra override ``model.weights_remap=true``
    arrives in the ``str`` schema field as ``"True"``, so booleans and any letter case are accepted.
    """
    mode = str(value).strip().lower()
    if mode not in WEIGHTS_REMAP:
        raise ValueError(f"model.weights_remap={value!r} is not a valid choice; valid: {', '.join(WEIGHTS_REMAP)}")
    return mode


def create_backbone(name: str, pretrained: bool = False, weights_file: str | None = None,
                    drop_rate: float = 0.0, drop_path_rate: float | None = None,
                    weights_remap: str | bool = "false") -> nn.Module:
    """Create a feature extractor (``num_classes=0``) with weights from the hub, a local file, or none."""
    import timm

    check_backbone_name(name)
    mode = weights_remap_mode(weights_remap)
    kwargs: dict = {"num_classes": 0, "drop_rate": drop_rate}
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise PretrainedWeightsUnavailable(
                f"model.weights_file={weights_file!r} does not exist. Point it at a .safetensors, .pth or "
                f".bin state dict of {name!r}, or set model.weights_file=null."
            )
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_weights_file(model, path, mode)
        return model
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    return _create_from_hub(name, kwargs)


def load_weights_file(model: nn.Module, path: Path, mode: str = "false") -> None:
    """Load a local state dict into ``model``, strictly: by name, or by order (``mode``, see WEIGHTS_REMAP).

    timm's ``load_state_dict`` reads it (.safetensors without pickle; .pth/.bin with ``weights_only=True``;
    a ``state_dict``/``model``/EMA wrapper and DDP/compile prefixes unwrapped). Strict, because timm's
    pretrained loader turns strictness off when the classifier is dropped, and a file with foreign names then
    "loads" nothing at all: the run would train from random weights with a warning in the log.
    """
    from timm.models import load_state_dict

    state = load_state_dict(str(path), weights_only=True)
    target = model.state_dict()
    # The model is headless (num_classes=0): drop the checkpoint's classifier under the model's own names.
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    for prefix in (classifier,) if isinstance(classifier, str) else classifier:
        for key in (f"{prefix}.weight", f"{prefix}.bias"):
            if key not in target:
                state.pop(key, None)
    by_name = state.keys() == target.keys()
    if mode == "false" and not by_name:
        extra, missing = [k for k in state if k not in target], [k for k in target if k not in state]
        raise PretrainedWeightsUnavailable(
            f"model.weights_file={str(path)!r} does not match {_arch(model)!r} by name: {len(extra)} of its "
            f"{len(state)} tensors are not in the model (e.g. {_first(extra)}) and {len(missing)} of the "
            f"model's {len(target)} are missing (e.g. {_first(missing)}). "
            "If it is this architecture saved under other names, set model.weights_remap=true "
            "(maps tensors by order, with shape checks)."
        )
    # true: by order, as timm's load_checkpoint(remap=True); auto: by name when the names match (safer: an
    # order that differs cannot slip through), else by order.
    if mode == "true" or not by_name:
        # safetensors writes its tensors sorted (by dtype, then name): saved as b, a, c (int64), _t2, they come
        # back as c, _t2, a, b, so by order would pair the wrong tensors (silently, where their shapes agree)
        if Path(path).suffix == ".safetensors":
            raise PretrainedWeightsUnavailable(
                f"model.weights_file={str(path)!r} cannot be mapped by order (model.weights_remap={mode}): a "
                ".safetensors file stores its tensors sorted by dtype and name, not in the order they were saved, so "
                "their positions say nothing about the model's. Use the .pth or .bin it was made from, or a file "
                "under the model's own names."
            )
        state = _remap_by_order(model, state, path)
        log.info("model.weights_file=%s: %d tensors mapped by order onto %s", path, len(state), _arch(model))
    model.load_state_dict(state, strict=True)


def _first(keys: list[str]) -> str:
    return ", ".join(map(repr, keys[:3])) or "none"


def _arch(model: nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def _remap_by_order(model: nn.Module, state: dict, path: Path) -> dict:
    """``state`` renamed to the model's keys by order, through timm's ``remap_state_dict``.

    Checked here first, because timm's version pairs the two lists with ``zip`` (a shorter list silently
    truncates the other), reshapes tensors of equal size, and checks with ``assert`` (gone under ``python -O``).
    A foreign checkpoint's classifier has foreign names (``_fc.weight``, ``_fc.bias``), so it cannot be dropped
    by name as above; it is dropped by position instead: a headless timm model's state dict ends where the
    classifier would start, so trailing extra tensors that are a ``[K, num_features]`` weight (and a ``[K]``
    bias) are the classifier and go; anything else that does not line up is an error.
    """
    from timm.models import remap_state_dict

    target = model.state_dict()
    items = list(state.items())
    extra = items[len(target):]
    features = getattr(model, "num_features", None)
    shapes = [tuple(getattr(v, "shape", ())) for _, v in extra]
    dropped = (0 < len(shapes) <= 2 and len(shapes[0]) == 2 and shapes[0][1] == features
               and shapes[1:] in ([], [shapes[0][:1]]))
    if dropped:
        items = items[:len(target)]
    where = f"model.weights_file={str(path)!r} cannot be mapped by order onto {_arch(model)!r}"
    for i, ((ka, va), (kb, vb)) in enumerate(zip(target.items(), items)):
        if va.shape != getattr(vb, "shape", None):
            raise PretrainedWeightsUnavailable(
                f"{where}: tensor #{i} {kb!r} has shape {tuple(getattr(vb, 'shape', ()))} but the model's {ka!r} has "
                f"{tuple(va.shape)}. It is not a state dict of this architecture (or not in its order)."
            )
    if len(items) != len(target):
        first = items[len(target)][0] if len(items) > len(target) else list(target)[len(items)]
        raise PretrainedWeightsUnavailable(
            f"{where}: it has {len(items)} tensors and the model "
            f"{len(target)}; the first unpaired one is {first!r}."
        )
    return remap_state_dict(dict(items), model, allow_reshape=False)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as the Hugging Face hub documents it (1/ON/YES/TRUE): the user says "no network"."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def cached_weights(name: str) -> str | None:
    """The local copy of ``name``'s pretrained weights (Hugging Face or torch hub cache), or None.

    Looked up with the caches' public APIs (``try_to_load_from_cache``, ``torch.hub.get_dir``) in the
    order timm downloads them, so an offline run loads exactly the file an online run would have used,
    through the same local-file path as ``model.weights_file``.
    """
    import torch
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        given = cfg.hf_hub_filename or "pytorch_model.bin"
        safe = "model.safetensors" if given == "pytorch_model.bin" else given.removesuffix(".bin") + ".safetensors"
        for filename in dict.fromkeys((safe, given)):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return found
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        return str(path) if path.is_file() else None
    return None


def _create_from_hub(name: str, kwargs: dict):
    import timm

    if hub_offline() or not _hub_reachable():
        cached = cached_weights(name)
        if cached is None:
            raise PretrainedWeightsUnavailable(
                f"Pretrained weights for {name!r} could not be loaded: the Hugging Face hub is unreachable "
                f"(or HF_HUB_OFFLINE is set) and they are not in the local cache. {_weights_help(name)}"
            )
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # the hub raises many types (HfHubHTTPError, OSError, URLError...)
        raise PretrainedWeightsUnavailable(
            f"Pretrained weights for {name!r} could not be loaded: {exc}. {_weights_help(name)}"
        ) from exc


def save_weights(module: nn.Module, path: str | Path) -> Path:
    """Save a state dict as safetensors: loadable without pickle."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(path))
    return path


__all__ = [
    "PretrainedWeightsUnavailable", "cached_weights", "check_backbone_name", "create_backbone", "hub_offline",
    "load_weights_file", "save_weights", "WEIGHTS_REMAP", "weights_remap_mode",
]
