"""Final training of found cells, chosen by task name from `TASKS` (`diffnas train --task`).

Each entry is `train(cfg, run, resume=False, log=print, stop_after=None) -> dict` that trains
the network of `cfg.train.genotype` in run directory `run` and returns the final result.
"""

from diffnas.registry import Registry
from diffnas.train.forecast import train_forecast
from diffnas.train.image import train_image
from diffnas.train.lm import train_lm

TASKS: Registry = Registry("training task")
TASKS.add("image", train_image)
TASKS.add("forecast", train_forecast)
TASKS.add("lm", train_lm)

__all__ = ["TASKS", "train_forecast", "train_image", "train_lm"]
