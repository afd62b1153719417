"""Final training of found cells, chosen by task name from `TASKS` (`diffnas train --task`).

Each entry is `train(cfg, run, resume=False, log=print, stop_after=None) -> dict` that trains
the network of `cfg.train.genotype` in run directory `run` and returns the final result.
"""

from diffnas.registry import Registry
from diffnas.runs import distributed
from diffnas.runs.config import ConfigError
from diffnas.train.forecast import train_forecast
from diffnas.train.image import train_image
from diffnas.train.lm import train_lm

TASKS: Registry = Registry("training task")
TASKS.add("image", train_image)
TASKS.add("forecast", train_forecast)
TASKS.add("lm", train_lm)

# Tasks whose training runs data-parallel under torchrun (the others run in one process).
DISTRIBUTED_TASKS = frozenset({"image"})


def check_world_size(task: str) -> None:
    """ConfigError when torchrun started several processes for a single-process task."""
    if distributed.env_world_size() > 1 and task not in DISTRIBUTED_TASKS:
        raise ConfigError(
            f"train.task = {task!r} trains in a single process; run it without torchrun "
            f"(multi-process training: {', '.join(sorted(DISTRIBUTED_TASKS))})"
        )


__all__ = [
    "DISTRIBUTED_TASKS",
    "TASKS",
    "check_world_size",
    "train_forecast",
    "train_image",
    "train_lm",
]
