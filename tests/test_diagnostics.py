"""Collapse diagnostics on hand-built weights and genotypes."""

from __future__ import annotations

import math

import pytest
import torch

from diffnas.search.diagnostics import collapse_diagnostics, collapse_warning, edge_entropy
from diffnas.spaces.genotypes import Genotype, NB201Genotype
from diffnas.spaces.published import GENOTYPES


def test_edge_entropy_of_uniform_decided_and_dead_edges():
    w = torch.tensor([[0.2] * 5, [0.0, 0.0, 1.0, 0.0, 0.0], [0.0] * 5, [0.5, 0.5, 0, 0, 0]])
    h = edge_entropy(w)
    assert h[0] == pytest.approx(math.log(5))
    assert h[1] == 0.0 and h[2] == 0.0
    assert h[3] == pytest.approx(math.log(2))
    # Unnormalised (clipped) weights are normalised first.
    assert edge_entropy(torch.tensor([[0.3, 0.3]]))[0] == pytest.approx(math.log(2))


def _record(genotype, weights, epoch=4):
    return {"epoch": epoch, **collapse_diagnostics(genotype, weights)}


def test_collapsed_normal_cell_warns_and_darts_v2_does_not():
    skip = [("skip_connect", 0), ("skip_connect", 1)] * 3 + [
        ("sep_conv_3x3", 0),
        ("max_pool_3x3", 1),
    ]
    v2 = GENOTYPES.get("DARTS_V2").genotype
    collapsed = Genotype(skip, [2, 3, 4, 5], v2.reduce, [2, 3, 4, 5])
    weights = {"normal": torch.full((14, 8), 1 / 8), "reduce": torch.full((14, 8), 1 / 8)}
    r = _record(collapsed, weights)
    assert r["param_free_ops"] == {"normal": 7, "reduce": 8}
    assert r["param_free_kinds"]["normal"] == {"skip_connect": 6, "max_pool_3x3": 1}
    assert r["edge_entropy"]["normal"] == pytest.approx([math.log(8)] * 14)
    msg = collapse_warning(r, 0.5)
    assert msg and "epoch 5" in msg and "7 of 8" in msg and "skip_connect x6" in msg
    assert collapse_warning(r, 1.0) is None
    # DARTS_V2: 2 skips of 8 in the normal cell; its all-pooling reduction cell is not checked.
    assert collapse_warning(_record(v2, weights), 0.5) is None


def test_nb201_cell_counts_none_as_parameter_free():
    g = NB201Genotype.from_string(
        "|none~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|"
    )
    r = _record(g, {"cell": torch.eye(6, 5)})
    assert r["param_free_ops"] == {"cell": 5}
    assert r["edge_entropy"]["cell"] == [0.0] * 5 + [0.0]
    assert "5 of 6" in collapse_warning(r, 0.5)
