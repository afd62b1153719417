"""Architecture parameters (the alphas) and the activations that turn them into edge weights."""

from __future__ import annotations

import torch
from torch import nn

from diffnas.registry import Registry

ACTIVATIONS: Registry = Registry("architecture activation")
ACTIVATIONS.add("softmax", lambda a: torch.softmax(a, dim=-1))


class ArchParameters(nn.Module):
    """The alphas of a supernet, one tensor per cell type (`alphas_normal`, `alphas_cell`, ...).

    `weights()` returns the edge weights the supernet's forward takes. A `mask` (1 = op alive)
    multiplies them, so selection can fix or remove ops without touching the alphas.
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
            init = init_std * torch.randn(shape, generator=generator)
            self.register_parameter(f"alphas_{name}", nn.Parameter(init))
            self.register_buffer(f"mask_{name}", torch.ones(shape))

    def alphas(self) -> dict[str, torch.Tensor]:
        """The raw architecture parameters by cell type."""
        return {n: getattr(self, f"alphas_{n}") for n in self.names}

    def masks(self) -> dict[str, torch.Tensor]:
        """The 0/1 op masks by cell type."""
        return {n: getattr(self, f"mask_{n}") for n in self.names}

    def weights(self) -> dict[str, torch.Tensor]:
        """Edge weights: activation(alphas) * mask."""
        return {n: self._act(a) * getattr(self, f"mask_{n}") for n, a in self.alphas().items()}
