"""Regularisers that pull the architecture weights toward a discrete genotype (DARTS-PRIME),
added to the validation loss of the alpha step. Chosen by name from `REGULARIZERS`.

Both need P(w), the projection of edge weights onto the discrete set: the one-hot weights of the
genotype the space's derivation rule reads off w (`supernet.project(weights)`).

- `prox`: (t/T) * (rho/2) * sum over cell types of ||w - P(w)||_F (the norm is not squared),
  with t/T the fraction of the search done, so it ramps up linearly from 0.
- `beta` (beta-DARTS, Ye et al., CVPR 2022): lambda (t/T) * sum over cell types of the mean
  over edges of logsumexp(alpha_e), over the live ops; its gradient, lambda (t/T) softmax(alpha)
  / edges, decays every alpha by its share of the edge, which keeps the alphas' spread (and so
  the softmax) from running away; as in its code, lambda = `search.beta_lambda` (50) ramps up
  linearly from 0 over the search. Meant for `search.activation = softmax`.
- `admm`: (rho/2) * sum ||(w - Z + U) * M||_F with a discrete copy Z (initialised to P(w) of
  the starting weights) and a scaled dual U (initialised to 0), M the pruning mask; every
  `admm_every` alpha steps Z <- P(w(alpha + U)) and U <- gamma * U + (alpha - Z), masked, as in
  the DARTS-PRIME code (gamma = 1 is textbook scaled ADMM).
"""

from __future__ import annotations

import torch

from diffnas.registry import Registry

REGULARIZERS: Registry = Registry("architecture regulariser")


def distance_to_discrete(weights: dict[str, torch.Tensor], projected) -> torch.Tensor:
    """sum over cell types of ||w - P(w)||_F."""
    return sum(torch.linalg.norm(w - projected[k]) for k, w in weights.items())


@REGULARIZERS.register("none")
class NoRegularizer:
    """Plain DARTS: nothing added."""

    def __init__(self, cfg, model, arch):
        pass

    def penalty(self, progress: float) -> torch.Tensor | None:
        """The term added to the validation loss (None: nothing)."""
        return None

    def after_alpha_step(self) -> None:
        """Called after every alpha step."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@REGULARIZERS.register("prox")
class ProximityRegularizer(NoRegularizer):
    """(t/T) (rho/2) ||w - P(w)||_F, P(w) the one-hot current genotype (held constant)."""

    def __init__(self, cfg, model, arch):
        self.rho, self.model, self.arch = cfg.reg_rho, model, arch

    def penalty(self, progress: float) -> torch.Tensor:
        weights = self.arch.weights()
        with torch.no_grad():
            target = self.model.project(weights)
        return progress * self.rho / 2 * distance_to_discrete(weights, target)


@REGULARIZERS.register("beta")
class BetaDecayRegularizer(NoRegularizer):
    """beta-DARTS' beta-decay: (t/T) lambda sum_cells mean_edges logsumexp(alpha_e)."""

    def __init__(self, cfg, model, arch):
        self.lam, self.arch = cfg.beta_lambda, arch

    def penalty(self, progress: float) -> torch.Tensor:
        masks, total = self.arch.masks(), 0.0
        for k, a in self.arch.alphas().items():
            live = a.masked_fill(masks[k] == 0, float("-inf"))
            total = total + torch.logsumexp(live, dim=-1).mean()
        return progress * self.lam * total


@REGULARIZERS.register("admm")
class AdmmRegularizer(NoRegularizer):
    """(rho/2) ||(w - Z + U) * M||_F with the ADMM updates of Z and U every k alpha steps."""

    def __init__(self, cfg, model, arch):
        self.rho, self.every, self.gamma = cfg.reg_rho, cfg.admm_every, cfg.admm_gamma
        self.model, self.arch = model, arch
        with torch.no_grad():
            self.Z = {k: z.clone() for k, z in model.project(arch.weights()).items()}
        self.U = {k: torch.zeros_like(z) for k, z in self.Z.items()}
        self.alpha_steps = 0

    def penalty(self, progress: float) -> torch.Tensor:
        masks = self.arch.masks()
        return (
            self.rho
            / 2
            * sum(
                torch.linalg.norm((w - self.Z[k] + self.U[k]) * masks[k])
                for k, w in self.arch.weights().items()
            )
        )

    @torch.no_grad()
    def after_alpha_step(self) -> None:
        self.alpha_steps += 1
        if self.alpha_steps % self.every:
            return
        alphas, masks = self.arch.alphas(), self.arch.masks()
        shifted = self.arch.weights_of({k: a + self.U[k] for k, a in alphas.items()})
        self.Z = {k: z.clone() for k, z in self.model.project(shifted).items()}
        self.U = {
            k: (self.gamma * self.U[k] + (a - self.Z[k])) * masks[k] for k, a in alphas.items()
        }

    def state_dict(self) -> dict:
        return {"Z": self.Z, "U": self.U, "alpha_steps": self.alpha_steps}

    def load_state_dict(self, state: dict) -> None:
        self.Z, self.U = dict(state["Z"]), dict(state["U"])
        self.alpha_steps = state["alpha_steps"]
