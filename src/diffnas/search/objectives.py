"""Objectives: how a batch becomes a loss and metrics, per task, chosen from `OBJECTIVES`.

The search strategies and the Architect never look inside a batch: they call
`objective.loss(forward, weights, batch, role, advance, train_step)`, where `forward` is the
supernet itself or a `functional_call` of it with virtual weights (second order). An objective
names its headline metric (`acc`, `ppl`), which the loop logs as `train_<headline>` and
`valid_<headline>`.

- `image`: cross-entropy of `model(x, weights)`; train_loss/train_acc, valid_loss/valid_acc.
- `lm`: token cross-entropy of a language-model supernet `model(x, weights, hidden,
  return_h=True)`. Each stream ("train" for the weight steps, "val" for the alpha steps) carries
  its hidden state across consecutive BPTT segments, detached between them and reset at every
  epoch start. A pass advances its stream only with `advance=True`: the weight step, and the
  Architect's one validation pass per alpha step; the other virtual passes of the second order
  (the train gradient of the unrolled step and the finite-difference passes) read the stream's
  current hidden state without moving it. The weight step adds activation and temporal
  activation regularisation (AR/TAR); the alphas' validation loss is the plain cross-entropy,
  as in quark0/darts rnn/. Metrics: train_loss/train_ppl, valid_loss/valid_ppl.
- `forecast`: `forecast.loss` (mse, l1) of a forecasting supernet `model(x, weights)` on the
  protocol's targets; stateless (every window starts from the zero state, no hidden state
  carries across windows). The headline is the protocol's selection metric (`rse` for lstnet,
  `mse` for long_term): train_<headline> of each training batch (protocol units), and
  valid_loss plus every protocol metric (valid_rse/valid_corr or valid_mse/valid_mae) over the
  whole alpha split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.data.forecast_metrics import forecast_loss, protocol_scores
from diffnas.registry import Registry
from diffnas.runs import distributed, precision
from diffnas.spaces.forecaster import predict_batches
from diffnas.spaces.recurrent import detach_hidden

Forward = Callable[..., object]  # the supernet, or a functional_call of it


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in %."""
    return (logits.argmax(-1) == y).float().mean().item() * 100


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats); inf where that overflows."""
    return math.exp(loss) if loss < 700 else math.inf


class Objective:
    """The interface; the defaults are those of a stateless task."""

    headline = "acc"
    # Whether a larger headline value is better (accuracy) or a smaller one (perplexity):
    # what rankers (sample_rank) read instead of the metric's name.
    higher_is_better = True
    # Whether the Architect's virtual weight step clips its gradient as the real step does
    # (the original RNN architect does, the CNN one does not).
    clip_virtual_step = False

    def rank_key(self, value: float) -> float:
        """A key that sorts headline values best first (ascending)."""
        return -value if self.higher_is_better else value

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the strategy at every epoch start."""

    def loss(
        self,
        forward: Forward,
        weights: dict[str, torch.Tensor],
        batch,
        role: str = "train",
        advance: bool = False,
        train_step: bool = False,
    ) -> tuple[torch.Tensor, object]:
        """(loss to differentiate, what step_metrics needs) of one batch of stream `role`."""
        raise NotImplementedError

    def step_metrics(self, loss: torch.Tensor, out, batch) -> dict[str, float]:
        """The metrics of one weight step."""
        raise NotImplementedError

    def epoch_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """The epoch record's metrics from the means of the step metrics."""
        return means

    def lr_scale(self, batch) -> float:
        """Factor on the weight learning rate for this training batch."""
        return 1.0

    def evaluate(self, model: nn.Module, weights, batches: Iterable) -> dict[str, float]:
        """valid_loss and valid_<headline> of the supernet over `batches`, in eval mode."""
        raise NotImplementedError


OBJECTIVES: Registry = Registry("search objective")


class ImageObjective(Objective):
    """Classification: `loss_fn(model(x, weights), y)` (cross-entropy)."""

    headline = "acc"

    def __init__(self, loss_fn: Callable = F.cross_entropy, autocast: str = "off"):
        self.loss_fn, self.autocast = loss_fn, autocast

    def loss(self, forward, weights, batch, role="train", advance=False, train_step=False):
        """(loss, logits); the forward and the loss under `run.autocast`."""
        x, y = batch
        with precision.autocast(x.device, self.autocast):
            logits = forward(x, weights)
            return self.loss_fn(logits, y), logits

    def step_metrics(self, loss, out, batch) -> dict[str, float]:
        """train_loss and train_acc."""
        return {"train_loss": loss.item(), "train_acc": accuracy(out, batch[1])}

    def evaluate(self, model, weights, batches) -> dict[str, float]:
        """Loss and accuracy over `batches` (this rank's rows), summed over the ranks."""
        model.eval()
        loss, acc = classification_scores(lambda x: model(x, weights), batches, self.autocast)
        model.train()
        return {"valid_loss": loss, "valid_acc": acc}


@torch.no_grad()
def classification_scores(forward, batches, autocast: str = "off") -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) of `forward(x)` over `batches` (this rank's rows),
    summed over the ranks; the forward and the loss under `autocast` (`run.autocast`)."""
    n, loss_sum, correct = 0, 0.0, 0
    for x, y in batches:
        if len(y) == 0:  # a rank's share of a last batch smaller than the world
            continue
        with precision.autocast(x.device, autocast):
            logits = forward(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        n += len(y)
    n, loss_sum, correct = distributed.sum_floats([n, loss_sum, correct])
    return loss_sum / max(n, 1), 100.0 * correct / max(n, 1)


OBJECTIVES.add(
    "image", lambda cfg=None: ImageObjective(autocast=cfg.run.autocast if cfg else "off")
)


class LMObjective(Objective):
    """Language modelling with hidden state carried per stream (see the module docstring)."""

    headline = "ppl"
    higher_is_better = False
    clip_virtual_step = True

    def __init__(self, alpha_ar: float = 0.0, beta_tar: float = 0.0, bptt: int = 35):
        self.alpha_ar, self.beta_tar, self.bptt = alpha_ar, beta_tar, bptt
        self.hidden: dict[str, object] = {}

    def on_epoch_start(self, epoch: int) -> None:
        """Every stream starts the epoch from the zero state."""
        self.hidden = {}

    def loss(self, forward, weights, batch, role="train", advance=False, train_step=False):
        """(loss with AR/TAR on weight steps, plain cross-entropy)."""
        x, y = batch
        logits, hidden, raw, dropped = forward(x, weights, self.hidden.get(role), return_h=True)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss = nll
        if train_step and self.alpha_ar > 0:
            loss = loss + self.alpha_ar * dropped.pow(2).mean()
        if train_step and self.beta_tar > 0 and raw.shape[0] > 1:
            loss = loss + self.beta_tar * (raw[1:] - raw[:-1]).pow(2).mean()
        if advance:
            self.hidden[role] = detach_hidden(hidden)
        return loss, nll

    def step_metrics(self, loss, out, batch) -> dict[str, float]:
        """train_loss (the cross-entropy, without AR/TAR) and train_ppl."""
        value = out.item()
        return {"train_loss": value, "train_ppl": perplexity(value)}

    def epoch_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """train_ppl = exp(the epoch's mean train_loss), not the mean of per-step ppl."""
        if "train_loss" in means:
            means = {**means, "train_ppl": perplexity(means["train_loss"])}
        return means

    def lr_scale(self, batch) -> float:
        """seq_len / bptt: a shorter segment takes a proportionally smaller step (the
        original's per-segment learning rate)."""
        return batch[0].shape[0] / self.bptt

    @torch.no_grad()
    def evaluate(self, model, weights, batches) -> dict[str, float]:
        """Mean token cross-entropy over consecutive segments (hidden carried), and its ppl."""
        was_training = model.training
        model.eval()
        hidden, n, loss_sum = None, 0, 0.0
        for x, y in batches:
            logits, hidden = model(x, weights, hidden)
            loss_sum += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
            ).item()
            n += y.numel()
        model.train(was_training)
        loss = loss_sum / max(n, 1)
        return {"valid_loss": loss, "valid_ppl": perplexity(loss)}


OBJECTIVES.add("lm", lambda cfg: LMObjective(cfg.lm.alpha_ar, cfg.lm.beta_tar, cfg.lm.bptt))


class ForecastObjective(Objective):
    """Forecasting on a `ForecastData`'s windows (see the module docstring)."""

    clip_virtual_step = True  # an RNN cell, as the original RNN architect

    def __init__(self, data, loss: str = "mse"):
        self.data, self.loss_kind = data, loss
        self.headline = data.protocol.select_metric

    def loss(self, forward, weights, batch, role="train", advance=False, train_step=False):
        """(the training loss, the predictions)."""
        x, y = batch
        out = forward(x, weights)
        return forecast_loss(out, y, self.loss_kind), out

    def step_metrics(self, loss, out, batch) -> dict[str, float]:
        """train_loss and train_<headline> of the batch."""
        h = self.headline
        with torch.no_grad():
            head = protocol_scores(self.data, out.detach(), batch[1])[h]
        return {"train_loss": loss.item(), f"train_{h}": head}

    @torch.no_grad()
    def evaluate(self, model, weights, batches) -> dict[str, float]:
        """valid_loss and every protocol metric over `batches`, in eval mode."""
        pred, target = predict_batches(model, batches, weights=weights)
        scores = protocol_scores(self.data, pred, target)
        loss = forecast_loss(pred, target, self.loss_kind).item()
        return {"valid_loss": loss, **{f"valid_{k}": v for k, v in scores.items()}}


OBJECTIVES.add("forecast", lambda cfg, data: ForecastObjective(data, cfg.forecast.loss))
