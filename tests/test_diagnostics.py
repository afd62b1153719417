"""Collapse diagnostics on hand-built weights and genotypes."""

from __future__ import annotations

import math

import pytest
import torch

from diffnas.search.diagnostics import (
    collapse_diagnostics,
    collapse_warning,
    disconnected_cells,
    edge_entropy,
    entropy_ratio,
    search_warnings,
)
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


# The quickstart's cell of the fresh-machine run: `none` on every edge out of the input.
QUICKSTART_CELL = "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize(
    "arch, connected",
    [
        (QUICKSTART_CELL, False),
        ("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", True),  # 0 -> 3 directly
        ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", False),  # 1 dead end
        ("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|", True),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", False),
    ],
)
def test_nb201_disconnected_cells(arch, connected):
    assert disconnected_cells(NB201Genotype.from_string(arch)) == ([] if connected else ["cell"])


def test_darts_disconnected_cells():
    v2 = GENOTYPES.get("DARTS_V2").genotype
    assert disconnected_cells(v2) == []
    # Node 2 reads only `none`; node 3 reads node 2 only: nothing reaches the concat [2, 3].
    dead = [("none", 0), ("none", 1), ("sep_conv_3x3", 2), ("none", 0)]
    g = Genotype(dead, [2, 3], v2.reduce, v2.reduce_concat)
    assert disconnected_cells(g) == ["normal"]
    alive = [("none", 0), ("none", 1), ("sep_conv_3x3", 2), ("skip_connect", 1)]
    assert disconnected_cells(Genotype(alive, [2, 3], v2.reduce, v2.reduce_concat)) == []


def test_entropy_ratio_of_uniform_decided_and_pruned_edges():
    assert entropy_ratio(torch.full((6, 5), 0.2)) == pytest.approx(1.0)
    assert entropy_ratio(torch.eye(6, 5)) == 0.0
    # A pruned op (weight 0) shrinks the edge's maximum: uniform over the 4 live ops is 1.
    row = torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0]])
    assert entropy_ratio(row) == pytest.approx(1.0)
    assert 0 < entropy_ratio(torch.tensor([[0.7, 0.1, 0.1, 0.1]])) < 0.99


def test_quickstart_collapse_is_warned_twice():
    """The quickstart's end state: a disconnected cell from alphas that hardly moved (mean
    edge entropy 1.6085 of ln 5)."""
    g = NB201Genotype.from_string(QUICKSTART_CELL)
    p = torch.softmax(torch.tensor([0.01, 0.0, 0.0, -0.005, 0.002]), 0)
    r = _record(g, {"cell": p.repeat(6, 1)}, epoch=9)
    assert r["disconnected"] == ["cell"] and r["entropy_ratio"]["cell"] > 0.999
    warnings = search_warnings(r, collapse_warn=1.0, uniform_warn=0.99)
    assert len(warnings) == 2
    assert "epoch 10" in warnings[0] and "no path" in warnings[0] and "cell cell" not in warnings[0]
    share = f"cell at {r['entropy_ratio']['cell']:.3%}"
    assert "near uniform" in warnings[1] and share in warnings[1]
    assert search_warnings(r, collapse_warn=1.0, uniform_warn=1.0) == warnings[:1]
    decided = _record(GENOTYPES.get("NB201_BEST").genotype, {"cell": torch.eye(6, 5)})
    assert search_warnings(decided, collapse_warn=0.5, uniform_warn=0.99) == []
