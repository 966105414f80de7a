"""The training task: config in, run directory and objective value out.

``train.py`` at the repository root is the thin Hydra entry point; everything it runs lives here so
that tests, the SageMaker job and sweeps call the same function. A run directory gets Hydra's
``.hydra/``, ``resolved_config.yaml``, ``checkpoints/``, the loggers' files, ``metrics.json`` (every
final number), ``predictions.csv`` (the best checkpoint on the test split) and ``model/`` (the best
checkpoint as a bundle: safetensors weights + ``bincount-model.json``, see :mod:`bincount.bundle`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bincount.bundle import write_run_bundle
from bincount.callbacks import EpochMetricFile, StagedUnfreezing, StepTiming, stdout_is_terminal
from bincount.config import ConfigError, check_config
from bincount.data.datamodule import BinCountDataModule
from bincount.data.transforms import with_backbone_defaults
from bincount.manifest import ClassRange
from bincount.metrics import write_metrics_json, write_predictions_csv
from bincount.models.module import BinCounter
from bincount.quiet import quiet_lightning
from bincount.report import after_run
from bincount.resume import last_checkpoint
from bincount.safe_checkpoint import check_checkpoint, load_checkpoint
from bincount.sagemaker.job.contract import lightning_cluster_args
from bincount.sagemaker.job.progress import ENV_PROGRESS, write_progress
from bincount.secrets import SecretError
from bincount.secrets_config import check_resolved
from bincount.sweep.pruning import pruning_callbacks

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_model(cfg: DictConfig) -> BinCounter:
    m, classes = cfg.model, ClassRange(**cfg.data.classes)
    return BinCounter(
        backbone=m.backbone, num_classes=classes.num_classes, min_count=classes.min_count,
        pretrained=m.pretrained, weights_file=m.weights_file, weights_remap=m.get("weights_remap", "false"),
        head=_plain(cfg.head), freeze=_plain(m.freeze),
        optimizer=_plain(cfg.optimizer), scheduler=_plain(cfg.get("scheduler")),
        backbone_lr_scale=m.backbone_lr_scale, drop_rate=m.drop_rate, channels_last=m.channels_last,
    )


def build_datamodule(cfg: DictConfig, data_config: dict) -> BinCountDataModule:
    """The data follows the backbone's preprocessing (timm's data config), as timm's own loaders do."""
    return BinCountDataModule(**with_backbone_defaults(_plain(cfg.data), data_config))


def build_callbacks(cfg: DictConfig, with_loggers: bool = True) -> list[L.Callback]:
    from lightning.pytorch.callbacks import LearningRateMonitor

    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    if not with_loggers:  # LearningRateMonitor refuses to run without a logger (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.model.get("unfreeze"):
        callbacks.append(StagedUnfreezing(_plain(cfg.model.unfreeze), lr_scale=cfg.model.unfreeze_lr_scale))
    callbacks += pruning_callbacks(cfg.optimized_metric)  # Optuna sweep trials on local launchers only
    if os.environ.get(ENV_PROGRESS):  # a pruned trial in a SageMaker job: its launcher reads this file
        callbacks.append(EpochMetricFile(os.environ[ENV_PROGRESS], cfg.optimized_metric, write_progress))
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(node) for node in (cfg.get("logger") or {}).values() if node]


def _checkpoint_callback(trainer: L.Trainer):
    return getattr(trainer, "checkpoint_callback", None)


def evaluate(cfg: DictConfig, model: BinCounter, datamodule: BinCountDataModule, loggers: list,
             ckpt_path: str | None) -> dict:
    """Validate and test the best checkpoint on one device.

    One device even after DDP training: the test set is small, and a single process sees every
    prediction in order (DistributedSampler would pad and split them), so ``predictions.csv`` is exact.
    """
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.get("precision", "32-true"),
        logger=loggers or False, enable_checkpointing=False, default_root_dir=cfg.paths.output_dir,
        enable_model_summary=False, enable_progress_bar=stdout_is_terminal(),  # in a log: "0.00it/s" lines only
    )
    if ckpt_path:  # the checkpoint's tensors, never its pickled objects: both guards of bincount.safe_checkpoint
        model.load_state_dict(load_checkpoint(ckpt_path)["state_dict"])
    results: dict[str, Any] = {}
    trainer.validate(model, datamodule=datamodule, verbose=False)
    results.update({f"val/{k}": v for k, v in model.val_results.items()})
    if cfg.test and datamodule.datasets.get("test") is not None:
        trainer.test(model, datamodule=datamodule, verbose=False)
        results.update({f"test/{k}": v for k, v in model.test_results.items()})
    return results


def write_predictions(path: Path, model: BinCounter) -> None:
    import torch

    outputs = model.test_outputs
    if not outputs:
        return
    ids = [i for o in outputs for i in o["id"]]
    labels = torch.cat([o["label"] for o in outputs])
    preds = torch.cat([o["pred"] for o in outputs])
    probs = torch.cat([o["probs"] for o in outputs])
    m = model.hparams.min_count
    write_predictions_csv(path, ids, (labels + m).tolist(), (preds + m).tolist(), probs, m)


def objective(metrics: dict, name: str) -> float:
    if name not in metrics:
        valid = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise ConfigError(f"optimized_metric={name!r} is not a metric of this run; valid: {valid}")
    return float(metrics[name])


def _route_lightning_logs_through_hydra() -> None:
    """Lightning adds its own console handlers (on ``lightning`` and its subpackages); without them each
    message reaches the console once, through Hydra's root handlers (console + the run's log file)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()


def _leave_process_group() -> None:
    """End DDP after fit, on every rank, before rank 0 evaluates alone.

    Otherwise the one-device evaluation still sees the process group (torchmetrics and ``sync_dist``
    reduce over it) while the other ranks have returned, and rank 0 waits for them forever: a
    torchrun/SageMaker multi-GPU job would bill until its max runtime. ``ddp_spawn`` hid this, since
    its main process never joins the group.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def train(cfg: DictConfig) -> float | None:
    """Fit, evaluate the best checkpoint, write the run's files; return ``cfg.optimized_metric``."""
    started = time.time()
    _route_lightning_logs_through_hydra()
    quiet_lightning()
    try:  # the inner guard behind the leak_check callback: resolved_config.yaml, the loggers and check_config's
        check_resolved(cfg)  # messages get cfg resolved
    except SecretError as e:
        raise ConfigError(str(e)) from None
    check_config(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    model = build_model(cfg)
    datamodule = build_datamodule(cfg, model.data_config)
    # One image of the run's size: the model summary then shows FLOPs and shapes instead of a column of zeros.
    model.example_input_array = torch.zeros(1, 3, datamodule.img_size, datamodule.img_size)
    loggers = build_loggers(cfg)
    # In a SageMaker job, num_nodes/devices come from the SM_* variables (empty dict elsewhere).
    profiler = instantiate(cfg.profiler) if cfg.get("profiler") else None  # profiler=simple|advanced|pytorch
    timing = StepTiming()  # the first step apart from the rest: torch.compile's warm-up (model.compile=true)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*build_callbacks(cfg, bool(loggers)), timing],
                                     logger=loggers or False, profiler=profiler, **lightning_cluster_args())
    for logger in trainer.loggers:
        logger.log_hyperparams(_plain(cfg))  # the full resolved config, not only the model's hparams

    resume_from = last_checkpoint(out) if cfg.resume else None
    if cfg.resume:
        log.info("Resuming from %s" % resume_from if resume_from else "resume=true: no checkpoint yet, starting fresh")
    # a checkpoint that carries pickled objects is refused, not run: our own check of its pickle (it may come
    # from the job's checkpoint bucket), then Lightning's weights_only load (torch>=2.6, lightning>=2.6)
    if resume_from:
        check_checkpoint(resume_from)
    fit_model = model
    if cfg.model.get("compile"):  # Lightning trains the compiled module and checkpoints the original's weights
        fit_model = torch.compile(model, backend=cfg.model.get("compile_backend", "inductor"))
    trainer.fit(fit_model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None,
                weights_only=True)
    is_global_zero = trainer.is_global_zero
    _leave_process_group()
    if not is_global_zero:
        return None

    ckpt_cb = _checkpoint_callback(trainer)
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    metrics = evaluate(cfg, model, datamodule, loggers, best)
    metrics.update({
        "optimized_metric": cfg.optimized_metric,
        "best_checkpoint": str(Path(best).relative_to(out)) if best and Path(best).is_relative_to(out) else best,
        "epochs_trained": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "duration_s": round(time.time() - started, 1),
        "data_quality": {**datamodule.data_quality(), **model.bad_sample_summary()},
        "step_timing": {**timing.summary(), "compiled": bool(cfg.model.get("compile"))},
    })
    steps = metrics["step_timing"]
    if steps["compiled"] and "warmup_s" in steps:
        log.info("torch.compile: first step %.1f s (compilation), then %.3f s a step", steps["warmup_s"],
                 steps["steady_step_s"])
    metrics["objective"] = objective(metrics, cfg.optimized_metric)
    write_metrics_json(out / "metrics.json", metrics)
    write_predictions(out / "predictions.csv", model)
    write_run_bundle(out, model, datamodule, metrics, precision=cfg.trainer.get("precision"))  # <run>/model/
    after_run(cfg, out, metrics, loggers)  # W&B results, report.html: warnings only, results are safe
    return metrics["objective"]
