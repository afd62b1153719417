"""Forecasting metrics and losses: RSE and CORR as the LSTNet code computes them, MSE and MAE.

Shared by the final training (`diffnas.train.forecast`) and the forecasting search objective
(`diffnas.search.objectives`), so neither imports the other. Each metric takes `pred` and
`target` of the same shape [S, ...]: S samples (time), the remaining dims (series, or horizon
steps x series) flattened into columns. Computed in float64; each returns a
Python float. Chosen by name from `FORECAST_METRICS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from diffnas.registry import Registry

Metric = Callable[[torch.Tensor, torch.Tensor], float]
FORECAST_METRICS: Registry[Metric] = Registry("forecast metric")


def _pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.numel() == 0:
        raise ValueError("no samples to score")
    return pred.double(), target.double()


@FORECAST_METRICS.register("rse")
def rse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Root relative squared error: sqrt(sum (y - yhat)^2) / sqrt(sum (y - mean y)^2), the mean
    over all entries pooled (LSTNet: sqrt(SSE / n) / population std of the targets)."""
    pred, target = _pair(pred, target)
    num = (target - pred).pow(2).sum()
    den = (target - target.mean()).pow(2).sum()
    return math.sqrt(num.item()) / math.sqrt(den.item()) if den > 0 else math.nan


@FORECAST_METRICS.register("corr")
def corr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Empirical correlation: the Pearson correlation over time of each column, averaged over
    the columns whose target is not constant (LSTNet skips those too). A constant prediction of
    a varying column counts as correlation 0 (where LSTNet's code would produce NaN)."""
    pred, target = _pair(pred, target)
    p = pred.reshape(len(pred), -1)
    g = target.reshape(len(target), -1)
    sigma_p, sigma_g = p.std(0, unbiased=False), g.std(0, unbiased=False)
    cov = ((p - p.mean(0)) * (g - g.mean(0))).mean(0)
    keep = sigma_g != 0
    if not keep.any():
        return math.nan
    denom = sigma_p * sigma_g
    r = torch.where(denom > 0, cov / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)
    return r[keep].mean().item()


@FORECAST_METRICS.register("mse")
def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error over every entry."""
    pred, target = _pair(pred, target)
    return (pred - target).pow(2).mean().item()


@FORECAST_METRICS.register("mae")
def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error over every entry."""
    pred, target = _pair(pred, target)
    return (pred - target).abs().mean().item()


def score(names: tuple[str, ...], pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """{name: value} of the named metrics."""
    return {name: FORECAST_METRICS.get(name)(pred, target) for name in names}


def protocol_scores(data, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """The metrics of `data.protocol` (a `ForecastData`) of scaled predictions, in original
    units where the protocol says so."""
    if data.protocol.original_units:
        pred, target = data.scaler.inverse(pred.double()), data.scaler.inverse(target.double())
    return score(data.protocol.metrics, pred, target)


FORECAST_LOSSES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry(
    "forecast loss"
)
FORECAST_LOSSES.add("mse", F.mse_loss)
FORECAST_LOSSES.add("l1", F.l1_loss)


def forecast_loss(output: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """The mean training loss `kind` (mse, l1) of a forecast against its target."""
    return FORECAST_LOSSES.get(kind)(output, target)
