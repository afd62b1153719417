"""`run.on_nonfinite`: what a training or search loop does when a step diverges.

A step diverged when one of its losses is NaN or infinite, or when it left a parameter that is
(an infinite gradient turns the weights into NaN while the loss that made it was finite).

- `stop` (the default): raise NonFiniteError, which names the step and the checkpoint the run can
  be resumed from; the loop writes nothing more, so the last good checkpoint stays the newest.
- `skip`: undo the step (the state from before it is restored: weights, alphas, optimisers,
  schedules) and go on with the next batch; every skipped step is counted in the epoch record.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

MODES = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """A step produced a NaN or infinite loss or parameter under `run.on_nonfinite = "stop"`."""


def _finite_parameters(params: Iterable[torch.Tensor]) -> bool:
    # One sum per tensor and one host sync: a NaN or inf anywhere makes its sum non-finite.
    sums = [p.detach().sum() for p in params]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())


class NonFiniteGuard:
    """Runs the steps of one epoch of a loop under `run.on_nonfinite`.

    `owner` has state_dict()/load_state_dict() (the trainer or strategy: everything a step
    changes); `parameters()` gives the tensors to check after each step; `run` is the run
    directory (its checkpoint and resume command go into the error).
    """

    def __init__(
        self, mode: str, owner: Any, parameters: Callable[[], Iterable[torch.Tensor]], run
    ):
        if mode not in MODES:
            raise ValueError(f"run.on_nonfinite must be one of {MODES}, got {mode!r}")
        self.mode, self.owner, self.parameters, self.run = mode, owner, parameters, run
        self.skipped = self.done = 0

    def run_step(
        self, step: Callable[[], Any], losses: Callable[[Any], dict[str, float]], where: str
    ):
        """`step()`'s result, or None when it diverged and was undone (`skip`)."""
        before = copy.deepcopy(self.owner.state_dict()) if self.mode == "skip" else None
        out = step()
        bad = [f"{k} = {v}" for k, v in losses(out).items() if not math.isfinite(v)]
        if not bad and not _finite_parameters(self.parameters()):
            bad = ["a parameter"]
        if not bad:
            self.done += 1
            return out
        if self.mode == "stop":
            raise NonFiniteError(
                f"{where}: the step diverged (not finite: {', '.join(bad)}) and the run stopped "
                f"(run.on_nonfinite = 'stop'). {self._advice()}, or set run.on_nonfinite = "
                "'skip' to skip such steps."
            )
        self.owner.load_state_dict(before)
        self.skipped += 1
        return None

    def finish(self, where: str) -> dict[str, int]:
        """After the epoch: its record's `skipped_steps` (under `skip`); an error when every
        step was skipped, since nothing was learnt."""
        if self.mode == "stop":
            return {}
        if self.skipped and not self.done:
            raise NonFiniteError(
                f"{where}: every one of its {self.skipped} steps diverged and was skipped "
                f"(run.on_nonfinite = 'skip'). {self._advice()}."
            )
        return {"skipped_steps": self.skipped}

    def _advice(self) -> str:
        if self.run.has_checkpoint():
            return (
                "Lower the learning rates (or set a gradient clip) in the run's config.toml and "
                f"resume from its last good checkpoint with `{self.run.resume_command()}`"
            )
        return "Start the run again with lower learning rates (or a gradient clip)"
