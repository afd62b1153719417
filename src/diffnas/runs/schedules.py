"""Learning rates by epoch, shared by the searches and the final trainings.

`LR_SCHEDULES[name](epoch, cfg)` reads `epochs`, `lr`, `lr_min` and `lr_decay` from a `[train]`
section (`train.lr_schedule` for images, `forecast.lr_schedule` for forecasters):

- `cosine`: annealed from lr at epoch 0 towards lr_min, as torch's CosineAnnealingLR;
- `constant`: lr;
- `halve`: lr * 0.5 ** epoch;
- `exponential`: lr * lr_decay ** epoch (the DARTS ImageNet recipe, 0.97).
"""

from __future__ import annotations

import math

from diffnas.registry import Registry


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine annealing from lr (epoch 0) towards lr_min, as torch's CosineAnnealingLR."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


LR_SCHEDULES: Registry = Registry("learning-rate schedule")
LR_SCHEDULES.add("cosine", lambda epoch, cfg: cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.lr_min))
LR_SCHEDULES.add("constant", lambda epoch, cfg: cfg.lr)
LR_SCHEDULES.add("halve", lambda epoch, cfg: cfg.lr * 0.5**epoch)
LR_SCHEDULES.add("exponential", lambda epoch, cfg: cfg.lr * cfg.lr_decay**epoch)
