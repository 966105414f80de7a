"""The run config's schema: unknown keys and wrong types fail when the config is merged into it.

Why dataclasses: OmegaConf merges a config into them and names the key and the type on a mismatch,
the way LightningCLI's typed configs do; the messages here add the close names of a misspelled key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and the valid choices."""


def choices_hint(bad: str, valid) -> str:
    """`` Did you mean 'x'? Valid: [...]``: the close names of ``bad`` among ``valid``, and all of them."""
    close = difflib.get_close_matches(bad, list(valid), n=3)
    return (f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else "") + f" Valid: {sorted(valid)}"


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


def check_schema(cfg: DictConfig) -> DictConfig:
    """Merge into the dataclass schema: unknown keys and wrong types fail here, not mid-training."""
    try:
        return OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
    except ConfigKeyError as err:
        key, parent = err.key, (err.full_key or "").rsplit(".", 1)[0] if "." in (err.full_key or "") else ""
        node = OmegaConf.select(OmegaConf.structured(TrainConfig), parent) if parent else OmegaConf.structured(TrainConfig)
        valid = list(node.keys()) if isinstance(node, DictConfig) else []
        raise ConfigError(f"unknown config key {err.full_key!r}.{choices_hint(str(key), valid)}") from None
    except ValidationError as err:
        raise ConfigError(f"bad value for {err.full_key!r}: {err.msg}") from None

