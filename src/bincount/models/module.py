"""``BinCounter``: the one LightningModule for every backbone and head.

Hyperparameters are plain dicts saved in the checkpoint, so ``BinCounter.from_checkpoint(path)``
rebuilds the model without the config files that trained it (as LightningCLI does), and never
re-downloads pretrained weights to do so. They go to the checkpoint only, not to the loggers: the
loggers get the full resolved config from ``bincount.train``, of which these are a part.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from bincount.metrics import CountMetrics
from bincount.models.backbone import create_backbone
from bincount.models.freeze import FREEZE_BN, apply_freeze, keep_frozen_batchnorm_in_eval
from bincount.models.heads import create_head

log = logging.getLogger(__name__)

RESERVED_SCHEDULER_KEYS = ("interval", "monitor", "frequency")


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class BinCounter(L.LightningModule):
    """A timm backbone, a counting head, the head's loss, and count metrics per stage."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        min_count: int = 1,
        pretrained: bool = False,
        weights_file: str | None = None,
        weights_remap: str = "false",
        head: dict | None = None,
        freeze: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        backbone_lr_scale: float = 1.0,
        drop_rate: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        head, freeze, optimizer, scheduler = (_plain(x) for x in (head, freeze, optimizer, scheduler))
        self.save_hyperparameters(
            {"backbone": backbone, "num_classes": num_classes, "min_count": min_count, "pretrained": pretrained,
             "weights_file": weights_file, "weights_remap": weights_remap, "head": head, "freeze": freeze,
             "optimizer": optimizer, "scheduler": scheduler, "backbone_lr_scale": backbone_lr_scale,
             "drop_rate": drop_rate, "channels_last": channels_last},
            logger=False,  # train.py logs the whole resolved config; these kwargs would land beside it twice
        )
        self.backbone = create_backbone(backbone, pretrained=pretrained, weights_file=weights_file, drop_rate=drop_rate,
                                        weights_remap=weights_remap)
        head = dict(head or {"name": "linear"})
        self.head = create_head(head.pop("name"), self.backbone.num_features, num_classes, **head)
        freeze = freeze or {}
        apply_freeze(self.backbone, freeze.get("policy", "none"), freeze.get("trainable_stages", 0))
        self.freeze_bn = freeze.get("bn", "frozen")
        if self.freeze_bn not in FREEZE_BN:
            raise ValueError(f"model.freeze.bn={self.freeze_bn!r} is not a valid choice; valid: {', '.join(FREEZE_BN)}")
        self.val_metrics = CountMetrics(num_classes, min_count)
        self.test_metrics = CountMetrics(num_classes, min_count)
        # id -> reason for every sample skipped under data.bad_input=skip, per stage (ids, not events:
        # the same bad file seen every epoch counts once).
        self.bad_samples: dict[str, dict[str, str]] = {"train": {}, "val": {}, "test": {}}
        self.test_outputs: list[dict] = []
        self.val_results: dict = {}
        self.test_results: dict = {}

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str | torch.device = "cpu") -> BinCounter:
        """Rebuild from a checkpoint alone; the checkpoint's weights replace any pretrained ones."""
        return cls.load_from_checkpoint(path, map_location=map_location, pretrained=False, weights_file=None)

    @property
    def data_config(self) -> dict:
        """The backbone's preprocessing (mean, std, interpolation) from timm, so data follows the model."""
        from timm.data import resolve_model_data_config

        return resolve_model_data_config(self.backbone)

    def train(self, mode: bool = True):
        """Frozen stages' BatchNorm stays in eval whoever calls ``train()`` (``model.freeze.bn=frozen``)."""
        super().train(mode)
        if mode and self.freeze_bn == "frozen":
            keep_frozen_batchnorm_in_eval(self.backbone)
        return self

    def on_train_epoch_start(self) -> None:
        """Lightning keeps each module's mode across epochs rather than calling ``train()``; this runs after
        the callbacks' hooks, so a stage ``StagedUnfreezing`` has just unfrozen trains its BatchNorm now."""
        if self.freeze_bn == "frozen":
            keep_frozen_batchnorm_in_eval(self.backbone)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(images))

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if stage == "fit" and datamodule is not None and hasattr(self.head, "set_class_frequencies"):
            self.head.set_class_frequencies(datamodule.class_counts("train"))

    def _step(self, batch: dict, stage: str):
        for sample_id, reason in batch.get("bad") or []:
            if sample_id not in self.bad_samples[stage]:
                self.bad_samples[stage][sample_id] = reason
                log.warning("%s: skipped bad sample %s (%s)", stage, sample_id, reason)
        if batch["image"].shape[0] == 0:
            return None, None, batch
        output = self(batch["image"])
        loss = self.head.loss(output, batch["label"])
        return loss, output, batch

    def training_step(self, batch: dict, batch_idx: int):
        loss, output, batch = self._step(batch, "train")
        if loss is None:
            return None  # every sample of this batch was bad and skipped; reported at epoch end
        acc = (self.head.predict(output) == batch["label"]).float().mean()
        n = batch["label"].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/acc", acc, prog_bar=False, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, output, batch = self._step(batch, "val")
        if loss is None:
            return
        self.val_metrics.update(self.head.predict(output), batch["label"])
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, batch_size=batch["label"].shape[0], sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, output, batch = self._step(batch, "test")
        if loss is None:
            return
        pred = self.head.predict(output)
        self.test_metrics.update(pred, batch["label"])
        self.log("test/loss", loss, on_epoch=True, batch_size=batch["label"].shape[0], sync_dist=True)
        self.test_outputs.append({"id": list(batch["id"]), "label": batch["label"].cpu(), "pred": pred.cpu(),
                                  "probs": self.head.probabilities(output).float().cpu()})

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        """Counts, not class indices: ``pred_count``, ``expected_count`` (sum of count x probability),
        ``confidence`` (the largest probability) and ``probs`` (N x C, class i = count min_count + i).

        The same head verbs as ``test_step``, so ``bincount predict`` on a run's test split gives its
        ``predictions.csv``. An all-bad batch (every sample skipped) gives empty tensors.
        """
        images = batch["image"]
        if images.shape[0] == 0:
            probs = images.new_zeros((0, self.hparams.num_classes))
            pred = torch.zeros(0, dtype=torch.long, device=images.device)
        else:
            output = self(images)
            probs, pred = self.head.probabilities(output).float(), self.head.predict(output)
        counts = self.hparams.min_count + torch.arange(probs.shape[1], device=probs.device)
        return {"id": list(batch.get("id", [])), "pred_count": pred + self.hparams.min_count,
                "expected_count": (probs * counts).sum(dim=1), "confidence": probs.max(dim=1).values, "probs": probs}

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    def _log_epoch_metrics(self, metrics: CountMetrics, stage: str) -> dict:
        values = metrics.compute()
        metrics.reset()
        scalars = {f"{stage}/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))}
        shown = {k: scalars.pop(k) for k in (f"{stage}/acc", f"{stage}/rmse") if k in scalars}
        self.log_dict(shown, prog_bar=True)  # metrics are already synced by torchmetrics
        self.log_dict(scalars)
        return values

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_results = self._log_epoch_metrics(self.val_metrics, "val")
        else:
            self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_epoch_metrics(self.test_metrics, "test")

    def bad_sample_summary(self) -> dict:
        """Skipped samples per stage, for metrics.json: counts and the files with their reasons."""
        return {f"skipped_{stage}": len(bad) for stage, bad in self.bad_samples.items()} | {
            "skipped_samples": {stage: dict(bad) for stage, bad in self.bad_samples.items() if bad}}

    # -- optimisation ---------------------------------------------------------------------------
    def parameter_groups(self, lr: float) -> list[dict]:
        """Head and backbone as separate groups, so the backbone can train at ``lr * backbone_lr_scale``."""
        head = [p for p in self.head.parameters() if p.requires_grad]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": lr, "name": "head"}]
        if backbone:
            groups.append({"params": backbone, "lr": lr * self.hparams.backbone_lr_scale, "name": "backbone"})
        return groups

    def configure_optimizers(self):
        from hydra.utils import instantiate

        opt_cfg = dict(self.hparams.optimizer or {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})
        optimizer = instantiate(opt_cfg)(self.parameter_groups(opt_cfg.get("lr", 1e-3)))
        sched_cfg = dict(self.hparams.scheduler or {})
        if not sched_cfg.get("_target_"):
            return optimizer
        extra = {k: sched_cfg.pop(k) for k in RESERVED_SCHEDULER_KEYS if k in sched_cfg}
        if "total_steps" in sched_cfg and sched_cfg["total_steps"] is None:
            # OneCycle needs the run's length. Only this scheduler pays for estimated_stepping_batches,
            # which loads the train dataloader early.
            sched_cfg["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(sched_cfg)(optimizer)
        config = {"scheduler": scheduler, "interval": extra.get("interval", "epoch"),
                  "frequency": extra.get("frequency", 1)}
        if extra.get("monitor"):
            config["monitor"] = extra["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": config}
