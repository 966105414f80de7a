"""Writing a bundle: at the end of every run (``bincount.train``) and for older runs (``bincount export``).

The weights go first and the metadata last, each through a temporary file and a rename, so a
directory holding ``bincount-model.json`` always holds the complete bundle it describes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bincount.bundle.format import (BUNDLE_FILE, FORMAT_NAME, FORMAT_VERSION, WEIGHTS_FILE, class_table,
                                    sha256_file, versions)
from bincount.bundle.preprocess import describe_eval_transform
from bincount.bundle.provenance import TRAINED_ON, from_datamodule

MODEL_DIR = "model"  # <run>/model/
SM_MODEL_DIR = "SM_MODEL_DIR"  # SageMaker packs this directory as the job's model.tar.gz
KEY_METRICS = ("acc", "rmse", "mae", "within_one", "f1_macro", "f1_weighted", "num_samples")


def key_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline test and validation numbers (the per-class ones stay in the run's metrics.json),
    rounded as metrics.json rounds them, so a bundle and its run show the same figures."""
    from bincount.metrics import FLOAT_DIGITS

    keys = [f"{stage}/{name}" for stage in ("test", "val") for name in KEY_METRICS]
    return {k: float(f"{float(metrics[k]):.{FLOAT_DIGITS}g}") for k in keys if isinstance(metrics.get(k), (int, float))}


def _save_weights(module, path: Path) -> None:
    from safetensors.torch import save_file

    # clone: safetensors refuses tensors that share storage; contiguous: channels_last params.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    tmp = path.with_name(f".{path.name}.part")
    save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME})
    os.replace(tmp, path)


def write_bundle(out_dir: str | Path, module, *, img_size: int, mean, std, overflow: str, max_pixels: int,
                 interpolation: str = "bilinear", metrics: dict[str, Any] | None = None, run_dir: str | Path | None = None,
                 checkpoint: str | None = None, precision: str | None = None, trained_on: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``bincount-model.json`` for a :class:`BinCounter` into ``out_dir``;
    ``trained_on`` (:func:`bincount.bundle.provenance.trained_on`) says what data it learned from;
    ``mean``, ``std`` and ``interpolation`` are the ones the run's eval transform used."""
    from bincount.data.transforms import build_transform

    hp = module.hparams
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preprocess = describe_eval_transform(build_transform(int(img_size), train=False, mean=mean, std=std,
                                                      interpolation=interpolation), max_pixels)
    weights = out / WEIGHTS_FILE
    _save_weights(module, weights)
    run = Path(run_dir) if run_dir else None
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(weights), "tensors": len(module.state_dict())},
        "model": {"backbone": hp.backbone, "num_classes": int(hp.num_classes), "head": dict(hp.head or {"name": "linear"}),
                  "drop_rate": float(hp.drop_rate), "channels_last": bool(hp.channels_last)},
        "classes": class_table(int(hp.min_count), int(hp.num_classes), overflow),
        "preprocess": preprocess,
        "run": {"id": run.name if run else None, "parent": run.parent.name if run else None,
                "checkpoint": checkpoint, "precision": precision},
        "metrics": key_metrics(metrics or {}),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if trained_on is not None:  # optional: bundles written before it (and by hand) read as "unknown"
        meta[TRAINED_ON] = trained_on
    tmp = out / f".{BUNDLE_FILE}.part"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / BUNDLE_FILE)
    return out


def write_run_bundle(run_dir: str | Path, module, datamodule, metrics: dict[str, Any], precision: str | None) -> Path:
    """The bundle of a finished run, in ``<run>/model/`` and, inside a SageMaker job, in ``$SM_MODEL_DIR``."""
    run = Path(run_dir)
    best = metrics.get("best_checkpoint")
    out = write_bundle(run / MODEL_DIR, module, img_size=datamodule.img_size, mean=datamodule.mean, std=datamodule.std,
                       overflow=datamodule.class_range.overflow, max_pixels=datamodule.max_pixels,
                       interpolation=datamodule.interpolation, metrics=metrics,
                       run_dir=run, checkpoint=str(best) if best else None, precision=precision,
                       trained_on=from_datamodule(datamodule))
    sm_dir = os.environ.get(SM_MODEL_DIR)
    if sm_dir:
        Path(sm_dir).mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_FILE, BUNDLE_FILE):  # weights first: the metadata marks the bundle complete
            shutil.copy2(out / name, Path(sm_dir) / name)
    return out
