"""The DARTS architecture step: first order, or second order through the unrolled weight step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call

from diffnas.arch import ArchParameters
from diffnas.search.objectives import ImageObjective, Objective

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Turns this process's gradients into the global ones (an all-reduce mean under torch.distributed).
GradReduce = Callable[[list[torch.Tensor]], list[torch.Tensor]]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """The model's parameters do not require grad inside the block (restored after).

    A pass recorded inside computes and saves nothing for weight gradients: autograd already
    skips those of built-in ops when only the alphas' gradient is asked for, but a custom
    Function (the fast depthwise conv) decides at forward time from `requires_grad`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def no_reduce(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The GradReduce of a single process: the gradients as they are."""
    return grads


def _grads_or_zeros(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params, zeros for the params the loss does not depend on (every edge already
    decided, as at the end of a perturbation selection)."""
    if not loss.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


class Architect:
    """Computes the gradient of the validation loss w.r.t. the alphas and takes an alpha step.

    Second order follows DARTS: w' = w - xi * (momentum * buf + dL_train/dw + wd * w), i.e. the
    weight optimiser's own next SGD step, then
    dL_val(w', a)/da - xi * [dL_train(w+, a)/da - dL_train(w-, a)/da] / (2 eps),
    with w+- = w +- eps * dL_val(w', a)/dw' and eps = eps_scale / ||dL_val(w', a)/dw'||.
    All second-order passes go through `torch.func.functional_call` with cloned buffers, so
    neither the real weights nor the BN running statistics are modified by them.

    `grad_reduce` makes per-process gradients global in data-parallel search: it is applied to
    the alpha gradient of order 1 and, in order 2, to the train gradient of the virtual step, to
    (dL_val/dalpha, v = dL_val/dw') before eps = eps_scale / ||v|| and the w+- steps, and to the
    finite-difference alpha gradients; so every rank computes what one process would compute
    on the global batch.

    `loss_fn` is a loss of (logits, y) (image classification) or an `Objective`, which owns how
    a batch becomes a loss (e.g. a language model's hidden state per stream). With
    `virtual_clip` > 0 the virtual step clips its gradient to that norm, as the real step does
    (the original RNN architect): w' = w - xi * (c * g + ...), c = min(1, clip / ||g||), and
    the finite-difference term is scaled by c (c held constant, as there).
    """

    def __init__(
        self,
        model: nn.Module,
        arch: ArchParameters,
        a_optimizer: torch.optim.Optimizer,
        w_optimizer: torch.optim.SGD,
        loss_fn: LossFn,
        order: int = 1,
        eps_scale: float = 0.01,
        grad_reduce: GradReduce | None = None,
        penalty: Callable[[], torch.Tensor | None] | None = None,
        virtual_clip: float = 0.0,
        weights: Callable[[], dict[str, torch.Tensor]] | None = None,
    ):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        # The edge weights of an alpha step's pass (drawn anew per pass by GDAS and DrNAS).
        self.edge_weights = weights or arch.weights
        self.model, self.arch, self.loss_fn, self.order = model, arch, loss_fn, order
        self.objective = loss_fn if isinstance(loss_fn, Objective) else ImageObjective(loss_fn)
        self.virtual_clip = virtual_clip
        self.a_optimizer, self.w_optimizer, self.eps_scale = a_optimizer, w_optimizer, eps_scale
        self.grad_reduce = grad_reduce or no_reduce
        self.penalty = penalty or (lambda: None)

    def step(self, train_batch, val_batch, xi: float) -> torch.Tensor:
        """One alpha step; returns the validation loss it was computed from (detached; with the
        penalty, when there is one)."""
        alphas = list(self.arch.parameters())
        if self.order == 1:
            with frozen(self.model):  # first order needs no weight gradient
                loss = self._loss(None, val_batch, "val", advance=True)
                grads = self.grad_reduce(_grads_or_zeros(loss, alphas))
        else:
            loss, grads = self.second_order_grads(train_batch, val_batch, xi)
        # A regulariser of the alphas alone (identical on every rank): its gradient just adds.
        term = self.penalty()
        if term is not None:
            extra = torch.autograd.grad(term, alphas, allow_unused=True, materialize_grads=True)
            grads = [g + e for g, e in zip(grads, extra, strict=True)]
            loss = loss + term
        for a, g in zip(alphas, grads, strict=True):
            a.grad = g
        self.a_optimizer.step()
        self.a_optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _loss(
        self, params: dict[str, torch.Tensor] | None, batch, role: str, advance: bool = False
    ) -> torch.Tensor:
        """The objective's loss of `batch` (stream `role`) at the real weights (params None) or
        at `params`; only `advance` moves the stream's state (an LM's hidden state)."""
        if params is None:
            forward = self.model
        else:
            buffers = {n: b.clone() for n, b in self.model.named_buffers()}
            values = {**params, **buffers}

            def forward(*args, **kwargs):
                return functional_call(self.model, values, args, kwargs)

        return self.objective.loss(forward, self.edge_weights(), batch, role, advance)[0]

    def second_order_grads(self, train_batch, val_batch, xi: float):
        """(L_val(w'), d/dalpha L_val(w'(alpha), alpha)) with the finite-difference HVP."""
        alphas = list(self.arch.parameters())
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        names = [n for n, _ in named]
        ws = [p for _, p in named]
        group = self.w_optimizer.param_groups[0]
        momentum, wd = group["momentum"], group["weight_decay"]
        g_train = torch.autograd.grad(
            self._loss(dict(named), train_batch, "train"),
            ws,
            allow_unused=True,
            materialize_grads=True,
        )
        g_train = self.grad_reduce(list(g_train))
        coef = None
        if self.virtual_clip > 0:
            norm = torch.sqrt(sum((g * g).sum() for g in g_train)).item()
            coef = min(1.0, self.virtual_clip / (norm + 1e-6))  # clip_grad_norm_'s factor
            g_train = [g * coef for g in g_train]
        unrolled = []
        with torch.no_grad():
            for w, g in zip(ws, g_train, strict=True):
                d = g + wd * w
                buf = self.w_optimizer.state.get(w, {}).get("momentum_buffer")
                if buf is not None:
                    d = d + momentum * buf
                unrolled.append((w - xi * d).requires_grad_(True))
        # The one validation pass of this alpha step: it advances the val stream.
        loss = self._loss(dict(zip(names, unrolled, strict=True)), val_batch, "val", advance=True)
        # Ops with weight 0 do not run: their weights get zero gradients (allow_unused).
        grads = torch.autograd.grad(
            loss, alphas + unrolled, allow_unused=True, materialize_grads=True
        )
        grads = self.grad_reduce(list(grads))
        d_alpha, v = grads[: len(alphas)], grads[len(alphas) :]
        hvp = self.hessian_vector_product(names, ws, v, train_batch)
        scale = xi if coef is None else xi * coef
        return loss, [da - scale * h for da, h in zip(d_alpha, hvp, strict=True)]

    def hessian_vector_product(self, names, ws, v, train_batch):
        """d^2 L_train / (dalpha dw) . v by central differences along v."""
        eps = self.eps_scale / torch.sqrt(sum((t * t).sum() for t in v))
        alphas = list(self.arch.parameters())
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                params = {n: w + sign * eps * d for n, w, d in zip(names, ws, v, strict=True)}
            grads.append(torch.autograd.grad(self._loss(params, train_batch, "train"), alphas))
        return self.grad_reduce([(gp - gm) / (2 * eps) for gp, gm in zip(*grads, strict=True)])
