"""``bincount export RUN [-o DIR]``: a bundle for a run that finished before runs wrote one.

Why from the checkpoint and ``resolved_config.yaml``: that is all an older run has. The checkpoint is
read after :mod:`bincount.safe_checkpoint`'s own check and with ``torch.load(weights_only=True)`` (tensors
and plain containers, never pickled objects), its hyperparameters rebuild the network without Hydra, and the
resolved config gives the data settings (input size, class policy, pixel limit) that the eval transform used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bincount.bundle.format import BundleError
from bincount.bundle.provenance import from_config
from bincount.bundle.write import MODEL_DIR, write_bundle
from bincount.data.transforms import BACKBONE_PREPROCESS_KEYS, with_backbone_defaults

CONFIG_FILES = ("resolved_config.yaml", ".hydra/config.yaml")


def _config(run: Path) -> dict[str, Any]:
    import yaml

    for name in CONFIG_FILES:
        if (run / name).is_file():
            cfg = yaml.safe_load((run / name).read_text()) or {}
            if not isinstance(cfg, dict):
                raise BundleError(f"{run / name} is not a mapping of config keys")
            return cfg
    raise BundleError(f"{run} has none of {list(CONFIG_FILES)}: is it a bincount run directory?")


def best_checkpoint(run: Path) -> Path:
    """metrics.json's ``best_checkpoint`` (what predictions.csv came from), else ``checkpoints/last.ckpt``."""
    metrics = run / "metrics.json"
    best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
    candidates = [run / best, run / "checkpoints" / Path(best).name] if best else []
    candidates.append(run / "checkpoints" / "last.ckpt")
    for path in candidates:
        if path.is_file():
            return path
    found = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").is_dir() else []
    raise BundleError(f"{run} has no best or last checkpoint (looked for {[str(c) for c in candidates]}; "
                      f"checkpoints found: {found}); pass one with --checkpoint")


def _setting(cfg: dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    value = default if node is None else node
    if isinstance(value, str) and "${" in value:
        raise BundleError(f"config key {dotted}={value!r} is an unresolved interpolation; export needs resolved_config.yaml")
    return value


def load_checkpoint_module(path: Path):
    """A :class:`BinCounter` rebuilt from a checkpoint's hyperparameters and weights (no pretrained download)."""
    from bincount.models.module import BinCounter
    from bincount.safe_checkpoint import UnsafeCheckpoint, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except UnsafeCheckpoint as e:
        raise BundleError(str(e)) from None
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if "backbone" not in hparams or "state_dict" not in ckpt:
        raise BundleError(f"{path} has no bincount hyper_parameters/state_dict: not a BinCounter checkpoint")
    hparams.update(pretrained=False, weights_file=None)
    module = BinCounter(**hparams)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, checkpoint: str | Path | None = None) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run} is not a directory (a run directory holds checkpoints/ and resolved_config.yaml)")
    cfg = _config(run)
    ckpt = Path(checkpoint) if checkpoint else best_checkpoint(run)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    module = load_checkpoint_module(ckpt)
    # interpolation/mean/std: the config's where it names them, else the backbone's (timm's data config),
    # the rule bincount.train gave the DataModule whose eval transform wrote predictions.csv
    preprocess = with_backbone_defaults({k: _setting(cfg, f"data.{k}") for k in BACKBONE_PREPROCESS_KEYS},
                                        module.data_config)
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    from bincount.samples import DEFAULT_MAX_PIXELS

    return write_bundle(
        Path(out_dir) if out_dir else run / MODEL_DIR, module, img_size=int(_setting(cfg, "data.img_size", 128)),
        mean=preprocess["mean"], std=preprocess["std"], interpolation=preprocess["interpolation"],
        overflow=_setting(cfg, "data.classes.overflow", "clip"),
        max_pixels=int(_setting(cfg, "data.max_pixels", DEFAULT_MAX_PIXELS)), metrics=metrics, run_dir=run,
        checkpoint=str(ckpt.relative_to(run)) if ckpt.is_relative_to(run) else str(ckpt),
        precision=_setting(cfg, "trainer.precision"), trained_on=from_config(cfg, _setting),
    )
