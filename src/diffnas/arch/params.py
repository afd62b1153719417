"""Architecture parameters (the alphas) and the activations that turn them into edge weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diffnas.registry import Registry


@dataclass(frozen=True)
class Activation:
    """How alphas become edge weights, and what that implies for the search.

    `init_center(n_ops)` is the mean of the initial alphas of an edge with n_ops candidates;
    `prunes`: ops whose alpha reaches 0 are removed for good (`ArchParameters.prune`);
    `uses_none`: whether the space keeps its `none` op (a clipped weight of 0 already is "none").
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    init_center: Callable[[int], float]
    prunes: bool = False
    uses_none: bool = True


ACTIVATIONS: Registry = Registry("architecture activation")
ACTIVATIONS.add(
    "softmax", Activation(lambda a: torch.softmax(a, dim=-1), init_center=lambda n: 0.0)
)
# DARTS-PRIME's "CRB": w = clip(alpha, 0, 1) per op, no competition inside an edge, alphas start at
# 1/|O| (+ noise), and an op whose alpha reaches 0 is pruned for good. No `none` op.
ACTIVATIONS.add(
    "clip",
    Activation(
        lambda a: a.clamp(0.0, 1.0), init_center=lambda n: 1.0 / n, prunes=True, uses_none=False
    ),
)


class ArchParameters(nn.Module):
    """The alphas of a supernet, one tensor per cell type (`alphas_normal`, `alphas_cell`, ...).

    `weights()` returns the edge weights the supernet's forward takes. A `mask` (1 = op alive)
    multiplies them, so selection can fix or remove ops without touching the alphas. During
    selection, `projection` (an object with `apply(weights) -> weights`, see
    `diffnas.select.projection`) replaces the weights of decided edges by fixed ones, so that the
    forward, the architect and the genotype all see the projected supernet.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        activation: str = "softmax",
        init_std: float = 1e-3,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.activation = activation
        self._act = ACTIVATIONS.get(activation)
        self.names = tuple(shapes)
        for name, shape in shapes.items():
            init = self._act.init_center(shape[-1]) + init_std * torch.randn(
                shape, generator=generator
            )
            self.register_parameter(f"alphas_{name}", nn.Parameter(init))
            self.register_buffer(f"mask_{name}", torch.ones(shape))
        self.projection = None  # not part of the state_dict: selection saves its own

    def alphas(self) -> dict[str, torch.Tensor]:
        """The raw architecture parameters by cell type."""
        return {n: getattr(self, f"alphas_{n}") for n in self.names}

    def masks(self) -> dict[str, torch.Tensor]:
        """The 0/1 op masks by cell type."""
        return {n: getattr(self, f"mask_{n}") for n in self.names}

    def weights(self) -> dict[str, torch.Tensor]:
        """Edge weights: activation(alphas) * mask."""
        return self.weights_of(self.alphas())

    def weights_of(self, alphas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The edge weights that `alphas` (by cell type) would give, with this activation and
        these masks (and the projection's fixed edges, when there is one)."""
        weights = {n: self._act.fn(a) * getattr(self, f"mask_{n}") for n, a in alphas.items()}
        return weights if self.projection is None else self.projection.apply(weights)

    @torch.no_grad()
    def prune(self) -> int:
        """With a pruning activation: set alphas <= 0 to 0 and remove those ops for good (mask 0).
        Returns the number of ops alive afterwards."""
        alive = 0
        for name, a in self.alphas().items():
            mask = getattr(self, f"mask_{name}")
            if self._act.prunes:
                dead = a <= 0
                a[dead] = 0.0
                mask[dead] = 0.0
            alive += int(mask.sum().item())
        return alive
