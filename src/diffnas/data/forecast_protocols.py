"""The two forecasting evaluation protocols, each exactly as its community uses it.

A sample is identified by its *origin* t: the input window is rows [t - L, t) of the scaled
series (L = look-back), and the target is row t + h - 1 (single step, h steps after the last
input row) or rows [t, t + H) (multi-step). Each protocol fixes, for a series of n rows:

- `lstnet` (Lai et al. 2018, `laiguokun/LSTNet` utils.py): targets of the train / val / test
  samples are rows [L + h - 1, int(0.6 n)), [int(0.6 n), int(0.8 n)), [int(0.8 n), n), so
  input windows may reach back across a border; single-step targets at horizon h; every
  series divided by its max |value| over the whole file (`normalize=2`), or, as an option,
  over the training part [0, int(0.6 n)) only; metrics RSE and CORR in original units
  (predictions multiplied back by the scale). One deliberate difference: LSTNet's code divides
  the validation RSE by the *test* targets' std; here each split uses its own targets' std.
  The ranking of epochs on validation, and so the model selected, is the same.
- `long_term` (Informer / Autoformer / LTSF-Linear / PatchTST `data_loader.py`): ETT files
  use the 12/4/4-month borders (train rows [0, 12 m), val [12 m - L, 16 m), test [16 m - L,
  20 m) with m = 30 days of rows), any other series int(0.7 n) / rest / int(0.2 n); windows
  slide with stride 1 inside each part; z-score per column with the training rows' mean and
  population std; H-step targets; metrics MSE and MAE on the normalised data.

`prepare_forecast` applies a protocol to a `Series` and returns the scaled matrix, the scaler
and one `Windows` per split. Window batches are gathered from strided views (`unfold`), with no
Python loop over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from diffnas.data.images import DataFormatError
from diffnas.data.series import Series, load_series
from diffnas.registry import Registry
from diffnas.runs.config import ConfigError

SPLITS = ("train", "val", "test")
SCALE_MODES = ("whole", "train")
ETT_MONTH_DAYS = 30  # the ETT borders count a month as 30 days


# ----------------------------------------------------------------------------- scalers


class Scaler:
    """A per-column affine map fitted on chosen rows: scaled = (x - shift) / scale."""

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor, kind: str):
        self.shift, self.scale, self.kind = shift, scale, kind

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Original units -> the model's units (the last dim is the series)."""
        return (x - self.shift.to(x)) / self.scale.to(x)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """The model's units -> original units."""
        return x * self.scale.to(x) + self.shift.to(x)

    def state_dict(self) -> dict:
        """Shift and scale, as tensors (checkpoint- and json-friendly)."""
        return {"kind": self.kind, "shift": self.shift, "scale": self.scale}


def max_abs_scaler(rows: np.ndarray) -> Scaler:
    """LSTNet's `normalize=2`: divide each series by its max |value| over `rows`.

    A series that is 0 on every row keeps scale 1 (the LSTNet code would divide by zero)."""
    scale = np.abs(rows).max(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return Scaler(
        torch.zeros(rows.shape[1], dtype=torch.float64), torch.from_numpy(scale), "maxabs"
    )


def standard_scaler(rows: np.ndarray) -> Scaler:
    """sklearn's StandardScaler: mean and population std per column; a constant column keeps
    std 1, as sklearn does."""
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return Scaler(torch.from_numpy(mean), torch.from_numpy(std), "zscore")


# ----------------------------------------------------------------------------- windows


class Windows:
    """The samples of one split: origins t in [start, end), each reading rows [t - L, t).

    `targets_of(t)` is row t + h - 1 ([B, N]) for single-step horizon h, rows [t, t + H)
    ([B, H, N]) for multi-step; inputs are [B, L, N].
    """

    def __init__(
        self,
        values: torch.Tensor,
        start: int,
        end: int,
        lookback: int,
        horizon: int,
        single_step: bool,
    ):
        if not (lookback <= start <= end):
            raise ValueError(f"origins [{start}, {end}) need start >= lookback {lookback}")
        last = end - 1 + horizon - 1  # the last target row, single- or multi-step
        if end > start and last >= values.shape[0]:
            raise ValueError(f"origin {end - 1} with horizon {horizon} reads past the series")
        self.values, self.start, self.end = values, start, end
        self.lookback, self.horizon, self.single_step = lookback, horizon, single_step
        # Strided views, no copies: window s of `_inputs` is rows [s, s + L).
        self._inputs = values.unfold(0, lookback, 1)  # [T - L + 1, N, L]
        self._future = None if single_step else values.unfold(0, horizon, 1)  # [T - H + 1, N, H]

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def origins(self) -> torch.Tensor:
        """All origins of the split, in time order (int64)."""
        return torch.arange(self.start, self.end, device=self.values.device)

    def inputs(self, origins: torch.Tensor) -> torch.Tensor:
        """Input windows [B, L, N] of the given origins."""
        return self._inputs[origins - self.lookback].transpose(1, 2)

    def targets(self, origins: torch.Tensor) -> torch.Tensor:
        """Targets of the given origins: [B, N] single-step, [B, H, N] multi-step."""
        if self.single_step:
            return self.values[origins + self.horizon - 1]
        return self._future[origins].transpose(1, 2)

    def batch(self, origins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the given origins."""
        return self.inputs(origins), self.targets(origins)

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        limit: int = 0,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, targets) batches: in time order, or shuffled by `generator`; `limit` > 0
        takes only that many samples (a random subset when shuffled, the first ones otherwise);
        `drop_last` skips a last partial batch."""
        yield from (
            self.batch(o) for o in self.origin_batches(batch_size, generator, limit, drop_last)
        )

    def origin_batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        limit: int = 0,
        drop_last: bool = False,
    ) -> list[torch.Tensor]:
        """The origins of each batch that `batches` yields."""
        n = len(self)
        if generator is not None:
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if limit:
            order = order[:limit]
        order = order.to(self.values.device) + self.start
        if drop_last:
            order = order[: len(order) // batch_size * batch_size]
        return list(order.split(batch_size))

    def num_batches(self, batch_size: int, limit: int = 0, drop_last: bool = False) -> int:
        """How many batches `batches` yields."""
        n = min(len(self), limit) if limit else len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


# ----------------------------------------------------------------------------- protocols


def lstnet_borders(n: int) -> tuple[int, int]:
    """LSTNet's train and valid borders: int(0.6 n) and int(0.8 n), as its code computes them."""
    return int(0.6 * n), int(0.8 * n)


def lstnet_origins(series: Series, lookback: int, horizon: int) -> dict[str, range]:
    """LSTNet: targets k in [L + h - 1, int(.6n)), [int(.6n), int(.8n)), [int(.8n), n), as
    origins t = k - h + 1."""
    n = len(series)
    train, valid = lstnet_borders(n)
    shift = horizon - 1
    return {
        "train": range(lookback, train - shift),
        "val": range(train - shift, valid - shift),
        "test": range(valid - shift, n - shift),
    }


def lstnet_scaler_rows(series: Series, lookback: int, scale: str) -> range:
    """The whole file (LSTNet's code) or, with scale `train`, the rows before int(0.6 n)."""
    return range(0, len(series) if scale == "whole" else lstnet_borders(len(series))[0])


def long_term_borders(series: Series, lookback: int) -> tuple[list[int], list[int]]:
    """(border1s, border2s) of the long-term codebases: ETT's 12/4/4 months for `ett` files
    (hourly or every few minutes, from the date column), 70/10/20 for any other series."""
    n = len(series)
    if series.format == "ett":
        step = series.step_s
        if not step or step > 3600 or 3600 % step:
            raise DataFormatError(
                f"{series.path}: the ETT split needs rows every hour or every n minutes dividing "
                f"an hour (found a step of {step} s)"
            )
        month = ETT_MONTH_DAYS * 24 * int(3600 // step)
        b2 = [12 * month, 16 * month, 20 * month]
        if n < b2[2]:
            raise DataFormatError(
                f"{series.path}: the ETT split needs {b2[2]} rows (20 months), the file has {n}"
            )
        return [0, b2[0] - lookback, b2[1] - lookback], b2
    num_train, num_test = int(n * 0.7), int(n * 0.2)
    num_val = n - num_train - num_test
    return [0, num_train - lookback, n - num_test - lookback], [num_train, num_train + num_val, n]


def long_term_origins(series: Series, lookback: int, horizon: int) -> dict[str, range]:
    """Long-term: sample i of a part reads rows from border1 + i, so its origin is border1 +
    i + L; the last one still has H target rows before border2."""
    b1, b2 = long_term_borders(series, lookback)
    return {s: range(b1[i] + lookback, b2[i] - horizon + 1) for i, s in enumerate(SPLITS)}


def long_term_scaler_rows(series: Series, lookback: int, scale: str) -> range:
    """The train part [0, border2s[0]) whatever `scale` says, as the codebases fit it."""
    return range(0, long_term_borders(series, lookback)[1][0])


@dataclass(frozen=True)
class ForecastProtocol:
    """One evaluation protocol: how a series is split, scaled, windowed and scored.

    `metrics` are names in `diffnas.data.forecast_metrics.FORECAST_METRICS`; `select_metric`
    (lower is better) picks the best epoch on validation; `original_units` says whether the
    metrics are computed after undoing the scaling.
    """

    name: str
    metrics: tuple[str, ...]
    select_metric: str
    original_units: bool
    single_step: bool
    origins: Callable[[Series, int, int], dict[str, range]]
    scaler_rows: Callable[[Series, int, str], range]
    fit_scaler: Callable[[np.ndarray], Scaler]
    doc: str


FORECAST_PROTOCOLS: Registry[ForecastProtocol] = Registry("forecast protocol")
FORECAST_PROTOCOLS.add(
    "lstnet",
    ForecastProtocol(
        "lstnet",
        metrics=("rse", "corr"),
        select_metric="rse",
        original_units=True,
        single_step=True,
        origins=lstnet_origins,
        scaler_rows=lstnet_scaler_rows,
        fit_scaler=max_abs_scaler,
        doc="LSTNet: 60/20/20 by target row, max-abs scaling, single step at horizon h, RSE/CORR "
        "in original units",
    ),
)
FORECAST_PROTOCOLS.add(
    "long_term",
    ForecastProtocol(
        "long_term",
        metrics=("mse", "mae"),
        select_metric="mse",
        original_units=False,
        single_step=False,
        origins=long_term_origins,
        scaler_rows=long_term_scaler_rows,
        fit_scaler=standard_scaler,
        doc="long-term (Informer/LTSF): ETT 12/4/4 months or 70/10/20, train z-score, H-step "
        "targets, MSE/MAE on the normalised data",
    ),
)


# ----------------------------------------------------------------------------- preparation


@dataclass
class ForecastData:
    """A series under a protocol: scaled values, the scaler, and the windows of each split."""

    protocol: ForecastProtocol
    values: torch.Tensor  # scaled [T, N]
    scaler: Scaler
    splits: dict[str, Windows]
    lookback: int
    horizon: int
    scaler_rows: range

    @property
    def n_series(self) -> int:
        """Number of series N."""
        return self.values.shape[1]


def prepare_forecast(
    series: Series,
    protocol: str,
    lookback: int,
    horizon: int,
    scale: str = "whole",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> ForecastData:
    """Split, scale and window `series` under the registered `protocol` (lstnet, long_term).

    `scale` (lstnet only): fit the max-abs scaler on the `whole` file, as LSTNet's code does, or
    on the `train` part only. The long-term protocol always fits on its train rows.
    """
    proto = FORECAST_PROTOCOLS.get(protocol)
    if scale not in SCALE_MODES:
        raise ValueError(f"unknown scale {scale!r}; available: {', '.join(SCALE_MODES)}")
    if lookback < 1 or horizon < 1:
        raise ValueError(f"lookback and horizon must be >= 1, got {lookback} and {horizon}")
    ranges = proto.origins(series, lookback, horizon)
    for split, r in ranges.items():
        if len(r) <= 0:
            raise DataFormatError(
                f"{series.path}: {len(series)} rows leave no {split} samples under the "
                f"{protocol} protocol with forecast.lookback = {lookback} and forecast.horizon "
                f"= {horizon}; lower them or use a longer series"
            )
    rows = proto.scaler_rows(series, lookback, scale)
    scaler = proto.fit_scaler(series.values[rows.start : rows.stop])
    values = scaler.transform(torch.from_numpy(series.values)).to(device=device, dtype=dtype)
    splits = {
        s: Windows(values, r.start, r.stop, lookback, horizon, proto.single_step)
        for s, r in ranges.items()
    }
    return ForecastData(proto, values, scaler, splits, lookback, horizon, rows)


def load_forecast_data(cfg, device: torch.device, dtype: torch.dtype) -> ForecastData:
    """The series of `forecast.path` under `forecast.protocol`, scaled and windowed (final
    training and the forecasting search both read their data through this)."""
    f = cfg.forecast
    if not f.path:
        raise ConfigError(
            "forecast.path is empty: set it to the series file, e.g. --set "
            "forecast.path=data/exchange_rate.txt.gz (with forecast.format = lstnet, ett or csv)"
        )
    series = load_series(
        f.path, f.format, f.columns, f.date_column, hint="Set forecast.path to the series file."
    )
    return prepare_forecast(
        series, f.protocol, f.lookback, f.horizon, f.scale, dtype=dtype, device=device
    )


class WindowBatches:
    """A split's windows as a search batch source: `len()` batches per pass, `epoch(seed)`
    one pass, shuffled by `seed` (a random subset of `limit` windows if > 0) or in time order."""

    def __init__(self, windows: Windows, batch_size: int, shuffle: bool = True, limit: int = 0):
        self.windows, self.batch_size = windows, batch_size
        self.shuffle, self.limit = shuffle, limit

    def __len__(self) -> int:
        return self.windows.num_batches(self.batch_size, self.limit)

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass of (inputs, targets) batches."""
        g = torch.Generator().manual_seed(seed) if self.shuffle else None
        return self.windows.batches(self.batch_size, g, self.limit)


def split_train_windows(data: ForecastData, portion: float) -> tuple[Windows, Windows]:
    """The training windows split in time order: the first `portion` of the origins, the rest."""
    w = data.splits["train"]
    mid = w.start + int(len(w) * portion)
    if mid == w.start or mid == w.end:
        raise DataFormatError(
            f"data.train_portion = {portion} leaves no windows in one half of the {len(w)} "
            "training windows; change it or use forecast.search_split = 'val'"
        )
    args = (w.lookback, w.horizon, w.single_step)
    return Windows(w.values, w.start, mid, *args), Windows(w.values, mid, w.end, *args)


# How a search divides the windows between the weights and the alphas (`forecast.search_split`):
# `fn(data, train_portion) -> (weight windows, alpha windows)`. None reads the test split.
FORECAST_SEARCH_SPLITS: Registry[Callable[[ForecastData, float], tuple[Windows, Windows]]] = (
    Registry("forecast search split")
)
FORECAST_SEARCH_SPLITS.add("val", lambda data, portion: (data.splits["train"], data.splits["val"]))
FORECAST_SEARCH_SPLITS.add("train", split_train_windows)
