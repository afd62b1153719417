"""DARTS-PT's schedule: at which tuning epochs the decisions happen, and how many epochs in all.

Both reference implementations decide at the start of an epoch, every `proj_intv` epochs, and
tune one epoch after the last decision:

- DARTS spaces (sota/cnn/projection.py): 14 op steps (one normal and one reduction edge each)
  and 3 node steps, `proj_intv * (14 + 3 - 1) + 1` = 81 tuning epochs at `proj_intv` 5, op
  decisions at epochs 0, 5, ..., 65 and node decisions at 70, 75, 80;
- NAS-Bench-201 (nasbench201/projection.py): 6 op steps and no node step,
  `proj_intv * (6 - 1)` = 25 tuning epochs, decisions at 0, 5, 10, 15, 20 and 24.
"""

from __future__ import annotations

from dataclasses import dataclass

OP, NODE = "op", "node"


@dataclass(frozen=True)
class Schedule:
    """The tuning epochs and, in order, the (epoch, kind) of every decision step."""

    tune_epochs: int
    decisions: tuple[tuple[int, str], ...]

    def kind_at(self, epoch: int) -> str | None:
        """`"op"` or `"node"` when a decision step opens `epoch`, else None."""
        return dict(self.decisions).get(epoch)

    def step_at(self, epoch: int) -> int:
        """The index of the decision step at `epoch` (which must be a decision epoch)."""
        return [e for e, _ in self.decisions].index(epoch)


def pt_schedule(op_steps: int, node_steps: int, proj_intv: int) -> Schedule:
    """The schedule of `op_steps` op decision steps followed by `node_steps` node steps.

    With node steps (the DARTS spaces) decisions are `proj_intv` epochs apart and one epoch
    follows the last. Without (NB201) the reference code tunes `proj_intv * (op_steps - 1)`
    epochs and takes the last decision at the last epoch; with `proj_intv` 1 that would put two
    decisions at one epoch, so the last one then moves one epoch later (an extra epoch).
    """
    if op_steps < 1 or node_steps < 0 or proj_intv < 1:
        raise ValueError(
            f"need op_steps >= 1, node_steps >= 0 and proj_intv >= 1, got {op_steps}, "
            f"{node_steps}, {proj_intv}"
        )
    kinds = [OP] * op_steps + [NODE] * node_steps
    n = len(kinds)
    if node_steps or n == 1:
        epochs = [proj_intv * k for k in range(n)]
    else:
        last = max(proj_intv * (n - 1) - 1, proj_intv * (n - 2) + 1)
        epochs = [proj_intv * k for k in range(n - 1)] + [last]
    return Schedule(epochs[-1] + 1, tuple(zip(epochs, kinds, strict=True)))
