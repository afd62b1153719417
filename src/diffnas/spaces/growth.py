"""The growth interface of a supernet: growing cells by network morphism.

A space whose cells can grow (`diffnas.search.growing` drives it) gives its supernet three methods:

- `num_nodes() -> int`: the intermediate nodes of a cell now;
- `growth_blocker() -> str | None`: why this supernet cannot grow (None: it can);
- `grow(seed) -> Growth`: add one intermediate node to every cell, in place.

The contract of `grow` (tested for every space that implements it):

- function preservation: in eval mode, `forward(x, w2)` equals `forward(x, w)` within float
  tolerance, where `w2` extends `w` by rows for the new edges, whatever their values;
- `arch_shapes()` gives the new shapes afterwards: each tensor keeps its old rows first and gains
  rows at the end of dim 0 (the new node's edges), so old alphas keep their index;
- a parameter whose tensor must grow is replaced by a new one, listed as `(old, new)` in
  `Growth.replaced`, with the old values in the leading slice of the new one
  (`new[:n0, :n1, ...] == old`): optimiser state carries over by zero-padding (`pad_to`);
- the parameters of new modules are listed in `Growth.added`;
- the random initialisation of new modules draws from a generator seeded by `seed` (None: the
  global one), never from the global stream when a seed is given, so a resumed run that replays
  the growth builds the same modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Growth:
    """What one growth step changed: the new size, replaced and added parameters."""

    nodes: int
    replaced: list[tuple[nn.Parameter, nn.Parameter]] = field(default_factory=list)
    added: list[nn.Parameter] = field(default_factory=list)


def leading_slice(shape) -> tuple[slice, ...]:
    """The index of a tensor of `shape` inside a larger one that holds it first on every dim."""
    return tuple(slice(0, n) for n in shape)


def pad_to(t: torch.Tensor, shape) -> torch.Tensor:
    """`t` zero-padded at the end of every dim to `shape` (same dtype, device, memory format)."""
    shape = tuple(shape)
    if t.dim() != len(shape) or any(n < m for n, m in zip(shape, t.shape, strict=True)):
        raise ValueError(f"cannot pad a tensor of shape {tuple(t.shape)} to {shape}")
    out = t.new_zeros(shape)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    out[leading_slice(t.shape)] = t
    return out


def widen_input(module: nn.Module, extra: int, growth: Growth) -> None:
    """Give a Conv2d (groups 1) or Linear `extra` more input channels at the end, with zero
    weights, so that whatever arrives on them changes nothing; record the replaced weight."""
    old = module.weight
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError("widen_input: grouped convolutions cannot be widened by padding")
        module.in_channels += extra
    elif isinstance(module, nn.Linear):
        module.in_features += extra
    else:
        raise TypeError(f"widen_input: expected Conv2d or Linear, got {type(module).__name__}")
    shape = (old.shape[0], old.shape[1] + extra, *old.shape[2:])
    new = nn.Parameter(pad_to(old.detach(), shape), requires_grad=old.requires_grad)
    module.weight = new
    growth.replaced.append((old, new))
