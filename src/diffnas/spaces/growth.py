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

import contextlib
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


# ---------------------------------------------------------------------------------------------
# Node presence: how the recurrent cells grow function-preserving
# ---------------------------------------------------------------------------------------------


class NodePresence:
    """A mixin for a cell whose output reads its nodes (all of them, or the last one), with a
    presence p_k in [0, 1] per node: 1 for every node of a fixed-size cell, 0 for a node just
    added by growth (so the output is exactly what it was), then ramped to 1 by the grower
    (`search.grow_ramp_epochs`). The presences are plain floats (no device sync per forward);
    they are the grower's state, not the module's (a fixed-size cell's are all 1)."""

    presence: list[float]

    def present_mean(self, states: list[torch.Tensor]) -> torch.Tensor:
        """The presence-weighted mean of the nodes' states (the plain mean when all are 1)."""
        if all(p == 1.0 for p in self.presence):
            return torch.stack(states).mean(0)
        live = [(s, p) for s, p in zip(states, self.presence, strict=True) if p > 0]
        total = sum(p for _, p in live)
        out = live[0][0] * (live[0][1] / total)
        for s, p in live[1:]:
            out = out + s * (p / total)
        return out

    def present_last(self, states: list[torch.Tensor]) -> torch.Tensor:
        """The last node's state, blended while it ramps in: h = h_prev + p (s_k - h_prev)
        over the nodes in order (the last node itself when all are 1)."""
        h = states[0]
        for s, p in zip(states[1:], self.presence[1:], strict=True):
            if p == 1.0:
                h = s
            elif p > 0:
                h = h + p * (s - h)
        return h


@contextlib.contextmanager
def forked_rng(seed: int | None):
    """A context in which torch's CPU generator is seeded by `seed` and restored after (nothing
    when seed is None): growth draws new modules there, off the global stream."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
