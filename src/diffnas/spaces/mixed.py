"""The mixed edge shared by the CNN supernets: a weighted sum of candidate ops."""

from __future__ import annotations

import torch
from torch import nn

from diffnas.ops import make_op


class MixedOp(nn.Module):
    """m(x) = sum_o w_o * o(x) over the ops whose weight is not exactly zero.

    `none` and zero-weight ops are never run: they cost nothing and receive no gradient
    (their contribution and its derivative w.r.t. the input are zero).
    """

    def __init__(self, C_in, C_out, stride, op_names, pool_bn=False):
        super().__init__()
        self.op_names = tuple(op_names)
        ops = []
        for name in self.op_names:
            op = make_op(name, C_in, C_out, stride, affine=False)
            if pool_bn and "pool" in name:
                # DARTS: pooling has no parameters; a BN aligns its scale with the convs'.
                op = nn.Sequential(op, nn.BatchNorm2d(C_out, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.is_none = tuple(name == "none" for name in self.op_names)

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[bool]) -> torch.Tensor | None:
        """Weighted sum of the active ops; None when no op is active (the edge is cut)."""
        out = None
        for i, op in enumerate(self.ops):
            if active[i] and not self.is_none[i]:
                y = op(x) * w[i]
                out = y if out is None else out + y
        return out

    def reference_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The plain definition, every op run (the test oracle for the fast path)."""
        return sum(w[i] * op(x) for i, op in enumerate(self.ops))


def active_mask(weights: torch.Tensor) -> list[list[bool]]:
    """Per edge and op: is the weight non-zero? One host sync per weight tensor."""
    return (weights != 0).tolist()


def sum_or_zeros(terms: list[torch.Tensor | None], like: torch.Tensor, shape) -> torch.Tensor:
    """Sum the non-None terms; zeros of `shape` when every incoming edge is cut."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    if out is None:
        out = like.new_zeros(shape)
    return out
