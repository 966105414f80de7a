"""Every check that can run before data is read or a model is built: the schema, then each choice and name
against what exists (augmentations, heads, backbones, freeze policies, ``_target_`` arguments)."""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig

from bincount.config.schema import ConfigError, check_schema, choices_hint
from bincount.config.targets import check_target_node


def _check_choice(key: str, value: Any, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not a valid choice.{choices_hint(str(value), valid)}")

def check_config(cfg: DictConfig) -> None:
    """Every check that can run before data is read or a model is built (a second or two)."""
    from bincount.manifest import ClassRange
    from bincount.data.gpu_decode import check_decode
    from bincount.data.transforms import AUGMENT_CHOICES, INTERPOLATIONS
    from bincount.models.backbone import check_backbone_name, weights_remap_mode
    from bincount.models.freeze import FREEZE_BN, FREEZE_POLICIES
    from bincount.models.heads import HEADS

    typed = check_schema(cfg)
    try:
        ClassRange(**typed.data.classes)
    except ValueError as err:
        raise ConfigError(f"data.classes: {err}") from None
    _check_choice("data.augment", typed.data.augment, AUGMENT_CHOICES)
    if typed.data.interpolation is not None:
        _check_choice("data.interpolation", typed.data.interpolation, list(INTERPOLATIONS))
    _check_choice("data.bad_input", typed.data.bad_input, ("skip", "fail"))
    try:
        check_decode(typed.data.decode, typed.data.decode_device)  # data.decode=gpu without CUDA: refused here
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_choice("model.freeze.policy", typed.model.freeze.policy, FREEZE_POLICIES)
    _check_choice("model.freeze.bn", typed.model.freeze.bn, FREEZE_BN)
    try:
        weights_remap_mode(typed.model.weights_remap)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    head = dict(typed.head)
    _check_choice("head.name", head.get("name"), HEADS)
    params = inspect.signature(HEADS[head["name"]].__init__).parameters
    unknown = [k for k in head if k != "name" and k not in params]
    if unknown:
        raise ConfigError(f"head {head['name']!r} has no argument {unknown[0]!r}.{choices_hint(unknown[0], params)}")
    try:
        check_backbone_name(typed.model.backbone)
    except ValueError as err:
        raise ConfigError(f"model.backbone: {err}") from None
    for group in ("trainer", "optimizer", "scheduler", "profiler"):  # trainer first: others interpolate it
        check_target_node(group, cfg.get(group))
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            check_target_node(f"{group}.{name}", node)
