"""What the framework costs: bincount's Lightning training vs a hand-written PyTorch loop.

Both sides train the same model (built by ``bincount.train.build_model`` from the same config), with
the same optimizer, on the same batches. The plain loop is the reports' loop: forward, loss,
zero_grad, backward, step. The framework side is ``lightning.Trainer`` as ``train.py`` builds it:
the default callbacks (checkpointing, early stopping, rich progress bar, LR monitor) and loggers
(CSV + TensorBoard), logging every step's loss.

``--data memory`` (the default) feeds both sides pre-collated batches from RAM, so the comparison
isolates compute + framework; ``--data loader`` uses the DataModule's real DataLoader for both.
Rounds alternate plain / framework, short, so that machine drift hits both sides of a round alike;
the table gives images/s per round and side, and the median of the per-round ratios.

    python benchmarks/train_throughput.py                      # resnet18 at 96 px, the default run
    python benchmarks/train_throughput.py model=resnet50 data.img_size=224 trainer=gpu --steps 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compose, machine, median, print_table  # noqa: E402


def _batches(cfg, model, n: int, use_loader: bool):
    from bincount.train import build_datamodule

    dm = build_datamodule(cfg, model.data_config)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    if use_loader:
        return loader
    batches = []
    while len(batches) < n:
        for batch in loader:
            batches.append(batch)
            if len(batches) == n:
                break
    return InMemoryBatches(batches)


class InMemoryBatches:
    """Pre-collated batches as one iterable (Lightning reads a bare list as a list of loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _device(cfg):
    import torch

    return torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
                        else "cpu")


def plain_loop(cfg, batches, steps: int, warmup: int) -> float:
    """The reports' hand-written loop; returns images/s over the steps after ``warmup``."""
    import torch
    from hydra.utils import instantiate

    from bincount.train import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    device = _device(cfg)
    model.to(device).train()
    opt_cfg = dict(cfg.optimizer)
    optimizer = instantiate(opt_cfg)(model.parameter_groups(opt_cfg.get("lr", 1e-3)))
    seen, start, step = 0, None, 0
    while step < steps:
        for batch in batches:
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, seen = time.perf_counter(), 0
            images, labels = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
            loss = model.head.loss(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += labels.shape[0]
            step += 1
            if step == steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def framework(cfg, batches, steps: int, warmup: int, out_dir: str) -> float:
    """``train.py``'s Trainer (callbacks, loggers, progress bar); images/s after ``warmup`` steps."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from bincount.train import build_callbacks, build_loggers, build_model

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.start, self.seen = None, 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.global_step == warmup and self.start is None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if self.start is not None:
                self.seen += batch["label"].shape[0]
            if trainer.global_step == steps:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.end = time.perf_counter()

    torch.manual_seed(cfg.seed)
    cfg.paths.output_dir = out_dir
    # Epoch-end callbacks watch validation metrics, and there is no validation here; they run after
    # the timed window anyway (the timer stops at the last step, before the epoch ends).
    cfg.callbacks.early_stopping = cfg.callbacks.model_checkpoint = None
    model = build_model(cfg)
    loggers = build_loggers(cfg)
    timer = StepTimer()
    trainer = instantiate(cfg.trainer, callbacks=[*build_callbacks(cfg, bool(loggers)), timer],
                          logger=loggers or False, max_steps=steps, max_epochs=-1, limit_val_batches=0,
                          num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=batches)
    return timer.seen / (timer.end - timer.start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Other arguments are Hydra overrides.")
    parser.add_argument("--steps", type=int, default=20, help="training steps per measurement (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from the timing (default 3)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating plain/framework rounds (default 7)")
    parser.add_argument("--data", choices=["memory", "loader"], default="memory")
    args, overrides = parser.parse_known_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must be larger than --warmup ({args.warmup})")
    cfg = compose(overrides)
    from bincount.train import build_model

    batches = _batches(cfg, build_model(cfg), min(args.steps, 20), args.data == "loader")
    rows, plain, fw = [], [], []
    for r in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as out:
            if r % 2:  # alternate which side goes first, so neither always gets the warmer machine
                p = plain_loop(cfg, batches, args.steps, args.warmup)
                f = framework(cfg, batches, args.steps, args.warmup, out)
            else:
                f = framework(cfg, batches, args.steps, args.warmup, out)
                p = plain_loop(cfg, batches, args.steps, args.warmup)
        plain.append(p)
        fw.append(f)
        rows.append([f"round {r}", p, f, f"{f / p:.3f}"])
    # The median of per-round ratios: each round's two sides ran back to back, so drift cancels.
    ratio = median([f / p for p, f in zip(plain, fw)])
    rows.append(["median", median(plain), median(fw), f"{ratio:.3f}"])
    title = (f"training images/s, {cfg.model.backbone} {cfg.data.img_size}px batch {cfg.data.batch_size}, "
             f"data={args.data}, {args.steps - args.warmup} timed steps\n{machine()}")
    print_table(title, ["", "plain loop", "bincount (Lightning)", "ratio"], rows)
    print(f"framework cost: {100 * (1 - ratio):.1f}% of plain-loop images/s (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
