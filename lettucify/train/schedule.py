"""Learning-rate schedules, stepped once per optimizer step (batch)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 1.0,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up from ~0 to each group's lr, then cosine decay to ``min_lr_ratio`` of it."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(round(warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, *, steps_per_epoch: int, epochs: int) -> LambdaLR:
    del steps_per_epoch, epochs  # the same signature as every schedule
    return LambdaLR(optimizer, lambda step: 1.0)
