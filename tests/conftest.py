"""Tiny shared fixtures: float64 scope, random image batches, config sections."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from diffnas.runs.config import SearchConfig, SpaceConfig


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: tiny models only lose time to threading on a shared machine (and
    leave the other cores alone). Modules use it with `pytestmark`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def float64() -> Iterator[None]:
    """Run the test with float64 as the default dtype, restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def make_batch() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Factory: a seeded random image batch (x, y) of the default dtype."""

    def make(n=4, c=3, h=8, w=8, num_classes=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, c, h, w, generator=g)
        y = torch.randint(0, num_classes, (n,), generator=g)
        return x, y

    return make


@pytest.fixture
def space_cfg() -> Callable[..., SpaceConfig]:
    """Factory: a tiny `[space]` config section."""

    def make(name="darts", **kw):
        base = dict(name=name, C=4, N=1, layers=3, steps=4, multiplier=4, stem_multiplier=3)
        return SpaceConfig(**{**base, **kw})

    return make


@pytest.fixture
def search_cfg() -> Callable[..., SearchConfig]:
    """Factory: a `[search]` config section for DartsSearch (DARTS defaults, faster alphas)."""

    def make(**kw):
        base = dict(
            w_lr=0.05, w_lr_min=0.001, w_momentum=0.9, w_weight_decay=3e-4, grad_clip=5.0,
            alpha_lr=3e-2, alpha_betas=(0.5, 0.999), alpha_weight_decay=1e-3, order=1,
            unrolled_eps=0.01, epochs=4,
        )
        return SearchConfig(**{**base, **kw})

    return make
