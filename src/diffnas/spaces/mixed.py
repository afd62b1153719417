"""The mixed edge shared by the CNN supernets: a weighted sum of candidate ops."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.ops import make_op
from diffnas.ops.cnn import DepthwiseConv2d, Pool, depthwise_pointwise


class StateCache:
    """Per-input work shared by every op on every edge that reads the same state: one ReLU
    (all convs start with it) and one pooling per (kind, stride) (pools have no parameters)."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self._relu: torch.Tensor | None = None
        self._pooled: dict[tuple, torch.Tensor] = {}

    def relu(self) -> torch.Tensor:
        """relu(x), computed once."""
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    def pooled(self, pool: nn.Module) -> torch.Tensor:
        """pool(x), computed once per pooling kind and stride."""
        key = (type(pool.pool).__name__, str(pool.pool.stride))
        if key not in self._pooled:
            self._pooled[key] = pool(self.x)
        return self._pooled[key]


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The modules a (nested) Sequential applies, in order."""
    if isinstance(module, nn.Sequential):
        return [leaf for m in module for leaf in _leaves(m)]
    return [module]


def _is_pointwise(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.groups == 1
        and m.bias is None
    )


def fuse_pairs(body: list[nn.Module]) -> list:
    """The modules of an op body, each depthwise conv followed by a pointwise one as a single
    `depthwise_pointwise` step (which keeps less for the backward)."""
    steps, i = [], 0
    while i < len(body):
        if (
            isinstance(body[i], DepthwiseConv2d)
            and i + 1 < len(body)
            and _is_pointwise(body[i + 1])
        ):
            steps.append(functools.partial(depthwise_pointwise, body[i], body[i + 1]))
            i += 2
        else:
            steps.append(body[i])
            i += 1
    return steps


def weighted_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """w * bn(x) for a non-affine BN, in one kernel: w becomes the BN's scale.

    Follows nn.BatchNorm2d.forward exactly (running statistics, momentum, eval mode).
    """
    if type(bn) is not nn.BatchNorm2d:  # e.g. the synchronised BN of a distributed search
        return bn(x) * w
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    return F.batch_norm(
        x,
        bn.running_mean if keep else None,
        bn.running_var if keep else None,
        # contiguous: the CPU channels_last BN backward misreads a stride-0 weight (torch 2.13).
        w.expand(x.shape[1]).contiguous(),
        None,
        use_batch_stats,
        momentum,
        bn.eps,
    )


class MixedOp(nn.Module):
    """m(x) = sum_o w_o * o(x) over the ops whose weight is not exactly zero.

    `none` and zero-weight ops are never run: they cost nothing and receive no gradient
    (their contribution and its derivative w.r.t. the input are zero). The fast path computes
    the same function as `reference_forward` with less work: the leading ReLU and pooling are
    shared through a `StateCache`, w_o is folded into each op's final non-affine BN, and each
    depthwise-then-pointwise conv pair recomputes its middle tensor in the backward instead of
    keeping it (`depthwise_pointwise`).
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
        self._plans = [self._plan(op) for op in self.ops]

    @staticmethod
    def _plan(op: nn.Module) -> tuple[str, list[nn.Module], nn.Module | None]:
        # (how the op starts, the modules in between, a final non-affine BN to fold w into)
        leaves = _leaves(op)
        start = "x"
        if isinstance(leaves[0], nn.ReLU):
            start, leaves = "relu", leaves[1:]
        elif isinstance(leaves[0], Pool) and leaves[0].pre is None:
            start, leaves = "pool", leaves
        bn = None
        if leaves and isinstance(leaves[-1], nn.BatchNorm2d) and not leaves[-1].affine:
            bn, leaves = leaves[-1], leaves[:-1]
        return start, fuse_pairs(leaves), bn

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, active: list[bool], cache: StateCache | None = None
    ) -> torch.Tensor | None:
        """Weighted sum of the active ops; None when no op is active (the edge is cut)."""
        cache = cache if cache is not None else StateCache(x)
        out = None
        for i, (start, body, bn) in enumerate(self._plans):
            if not active[i] or self.is_none[i]:
                continue
            if start == "relu":
                y = cache.relu()
            elif start == "pool":
                y, body = cache.pooled(body[0]), body[1:]
            else:
                y = x
            for m in body:
                y = m(y)
            # Terms are summed in place into the first one, a tensor made here (BN and
            # multiplication outputs are not saved for the backward): no fresh allocation per
            # term, and w * y joins the sum in one pass (addcmul).
            if bn is not None:
                y = weighted_batch_norm(bn, y, w[i])
                out = y if out is None else out.add_(y)
            else:
                out = y * w[i] if out is None else out.addcmul_(y, w[i])
        return out

    def reference_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The plain definition, every op run (the test oracle for the fast path)."""
        return sum(w[i] * op(x) for i, op in enumerate(self.ops))


def active_mask(weights: torch.Tensor) -> list[list[bool]]:
    """Per edge and op: is the weight non-zero? One host sync per weight tensor."""
    return (weights != 0).tolist()


def sum_or_zeros(
    terms: list[torch.Tensor | None], like: torch.Tensor, shape, fresh: bool = False
) -> torch.Tensor:
    """Sum the non-None terms; zeros of `shape` when every incoming edge is cut. `fresh`: the
    terms are tensors nothing else holds (MixedOp outputs), so they are summed in place into
    the first."""
    out = None
    for t in terms:
        if t is not None:
            if out is None:
                out = t
            else:
                out = out.add_(t) if fresh else out + t
    if out is None:
        out = like.new_zeros(shape)
    return out
