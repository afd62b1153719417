"""Temporary module modes for scoring a supernet without changing it (selection, path scores)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Train mode in which batch norm uses batch statistics and updates nothing (a supernet's
    running statistics mix all the paths and weights it was trained with).

    Every BN stops tracking running statistics for the duration (so it neither reads nor
    writes them, nor counts batches); modes and flags are restored afterwards.
    """
    modes = [(m, m.training) for m in model.modules()]
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in bns]
    try:
        model.train()
        for m in bns:
            m.track_running_stats = False
        yield
    finally:
        for m, track in zip(bns, tracking, strict=True):
            m.track_running_stats = track
        for m, mode in modes:
            m.training = mode


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (running statistics), the previous modes restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode
