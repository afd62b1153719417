"""Final training of found cells, chosen by task name from `TASKS` (`diffnas train --task`).

Each entry is `train(cfg, run, resume=False, log=print, stop_after=None) -> dict` that trains
the network of `cfg.train.genotype` in run directory `run` and returns the final result.
"""

from diffnas.registry import Registry
from diffnas.train.image import train_image

TASKS: Registry = Registry("training task")
TASKS.add("image", train_image)

__all__ = ["TASKS", "train_image"]
