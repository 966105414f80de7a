"""Frozen means frozen (issue 18, item 2): a frozen stage's BatchNorm keeps its running statistics through
real Lightning epochs and until it is unfrozen; ``model.freeze.bn=train`` lets them move."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from bincount.callbacks import StagedUnfreezing
from bincount.models.freeze import BATCH_NORMS, backbone_stages
from bincount.models.module import BinCounter
from bincount.samples import collate_skipping_bad


def batches(n: int = 32):
    g = torch.Generator().manual_seed(0)
    samples = [{"image": torch.rand(3, 32, 32, generator=g) * 3 + 1, "label": i % 5, "index": i, "id": f"{i:05d}"}
               for i in range(n)]
    return DataLoader(samples, batch_size=8, collate_fn=collate_skipping_bad)


def stage_stats(model: BinCounter) -> list[list[torch.Tensor]]:
    """Each backbone stage's BatchNorm running means, as they are now."""
    by_param = {id(p): i for i, params in enumerate(backbone_stages(model.backbone)) for p in params}
    stats: list[list[torch.Tensor]] = [[] for _ in backbone_stages(model.backbone)]
    for module in model.backbone.modules():
        if isinstance(module, BATCH_NORMS) and module.weight is not None:
            stats[by_param[id(module.weight)]].append(module.running_mean.clone())
    return stats


def fit(model: BinCounter, epochs: int, callbacks=()) -> None:
    L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=list(callbacks)).fit(model, batches())


def model_with(bn: str) -> BinCounter:
    return BinCounter("test_resnet", num_classes=5, freeze={"policy": "all_but_last", "trainable_stages": 1, "bn": bn})


def changed(before, after) -> list[bool]:
    return [any(not torch.equal(a, b) for a, b in zip(xs, ys)) for xs, ys in zip(before, after) if xs]


def test_frozen_stages_keep_their_running_statistics_through_epochs():
    model = model_with("frozen")
    before = stage_stats(model)
    fit(model, epochs=2)
    moved = changed(before, stage_stats(model))
    assert moved[-1] and not any(moved[:-1]), moved  # only the trainable last stage learned statistics


def test_bn_train_lets_frozen_stages_statistics_move():
    model = model_with("train")
    before = stage_stats(model)
    fit(model, epochs=1)
    assert all(changed(before, stage_stats(model))), "every stage's BatchNorm updated its statistics"


def test_a_stage_unfrozen_later_trains_its_batchnorm_from_then_on():
    model = model_with("frozen")
    before = stage_stats(model)
    fit(model, epochs=2, callbacks=[StagedUnfreezing({1: 2})])  # epoch 1: the last two stages
    moved = changed(before, stage_stats(model))
    assert moved[-2:] == [True, True] and not any(moved[:-2]), moved


def test_an_unknown_bn_mode_names_the_choices():
    with pytest.raises(ValueError, match=r"model.freeze.bn='sometimes'.*frozen, train"):
        model_with("sometimes")
