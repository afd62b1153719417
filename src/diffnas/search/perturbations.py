"""Smoothed DARTS (SDARTS; Chen and Hsieh, ICML 2020): the weight step of a DARTS search runs
on perturbed edge weights, so the supernet's weights are trained for a neighbourhood of the
architecture rather than for one point of it, which flattens the validation loss around the
alphas and keeps the derived cell from collapsing. Chosen by `search.perturb`:

- `none`: plain DARTS.
- `random` (SDARTS-RS): the edge weights plus uniform noise U(-eps, eps) per entry.
- `adversarial` (SDARTS-ADV): the worst perturbation within the L-infinity ball of radius eps,
  found by `search.perturb_steps` steps of projected sign-gradient ascent on the training loss
  (step 2 eps / steps, random start, model in eval mode); kept only if it raises the loss.

eps grows linearly over the search from `search.perturb_epsilon_start` to
`search.perturb_epsilon`. After every change the weights of each edge are clipped to [0, 1] and
renormalised to sum 1. Entries that are exactly 0 (an op pruned by `clip`, an edge projected
by DARTS-PT, an op a space leaves out) stay 0: a perturbation never revives an op, and the
supernet's skip of zero-weight ops stays exact. Noise comes from the perturbation's own seeded
generator, saved in the strategy's checkpoint, so a resumed search draws the same noise.
"""

from __future__ import annotations

import torch

from diffnas.registry import Registry

PERTURBATIONS: Registry = Registry("architecture perturbation")


def project(weights: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """Each edge (row) clipped to [0, 1] on its live entries and renormalised to sum 1; an edge
    whose live entries all clip to 0 gets its largest entry back (as SDARTS does)."""
    w = weights.clamp(0, 1) * live
    total = w.sum(-1, keepdim=True)
    dead = total == 0
    if dead.any():
        best = torch.where(live.bool(), weights, torch.full_like(weights, -torch.inf))
        fallback = torch.zeros_like(w).scatter_(-1, best.argmax(-1, keepdim=True), 1.0) * live
        w = torch.where(dead, fallback, w)
        total = w.sum(-1, keepdim=True)
    return w / total.clamp_min(torch.finfo(w.dtype).tiny)


@PERTURBATIONS.register("none")
class NoPerturbation:
    """Plain DARTS: the weight step sees the edge weights as they are."""

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(seed)

    def epsilon(self, progress: float) -> float:
        """The radius at `progress` (the fraction of the search done)."""
        lo, hi = self.cfg.perturb_epsilon_start, self.cfg.perturb_epsilon
        return lo + (hi - lo) * min(max(progress, 0.0), 1.0)

    def __call__(self, weights, loss_fn, progress: float):
        """The edge weights the weight step trains on; `loss_fn(weights)` is the training loss
        of the step's batch (for the adversarial perturbation)."""
        return weights

    def _noise(self, w: torch.Tensor, eps: float) -> torch.Tensor:
        # Drawn on the CPU from the own generator, so the noise is the same on every device.
        u = torch.rand(w.shape, generator=self.gen, dtype=torch.float64) * 2 - 1
        return (u * eps).to(w.device, w.dtype)

    def state_dict(self) -> dict:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.gen.set_state(state["generator"])


@PERTURBATIONS.register("random")
class RandomPerturbation(NoPerturbation):
    """SDARTS-RS: uniform noise of radius eps on every live entry."""

    def __call__(self, weights, loss_fn, progress: float):
        eps = self.epsilon(progress)
        out = {}
        for k, w in weights.items():
            live = (w != 0).to(w.dtype)
            out[k] = project(w + self._noise(w, eps) * live, live)
        return out


@PERTURBATIONS.register("adversarial")
class AdversarialPerturbation(NoPerturbation):
    """SDARTS-ADV: projected sign-gradient ascent on the training loss within radius eps."""

    def __call__(self, weights, loss_fn, progress: float):
        eps, steps = self.epsilon(progress), self.cfg.perturb_steps
        live = {k: (w != 0).to(w.dtype) for k, w in weights.items()}
        with torch.no_grad():
            before = float(loss_fn(weights))
        current = {
            k: project(w + self._noise(w, eps) * live[k], live[k]) for k, w in weights.items()
        }
        for _ in range(steps):
            leaves = {k: w.detach().requires_grad_() for k, w in current.items()}
            grads = torch.autograd.grad(loss_fn(leaves), list(leaves.values()), allow_unused=True)
            for (k, w), g in zip(leaves.items(), grads, strict=True):
                step = torch.zeros_like(w) if g is None else g.sign() * (2 * eps / steps)
                moved = weights[k] + (w.detach() + step - weights[k]).clamp(-eps, eps)
                current[k] = project(moved * live[k], live[k])
        with torch.no_grad():
            after = float(loss_fn(current))
        return current if after >= before else weights
