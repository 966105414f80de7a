"""Callbacks that Lightning does not ship in the shape bincount needs."""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning, ProgressBar

from bincount.models.freeze import backbone_stages

log = logging.getLogger(__name__)


class StagedUnfreezing(BaseFinetuning):
    """Unfreeze backbone stages on a schedule (``{epoch: trainable_stages}``), deepest first.

    Lightning's ``BackboneFinetuning`` unfreezes the whole backbone at one epoch and freezes all of it
    first; the reports' recipes keep some stages trainable from the start, so the module applies its
    freeze policy and this callback only widens it. Unfrozen stages join the optimizer as a new
    parameter group at ``lr * lr_scale`` of the head's group. Idempotent per epoch, so a resumed run past
    an unfreeze epoch ends up with the same trainable set and parameter groups (restored by the base class).
    """

    def __init__(self, schedule: dict[int, int], lr_scale: float = 0.1) -> None:
        super().__init__()
        self.schedule = {int(k): int(v) for k, v in dict(schedule).items()}
        if any(e < 0 or n < 0 for e, n in self.schedule.items()):
            raise ValueError(f"StagedUnfreezing schedule must map epochs >= 0 to stage counts >= 0, got {self.schedule}.")
        self.lr_scale = lr_scale

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        """Nothing to do: ``BinCounter`` has applied ``model.freeze`` already."""

    def _target_stages(self, epoch: int) -> int:
        due = [n for e, n in self.schedule.items() if e <= epoch]
        return max(due) if due else 0

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer) -> None:
        n = self._target_stages(epoch)
        if n == 0:
            return
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        stages = backbone_stages(pl_module.backbone)
        new = []
        for params in stages[max(0, len(stages) - n):]:
            for p in params:
                p.requires_grad_(True)
                if id(p) not in in_optimizer:
                    new.append(p)
        if new:
            lr = optimizer.param_groups[0]["lr"] * self.lr_scale
            optimizer.add_param_group({"params": new, "lr": lr, "name": f"backbone_unfrozen_e{epoch}"})
            log.info("Epoch %d: unfroze the last %d backbone stages (%d tensors) at lr %.2e", epoch, n, len(new), lr)


class StepTiming(L.Callback):
    """Wall time of the first training steps apart from the steady state (``model.compile=true``).

    Why: torch.compile spends its compilation inside the first step (and again whenever shapes change,
    e.g. a smaller last batch), so an epoch time mixes the one-off cost with the speed it buys. Lightning's
    Timer callback times stages, not steps, so this keeps per-step times for the first epoch.
    """

    def __init__(self, warmup_steps: int = 1) -> None:
        self.warmup_steps, self.times, self._start = warmup_steps, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.times.append(time.perf_counter() - self._start)

    def summary(self) -> dict[str, float]:
        if len(self.times) <= self.warmup_steps:
            return {}
        warm, steady = self.times[:self.warmup_steps], self.times[self.warmup_steps:]
        return {"warmup_s": round(sum(warm), 3), "steady_step_s": round(statistics.median(steady), 4)}


class EpochMetricFile(L.Callback):
    """Each validation epoch's value of ``monitor`` in a pruned SageMaker trial's progress file, whose format
    and reason are ``bincount.sagemaker.job.progress``'s (the launcher reads it to ask the study's pruner).
    ``write`` is that module's ``write_progress``, passed in: the SageMaker package sits above this one."""

    def __init__(self, path: str | Path, monitor: str, write: Callable[[Path, str, dict[str, float]], None]) -> None:
        self.path, self.monitor, self.write = Path(path), monitor, write
        self.values: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or not trainer.is_global_zero or value is None:
            return
        self.values[str(trainer.current_epoch)] = float(value)
        self.write(self.path, self.monitor, self.values)


def stdout_is_terminal() -> bool:
    """Whether someone watches stdout: False for a file, a pipe, a SageMaker job's log (or no stdout at all)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def epoch_line(epoch: int, max_epochs: int | None, metrics: dict, seconds: float) -> str:
    """``epoch 3/6: train/loss=1.234 val/loss=1.301 val/acc=0.4100 (12 s)``: epochs counted from 1, the
    epoch value of a metric logged per step and per epoch (``train/loss_epoch`` -> ``train/loss``)."""
    shown = {}
    for name, value in metrics.items():
        if name == "v_num" or name.endswith("_step") or not isinstance(value, (int, float)):
            continue
        shown[name.removesuffix("_epoch")] = value
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    values = "".join(f"{k}={v:.4g} " for k, v in shown.items())
    return f"epoch {epoch + 1}{total}: {values}({seconds:.0f} s)"


class EpochLines(ProgressBar):
    """The progress "bar" when stdout is not a terminal: one plain log line per epoch (issue 27: console noise).

    Why: Rich's bar redraws itself in place on a terminal, but written to a file or a job's log it wraps its
    metrics into a narrow column, seven lines an epoch. A ``ProgressBar`` subclass, so the Trainer takes it as
    its bar and adds no default one; the line goes through logging, so ``train.log`` has it too, and a
    SageMaker job's status reads its ``epoch k/n`` (:meth:`bincount.sagemaker.local.LocalBackend.progress`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.enabled, self._started = True, time.perf_counter()

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the epoch's validation (Lightning validates before this hook), so val metrics are this epoch's."""
        if self.enabled and trainer.is_global_zero:
            log.info(epoch_line(trainer.current_epoch, trainer.max_epochs, self.get_metrics(trainer, pl_module),
                                time.perf_counter() - self._started))


def progress_bar(leave: bool = True, **kwargs) -> ProgressBar:
    """``callbacks.progress_bar``: Rich's bar on a terminal (``kwargs`` are its own, e.g. ``refresh_rate``), one
    plain line per epoch otherwise."""
    if stdout_is_terminal():
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar(leave=leave, **kwargs)
    return EpochLines()
