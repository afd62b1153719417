"""Rank agreement between a predictor (e.g. inherited-weight accuracy) and ground truth."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples, ties handled; NaN when either is constant.

    tau_b = (C - D) / sqrt((P - T_x) (P - T_y)) over the P = n(n-1)/2 pairs, with C and D the
    concordant and discordant pairs and T_x (T_y) the pairs tied in x (in y).
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D samples of equal length, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 2:
        return math.nan
    iu = np.triu_indices(n, k=1)
    sx = np.sign(a[:, None] - a[None, :])[iu]
    sy = np.sign(b[:, None] - b[None, :])[iu]
    pairs = len(sx)
    s = float((sx * sy).sum())  # concordant - discordant; a tie in either gives 0
    tied_x, tied_y = int((sx == 0).sum()), int((sy == 0).sum())
    denom = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return s / denom if denom > 0 else math.nan
