"""Seeding and exact save/restore of the global random number generators.

States are kept as lists, ints, floats and tensors so that a checkpoint holding them loads with
`torch.load(..., weights_only=True)`. Private `torch.Generator`s (e.g. a sampler's) are not
global: their owners store `generator.get_state()` themselves.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, numpy's global generator and torch (CPU and every CUDA device)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        # numpy's legacy seeding takes 32 bits; refuse rather than silently alias seeds.
        raise ValueError(f"seed must be an int in [0, 2**32 - 1], got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def capture_rng() -> dict[str, Any]:
    """The states of Python's `random`, numpy's global generator, torch CPU and all CUDA devices."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "name": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generator states captured by `capture_rng`."""
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np.asarray(np_state["keys"], dtype=np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    # torch wants CPU byte tensors even when the checkpoint was mapped onto a GPU.
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if not cuda_states:
        return
    if not torch.cuda.is_available():
        warnings.warn(
            "the saved state includes CUDA generators but CUDA is not available here; "
            "GPU random numbers will differ from the original run",
            stacklevel=2,
        )
        return
    if len(cuda_states) != torch.cuda.device_count():
        warnings.warn(
            f"the saved state has {len(cuda_states)} CUDA generator(s), this machine has "
            f"{torch.cuda.device_count()} device(s); restoring the ones both have",
            stacklevel=2,
        )
    for device, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state.cpu(), device)
