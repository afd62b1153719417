"""Bilevel DARTS search: an alpha step on a val batch, then a weight step on a train batch."""

from __future__ import annotations

import torch
from torch import nn

from diffnas.arch import ArchParameters
from diffnas.runs import distributed
from diffnas.runs.config import ConfigError
from diffnas.runs.schedules import cosine_lr
from diffnas.search.architect import Architect, frozen
from diffnas.search.growing import GROWERS
from diffnas.search.objectives import ImageObjective, Objective, accuracy
from diffnas.search.perturbations import PERTURBATIONS
from diffnas.search.regularizers import REGULARIZERS, distance_to_discrete
from diffnas.search.schedules import ALPHA_SCHEDULES

__all__ = ["DartsSearch", "accuracy", "cosine_lr"]


class DartsSearch:
    """The DARTS strategy: `step(train_batch, val_batch)`, `genotype()`, `state_dict()`.

    The weight learning rate follows a cosine schedule by epoch (a pure function of the epoch,
    so resuming needs no scheduler state beyond the epoch number). Inside a process group each
    rank gets its shard of the global batches; weight and alpha gradients and the metrics are
    averaged over the ranks, so every rank takes the same steps. The `objective` (default:
    image classification) turns batches into losses and metrics.
    """

    def __init__(
        self,
        model: nn.Module,
        arch: ArchParameters,
        cfg,
        steps_per_epoch: int = 1,
        objective: Objective | None = None,
    ):
        self.model, self.arch, self.cfg = model, arch, cfg
        self.objective = objective if objective is not None else ImageObjective()
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.schedule = ALPHA_SCHEDULES.get(cfg.alpha_schedule)(cfg)
        self.regularizer = REGULARIZERS.get(cfg.regularizer)(cfg, model, arch)
        # search.perturb (SDARTS): its noise generator is seeded from the run's seed.
        self.perturbation = PERTURBATIONS.get(cfg.perturb)(cfg, torch.initial_seed())
        # Sampling activations (gumbel, dirichlet) draw each step's edge weights from their own
        # generator (saved with the strategy); the finite-difference Hessian of the second order
        # needs one fixed set of weights, so they search first order.
        self.sample_gen = torch.Generator().manual_seed((torch.initial_seed() + 1) % 2**63)
        if arch.samples and cfg.order == 2:
            raise ConfigError(
                f"search.activation = {cfg.activation!r} samples the edge weights of every step; "
                "use search.order = 1"
            )
        self.distributed = distributed.is_distributed()
        self.w_optimizer = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.w_lr,
            momentum=cfg.w_momentum,
            weight_decay=cfg.w_weight_decay,
        )
        self.a_optimizer = torch.optim.Adam(
            arch.parameters(),
            lr=cfg.alpha_lr,
            betas=tuple(cfg.alpha_betas),
            weight_decay=cfg.alpha_weight_decay,
        )
        self.architect = Architect(
            model,
            arch,
            self.a_optimizer,
            self.w_optimizer,
            self.objective,
            cfg.order,
            cfg.unrolled_eps,
            grad_reduce=distributed.all_reduce_mean if self.distributed else None,
            penalty=lambda: self.regularizer.penalty(self.progress),
            virtual_clip=cfg.grad_clip if self.objective.clip_virtual_step else 0.0,
            weights=self.step_weights,
        )
        self.epoch, self.lr = 0, cfg.w_lr
        self.epoch_step = 0  # steps taken in the current epoch
        self.last_penalty = 0.0
        self.grower = GROWERS.get(cfg.grower)(cfg, self)  # search.grower (search.growing)

    @property
    def progress(self) -> float:
        """t/T: the fraction of the search done (fractional epochs / epochs)."""
        return (self.epoch + self.epoch_step / self.steps_per_epoch) / self.cfg.epochs

    def on_epoch_start(self, epoch: int) -> None:
        """Set the epoch's weight learning rate."""
        self.epoch, self.epoch_step = epoch, 0
        self.lr = cosine_lr(epoch, self.cfg.epochs, self.cfg.w_lr, self.cfg.w_lr_min)
        for g in self.w_optimizer.param_groups:
            g["lr"] = self.lr
        self.objective.on_epoch_start(epoch)

    def step(self, train_batch, val_batch) -> dict[str, float]:
        """An alpha step on a val batch when the schedule says so, then one weight step.

        `val_batch` is a batch, or a function returning the next one: then a val batch is only
        drawn for the iterations that take an alpha step. The metrics have `val_loss` only then.
        """
        self.model.train()
        self.grower.on_step_start()  # a growing recurrent cell ramps its new node in
        val_loss = None
        # The objective may scale this step's learning rate (LM: by the segment's length).
        scale = self.objective.lr_scale(train_batch)
        lr = self.lr if scale == 1.0 else self.lr * scale
        # search.fix_alpha: the alphas stay as initialised, at no architect cost.
        if not self.cfg.fix_alpha and self.schedule.take_alpha_step():
            batch = val_batch() if callable(val_batch) else val_batch
            val_loss = self.architect.step(train_batch, batch, xi=lr)
            self.regularizer.after_alpha_step()
        weights = {k: w.detach() for k, w in self.step_weights().items()}
        weights = self.perturbation(
            weights, lambda w: self._attack_loss(w, train_batch), self.progress
        )
        loss, out = self.objective.loss(
            self.model, weights, train_batch, role="train", advance=True, train_step=True
        )
        self.w_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.model.parameters())
        if self.schedule.needs_fisher:
            # The trace of the empirical Fisher: the squared norm of the (global) weight
            # gradient, before clipping.
            with torch.no_grad():
                grads = [p.grad for p in self.model.parameters() if p.grad is not None]
                self.schedule.observe(sum(g.pow(2).sum() for g in grads).item())
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if scale != 1.0:
            for g in self.w_optimizer.param_groups:
                g["lr"] = lr
        self.w_optimizer.step()
        if scale != 1.0:
            for g in self.w_optimizer.param_groups:
                g["lr"] = self.lr
        self.arch.prune()  # no-op unless the activation prunes
        self.epoch_step += 1
        metrics = self.objective.step_metrics(loss, out, train_batch)
        if val_loss is not None:
            metrics["val_loss"] = val_loss.item()
        if self.distributed:
            # Equal shards: the mean over ranks is the global batch's loss and accuracy.
            t = torch.tensor(list(metrics.values()), dtype=torch.float64, device=loss.device)
            # BN running statistics are identical on all ranks under run.sync_bn (and stay so
            # bitwise); with per-rank statistics, averaging keeps every rank's model the same.
            bufs = [b for b in self.model.buffers() if b.is_floating_point()]
            *means, t = distributed.all_reduce_mean([*bufs, t])
            for b, mean in zip(bufs, means, strict=True):
                b.copy_(mean)
            metrics = dict(zip(metrics, t.tolist(), strict=True))
        return metrics

    def step_weights(self) -> dict[str, torch.Tensor]:
        """The edge weights of one pass of a search step: drawn by a sampling activation (GDAS,
        DrNAS), else the alphas' deterministic weights."""
        return self.arch.sampled_weights(self.sample_gen, self.progress, self.cfg)

    def _attack_loss(self, weights, batch) -> torch.Tensor:
        """The training loss of `batch` at edge weights `weights`, the model in eval mode and its
        weights frozen (SDARTS-ADV differentiates it by the edge weights only)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with frozen(self.model):
                return self.objective.loss(self.model, weights, batch, role="train")[0]
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def evaluate(self, batches) -> dict[str, float]:
        """The objective's valid_loss and valid_<headline> of the supernet over `batches`
        (this rank's rows), eval mode, no autograd."""
        return self.objective.evaluate(self.model, self.arch.weights(), batches)

    def on_epoch_end(self, epoch: int, record: dict) -> dict:
        """After the epoch's evaluation: the grower may grow the supernet; extra metrics."""
        return self.grower.on_epoch_end(epoch, record)

    def genotype(self):
        """The genotype the space's derivation rule reads off the current weights."""
        with torch.no_grad():
            return self.model.genotype(self.arch.weights())

    def state_dict(self) -> dict:
        """Everything needed to continue exactly."""
        return {
            "model": self.model.state_dict(),
            "arch": self.arch.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "epoch": self.epoch,
            "schedule": self.schedule.state_dict(),
            "regularizer": self.regularizer.state_dict(),
            "grower": self.grower.state_dict(),
            "perturbation": self.perturbation.state_dict(),
            "sample_generator": self.sample_gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        # First the saved size (a grown supernet), then the values.
        self.grower.load_state_dict(state.get("grower", {}))
        self.model.load_state_dict(state["model"])
        self.arch.load_state_dict(state["arch"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])
        self.epoch = state["epoch"]
        self.lr = self.w_optimizer.param_groups[0]["lr"]
        # Checkpoints from before schedules and regularisers existed ran "every" and "none",
        # whose fresh state is exact.
        self.schedule.load_state_dict(state.get("schedule", self.schedule.state_dict()))
        self.regularizer.load_state_dict(state.get("regularizer", self.regularizer.state_dict()))
        self.perturbation.load_state_dict(state.get("perturbation", {}))
        if "sample_generator" in state:
            self.sample_gen.set_state(state["sample_generator"])

    @torch.no_grad()
    def arch_metrics(self) -> dict:
        """Per-epoch architecture record: active (unpruned) ops per cell type, alpha steps taken
        so far, the regulariser's current value, and the distance to the discrete genotype."""
        weights = self.arch.weights()
        penalty = self.regularizer.penalty(self.progress)
        return {
            "active_ops": {k: int(m.sum().item()) for k, m in self.arch.masks().items()},
            "alpha_steps": self.schedule.alpha_steps,
            "regularizer": 0.0 if penalty is None else penalty.item(),
            "discrete_distance": distance_to_discrete(weights, self.model.project(weights)).item(),
        }
