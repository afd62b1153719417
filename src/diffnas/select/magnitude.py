"""Magnitude selection: read the genotype off the edge weights with the space's DARTS rule."""

from __future__ import annotations

import torch


@torch.no_grad()
def magnitude_select(model, arch):
    """The space's derivation rule on the current edge weights (DARTS: top-2 inputs per node by
    strongest non-`none` op, then that op; NB201: argmax per edge)."""
    return model.genotype(arch.weights())
