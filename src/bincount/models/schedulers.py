"""Learning-rate schedules that torch does not ship in one piece."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def cosine_with_warmup(optimizer: Optimizer, max_epochs: int, warmup_epochs: int = 1,
                       warmup_start_factor: float = 0.1, eta_min: float = 0.0) -> LRScheduler:
    """Linear warm-up then cosine decay, composed from torch's own schedulers (stepped per epoch)."""
    if max_epochs < 1 or warmup_epochs < 0:
        raise ValueError(f"cosine_with_warmup needs max_epochs >= 1 and warmup_epochs >= 0, "
                         f"got max_epochs={max_epochs}, warmup_epochs={warmup_epochs}.")
    if warmup_epochs == 0 or warmup_epochs >= max_epochs:
        return CosineAnnealingLR(optimizer, T_max=max(1, max_epochs), eta_min=eta_min)
    warmup = LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_epochs)
    cosine = CosineAnnealingLR(optimizer, T_max=max_epochs - warmup_epochs, eta_min=eta_min)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
