"""The run config's schema and the checks that make a mistake fail before training.

Hydra already refuses overrides of keys that do not exist; it does not check YAML files (experiments)
for misspelled keys, values for their types, or names (backbone, head, optimizer arguments) against
what exists. ``check_config`` does all of that in a second or so, with messages that name the bad value
and the valid choices, the way LightningCLI's typed configs do.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and the valid choices."""


# What Hydra writes into a run directory before the task starts, and ``train`` before any training.
_SET_UP_ONLY = {".hydra", "train.log", "resolved_config.yaml"}


def report_config_error(err: ConfigError, cfg: DictConfig) -> None:
    """For ``python train.py`` (one run): print ``err`` on one line, remove the run directory Hydra made for
    it when it holds nothing but set-up files, and exit 2, a usage mistake. Returns (the caller re-raises) in
    a sweep, whose job failure the sweeper records, or with ``HYDRA_FULL_ERROR=1``, which asks for the trace."""
    import os
    import shutil
    import sys
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode != RunMode.RUN:
        return
    out = Path(cfg.paths.output_dir)
    if out.is_dir() and {p.name for p in out.iterdir()} <= _SET_UP_ONLY:
        import logging

        logging.shutdown()  # close train.log before its directory goes
        shutil.rmtree(out, ignore_errors=True)
    print(f"train.py: config error: {err}", file=sys.stderr)
    sys.exit(2)


@dataclass
class ClassesConfig:
    min_count: int = 1
    max_count: int = 5
    overflow: str = "clip"


@dataclass
class SplitConfig:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 0


@dataclass
class SyntheticConfig:
    num_images: int = 2000
    seed: int = 0
    size: int = 128
    workers: int = 2
    counts: Optional[Dict[int, float]] = None


@dataclass
class S3DataConfig:
    """``data.s3``: how to reach S3 for ``s3://`` roots (mirrors bincount.s3.endpoint.S3Config; no credentials)."""

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    unsigned: bool = False
    max_pool_connections: int = 32
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 8


@dataclass
class DataConfig:
    root: str = "???"
    synthetic: Optional[SyntheticConfig] = None
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    file_list: Optional[str] = None
    img_size: int = 128
    batch_size: int = 32
    num_workers: int = 2
    augment: str = "light"
    # null: the backbone's own preprocessing (timm's resolved data config); a value overrides it by name
    interpolation: Optional[str] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    bad_input: str = "skip"
    max_pixels: int = 40_000_000  # larger images are bad input (bincount.samples.DEFAULT_MAX_PIXELS)
    cache_dir: Optional[str] = None
    pin_memory: bool = False
    persistent_workers: bool = True
    prefetch_factor: Optional[int] = None  # batches each loader worker keeps ready (torch's default: 2)
    s3: Optional[S3DataConfig] = None  # for data.root=s3://...; see conf/data/abid_s3.yaml
    reader: Optional[Dict[str, Any]] = None  # conf/reader/, checked by bincount.shards.stream.ReaderConfig
    decode: str = "cpu"  # cpu | gpu: where JPEGs are decoded (bincount.data.gpu_decode)
    decode_device: Optional[str] = None  # data.decode=gpu only; null: the trainer's device (cuda); cpu: for tests


@dataclass
class FreezeConfig:
    policy: str = "none"
    trainable_stages: int = 0
    bn: str = "frozen"  # frozen | train: BatchNorm layers of frozen stages keep eval mode, or train as usual


@dataclass
class ModelConfig:
    backbone: str = "???"
    pretrained: bool = False
    weights_file: Optional[str] = None
    weights_remap: str = "false"  # false | true | auto: weights_file by name, by order, or by name else order
    drop_rate: float = 0.0
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    unfreeze: Optional[Dict[int, int]] = None
    unfreeze_lr_scale: float = 0.1
    backbone_lr_scale: float = 1.0
    channels_last: bool = False
    compile: bool = False  # torch.compile the LightningModule; warm-up reported apart (bincount.callbacks)
    compile_backend: str = "inductor"


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: Dict[str, Any] = field(default_factory=dict)
    optimizer: Dict[str, Any] = field(default_factory=dict)
    scheduler: Optional[Dict[str, Any]] = None
    trainer: Dict[str, Any] = field(default_factory=dict)
    callbacks: Optional[Dict[str, Any]] = None
    logger: Optional[Dict[str, Any]] = None
    profiler: Optional[Dict[str, Any]] = None
    paths: Dict[str, Any] = field(default_factory=dict)
    task_name: str = "train"
    seed: Optional[int] = 42
    optimized_metric: str = "val/acc"
    optimized_mode: str = "max"
    resume: bool = False
    test: bool = True
    report: bool = True
    tags: List[str] = field(default_factory=list)


# Keys of _target_ nodes that bincount consumes itself instead of passing them to the target.
OWN_KEYS = {"scheduler": {"interval", "monitor", "frequency"}}


def _choices_hint(bad: str, valid) -> str:
    close = difflib.get_close_matches(bad, list(valid), n=3)
    return (f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else "") + f" Valid: {sorted(valid)}"


def check_schema(cfg: DictConfig) -> DictConfig:
    """Merge into the dataclass schema: unknown keys and wrong types fail here, not mid-training."""
    try:
        return OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
    except ConfigKeyError as err:
        key, parent = err.key, (err.full_key or "").rsplit(".", 1)[0] if "." in (err.full_key or "") else ""
        node = OmegaConf.select(OmegaConf.structured(TrainConfig), parent) if parent else OmegaConf.structured(TrainConfig)
        valid = list(node.keys()) if isinstance(node, DictConfig) else []
        raise ConfigError(f"unknown config key {err.full_key!r}.{_choices_hint(str(key), valid)}") from None
    except ValidationError as err:
        raise ConfigError(f"bad value for {err.full_key!r}: {err.msg}") from None


def _check_choice(key: str, value: Any, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not a valid choice.{_choices_hint(str(value), valid)}")


def check_target_node(key: str, node: Any) -> None:
    """Check a ``_target_`` node's keys against the target's signature (optimizer, scheduler, trainer...)."""
    if not isinstance(node, (dict, DictConfig)) or "_target_" not in node:
        return
    from hydra._internal.utils import _locate  # Hydra's own resolver for _target_ strings

    try:
        target = _locate(node["_target_"])
    except ImportError as err:
        raise ConfigError(f"{key}._target_={node['_target_']!r} cannot be imported: {err}") from None
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    ignored = OWN_KEYS.get(key.split(".")[0], set())
    unknown = [k for k in node if not str(k).startswith("_") and k not in params and k not in ignored]
    if unknown:
        raise ConfigError(f"{key}: {node['_target_']} has no argument {unknown[0]!r}."
                          f"{_choices_hint(str(unknown[0]), [p for p in params if p != 'self'])}")
    for name in node:
        if name in params and not str(name).startswith("_"):
            if isinstance(node, DictConfig) and node._get_node(name)._is_interpolation():
                continue  # ${...}: its source is checked where it is typed (trainer.max_epochs, paths.output_dir)
            expected = _expected_kinds(target, params[name])
            value = node[name]
            if expected and not _is_kind(value, expected):
                raise ConfigError(f"{key}.{name}={value!r}: expected {' or '.join(sorted(k.__name__ for k in expected))}"
                                  f" (the argument {name!r} of {node['_target_']})")


# The value kinds a YAML or override can hold; an argument typed with anything else (a Tensor, a callable,
# a class) is not checked here.
_SIMPLE = (bool, int, float, str, list, tuple, dict)


def _expected_kinds(target: Any, param: inspect.Parameter) -> set[type] | None:
    """The kinds of YAML value ``param`` accepts, from its annotation, else from its default; None: not checkable.
    A config holds no Tensor or class instance, so ``Union[float, Tensor]`` means a number here."""
    import collections.abc
    import typing

    hint = param.annotation
    if isinstance(hint, str) or hint is inspect.Parameter.empty:
        try:
            hint = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target).get(param.name, hint)
        except Exception:  # noqa: BLE001 - an annotation that needs names we cannot import
            hint = inspect.Parameter.empty
    if hint is inspect.Parameter.empty or isinstance(hint, str):
        default = param.default
        return {type(default)} if type(default) in (bool, int, float) else None
    kinds = set()
    import types

    for arg in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)):
        origin = typing.get_origin(arg) or arg
        if arg is type(None) or origin in _SIMPLE:
            kinds.add(origin)
        elif origin is typing.Literal:
            kinds.update(type(v) for v in typing.get_args(arg))
        elif origin in (collections.abc.Sequence, collections.abc.Iterable, typing.Sequence, typing.Iterable):
            kinds.update((list, tuple))
        elif arg is typing.Any:
            return None
        else:
            kinds.add(object)  # an object the config may build with its own _target_ node
    return kinds - {object} if kinds - {object} else None
def _is_kind(value: Any, kinds: set[type]) -> bool:
    if isinstance(value, (dict, DictConfig)) and "_target_" in value:
        return True  # an object Hydra builds: its own node is checked where it is declared
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and (int in kinds or float in kinds):
        return True
    from omegaconf import ListConfig

    if isinstance(value, (list, tuple, ListConfig)):
        return bool(kinds & {list, tuple})
    if isinstance(value, (dict, DictConfig)):
        return dict in kinds
    return any(isinstance(value, k) for k in kinds)


def check_config(cfg: DictConfig) -> None:
    """Every check that can run before data is read or a model is built (a second or two)."""
    from bincount.manifest import ClassRange
    from bincount.data.gpu_decode import check_decode
    from bincount.data.transforms import AUGMENT_CHOICES, INTERPOLATIONS
    from bincount.models.backbone import FREEZE_BN, FREEZE_POLICIES, check_backbone_name, weights_remap_mode
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
        raise ConfigError(f"head {head['name']!r} has no argument {unknown[0]!r}.{_choices_hint(unknown[0], params)}")
    try:
        check_backbone_name(typed.model.backbone)
    except ValueError as err:
        raise ConfigError(f"model.backbone: {err}") from None
    for group in ("trainer", "optimizer", "scheduler", "profiler"):  # trainer first: others interpolate it
        check_target_node(group, cfg.get(group))
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            check_target_node(f"{group}.{name}", node)


def unknown_override_hint(message: str, overrides: list[str], config_dir: str, config_name: str) -> str | None:
    """One line for Hydra's "Key 'max_epoch' is not in struct" (an override of a key that does not exist),
    with the close names of that node (and its ``_target_``'s arguments): ``trainer.max_epoch`` ->
    ``Did you mean 'max_epochs'?``. None when ``message`` is another error. Composes the config again without
    the bad override, so it costs a second only on this error path."""
    import re

    found = re.search(r"Key '([^']+)' is not in struct\s+full_key: (\S+)", message)
    if not found:
        return None
    leaf, full_key = found.groups()
    parent = full_key.rpartition(".")[0]
    from hydra import compose, initialize_config_dir

    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key]
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name, overrides=rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # noqa: BLE001 - another mistake among the overrides: Hydra's own message stands
        return None
    valid = [str(k) for k in node] if isinstance(node, DictConfig) else []
    if isinstance(node, DictConfig) and "_target_" in node:
        from hydra._internal.utils import _locate

        try:
            valid += [p for p in inspect.signature(_locate(node["_target_"])).parameters if p != "self"]
        except Exception:  # noqa: BLE001 - a target that cannot be imported: the node's own keys only
            pass
    valid = sorted({v for v in valid if not v.startswith("_")})
    if leaf in valid:  # an argument of the target that the config file does not set
        return f"{full_key!r} is not set by the config, so it cannot be overridden: add it with +{full_key}=VALUE"
    return f"unknown config key {full_key!r}.{_choices_hint(leaf, valid)}"
