"""The recurrent forecaster shared by final training and search: any core over a window -> a head.

`RecurrentForecaster` maps an input window x [B, L, N] to the protocol's targets ([B, N] single
step, [B, H, N] multi-step): the core reads the window from the zero state, and a linear layer
maps its output at the last time step (after dropout) to all N series (and H steps). The final
forecasters of `diffnas train --task forecast` (`lstm`, `gru`, a searched `darts_rnn` cell) and
the DARTS RNN forecasting supernet of the search are both this module; only the core differs
(the search cell takes its edge weights as a keyword argument, passed through `forward`).
`predict` runs a forecaster over a split's windows, `predict_batches` over any batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from diffnas.runs.config import ConfigError


@dataclass(frozen=True)
class ForecastShape:
    """What a forecaster reads and predicts: N series, L input rows, horizon, single step."""

    n_series: int
    lookback: int
    horizon: int
    single_step: bool

    @property
    def out_steps(self) -> int:
        """Rows predicted per sample: 1 (single step) or the horizon."""
        return 1 if self.single_step else self.horizon

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """[B, out_steps, N] -> the protocol's target shape ([B, N] for single step)."""
        return y[:, 0] if self.single_step else y


class RecurrentForecaster(nn.Module):
    """A recurrent core over the window, its last output -> a linear layer to the targets.

    With `channel_independent` the core reads each series alone (input size 1, weights shared
    by the series) and the layer maps hidden -> H per series; `highway` > 0 adds LSTNet's
    autoregressive highway. Every window starts from the core's zero state.
    """

    def __init__(
        self,
        core: nn.Module,
        shape: ForecastShape,
        hidden: int,
        dropout: float = 0.0,
        highway: int = 0,
        channel_independent: bool = False,
    ):
        super().__init__()
        if highway > shape.lookback:
            raise ConfigError(
                f"forecast.highway = {highway}: must be <= forecast.lookback ({shape.lookback})"
            )
        self.core, self.shape = core, shape
        self.channel_independent, self.highway = channel_independent, highway
        self.drop = nn.Dropout(dropout)
        per_sample = shape.out_steps if channel_independent else shape.out_steps * shape.n_series
        self.head = nn.Linear(hidden, per_sample)
        # LSTNet's highway: one linear map of each series' recent values, shared by the series.
        self.ar = nn.Linear(highway, shape.out_steps) if highway else None

    def forward(self, x: torch.Tensor, **core_kwargs) -> torch.Tensor:
        """x [B, L, N] -> [B, N] or [B, H, N]; `core_kwargs` go to the core (edge weights)."""
        b, length, n = x.shape
        seq = x.transpose(0, 1).contiguous()  # [L, B, N], the cores' time-major layout
        if self.channel_independent:
            seq = seq.reshape(length, b * n, 1)
        out, _ = self.core(seq, None, **core_kwargs)  # None: the zero state
        y = self.head(self.drop(out[-1]))
        if self.channel_independent:
            y = y.view(b, n, -1).transpose(1, 2)
        else:
            y = y.view(b, -1, n)
        if self.ar is not None:
            y = y + self.ar(x[:, -self.highway :].transpose(1, 2)).transpose(1, 2)
        return self.shape.finish(y)


@torch.no_grad()
def predict(
    model: nn.Module, windows, batch_size: int, limit: int = 0, **forward_kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, targets) of a split's `Windows` in time order (the first `limit` if > 0),
    in the model's (scaled) units, in eval mode; `forward_kwargs` go to `model(x, ...)`."""
    return predict_batches(model, windows.batches(batch_size, limit=limit), **forward_kwargs)


@torch.no_grad()
def predict_batches(
    model: nn.Module, batches: Iterable, **forward_kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, targets) concatenated over (x, y) `batches`, in eval mode."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for x, y in batches:
        preds.append(model(x, **forward_kwargs))
        targets.append(y)
    model.train(was_training)
    return torch.cat(preds), torch.cat(targets)
