"""Freezing a timm backbone by stage, and keeping a frozen stage's BatchNorm statistics fixed.

Stages come from timm's own ``group_matcher`` so that "freeze all but the last N stages" means the same
thing for a ResNet and an EfficientNet without per-architecture code.
"""

from __future__ import annotations

from torch import nn

FREEZE_POLICIES = ("none", "all", "all_but_last")
FREEZE_BN = ("frozen", "train")  # model.freeze.bn
# timm's ``BatchNormAct2d`` and ``SyncBatchNorm`` are subclasses of these.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def backbone_stages(backbone: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters grouped by stage, shallow to deep, from timm's ``group_matcher(coarse=True)``."""
    from timm.models import group_parameters

    named = dict(backbone.named_parameters())
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    return [[named[n] for n in names] for _, names in sorted(groups.items(), key=lambda kv: kv[0])]


def apply_freeze(backbone: nn.Module, policy: str = "none", trainable_stages: int = 0) -> int:
    """Freeze the backbone by policy and return how many stages stay trainable.

    ``all_but_last`` with ``trainable_stages=1`` on a ResNet50 is the first capstone report's
    "freeze everything but layer4 and fc" (the head is separate and always trains).
    """
    stages = backbone_stages(backbone)
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"Unknown freeze policy {policy!r}; choose one of {', '.join(FREEZE_POLICIES)}.")
    if policy == "none":
        keep = len(stages)
    elif policy == "all":
        keep = 0
    else:
        if not 0 <= trainable_stages <= len(stages):
            raise ValueError(
                f"model.freeze.trainable_stages={trainable_stages} is out of range for this backbone, "
                f"which has {len(stages)} stages (valid: 0..{len(stages)})."
            )
        keep = trainable_stages
    for i, params in enumerate(stages):
        for p in params:
            p.requires_grad_(i >= len(stages) - keep)
    return keep


def keep_frozen_batchnorm_in_eval(backbone: nn.Module) -> int:
    """BatchNorm layers whose parameters are all frozen go to eval mode, the others to train mode (when the
    backbone trains); return how many are frozen.

    Why: ``requires_grad=False`` fixes a layer's weights, but a BatchNorm in train mode still updates its
    running mean and variance from every batch, so a "frozen" pretrained stage drifts away from the
    statistics its weights were trained with. A stage unfrozen later (``StagedUnfreezing``) has trainable
    parameters again and trains normally from then on. timm's ``BatchNormAct2d`` and ``SyncBatchNorm``
    are subclasses of these.
    """
    frozen = 0
    for module in backbone.modules():
        params = list(module.parameters(recurse=False))
        if not isinstance(module, BATCH_NORMS) or not params:
            continue
        is_frozen = not any(p.requires_grad for p in params)
        module.train(backbone.training and not is_frozen)
        frozen += is_frozen
    return frozen


def unfreeze_last_stages(backbone: nn.Module, n: int) -> list[nn.Parameter]:
    """Make the last ``n`` stages trainable; return the parameters that were frozen before."""
    stages = backbone_stages(backbone)
    newly: list[nn.Parameter] = []
    for params in stages[len(stages) - n:] if n > 0 else []:
        for p in params:
            if not p.requires_grad:
                p.requires_grad_(True)
                newly.append(p)
    return newly


def num_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
