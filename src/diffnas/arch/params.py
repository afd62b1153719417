"""Architecture parameters (the alphas) and the activations that turn them into edge weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions.dirichlet import _Dirichlet_backward

from diffnas.registry import Registry


@dataclass(frozen=True)
class Activation:
    """How alphas become edge weights, and what that implies for the search.

    `init_center(n_ops)` is the mean of the initial alphas of an edge with n_ops candidates;
    `prunes`: ops whose alpha reaches 0 are removed for good (`ArchParameters.prune`);
    `uses_none`: whether the space keeps its `none` op (a clipped weight of 0 already is "none");
    `sample(alphas, generator, progress, search_cfg)`: edge weights drawn for one search step
    (GDAS, DrNAS), differentiable in the alphas; None: search steps use `fn` as derivation and
    evaluation do.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    init_center: Callable[[int], float]
    prunes: bool = False
    uses_none: bool = True
    sample: Callable[[torch.Tensor, torch.Generator, float, Any], torch.Tensor] | None = None


def _uniform(a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """U(0, 1) noise shaped like `a`, drawn on the CPU from `gen` (the same on every device)."""
    u = torch.rand(a.shape, generator=gen, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return u.to(a.device, a.dtype)


def gumbel_hard(a: torch.Tensor, gen: torch.Generator, progress: float, cfg) -> torch.Tensor:
    """GDAS (Dong and Yang, CVPR 2019): per edge a one-hot sample of Gumbel-softmax(alpha / tau),
    its gradient that of the soft sample (straight-through); tau falls linearly from
    `search.gumbel_tau_max` to `search.gumbel_tau_min` over the search. The other ops' weights
    are exactly 0, so only the sampled op runs."""
    tau = cfg.gumbel_tau_max - (cfg.gumbel_tau_max - cfg.gumbel_tau_min) * progress
    gumbel = -torch.log(-torch.log(_uniform(a, gen)))
    soft = torch.softmax((torch.log_softmax(a, dim=-1) + gumbel) / tau, dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class _SeededDirichlet(torch.autograd.Function):
    """A reparameterised Dirichlet sample from a given CPU generator (torch's own draws from the
    global one); the backward is torch's implicit reparameterisation gradient."""

    @staticmethod
    def forward(ctx, concentration, gen):
        x = torch._sample_dirichlet(concentration.detach().double().cpu(), generator=gen)
        x = x.to(concentration.device, concentration.dtype)
        ctx.save_for_backward(x, concentration)
        return x

    @staticmethod
    def backward(ctx, grad):
        x, concentration = ctx.saved_tensors
        return _Dirichlet_backward(x, concentration, grad), None


def dirichlet_sample(a: torch.Tensor, gen: torch.Generator, progress: float, cfg) -> torch.Tensor:
    """DrNAS (Chen et al., ICLR 2021): edge weights sampled from Dirichlet(elu(alpha) + 1)."""
    return _SeededDirichlet.apply(F.elu(a) + 1, gen)


def dirichlet_mean(a: torch.Tensor) -> torch.Tensor:
    """The mean of Dirichlet(elu(alpha) + 1): the deterministic edge weights (derivation,
    evaluation); its argmax is that of the alphas."""
    c = F.elu(a) + 1
    return c / c.sum(-1, keepdim=True)


ACTIVATIONS: Registry = Registry("architecture activation")
ACTIVATIONS.add(
    "softmax", Activation(lambda a: torch.softmax(a, dim=-1), init_center=lambda n: 0.0)
)
# DARTS-PRIME's "CRB": w = clip(alpha, 0, 1) per op, no competition inside an edge, alphas start at
# 1/|O| (+ noise), and an op whose alpha reaches 0 is pruned for good. No `none` op.
# GDAS: one sampled op per edge and step; derivation and evaluation read softmax(alpha).
ACTIVATIONS.add(
    "gumbel",
    Activation(lambda a: torch.softmax(a, dim=-1), init_center=lambda n: 0.0, sample=gumbel_hard),
)
# DrNAS: weights sampled from a Dirichlet whose concentration the alphas learn.
ACTIVATIONS.add(
    "dirichlet", Activation(dirichlet_mean, init_center=lambda n: 0.0, sample=dirichlet_sample)
)
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

    @property
    def samples(self) -> bool:
        """Whether search steps draw their edge weights (`sampled_weights`)."""
        return self._act.sample is not None

    def sampled_weights(self, gen: torch.Generator, progress: float, cfg) -> dict:
        """Edge weights drawn for one search step (the activation's `sample`; `weights()` when
        it has none): masked ops stay 0 (the mask multiplies the sample, as it does `fn`), and
        projected edges keep their fixed weights."""
        if self._act.sample is None:
            return self.weights()
        weights = {
            n: self._act.sample(a, gen, progress, cfg) * getattr(self, f"mask_{n}")
            for n, a in self.alphas().items()
        }
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
